//! Copying a state to another place (a directory to PostgreSQL, or back),
//! exactly: every tree entry by entry, the transcripts' contents, the
//! lineage and serial; then the copy is counted against the original.
//!
//! A target that holds anything is refused unless the caller forces it
//! (then it is emptied first). The original is never changed.

use std::collections::BTreeMap;

use super::db::{Db, DbError};
use super::{encode, StateError, StateStore, META, META_KEY, TRANSCRIPT_FILES};

/// Entries written per group: each group is one commit.
const ENTRIES_PER_GROUP: usize = 1000;

/// What a copy holds, counted in the target after copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Entries per tree (the transcripts' contents not among them).
    pub trees: BTreeMap<String, u64>,
    /// Transcripts whose contents were copied.
    pub transcripts: u64,
    /// Transcripts of the index whose contents were not found.
    pub missing: Vec<String>,
    pub serial: u64,
    pub lineage: String,
}

impl StateStore {
    /// Whether the state holds anything: an entry in any tree, or a serial.
    pub fn is_empty(&self) -> Result<bool, StateError> {
        if self.meta().serial > 0 {
            return Ok(false);
        }
        for name in self.db.tree_names()? {
            if name != META && !self.db.open_tree(&name)?.is_empty()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Copies this state into `to`, which must be empty unless `force`
    /// (then it is emptied); the counts of the copy, which match this
    /// state's, or an error that says which do not.
    pub fn copy_to(&self, to: &StateStore, force: bool) -> Result<Copied, StateError> {
        if !to.is_empty()? {
            if !force {
                return Err(StateError::NotEmpty {
                    location: to.location.to_string(),
                });
            }
            to.db.group(&mut |group| {
                for name in to.db.tree_names()? {
                    group.clear(&name)?;
                }
                Ok(())
            })?;
        }
        let mut expected = BTreeMap::new();
        for name in self.db.tree_names()? {
            if name == META || name == TRANSCRIPT_FILES {
                continue;
            }
            let copied = copy_tree(&*self.db, &*to.db, &name)?;
            expected.insert(name, copied);
        }
        // Ids handed out later in the copy come after every id used here.
        let next = self.db.generate_id()?;
        to.db.advance_ids(next)?;
        let (transcripts, missing) = self.copy_transcripts(to)?;
        // The counts as the trees hold them (a directory's marker is checked
        // against them when the copy is opened).
        let mut meta = self.meta();
        meta.resources = self.list()?.len() as u64;
        meta.transcripts = self.transcripts()?.len() as u64;
        let bytes = encode("state meta", &meta)?;
        to.db.group(&mut |g| g.put(META, META_KEY, &bytes))?;
        *to.lock_meta() = meta.clone();
        to.make_durable(meta.serial, true)?;
        to.db.flush()?;

        let mut trees = BTreeMap::new();
        for (name, count) in &expected {
            let found = to.db.open_tree(name)?.len()?;
            if found != *count {
                return Err(StateError::Copy(format!(
                    "the copy's tree `{name}` holds {found} entries, the original {count}"
                )));
            }
            trees.insert(name.clone(), found);
        }
        let indexed = to.transcripts()?.len() as u64;
        if indexed != meta.transcripts || to.list()?.len() as u64 != meta.resources {
            return Err(StateError::Copy(format!(
                "the copy holds {} resources and {indexed} transcripts, the original {} and {}",
                to.list()?.len(),
                meta.resources,
                meta.transcripts
            )));
        }
        Ok(Copied {
            trees,
            transcripts,
            missing,
            serial: meta.serial,
            lineage: meta.lineage,
        })
    }

    /// Each indexed transcript's contents, where `to` keeps them (files
    /// under its directory, or its tree); how many, and which were missing.
    fn copy_transcripts(&self, to: &StateStore) -> Result<(u64, Vec<String>), StateError> {
        let mut copied = 0;
        let mut missing = Vec::new();
        for entry in self.transcripts()? {
            let bytes = match self.transcript_contents(&entry) {
                Ok(bytes) => bytes,
                Err(_) => {
                    missing.push(entry.path.clone());
                    continue;
                }
            };
            if to.is_postgres() {
                to.db
                    .group(&mut |g| g.put(TRANSCRIPT_FILES, entry.path.as_bytes(), &bytes))?;
            } else {
                let path = to.dir.join(&entry.path);
                if !path.starts_with(&to.dir) || entry.path.split('/').any(|p| p == "..") {
                    missing.push(entry.path.clone());
                    continue;
                }
                let write = |path: &std::path::Path| {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(path, &bytes)
                };
                write(&path).map_err(|error| StateError::Write {
                    path: path.clone(),
                    error,
                })?;
            }
            copied += 1;
        }
        Ok((copied, missing))
    }
}

/// Copies one tree, a group at a time; how many entries it holds.
fn copy_tree(from: &dyn Db, to: &dyn Db, name: &str) -> Result<u64, StateError> {
    let tree = from.open_tree(name)?;
    let mut count = 0u64;
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(ENTRIES_PER_GROUP);
    let write = |batch: &mut Vec<(Vec<u8>, Vec<u8>)>| -> Result<(), DbError> {
        to.group(&mut |g| {
            for (k, v) in batch.iter() {
                g.put(name, k, v)?;
            }
            Ok(())
        })?;
        batch.clear();
        Ok(())
    };
    for item in tree.iter() {
        batch.push(item?);
        count += 1;
        if batch.len() == ENTRIES_PER_GROUP {
            write(&mut batch)?;
        }
    }
    if !batch.is_empty() {
        write(&mut batch)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{OpenOptions, ResourceRecord, TranscriptEntry};

    fn record(addr: &str) -> ResourceRecord {
        serde_json::from_value(serde_json::json!({
            "address": addr, "provider": "local", "remote_id": "agent_1", "version": 1,
            "digest": "d", "config": {"name": "x"}, "sensitive": {}, "outputs": {},
            "depends_on": [], "created_at": "t", "updated_at": "t"
        }))
        .unwrap()
    }

    #[test]
    fn a_copy_holds_everything_and_a_full_target_needs_force() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let options = OpenOptions::default();
        let from = StateStore::open_with(a.path(), "test", &options).unwrap();
        from.put(&record("agent.a")).unwrap();
        from.put(&record("agent.b")).unwrap();
        std::fs::create_dir_all(a.path().join("transcripts/r1")).unwrap();
        std::fs::write(a.path().join("transcripts/r1/chat.jsonl"), "{}\n").unwrap();
        let entry = TranscriptEntry {
            run_id: "r1".into(),
            session: "session.chat".parse().unwrap(),
            path: "transcripts/r1/chat.jsonl".into(),
            passed: true,
            started_at: "t".into(),
            events: 1,
            duration_ms: 1,
            session_id: None,
        };
        from.put_transcripts(std::slice::from_ref(&entry)).unwrap();
        from.db()
            .open_tree("local.agents")
            .unwrap()
            .insert(b"agent_1", b"{}")
            .unwrap();
        let to = StateStore::open_with(b.path(), "test", &options).unwrap();
        assert!(to.is_empty().unwrap());
        let copied = from.copy_to(&to, false).unwrap();
        assert_eq!((copied.transcripts, copied.serial), (1, from.meta().serial));
        assert_eq!(copied.trees.get("local.agents"), Some(&1));
        assert_eq!(to.list().unwrap(), from.list().unwrap());
        assert_eq!(to.transcript_contents(&entry).unwrap(), b"{}\n");
        assert_eq!(to.meta().lineage, from.meta().lineage);
        assert!(matches!(
            from.copy_to(&to, false),
            Err(StateError::NotEmpty { .. })
        ));
        from.copy_to(&to, true).unwrap();
        drop(to);
        // The copy opens: its marker agrees with its database.
        let reopened = StateStore::open_with(b.path(), "test", &options).unwrap();
        assert_eq!(reopened.list().unwrap().len(), 2);
    }
}
