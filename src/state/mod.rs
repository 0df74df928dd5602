//! The state store: records, their history, intents, the serial and
//! lineage, and the transcript index, kept in a [`Db`] — a sled database
//! in a state directory (the default), or tables in PostgreSQL
//! (`postgres/`, for a team and its CI) — and locked for one command at
//! a time (a lock file, or an advisory lock).
//!
//! Every write that changes records, intents or the transcript index raises
//! the state's serial, in the database and (sled) in the marker beside it
//! (`marker.rs`); on opening, the two are compared (`integrity.rs`) so that
//! a database that lost its content is refused rather than read as empty.
//! Opening is `open.rs`, the storage trait `crate::db`, backups `backup.rs`, the
//! transcript index `transcripts.rs`, copying a state `migrate.rs`, errors
//! `error.rs`.
//!
//! It must not know manifest syntax nor hold operations (those are `ops`).

pub mod backup;
mod error;
mod integrity;
mod location;
mod lock;
mod marker;
pub mod migrate;
mod open;
pub mod postgres;
mod transcripts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::db;
pub use crate::db::flush;
use crate::graph::Address;
pub use backup::{Backup, BackupFile, BACKUPS_DIR, DEFAULT_KEEP as DEFAULT_BACKUPS};
use db::{Db, Group, Tree};
pub use error::StateError;
pub use integrity::Refusal;
pub use location::Location;
pub use lock::StateLock;
pub use marker::{Meta, MARKER_FILE};
pub use open::OpenOptions;

/// The marker of the state in `dir`: absent, or why it cannot be read.
pub fn read_marker(dir: &Path) -> Result<Option<Meta>, String> {
    marker::read(dir)
}
pub use transcripts::Removed;

const RESOURCES: &str = "state.resources";
const INTENTS: &str = "state.intents";
const TRANSCRIPTS: &str = "state.transcripts";
/// The contents of transcripts, by path, where the state keeps them
/// (PostgreSQL); a directory's are files beside it.
const TRANSCRIPT_FILES: &str = "state.transcript_files";
/// The serial and lineage, under [`META_KEY`].
const META: &str = "state.meta";
const META_KEY: &[u8] = b"meta";
/// The trees this module owns; backups copy them as records.
const OWN_TREES: [&str; 5] = [RESOURCES, INTENTS, TRANSCRIPTS, META, TRANSCRIPT_FILES];
/// The database's directory inside the state directory.
pub const DB_DIR: &str = "db";
/// Where a PostgreSQL state keeps what stays on the machine (session
/// workspaces, transcripts being written), in the working directory.
pub const LOCAL_DIR: &str = ".agentform";

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

/// Where a run's transcript of one session is, and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    pub run_id: String,
    pub session: Address,
    /// Relative to the state directory (a PostgreSQL state: the key of its
    /// contents in the state).
    pub path: String,
    pub passed: bool,
    pub started_at: String,
    pub events: usize,
    pub duration_ms: u64,
    /// The session the run drove (the provider's id); absent in entries
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

pub struct StateStore {
    location: Location,
    /// The state directory; for PostgreSQL, [`LOCAL_DIR`]: what stays on
    /// this machine.
    dir: PathBuf,
    db: Arc<dyn Db>,
    resources: Tree,
    intents: Tree,
    transcripts: Tree,
    transcript_files: Tree,
    /// The serial, lineage and counts as last written; held while a change
    /// is written (not flushed), so serials follow the order of the writes.
    meta: Mutex<Meta>,
    /// What is durable, in the database and in the marker; held while
    /// flushing, so that one flush serves every change made before it.
    durable: Mutex<Durable>,
    /// Backups kept by [`StateStore::backup`].
    backups: usize,
    backend: Backend,
}

/// What differs between the backends beyond the [`Db`].
enum Backend {
    /// A marker beside the database, and the directory's lock file.
    Sled { _lock: StateLock },
    /// Every change is a commit that waits for the WAL; the lock is the
    /// connection's.
    Postgres,
}

/// How far the database and the marker are durable.
struct Durable {
    /// The meta as of the last finished flush.
    flushed: Meta,
    /// The serial in `marker.json`.
    marked: u64,
    marked_at: Option<Instant>,
}

/// How often a busy store brings its marker up to date.
const MARKER_EVERY: Duration = Duration::from_millis(500);

impl Drop for StateStore {
    /// Leaves the marker at the last serial: a command's last change is
    /// recorded outside the database before the lock is released.
    fn drop(&mut self) {
        let serial = self.meta().serial;
        if let Err(e) = self.make_durable(serial, true) {
            tracing::warn!("bringing the state marker up to date: {e}");
        }
    }
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("location", &self.location)
            .finish()
    }
}

impl StateStore {
    /// The state directory; for a PostgreSQL state, the directory of what
    /// stays on this machine (session workspaces).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the state is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether the state is in PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres)
    }

    /// The database, shared with the local runtime's trees.
    pub fn db(&self) -> &Arc<dyn Db> {
        &self.db
    }

    /// The lineage, serial and counts as last written.
    pub fn meta(&self) -> Meta {
        self.lock_meta().clone()
    }

    /// How many backups [`backup`](Self::backup) keeps.
    pub fn backups_kept(&self) -> usize {
        self.backups
    }

    fn lock_meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a change under the next serial: `write` changes the trees
    /// through the group and the counts in the meta it is given (as it
    /// goes, so a write that fails halfway is still counted where the
    /// backend keeps what was written); the serial is raised and written
    /// in the same group, then made durable.
    ///
    /// Only the in-memory part and the sending of the group hold the
    /// meta's lock: concurrent changes share a flush and a marker write
    /// (sled), or have their commits in flight together (PostgreSQL), as a
    /// group commit.
    fn change<T>(
        &self,
        write: impl FnMut(&dyn Group, &mut Meta) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        self.change_then(When::Now, write)
    }

    fn change_then<T>(
        &self,
        durable: When,
        mut write: impl FnMut(&dyn Group, &mut Meta) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let (out, serial, committing) = {
            let mut meta = self.lock_meta();
            let mut next = meta.clone();
            let mut out = None;
            let mut recorded = None;
            let grouped = self.db.send_group(&mut |group| {
                let mut attempt = meta.clone();
                let written = write(group, &mut attempt);
                attempt.serial += 1;
                let bytes =
                    encode("state meta", &attempt).map_err(|e| db::DbError(e.to_string()))?;
                group.put(META, META_KEY, &bytes)?;
                recorded = Some(attempt);
                out = Some(written);
                Ok(())
            });
            // A backend that keeps a group cut short (sled) counts it; one
            // that drops it whole keeps the meta as it was.
            if let Some(attempt) = recorded {
                if grouped.is_ok() || !self.db.atomic_groups() {
                    next = attempt;
                }
            }
            let serial = next.serial;
            *meta = next;
            match (grouped, out) {
                (Ok(committing), Some(out)) => (out, serial, committing),
                (Err(e), _) => return Err(e.into()),
                (Ok(_), None) => return Err(StateError::Db("the change was not written".into())),
            }
        };
        if durable == When::WithLaterWrites && self.db.one_log() {
            committing.wait_committed()?;
            return out;
        }
        committing.wait()?;
        let out = out?;
        self.make_durable(serial, false)?;
        Ok(out)
    }

    /// Makes the change at `serial` durable: unless a flush that covered it
    /// has finished meanwhile, flushes everything written so far. Then the
    /// marker is brought up to what is flushed — never ahead of it — at
    /// most every [`MARKER_EVERY`] (and when the store is dropped, or
    /// whenever `now`): a marker behind the database is accepted, and an
    /// fsync'd file per change would double the cost of every write.
    ///
    /// PostgreSQL commits every change and makes it durable before the
    /// change returns, but for those committed to become durable with the
    /// writes after them ([`When::WithLaterWrites`]): `now` flushes those too.
    fn make_durable(&self, serial: u64, now: bool) -> Result<(), StateError> {
        if !matches!(self.backend, Backend::Sled { .. }) {
            if now {
                self.db.flush()?;
            }
            return Ok(());
        }
        let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        if durable.flushed.serial < serial {
            let covered = self.meta();
            self.db.flush()?;
            durable.flushed = covered;
        }
        let due = durable
            .marked_at
            .is_none_or(|at| at.elapsed() >= MARKER_EVERY);
        if durable.marked < durable.flushed.serial && (now || due) {
            marker::write(&self.dir, &durable.flushed)?;
            durable.marked = durable.flushed.serial;
            durable.marked_at = Some(Instant::now());
        }
        Ok(())
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
        self.put_then(record, When::Now)
    }

    /// [`put`](Self::put) for the record of a create whose intent was put
    /// with [`put_intent_before_own_writes`](Self::put_intent_before_own_writes)
    /// and whose objects are durable: where the database is one log, the
    /// record is committed now and made durable by the next flush (the next
    /// action's, or the command's last). Until then a crash of the server
    /// can lose only the record, and the durable intent leads the next
    /// apply to adopt the object instead of creating another.
    pub fn put_after_own_writes(&self, record: &ResourceRecord) -> Result<(), StateError> {
        self.put_then(record, When::WithLaterWrites)
    }

    fn put_then(&self, record: &ResourceRecord, durable: When) -> Result<(), StateError> {
        let key = record.address.to_string();
        let bytes = encode(&key, record)?;
        self.change_then(durable, |group, meta| {
            if group.insert(RESOURCES, key.as_bytes(), &bytes)?.is_none() {
                meta.resources += 1;
            }
            group.remove(INTENTS, key.as_bytes())?;
            Ok(())
        })
    }

    pub fn remove(&self, addr: &Address) -> Result<Option<ResourceRecord>, StateError> {
        let key = addr.to_string();
        let old = self.change(|group, meta| {
            let old = group.remove(RESOURCES, key.as_bytes())?;
            if old.is_some() {
                meta.resources = meta.resources.saturating_sub(1);
            }
            group.remove(INTENTS, key.as_bytes())?;
            Ok(old)
        })?;
        match old {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Records that `intent.address` is being created, durable before the
    /// call returns: before any effect outside the state's database.
    pub fn put_intent(&self, intent: &Intent) -> Result<(), StateError> {
        self.put_intent_then(intent, When::Now)
    }

    /// [`put_intent`](Self::put_intent) for a create whose every effect is
    /// a write to this state's own database, made after the call and made
    /// durable before it is reported (the local runtime's objects). Where
    /// the database is one log, those writes are durable only with the
    /// intent, so the intent waits for their flush instead of one of its
    /// own; elsewhere it is flushed as usual.
    pub fn put_intent_before_own_writes(&self, intent: &Intent) -> Result<(), StateError> {
        self.put_intent_then(intent, When::WithLaterWrites)
    }

    fn put_intent_then(&self, intent: &Intent, durable: When) -> Result<(), StateError> {
        let key = intent.address.to_string();
        let bytes = encode(&key, intent)?;
        self.change_then(durable, |group, _| {
            group.insert(INTENTS, key.as_bytes(), &bytes)?;
            Ok(())
        })
    }

    pub fn intent(&self, addr: &Address) -> Result<Option<Intent>, StateError> {
        let key = addr.to_string();
        match self.intents.get(key.as_bytes())? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn intents(&self) -> Result<Vec<Intent>, StateError> {
        read_all(&self.intents)
    }

    pub fn clear_intent(&self, addr: &Address) -> Result<(), StateError> {
        let key = addr.to_string();
        self.change(|group, _| {
            group.remove(INTENTS, key.as_bytes())?;
            Ok(())
        })
    }
}

/// When a change must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Before the call returns.
    Now,
    /// With the writes that follow it, when the database is one log.
    WithLaterWrites,
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
fn read_all<T: serde::de::DeserializeOwned>(tree: &Tree) -> Result<Vec<T>, StateError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (key, bytes) = item?;
        out.push(decode(&String::from_utf8_lossy(&key), &bytes)?);
    }
    Ok(out)
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

    #[test]
    fn every_change_raises_the_serial_in_the_database_and_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "test").unwrap();
        let lineage = s.meta().lineage;
        assert_eq!(s.meta().serial, 0);
        s.put(&record("agent.a")).unwrap();
        // The first change reaches the marker at once; later ones within
        // half a second of it only in the database, until the store closes.
        assert_eq!(read_marker(dir.path()).unwrap().unwrap().serial, 1);
        s.put(&record("agent.a")).unwrap();
        s.put(&record("agent.b")).unwrap();
        s.remove(&"agent.b".parse().unwrap()).unwrap();
        let meta = s.meta();
        assert_eq!((meta.serial, meta.resources), (4, 1));
        assert_eq!(meta.lineage, lineage);
        assert!(read_marker(dir.path()).unwrap().unwrap().serial <= 4);
        drop(s);
        assert_eq!(read_marker(dir.path()), Ok(Some(meta.clone())));
        assert_eq!(reopen(dir.path()).meta(), meta);
    }

    /// Opens a state that was just closed: sled's I/O threads may hold its
    /// file lock a moment after the last handle is dropped.
    fn reopen(dir: &Path) -> StateStore {
        for _ in 0..500 {
            match StateStore::open(dir, "test") {
                Err(StateError::Open { reason, .. })
                    if reason.contains("could not acquire lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                other => return other.unwrap(),
            }
        }
        panic!("the state at {} stays locked", dir.display())
    }

    #[test]
    fn a_state_whose_database_was_lost_is_refused_until_restored() {
        let dir = tempfile::tempdir().unwrap();
        let options = OpenOptions {
            backups: 2,
            ..Default::default()
        };
        {
            let s = StateStore::open_with(dir.path(), "test", &options).unwrap();
            s.put(&record("agent.a")).unwrap();
            s.db()
                .open_tree("local.agents")
                .unwrap()
                .insert(b"agent_1", &b"{\"id\":1}"[..])
                .unwrap();
            s.db()
                .open_tree("local.events")
                .unwrap()
                .insert(b"e", &b"{}"[..])
                .unwrap();
            assert!(s.backup(&["local.events"]).unwrap().is_some());
            s.put(&record("agent.b")).unwrap();
        }
        std::fs::remove_dir_all(dir.path().join(DB_DIR)).unwrap();
        let err = StateStore::open(dir.path(), "test").unwrap_err();
        match &err {
            StateError::Refused { refusal, .. } => {
                assert!(matches!(**refusal, Refusal::Lost { .. }), "{err}")
            }
            other => panic!("not refused: {other}"),
        }

        let (s, refusal) = StateStore::open_for_restore(dir.path(), "test", &options).unwrap();
        assert!(refusal.is_some());
        let file = backup::list(dir.path()).unwrap().pop().unwrap();
        let meta = s.restore(&backup::read(&file.path).unwrap()).unwrap();
        assert_eq!(meta.serial, 3, "above the 2 writes the marker counted");
        assert_eq!(s.list().unwrap().len(), 1);
        let agent = s
            .db()
            .open_tree("local.agents")
            .unwrap()
            .get(b"agent_1")
            .unwrap();
        assert_eq!(agent.unwrap(), &b"{\"id\":1}"[..]);
        assert!(
            s.db()
                .open_tree("local.events")
                .unwrap()
                .is_empty()
                .unwrap(),
            "history is not backed up"
        );
        drop(s);
        assert_eq!(reopen(dir.path()).meta(), meta);
    }

    #[test]
    fn backups_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open_with(
            dir.path(),
            "test",
            &OpenOptions {
                backups: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.backup(&[]).unwrap(), None, "nothing to back up yet");
        let mut written = Vec::new();
        for name in ["agent.a", "agent.b", "agent.c"] {
            s.put(&record(name)).unwrap();
            written.push(s.backup(&[]).unwrap().unwrap());
        }
        let kept: Vec<_> = backup::list(dir.path())
            .unwrap()
            .into_iter()
            .map(|b| b.path)
            .collect();
        assert_eq!(kept, written[1..]);
        let newest = backup::read(&written[2]).unwrap();
        assert_eq!((newest.serial, newest.resources.len()), (3, 3));
        let other = tempfile::tempdir().unwrap();
        let off = StateStore::open_with(
            other.path(),
            "t",
            &OpenOptions {
                backups: 0,
                ..Default::default()
            },
        )
        .unwrap();
        off.put(&record("agent.a")).unwrap();
        assert_eq!(off.backup(&[]).unwrap(), None);
    }

    #[test]
    fn a_sled_error_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_DIR), "not a directory").unwrap();
        let err = StateStore::open(dir.path(), "test").unwrap_err();
        let chain = format!("{:#}", anyhow::Error::new(err));
        assert_eq!(chain.matches("Not a directory").count(), 1, "{chain}");
        assert!(chain.contains("cannot open the state database"), "{chain}");
        assert!(chain.contains("hint: there are no backups"), "{chain}");
    }
}
