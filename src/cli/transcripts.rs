//! `agentform transcripts`: list, show and export recorded transcripts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use agentform::ops::transcripts::{self, Format};

use super::args::Global;
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
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    Markdown,
    Html,
}

pub fn exec(g: &Global, cmd: TranscriptsCommand, printer: &Printer) -> Result<ExitCode> {
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
    }
    Ok(ExitCode::SUCCESS)
}
