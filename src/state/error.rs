//! What can go wrong with a state, each said once: the message names the
//! file, what probably happened and what to do. No variant carries a
//! `source` that its message already shows, so a chain prints no line twice.

use std::path::{Path, PathBuf};

use super::integrity::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// `location` is shown as is: a directory in backticks, or a URL.
    #[error(
        "state at {location} is locked by pid {pid}{} ({holder}){}; wait for it to finish, or stop it",
        host.as_ref().map(|h| format!(" on {h}")).unwrap_or_default(),
        waited.map(|w| format!(" after waiting {w:?}")).unwrap_or_default()
    )]
    Locked {
        location: String,
        pid: String,
        host: Option<String>,
        holder: String,
        /// How long `--lock-timeout` waited.
        waited: Option<std::time::Duration>,
    },
    /// A PostgreSQL state cannot be used: what happened, on which server,
    /// and what to check.
    #[error("{message}\nhint: {hint}")]
    Postgres { message: String, hint: String },
    #[error("cannot open state at `{dir}`: {error}")]
    Io { dir: PathBuf, error: std::io::Error },
    /// sled could not open the database: damaged or unreadable files.
    #[error(
        "cannot open the state database `{}`: {reason}\n\
         its files are damaged or unreadable: a crash or a full disk during a write, \
         files changed by hand, or a copy taken while agentform was running\n\
         hint: {}",
        path.display(),
        damaged_hint(dir)
    )]
    Open {
        dir: PathBuf,
        path: PathBuf,
        reason: String,
    },
    #[error("state database error: {0}")]
    Db(String),
    #[error("state record `{key}` is corrupt: {message}")]
    Corrupt { key: String, message: String },
    /// The store lost what its marker says it had, or is another state's.
    #[error("{}", refusal.explain(dir))]
    Refused { dir: PathBuf, refusal: Box<Refusal> },
    #[error("writing `{}`: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the state at {location} is not empty\nhint: pass `--force` to replace what it holds, or \
         choose an empty target"
    )]
    NotEmpty { location: String },
    #[error("copying the state: {0}")]
    Copy(String),
    #[error("backup `{}` cannot be read: {message}", path.display())]
    BadBackup { path: PathBuf, message: String },
}

impl From<sled::Error> for StateError {
    fn from(e: sled::Error) -> Self {
        StateError::Db(e.to_string())
    }
}

impl From<super::db::DbError> for StateError {
    fn from(e: super::db::DbError) -> Self {
        StateError::Db(e.0)
    }
}

/// How to get a state back: its backups, a copy of its database, or, on
/// purpose, going on without the marker (`instead`: what that means here).
pub(super) fn recover_hint(dir: &Path, instead: &str) -> String {
    let backups = super::backup::list(dir).map(|b| b.len()).unwrap_or(0);
    let restore = if backups == 0 {
        format!(
            "there are no backups in `{}`; put back a copy of `{}`",
            dir.join(super::backup::BACKUPS_DIR).display(),
            dir.join(super::DB_DIR).display(),
        )
    } else {
        format!(
            "restore the newest of the {backups} backup(s) in `{}` with `agentform state restore`, \
             or put back a copy of `{}`",
            dir.join(super::backup::BACKUPS_DIR).display(),
            dir.join(super::DB_DIR).display(),
        )
    };
    format!(
        "{restore}; {instead} on purpose, remove `{}`",
        dir.join(super::marker::MARKER_FILE).display()
    )
}

/// How to get past a database sled cannot open.
fn damaged_hint(dir: &Path) -> String {
    let db = dir.join(super::DB_DIR);
    match super::backup::list(dir).map(|b| b.len()).unwrap_or(0) {
        0 => format!(
            "there are no backups in `{}`; put back a copy of `{}`, or move it aside to start over",
            dir.join(super::backup::BACKUPS_DIR).display(),
            db.display()
        ),
        n => format!(
            "`agentform state restore` moves the damaged database aside and brings back the newest \
             of the {n} backup(s) in `{}`; or put back a copy of `{}`",
            dir.join(super::backup::BACKUPS_DIR).display(),
            db.display()
        ),
    }
}
