//! The marker: a small file beside the database that records the state's
//! lineage, serial and record counts, so that a database that lost its
//! content (deleted, truncated, replaced by an older copy) is noticed
//! instead of read as an empty state.
//!
//! It is written after the database is flushed, atomically (a temporary
//! file, fsync, rename): at any moment it describes the database as it was
//! at some write, never ahead of it (the store decides when: `mod.rs`). It
//! must not hold records themselves.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StateError;

pub const MARKER_FILE: &str = "marker.json";

const ABOUT: &str = "agentform state marker: the lineage and serial of the database in `db/`. \
                     agentform refuses a database that falls behind it. Do not edit; remove it \
                     only to start over with an empty state on purpose.";

/// What the database and the marker both record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Random, made when the state was created; a restore keeps it.
    pub lineage: String,
    /// Counts the writes that changed records, intents or the transcript index.
    pub serial: u64,
    /// Resource records at this serial.
    pub resources: u64,
    /// Transcript index entries at this serial.
    pub transcripts: u64,
}

impl Meta {
    pub(super) fn new() -> Self {
        Meta {
            lineage: new_lineage(),
            serial: 0,
            resources: 0,
            transcripts: 0,
        }
    }
}

/// A random 128-bit id in hex.
fn new_lineage() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[derive(Serialize, Deserialize)]
struct File {
    #[serde(default)]
    about: String,
    #[serde(flatten)]
    meta: Meta,
    #[serde(default)]
    updated_at: String,
}

/// The marker of the state in `dir`; `Ok(None)` when there is none, `Err`
/// with why it cannot be read.
pub(super) fn read(dir: &Path) -> Result<Option<Meta>, String> {
    let path = dir.join(MARKER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice::<File>(&bytes)
        .map(|f| Some(f.meta))
        .map_err(|e| e.to_string())
}

/// Replaces the marker atomically and durably.
pub(super) fn write(dir: &Path, meta: &Meta) -> Result<(), StateError> {
    let path = dir.join(MARKER_FILE);
    let text = serde_json::to_vec_pretty(&File {
        about: ABOUT.to_string(),
        meta: meta.clone(),
        updated_at: super::now(),
    })
    .unwrap_or_default();
    write_atomic(&path, &text)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames
/// it over `path`: a reader sees the old file or the new one, never a part.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |error| StateError::Write {
        path: path.to_path_buf(),
        error,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        let meta = Meta {
            serial: 7,
            resources: 3,
            transcripts: 2,
            ..Meta::new()
        };
        write(dir.path(), &meta).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(meta)));
        assert!(!dir.path().join("marker.json.tmp").exists());
    }

    #[test]
    fn lineages_differ() {
        assert_ne!(Meta::new().lineage, Meta::new().lineage);
        assert_eq!(Meta::new().lineage.len(), 32);
    }

    #[test]
    fn an_unreadable_marker_says_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER_FILE), "{not json").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
