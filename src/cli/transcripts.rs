//! `agentform transcripts`: list, show, export and prune recorded transcripts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use agentform::ops::transcripts::{self, Format, Pruned, Selection};

use super::args::{parse_duration_arg, Global};
use super::output::Printer;

#[derive(Subcommand, Debug)]
pub enum TranscriptsCommand {
    /// Every recorded transcript, oldest first
    #[command(after_help = "Example:\n  agentform transcripts list")]
    List,
    /// A transcript as a readable conversation
    #[command(
        after_help = "Examples:\n  agentform transcripts show latest/smoke\n  agentform transcripts show 20261125-101500-3f2a/session.smoke"
    )]
    Show {
        /// RUN/SESSION; RUN may be `latest`
        reference: String,
    },
    /// A transcript as Markdown or a self-contained HTML page
    #[command(
        after_help = "Examples:\n  agentform transcripts export latest/smoke --format html -o smoke.html\n  agentform transcripts export latest/smoke --format markdown"
    )]
    Export {
        reference: String,
        #[arg(long, value_enum, default_value = "markdown")]
        format: ExportFormat,
        /// Write here instead of standard output
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Remove old transcripts, their index entries and the archived local
    /// sessions they recorded (with their events and workspaces)
    #[command(
        group = clap::ArgGroup::new("which").required(true).multiple(true).args(["keep", "older_than"]),
        after_help = "Examples:\n  agentform transcripts prune --keep 20\n  agentform transcripts prune --older-than 30d --dry-run\n\nThe manifest's `retention: { transcripts: N }` does the same after every run."
    )]
    Prune {
        /// Keep the transcripts of the newest N runs
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Remove the transcripts of runs older than this, e.g. `30d`, `12h`
        #[arg(long, value_name = "DURATION", value_parser = parse_age)]
        older_than: Option<Duration>,
        /// Say what would be removed, and remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    Markdown,
    Html,
}

pub async fn exec(g: &Global, cmd: TranscriptsCommand, printer: &Printer) -> Result<ExitCode> {
    // Transcripts are written masked; a manifest at hand, when there is one,
    // also masks its secrets in transcripts recorded before they were.
    if let Err(e) = g.load() {
        tracing::debug!("transcripts without the manifest's secrets: {e}");
    }
    let state = g.open_state("transcripts")?;
    match cmd {
        TranscriptsCommand::List => {
            for e in transcripts::list(&state)? {
                printer.out(&format!(
                    "{}/{}\t{}\t{} events\t{:.1}s",
                    e.run_id,
                    e.session.name,
                    if e.passed { "passed" } else { "FAILED" },
                    e.events,
                    e.duration_ms as f64 / 1000.0
                ));
            }
        }
        TranscriptsCommand::Show { reference } => {
            let text = transcripts::export(&state, &reference, Format::Text)?;
            printer.out(text.trim_end());
        }
        TranscriptsCommand::Export {
            reference,
            format,
            output,
        } => {
            let format = match format {
                ExportFormat::Markdown => Format::Markdown,
                ExportFormat::Html => Format::Html,
            };
            let text = transcripts::export(&state, &reference, format)?;
            match output {
                Some(path) => {
                    transcripts::write(&path, &super::output::redact(&text))?;
                    printer.info(&format!("Wrote {}", path.display()));
                }
                None => printer.out(text.trim_end()),
            }
        }
        TranscriptsCommand::Prune {
            keep,
            older_than,
            dry_run,
        } => {
            let selection = Selection {
                keep_runs: keep,
                older_than,
            };
            let pruned = transcripts::prune(&state, &selection, dry_run).await?;
            let verb = if dry_run { "Would remove" } else { "Removed" };
            for t in &pruned.transcripts {
                printer.out(&format!(
                    "{verb} {}/{}\t{}",
                    t.run_id, t.session.name, t.path
                ));
            }
            for id in &pruned.sessions {
                printer.out(&format!("{verb} archived session {id}"));
            }
            for p in &pruned.problems {
                printer.error(p);
            }
            let summary = pruned_summary(&pruned);
            printer.out(&match (pruned.is_empty(), dry_run) {
                (true, _) => "Nothing to prune.".to_string(),
                (false, true) => format!("Dry run: would remove {summary}; nothing was removed."),
                (false, false) => format!("Removed {summary}."),
            });
            if !pruned.problems.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `3 transcripts of 2 runs and 2 archived sessions`.
pub(super) fn pruned_summary(p: &Pruned) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{} of {} and {}",
        plural(p.transcripts.len(), "transcript", "transcripts"),
        plural(p.runs(), "run", "runs"),
        plural(p.sessions.len(), "archived session", "archived sessions"),
    )
}

/// A duration for `--older-than`, which also takes days (`30d`).
fn parse_age(s: &str) -> Result<Duration, String> {
    match s.strip_suffix('d').map(str::parse::<u64>) {
        Some(Ok(days)) => Ok(Duration::from_secs(days.saturating_mul(86_400))),
        _ => parse_duration_arg(s)
            .map_err(|_| format!("`{s}` is not a duration; write e.g. `30d`, `12h`, `90m`")),
    }
}
