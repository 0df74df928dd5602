//! Retention: what accumulates in a state, removed on request
//! (`transcripts prune`) or after each run (the manifest's `retention`).
//!
//! Two things grow with every run: transcripts (files and index entries)
//! and the local runtime's archived sessions (each with its events and
//! workspace). Removing a transcript also deletes the archived local
//! session it recorded; `archived_sessions` caps the rest. Sessions are
//! deleted through the runtime, so their events, inbox and workspace go
//! with them. The current session of a declared resource is never
//! archived, hence never deleted here; remote providers' sessions are not
//! touched.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::manifest::spec::RetentionSpec;
use crate::runtime::local::{LocalOptions, LocalRuntime};
use crate::runtime::{list_all, ErrorKind, Providers, Runtime, RuntimeError, Session};
use crate::state::{StateError, StateStore, TranscriptEntry};

/// The local runtime's name among the providers.
const LOCAL: &str = "local";

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot open the local runtime: {0}")]
    Local(RuntimeError),
    #[error("{0}")]
    Sandboxes(String),
}

/// Which transcripts to remove: runs beyond the newest `keep_runs`, and
/// runs indexed longer ago than `older_than`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    pub keep_runs: Option<usize>,
    pub older_than: Option<Duration>,
}

/// What was removed (or, in a dry run, would be).
#[derive(Debug, Default)]
pub struct Pruned {
    pub transcripts: Vec<TranscriptEntry>,
    /// Archived local sessions deleted, with their events and workspaces.
    pub sessions: Vec<String>,
    /// What could not be removed, and why; the rest was.
    pub problems: Vec<String>,
    pub dry_run: bool,
}

impl Pruned {
    pub fn is_empty(&self) -> bool {
        self.transcripts.is_empty() && self.sessions.is_empty()
    }

    /// How many runs the removed transcripts belonged to.
    pub fn runs(&self) -> usize {
        let runs: HashSet<&str> = self.transcripts.iter().map(|t| t.run_id.as_str()).collect();
        runs.len()
    }
}

/// The entries `selection` removes.
pub fn select(
    entries: &[TranscriptEntry],
    selection: &Selection,
    now: OffsetDateTime,
) -> Vec<TranscriptEntry> {
    let runs = runs_oldest_first(entries);
    let kept_from = selection
        .keep_runs
        .map_or(0, |keep| runs.len().saturating_sub(keep));
    let beyond: HashSet<&str> = runs[..kept_from].iter().copied().collect();
    let cutoff = selection
        .older_than
        .and_then(|age| time::Duration::try_from(age).ok())
        .map(|age| now - age);
    entries
        .iter()
        .filter(|e| {
            beyond.contains(e.run_id.as_str())
                || cutoff.is_some_and(|cutoff| indexed_at(e).is_some_and(|at| at < cutoff))
        })
        .cloned()
        .collect()
}

/// The run ids of `entries`, oldest first: by when they were indexed, then
/// by id (ids carry the second a run started, not its order within it).
pub fn runs_oldest_first(entries: &[TranscriptEntry]) -> Vec<&str> {
    let mut runs: Vec<(Option<OffsetDateTime>, &str)> = Vec::new();
    for e in entries {
        let at = indexed_at(e);
        match runs.iter_mut().find(|(_, id)| *id == e.run_id) {
            Some(run) => run.0 = run.0.max(at),
            None => runs.push((at, &e.run_id)),
        }
    }
    runs.sort_unstable();
    runs.into_iter().map(|(_, id)| id).collect()
}

fn indexed_at(entry: &TranscriptEntry) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(
        &entry.started_at,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
}

/// `transcripts prune`: removes the transcripts `selection` names, and the
/// archived local sessions they recorded. Needs no provider but the local
/// runtime, which it opens over the state.
pub async fn prune(
    state: &StateStore,
    selection: &Selection,
    dry_run: bool,
) -> Result<Pruned, PruneError> {
    let local = local_runtime(state)?;
    let chosen = select(&state.transcripts()?, selection, OffsetDateTime::now_utc());
    let pruned = prune_entries(state, local.as_ref(), chosen, dry_run).await;
    local.shutdown().await;
    Ok(pruned?)
}

/// The manifest's `retention`, applied after a run with the run's providers.
pub async fn apply(
    retention: &RetentionSpec,
    state: &StateStore,
    providers: &Providers,
) -> Result<Pruned, StateError> {
    let mut pruned = Pruned::default();
    if *retention == RetentionSpec::default() {
        return Ok(pruned);
    }
    let Ok(local) = providers.get(LOCAL) else {
        return Ok(pruned);
    };
    if let Some(keep) = retention.transcripts {
        let selection = Selection {
            keep_runs: Some(keep as usize),
            older_than: None,
        };
        let chosen = select(&state.transcripts()?, &selection, OffsetDateTime::now_utc());
        pruned = prune_entries(state, local.as_ref(), chosen, false).await?;
    }
    if let Some(keep) = retention.archived_sessions {
        match archived_beyond(state, local.as_ref(), keep as usize).await {
            Ok(ids) => {
                let (deleted, problems) = delete_sessions(local.as_ref(), &ids).await;
                pruned.sessions.extend(deleted);
                pruned.problems.extend(problems);
            }
            Err(e) => pruned
                .problems
                .push(format!("listing the archived sessions: {e}")),
        }
    }
    Ok(pruned)
}

/// Removes `chosen` from the index and disk, and deletes the archived local
/// sessions they recorded.
async fn prune_entries(
    state: &StateStore,
    local: &dyn Runtime,
    chosen: Vec<TranscriptEntry>,
    dry_run: bool,
) -> Result<Pruned, StateError> {
    let mut sessions = Vec::new();
    for entry in &chosen {
        let id = entry
            .session_id
            .clone()
            .or_else(|| header_session_id(state, entry));
        if let Some(id) = id {
            if !sessions.contains(&id) {
                sessions.push(id);
            }
        }
    }
    let current = current_sessions(state)?;
    let mut archived = Vec::new();
    for id in sessions {
        if current.contains(&id) {
            continue;
        }
        if let Ok(session) = local.retrieve_session(&id).await {
            if is_archived(&session) {
                archived.push(id);
            }
        }
    }
    if dry_run {
        return Ok(Pruned {
            transcripts: chosen,
            sessions: archived,
            problems: Vec::new(),
            dry_run,
        });
    }
    let removed = state.remove_transcripts(&chosen)?;
    let (deleted, mut problems) = delete_sessions(local, &archived).await;
    problems.splice(0..0, removed.problems);
    Ok(Pruned {
        transcripts: removed.entries,
        sessions: deleted,
        problems,
        dry_run,
    })
}

/// Archived local sessions past the newest `keep`, most recently archived
/// kept; never one a record points at.
async fn archived_beyond(
    state: &StateStore,
    local: &dyn Runtime,
    keep: usize,
) -> Result<Vec<String>, String> {
    let current = current_sessions(state).map_err(|e| e.to_string())?;
    let mut archived: Vec<Session> = list_all(|q| async move { local.list_sessions(&q).await })
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|s| is_archived(s) && !current.contains(&s.id))
        .collect();
    // Newest first: RFC 3339 times in one format sort as text; ids break ties.
    archived.sort_by(|a, b| (&b.archived_at, &b.id).cmp(&(&a.archived_at, &a.id)));
    Ok(archived.into_iter().skip(keep).map(|s| s.id).collect())
}

async fn delete_sessions(local: &dyn Runtime, ids: &[String]) -> (Vec<String>, Vec<String>) {
    let mut deleted = Vec::new();
    let mut problems = Vec::new();
    for id in ids {
        match local.delete_session(id).await {
            Ok(_) => deleted.push(id.clone()),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("deleting the archived session {id}: {e}")),
        }
    }
    (deleted, problems)
}

fn is_archived(session: &Session) -> bool {
    session.archived_at.is_some()
}

/// The remote ids the state's records point at.
fn current_sessions(state: &StateStore) -> Result<HashSet<String>, StateError> {
    Ok(state.list()?.into_iter().map(|r| r.remote_id).collect())
}

/// The session id in a transcript's header line, for entries indexed
/// before the index recorded it.
fn header_session_id(state: &StateStore, entry: &TranscriptEntry) -> Option<String> {
    let bytes = state.transcript_contents(entry).ok()?;
    let first = bytes.split(|b| *b == b'\n').next()?;
    let header: serde_json::Value = serde_json::from_slice(first).ok()?;
    (header["kind"] == "header")
        .then(|| header["session_id"].as_str().map(str::to_string))
        .flatten()
}

/// The local runtime over the state, able to remove sessions' workspaces.
fn local_runtime(state: &StateStore) -> Result<Arc<LocalRuntime>, PruneError> {
    let sandboxes =
        super::providers::local_sandboxes(state.dir().join("workspaces"), None, |_| None)
            .map_err(|e| PruneError::Sandboxes(e.to_string()))?;
    let options = LocalOptions {
        sandboxes,
        ..LocalOptions::default()
    };
    LocalRuntime::open(state.db(), options)
        .map(Arc::new)
        .map_err(PruneError::Local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run: &str, session: &str, started_at: &str) -> TranscriptEntry {
        TranscriptEntry {
            run_id: run.into(),
            session: format!("session.{session}").parse().unwrap(),
            path: format!("transcripts/{run}/{session}.jsonl"),
            passed: true,
            started_at: started_at.into(),
            events: 1,
            duration_ms: 1,
            session_id: None,
        }
    }

    fn runs(v: &[TranscriptEntry]) -> Vec<String> {
        v.iter()
            .map(|e| format!("{}/{}", e.run_id, e.session.name))
            .collect()
    }

    #[test]
    fn keep_counts_runs_not_transcripts() {
        let entries = [
            entry("r1", "a", "2026-01-01T00:00:00Z"),
            entry("r1", "b", "2026-01-01T00:00:00Z"),
            entry("r2", "a", "2026-01-02T00:00:00Z"),
            entry("r3", "a", "2026-01-03T00:00:00Z"),
        ];
        let now = OffsetDateTime::now_utc();
        let keep = |n| Selection {
            keep_runs: Some(n),
            older_than: None,
        };
        assert_eq!(runs(&select(&entries, &keep(2), now)), ["r1/a", "r1/b"]);
        assert!(select(&entries, &keep(3), now).is_empty());
        assert_eq!(select(&entries, &keep(0), now).len(), 4);
    }

    #[test]
    fn runs_are_ordered_by_when_they_were_indexed() {
        let entries = [
            entry("20260101-000000-ffff", "a", "2026-01-01T00:00:00.1Z"),
            entry("20260101-000000-0001", "a", "2026-01-01T00:00:00.25Z"),
            entry("20260101-000000-0001", "b", "2026-01-01T00:00:00.25Z"),
        ];
        assert_eq!(
            runs_oldest_first(&entries),
            ["20260101-000000-ffff", "20260101-000000-0001"]
        );
        let keep_one = Selection {
            keep_runs: Some(1),
            older_than: None,
        };
        assert_eq!(
            runs(&select(&entries, &keep_one, OffsetDateTime::now_utc())),
            ["20260101-000000-ffff/a"]
        );
    }

    #[test]
    fn older_than_compares_with_when_the_run_was_indexed() {
        let entries = [
            entry("r1", "a", "2026-01-01T00:00:00Z"),
            entry("r2", "a", "2026-01-10T00:00:00Z"),
            entry("r3", "a", "not a time"),
        ];
        let now = OffsetDateTime::parse(
            "2026-01-11T00:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let selection = Selection {
            keep_runs: None,
            older_than: Some(Duration::from_secs(5 * 86_400)),
        };
        assert_eq!(runs(&select(&entries, &selection, now)), ["r1/a"]);
    }
}
