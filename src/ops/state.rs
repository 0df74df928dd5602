//! `state`: list, show and forget records, import an existing object (in
//! [`super::import`]), and list and restore backups. Forgetting never
//! touches the remote object; restoring is split into [`prepare_restore`]
//! and [`PendingRestore::execute`] so the command line can ask between.
//! [`migrate`] copies a state to another place (a directory or PostgreSQL).

use std::path::{Path, PathBuf};

use crate::graph::Address;
use crate::runtime::local::HISTORY_TREES;
use crate::state::backup::{self, Backup, BackupFile};
use crate::state::migrate::Copied;
use crate::state::{Location, Meta, OpenOptions, Refusal, ResourceRecord, StateError, StateStore};

pub use super::import::{import, ImportError};

#[derive(Debug, thiserror::Error)]
pub enum StateOpError {
    #[error("`{0}` is not in the state\nhint: `agentform state list` shows what is")]
    NotInState(Address),
    #[error("there are no backups in `{}`\nhint: `agentform apply` and `agentform destroy` write one before they change anything", .0.display())]
    NoBackups(PathBuf),
    #[error("there is no backup `{name}`\nhint: `agentform state backups` lists them: {}", known.join(", "))]
    NoSuchBackup { name: String, known: Vec<String> },
    #[error(
        "backup `{}` is of another state: its lineage is `{backup}` but this state's is `{state}`\nhint: pass `--force` to restore it anyway",
        path.display()
    )]
    OtherLineage {
        path: PathBuf,
        backup: String,
        state: String,
    },
    #[error("the state is already at {0}\nhint: `--to` names where to copy it, another place")]
    SamePlace(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Copies the state at `from` to `to` exactly (records, history, intents,
/// serial and lineage, transcripts, the local runtime's objects), both
/// locked meanwhile; `to` must be empty unless `force`. The copy is counted
/// against the original before this returns.
pub fn migrate(
    from: &Location,
    to: &Location,
    force: bool,
    options: &OpenOptions,
) -> Result<Copied, StateOpError> {
    if from == to {
        return Err(StateOpError::SamePlace(to.to_string()));
    }
    let source = StateStore::open_at(from, "state migrate", options)?;
    let target = StateStore::open_at(to, "state migrate", options)?;
    Ok(source.copy_to(&target, force)?)
}

/// Every record, by address.
pub fn list(state: &StateStore) -> Result<Vec<ResourceRecord>, StateError> {
    state.list()
}

/// The record of `address`.
pub fn show(state: &StateStore, address: &Address) -> Result<ResourceRecord, StateOpError> {
    state
        .get(address)?
        .ok_or_else(|| StateOpError::NotInState(address.clone()))
}

/// Forgets `address`; the record it had.
pub fn rm(state: &StateStore, address: &Address) -> Result<ResourceRecord, StateOpError> {
    state
        .remove(address)?
        .ok_or_else(|| StateOpError::NotInState(address.clone()))
}

/// A backup file, and what it holds or why it cannot be read.
pub type ReadBackup = (BackupFile, Result<Backup, StateError>);

/// The backups of the state in `dir`, oldest first, each read.
pub fn backups(dir: &Path) -> Result<Vec<ReadBackup>, StateOpError> {
    let files = backup::list(dir).map_err(|error| StateError::Io {
        dir: dir.join(crate::state::BACKUPS_DIR),
        error,
    })?;
    Ok(files
        .into_iter()
        .map(|f| {
            let read = backup::read(&f.path);
            (f, read)
        })
        .collect())
}

/// A restore ready to run: the backup, and the state it replaces.
pub struct PendingRestore {
    state: StateStore,
    pub file: BackupFile,
    pub backup: Backup,
    /// Why the state was refused on opening, if it was.
    pub refusal: Option<Refusal>,
    /// The state now (in memory only, when refused).
    pub current: Meta,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The state's lineage and (new) serial.
    pub meta: Meta,
    /// The backup of the state as it was, written first (a healthy state
    /// with records only).
    pub previous: Option<PathBuf>,
}

/// Opens the state in `dir` (even one refused on opening) and reads the
/// backup `name` (a file name in its backups, or a path), the newest when
/// `None`. A backup of another lineage is refused unless `force`, except
/// into a state that never held anything.
///
/// A database sled cannot open fails here with [`StateError::Open`]; after
/// [`set_aside_database`] the restore starts from an empty one.
pub fn prepare_restore(
    dir: &Path,
    options: &OpenOptions,
    name: Option<&str>,
    force: bool,
) -> Result<PendingRestore, StateOpError> {
    let (state, refusal) = StateStore::open_for_restore(dir, "state restore", options)?;
    let file = choose(dir, name)?;
    let backup = backup::read(&file.path)?;
    let current = state.meta();
    // The marker says which state this directory is, even when the database does not.
    let lineage = crate::state::read_marker(dir)
        .ok()
        .flatten()
        .map_or_else(|| current.lineage.clone(), |m| m.lineage);
    let never_written = refusal.is_none() && current.serial == 0;
    if !force && !never_written && backup.lineage != lineage {
        return Err(StateOpError::OtherLineage {
            path: file.path,
            backup: backup.lineage,
            state: lineage,
        });
    }
    Ok(PendingRestore {
        state,
        file,
        backup,
        refusal,
        current,
    })
}

/// Moves an unopenable database aside; where it went.
pub fn set_aside_database(dir: &Path) -> Result<PathBuf, StateOpError> {
    Ok(StateStore::set_aside_database(dir, "state restore")?)
}

impl PendingRestore {
    /// Backs up the state as it is (when it is healthy and was written to),
    /// then replaces it with the backup.
    pub fn execute(self) -> Result<Restored, StateOpError> {
        let previous = if self.refusal.is_none() && self.current.serial > 0 {
            self.state.backup(&HISTORY_TREES)?
        } else {
            None
        };
        let meta = self.state.restore(&self.backup)?;
        Ok(Restored { meta, previous })
    }
}

/// The backup `name` names, or the newest.
fn choose(dir: &Path, name: Option<&str>) -> Result<BackupFile, StateOpError> {
    let files = backup::list(dir).map_err(|error| StateError::Io {
        dir: dir.join(crate::state::BACKUPS_DIR),
        error,
    })?;
    let Some(name) = name else {
        return files
            .last()
            .cloned()
            .ok_or_else(|| StateOpError::NoBackups(dir.join(crate::state::BACKUPS_DIR)));
    };
    if let Some(f) = files
        .iter()
        .find(|f| f.name == name || f.name.strip_suffix(".json") == Some(name))
    {
        return Ok(f.clone());
    }
    let path = PathBuf::from(name);
    if path.is_file() {
        return Ok(BackupFile {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path,
        });
    }
    Err(StateOpError::NoSuchBackup {
        name: name.to_string(),
        known: files.into_iter().map(|f| f.name).collect(),
    })
}
