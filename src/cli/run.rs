//! `agentform run`: drive the sessions with progress, list each outcome,
//! write the JUnit report when asked, exit 1 when an expectation failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use agentform::runner::{RunOptions, RunReport};

use super::args::{parse_duration_arg, providers, Global};
use super::output::{Printer, RunProgress};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Only this session (name or address); repeatable
    #[arg(long = "session", value_name = "NAME")]
    sessions: Vec<String>,
    /// Sessions run at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=4096))]
    concurrency: u16,
    /// Write a JUnit XML report here
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Wall-clock limit per session, e.g. `10m` (overrides the manifest)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    timeout: Option<Duration>,
    /// Continue the recorded sessions instead of starting fresh ones
    #[arg(long = "continue")]
    continue_sessions: bool,
}

pub async fn exec(g: &Global, args: RunArgs, printer: &Printer) -> Result<ExitCode> {
    let m = g.load()?;
    super::args::warn_unconfined(&m, printer);
    let state = g.open_state("run")?;
    let providers = providers(&state, Some(&m))?;
    // Without --session the count is unknown until the manifest is read: a spinner.
    let reporter = Arc::new(RunProgress::new(printer, args.sessions.len()));
    let options = RunOptions {
        sessions: args.sessions,
        concurrency: args.concurrency as usize,
        timeout: args.timeout,
        continue_sessions: args.continue_sessions,
        transcripts: true,
    };
    let ran = agentform::ops::run::run(m, state, providers, &options, reporter.clone()).await?;
    reporter.finish();
    let report = ran.report;
    for e in &report.write_errors {
        printer.error(e);
    }
    outcomes(&report, printer);
    if let Some(path) = &args.junit {
        agentform::ops::run::write_junit(&report, path)?;
        printer.info(&format!("Wrote {}", path.display()));
    }
    let passed = report.outcomes.iter().filter(|o| o.passed()).count();
    let failed = report.outcomes.len() - passed;
    printer.out(&format!(
        "run {}: {passed} passed, {failed} failed",
        report.run_id
    ));
    printer.info(&format!(
        "transcripts: agentform transcripts list; agentform transcripts show {}/SESSION",
        report.run_id
    ));
    if !ran.retention.is_empty() {
        printer.info(&format!(
            "retention: {}",
            super::transcripts::pruned_summary(&ran.retention)
        ));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per session; a failed one with its unmet expectations.
fn outcomes(report: &RunReport, printer: &Printer) {
    for o in &report.outcomes {
        if o.passed() {
            printer.out(&format!(
                "ok     {} ({} steps, {:.1}s)",
                o.address,
                o.footer.steps.len(),
                o.footer.duration_ms as f64 / 1000.0
            ));
            continue;
        }
        printer.out(&format!("FAILED {}", o.address));
        for (message, detail) in o.failure_messages() {
            printer.out(&format!("       {message}"));
            for line in detail.lines().filter(|l| !l.is_empty()).take(3) {
                printer.out(&format!("         {line}"));
            }
        }
    }
}
