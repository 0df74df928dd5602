//! `transcripts`: the recorded runs, one transcript found by `RUN/SESSION`
//! (`RUN` may be `latest`), read, exported as text, Markdown or HTML, and
//! pruned (by [`super::retention`]).

use std::path::{Path, PathBuf};

use crate::runner::export;
use crate::runner::transcript::{self, Transcript};
use crate::state::{StateError, StateStore, TranscriptEntry};

pub use super::retention::{PruneError, Pruned, Selection};

#[derive(Debug, thiserror::Error)]
pub enum TranscriptsError {
    #[error("no transcripts recorded yet\nhint: `agentform run` records them")]
    NoneRecorded,
    #[error("no run `{0}`\nhint: `agentform transcripts list` shows the recorded runs")]
    NoRun(String),
    #[error("run `{run}` has no transcript of session `{session}`")]
    NoSession { run: String, session: String },
    #[error(
        "run `{run}` has {} sessions; name one: {}",
        sessions.len(),
        sessions.iter().map(|s| format!("{run}/{s}")).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous { run: String, sessions: Vec<String> },
    /// The transcript file could not be read.
    #[error("{0}")]
    Read(String),
    #[error("writing `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A readable conversation, for the terminal.
    Text,
    Markdown,
    /// A self-contained page.
    Html,
}

/// Every recorded transcript, oldest first.
pub fn list(state: &StateStore) -> Result<Vec<TranscriptEntry>, StateError> {
    state.transcripts()
}

/// The entry `reference` names: `RUN/SESSION`, or `RUN` alone when the run
/// has one session; `RUN` may be `latest`, `SESSION` may be `session.NAME`.
pub fn find(state: &StateStore, reference: &str) -> Result<TranscriptEntry, TranscriptsError> {
    let entries = state.transcripts()?;
    if entries.is_empty() {
        return Err(TranscriptsError::NoneRecorded);
    }
    let (run, session) = match reference.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (reference, None),
    };
    let run = if run == "latest" {
        super::retention::runs_oldest_first(&entries)
            .last()
            .map(|r| r.to_string())
            .unwrap_or_default()
    } else {
        run.to_string()
    };
    let mut in_run: Vec<_> = entries.into_iter().filter(|e| e.run_id == run).collect();
    match session {
        _ if in_run.is_empty() => Err(TranscriptsError::NoRun(run)),
        Some(s) => {
            let name = s.strip_prefix("session.").unwrap_or(s);
            match in_run.iter().position(|e| e.session.name == name) {
                Some(i) => Ok(in_run.swap_remove(i)),
                None => Err(TranscriptsError::NoSession {
                    run,
                    session: name.to_string(),
                }),
            }
        }
        None if in_run.len() == 1 => Ok(in_run.remove(0)),
        None => Err(TranscriptsError::Ambiguous {
            sessions: in_run.iter().map(|e| e.session.name.clone()).collect(),
            run,
        }),
    }
}

/// The transcript `reference` names, read from the state (its directory,
/// or what a PostgreSQL state keeps).
pub fn read(state: &StateStore, reference: &str) -> Result<Transcript, TranscriptsError> {
    let entry = find(state, reference)?;
    let bytes = state
        .transcript_contents(&entry)
        .map_err(TranscriptsError::Read)?;
    transcript::parse(
        &bytes,
        &format!("`{}`", state.dir().join(&entry.path).display()),
    )
    .map_err(TranscriptsError::Read)
}

/// The transcript `reference` names, rendered in `format`.
pub fn export(
    state: &StateStore,
    reference: &str,
    format: Format,
) -> Result<String, TranscriptsError> {
    let t = read(state, reference)?;
    Ok(match format {
        Format::Text => export::text(&t),
        Format::Markdown => export::markdown(&t),
        Format::Html => export::html(&t),
    })
}

/// Writes an export to `path`.
pub fn write(path: &Path, text: &str) -> Result<(), TranscriptsError> {
    std::fs::write(path, text).map_err(|source| TranscriptsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Removes the transcripts `selection` names, their index entries and the
/// archived local sessions they recorded; with `dry_run`, only says which.
pub async fn prune(
    state: &StateStore,
    selection: &Selection,
    dry_run: bool,
) -> Result<Pruned, PruneError> {
    super::retention::prune(state, selection, dry_run).await
}
