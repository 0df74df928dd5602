//! `agentform apply`: show the plan, ask, execute it with progress, and
//! summarise. The prompt, progress and summary are shared with `destroy`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;

use agentform::apply::{ApplyReport, Outcome};
use agentform::ops::apply::{ApplyOptions, Pending};
use agentform::plan::{render, Action};

use super::args::{providers, Global, Targeting};
use super::output::{Printer, ProgressReporter};

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    targeting: Targeting,
    /// Skip the confirmation prompt
    #[arg(long)]
    auto_approve: bool,
    /// Changes in flight at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallelism: u16,
    /// Read the live objects first and repair drift
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "true", value_name = "BOOL")]
    refresh: bool,
    /// Apply even a manifest without resources (it removes everything recorded)
    #[arg(long)]
    allow_empty: bool,
}

pub async fn exec(g: &Global, args: ApplyArgs, printer: &Printer) -> Result<ExitCode> {
    let m = g.load_allowing_empty(args.allow_empty)?;
    super::args::warn_unconfined(&m, printer);
    let state = g.open_state("apply")?;
    let providers = providers(&state, Some(&m))?;
    let options = ApplyOptions {
        targets: args.targeting.targets,
        refresh: args.refresh,
        parallelism: args.parallelism as usize,
        allow_empty: args.allow_empty,
    };
    let pending = agentform::ops::apply::plan(m, state, providers, &options).await?;
    printer.out_styled(render::render(pending.plan(), printer.palette()).trim_end());
    if !pending.plan().has_changes() {
        if let Some(path) = pending.finish_unchanged()? {
            printer.info(&format!("Wrote {}", path.display()));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !confirm(printer, args.auto_approve, "apply these changes")? {
        printer.out("Apply cancelled; nothing was changed.");
        return Ok(ExitCode::FAILURE);
    }
    let report = execute(pending, printer).await?;
    Ok(summarize(&report, printer, "Apply"))
}

/// Asks on the terminal; only `yes` agrees. Without a terminal, only
/// `--auto-approve` does.
pub(super) fn confirm(printer: &Printer, auto_approve: bool, verb: &str) -> Result<bool> {
    if auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {verb} without confirmation: standard input is not a terminal\nhint: review the plan above and pass `--auto-approve`");
    }
    printer.prompt(&format!("Do you want to {verb}? Only `yes` is accepted: "));
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Executes with a progress display; notes a written lock file.
pub(super) async fn execute(pending: Pending, printer: &Printer) -> Result<ApplyReport> {
    let reporter = Arc::new(ProgressReporter::new(
        printer,
        pending.plan().pending().count(),
    ));
    let executed = pending.execute(reporter.clone()).await;
    reporter.finish();
    let executed = executed?;
    if let Some(path) = &executed.backup {
        printer.info(&format!("Backed up the state to {}", path.display()));
    }
    if let Some(path) = &executed.lock_written {
        printer.info(&format!("Wrote {}", path.display()));
    }
    Ok(executed.report)
}

/// The closing line, or what did not complete and why.
pub(super) fn summarize(report: &ApplyReport, printer: &Printer, verb: &str) -> ExitCode {
    let done = |a| report.count(a);
    let summary = format!(
        "{} added, {} changed, {} replaced, {} archived, {} destroyed",
        done(Action::Create),
        done(Action::Update),
        done(Action::Replace),
        done(Action::Archive),
        done(Action::Delete)
    );
    if report.ok() {
        printer.out(&format!("{verb} complete! {summary}."));
        return ExitCode::SUCCESS;
    }
    let mut lines = vec![format!("{verb} failed. {summary}; these did not complete:")];
    for (addr, _, outcome) in report.failed() {
        match outcome {
            Outcome::Failed(e) => lines.push(format!("  {addr}: {e}")),
            Outcome::Skipped { because } => {
                lines.push(format!("  {addr}: skipped because {because} failed"))
            }
            Outcome::Done(_) => {}
        }
    }
    lines.push(
        "The state records everything that succeeded; fix the cause and run the command again."
            .into(),
    );
    printer.error(&lines.join("\n"));
    ExitCode::FAILURE
}
