//! The state store: one sled database per state directory, guarded by a lock
//! file so that a second agentform process fails at once instead of corrupting it.
//!
//! It owns records, their history, intents, the lock and the transcript
//! index; it must not know manifest syntax nor hold operations (those are
//! `ops`).

mod lock;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph::Address;
pub use lock::StateLock;

const RESOURCES: &str = "state.resources";
const INTENTS: &str = "state.intents";
const TRANSCRIPTS: &str = "state.transcripts";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state at `{dir}` is locked by pid {pid} ({holder}); wait for it to finish, or stop it"
    )]
    Locked {
        dir: PathBuf,
        pid: String,
        holder: String,
    },
    #[error("cannot open state at `{dir}`: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database error: {0}")]
    Db(#[from] sled::Error),
    #[error("state record `{key}` is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

/// What agentform knows about one deployed resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub address: Address,
    pub provider: String,
    pub remote_id: String,
    /// Agents only: the version deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// sha256 of the desired configuration that was applied.
    pub digest: String,
    /// The desired configuration that was applied; sensitive values replaced.
    pub config: Value,
    /// JSON pointer → sha256 of each sensitive value, to tell when one changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, Value>,
    #[serde(default)]
    pub depends_on: Vec<Address>,
    /// The object's `updated_at` when agentform last wrote it, to notice drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_updated_at: Option<String>,
    /// Where a remote provider's object lives (its API base URL), so later
    /// commands reach the same place or refuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub digest: String,
}

/// A create that was started: if the process dies before the record is
/// written, the next apply looks for the object by its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub address: Address,
    pub provider: String,
    pub started_at: String,
    pub pid: u32,
}

pub struct StateStore {
    dir: PathBuf,
    db: sled::Db,
    resources: sled::Tree,
    intents: sled::Tree,
    transcripts: sled::Tree,
    _lock: StateLock,
}

/// Where a run's transcript of one session is, and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    pub run_id: String,
    pub session: Address,
    /// Relative to the state directory.
    pub path: String,
    pub passed: bool,
    pub started_at: String,
    pub events: usize,
    pub duration_ms: u64,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl StateStore {
    /// Opens (creating if needed) the state in `dir`, holding its lock until dropped.
    pub fn open(dir: &Path, command: &str) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
        let lock = StateLock::acquire(dir, command)?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .flush_every_ms(None)
            // sled's default cache is 1 GiB; the state and the local runtime
            // need far less, and a CI machine has other work.
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        let resources = db.open_tree(RESOURCES)?;
        let intents = db.open_tree(INTENTS)?;
        let transcripts = db.open_tree(TRANSCRIPTS)?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
            db,
            resources,
            intents,
            transcripts,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database, shared with the local runtime's trees.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn get(&self, addr: &Address) -> Result<Option<ResourceRecord>, StateError> {
        let key = addr.to_string();
        match self.resources.get(key.as_bytes())? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every record, sorted by address.
    pub fn list(&self) -> Result<Vec<ResourceRecord>, StateError> {
        let mut out: Vec<ResourceRecord> = read_all(&self.resources)?;
        out.sort_by(|a: &ResourceRecord, b| a.address.cmp(&b.address));
        Ok(out)
    }

    /// Writes a record and makes it durable before returning.
    pub fn put(&self, record: &ResourceRecord) -> Result<(), StateError> {
        let key = record.address.to_string();
        let bytes = encode(&key, record)?;
        self.resources.insert(key.as_bytes(), bytes)?;
        self.intents.remove(key.as_bytes())?;
        flush(&self.db)?;
        Ok(())
    }

    pub fn remove(&self, addr: &Address) -> Result<Option<ResourceRecord>, StateError> {
        let key = addr.to_string();
        let old = self.resources.remove(key.as_bytes())?;
        self.intents.remove(key.as_bytes())?;
        flush(&self.db)?;
        match old {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn put_intent(&self, intent: &Intent) -> Result<(), StateError> {
        let key = intent.address.to_string();
        let bytes = encode(&key, intent)?;
        self.intents.insert(key.as_bytes(), bytes)?;
        flush(&self.db)?;
        Ok(())
    }

    pub fn intent(&self, addr: &Address) -> Result<Option<Intent>, StateError> {
        let key = addr.to_string();
        match self.intents.get(key.as_bytes())? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        key,
                        message: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    pub fn intents(&self) -> Result<Vec<Intent>, StateError> {
        read_all(&self.intents)
    }

    pub fn clear_intent(&self, addr: &Address) -> Result<(), StateError> {
        self.intents.remove(addr.to_string().as_bytes())?;
        flush(&self.db)?;
        Ok(())
    }
}

impl StateStore {
    /// Indexes a run's transcripts, durable on return.
    pub fn put_transcripts(&self, entries: &[TranscriptEntry]) -> Result<(), StateError> {
        for entry in entries {
            let key = format!("{}/{}", entry.run_id, entry.session);
            let bytes = encode(&key, entry)?;
            self.transcripts.insert(key.as_bytes(), bytes)?;
        }
        flush(&self.db)?;
        Ok(())
    }

    /// Every transcript, oldest run first.
    pub fn transcripts(&self) -> Result<Vec<TranscriptEntry>, StateError> {
        read_all(&self.transcripts)
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(value).map_err(|e| StateError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// Every value of a tree, in key order.
fn read_all<T: serde::de::DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, StateError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (key, bytes) = item?;
        out.push(decode(&String::from_utf8_lossy(&key), &bytes)?);
    }
    Ok(out)
}

/// Flushes `db`, one flush at a time in the whole process: sled 0.34's
/// flushes can hang for good when several run at once (spacejam/sled#1308).
/// Every flush of a sled database in agentform goes through here.
pub fn flush(db: &sled::Db) -> sled::Result<usize> {
    static FLUSH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = FLUSH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    db.flush()
}

/// The current time as RFC 3339 UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(addr: &str) -> ResourceRecord {
        ResourceRecord {
            address: addr.parse().unwrap(),
            provider: "local".into(),
            remote_id: "agent_1".into(),
            version: Some(1),
            digest: "d".into(),
            config: serde_json::json!({"name": "x"}),
            sensitive: BTreeMap::new(),
            outputs: BTreeMap::new(),
            depends_on: vec![],
            remote_updated_at: None,
            endpoint: None,
            created_at: now(),
            updated_at: now(),
            history: vec![],
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(dir.path(), "test").unwrap();
            s.put(&record("agent.a")).unwrap();
            s.put(&record("agent.b")).unwrap();
            s.remove(&"agent.b".parse().unwrap()).unwrap();
        }
        let s = StateStore::open(dir.path(), "test").unwrap();
        let all = s.list().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].address.to_string(), "agent.a");
    }

    #[test]
    fn a_second_open_is_refused_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateStore::open(dir.path(), "apply").unwrap();
        let err = StateStore::open(dir.path(), "plan").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("locked by pid"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
    }

    #[test]
    fn writing_a_record_clears_its_intent() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "test").unwrap();
        let addr: Address = "agent.a".parse().unwrap();
        s.put_intent(&Intent {
            address: addr.clone(),
            provider: "local".into(),
            started_at: now(),
            pid: 1,
        })
        .unwrap();
        assert!(s.intent(&addr).unwrap().is_some());
        s.put(&record("agent.a")).unwrap();
        assert!(s.intent(&addr).unwrap().is_none());
    }
}
