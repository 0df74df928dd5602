//! The transcript index: one entry per run and session, pointing at the
//! transcript file under the state directory; and removing entries with
//! their files. Which entries to remove is the caller's choice.
//!
//! A PostgreSQL state keeps the contents too (so a teammate reads a CI
//! run's transcripts): the files written on this machine are moved into
//! the state with their entries, in the same commit.

use std::path::PathBuf;

use super::{
    encode, read_all, Backend, StateError, StateStore, TranscriptEntry, TRANSCRIPTS,
    TRANSCRIPT_FILES,
};

/// An entry's key: `RUN/session.NAME`, so the index lists oldest run first.
pub(super) fn key(entry: &TranscriptEntry) -> String {
    format!("{}/{}", entry.run_id, entry.session)
}

/// What removing transcripts did.
#[derive(Debug, Default)]
pub struct Removed {
    /// The entries removed from the index.
    pub entries: Vec<TranscriptEntry>,
    /// Files that could not be removed, with why; their entries are gone.
    pub problems: Vec<String>,
}

impl StateStore {
    /// Indexes a run's transcripts, durable on return.
    ///
    /// In a PostgreSQL state, the files the entries point at (written under
    /// [`dir`](Self::dir) on this machine) are stored with them, then removed.
    pub fn put_transcripts(&self, entries: &[TranscriptEntry]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let keeps_contents = matches!(self.backend, Backend::Postgres);
        let mut contents = Vec::new();
        if keeps_contents {
            for entry in entries {
                let path = self.dir.join(&entry.path);
                match std::fs::read(&path) {
                    Ok(bytes) => contents.push((entry.path.clone(), bytes, path)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(StateError::Write { path, error }),
                }
            }
        }
        self.change(|group, meta| {
            for entry in entries {
                let key = key(entry);
                let bytes = encode(&key, entry)?;
                if group.insert(TRANSCRIPTS, key.as_bytes(), &bytes)?.is_none() {
                    meta.transcripts += 1;
                }
            }
            for (path, bytes, _) in &contents {
                group.insert(TRANSCRIPT_FILES, path.as_bytes(), bytes)?;
            }
            Ok(())
        })?;
        for (_, _, file) in &contents {
            let _ = std::fs::remove_file(file);
            if let Some(run) = file.parent() {
                let _ = std::fs::remove_dir(run);
            }
        }
        Ok(())
    }

    /// The contents of a transcript: its file, or what the state keeps.
    pub fn transcript_contents(&self, entry: &TranscriptEntry) -> Result<Vec<u8>, String> {
        if matches!(self.backend, Backend::Postgres) {
            if let Some(bytes) = self
                .transcript_files
                .get(entry.path.as_bytes())
                .map_err(|e| e.to_string())?
            {
                return Ok(bytes);
            }
        }
        let path = self.dir.join(&entry.path);
        std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
    }

    /// Every transcript, oldest run first.
    pub fn transcripts(&self) -> Result<Vec<TranscriptEntry>, StateError> {
        read_all(&self.transcripts)
    }

    /// Removes `entries` from the index (durably), then their files, and
    /// the run directories left empty.
    pub fn remove_transcripts(&self, entries: &[TranscriptEntry]) -> Result<Removed, StateError> {
        if entries.is_empty() {
            return Ok(Removed::default());
        }
        let keeps_contents = matches!(self.backend, Backend::Postgres);
        let removed = self.change(|group, meta| {
            let mut removed = Vec::new();
            for entry in entries {
                if group.remove(TRANSCRIPTS, key(entry).as_bytes())?.is_some() {
                    meta.transcripts = meta.transcripts.saturating_sub(1);
                    removed.push(entry.clone());
                }
                if keeps_contents {
                    group.remove(TRANSCRIPT_FILES, entry.path.as_bytes())?;
                }
            }
            Ok(removed)
        })?;
        if keeps_contents {
            return Ok(Removed {
                entries: removed,
                problems: Vec::new(),
            });
        }
        let mut problems = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for entry in &removed {
            let path = self.dir.join(&entry.path);
            // Only files inside the state directory are the index's to remove.
            if !path.starts_with(&self.dir) || entry.path.split('/').any(|p| p == "..") {
                problems.push(format!(
                    "`{}` is outside the state directory; left in place",
                    entry.path
                ));
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("removing `{}`: {e}", path.display())),
            }
            if let Some(parent) = path.parent() {
                if !dirs.iter().any(|d| d == parent) {
                    dirs.push(parent.to_path_buf());
                }
            }
        }
        for dir in dirs {
            // Fails, as it should, while the run still has other transcripts.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(Removed {
            entries: removed,
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &std::path::Path, run: &str, session: &str) -> TranscriptEntry {
        let path = format!("transcripts/{run}/{session}.jsonl");
        let file = dir.join(&path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "{}\n").unwrap();
        TranscriptEntry {
            run_id: run.into(),
            session: format!("session.{session}").parse().unwrap(),
            path,
            passed: true,
            started_at: super::super::now(),
            events: 1,
            duration_ms: 1,
            session_id: None,
        }
    }

    #[test]
    fn removing_transcripts_removes_their_files_and_empty_run_directories() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path(), "test").unwrap();
        let a = entry(dir.path(), "r1", "a");
        let b = entry(dir.path(), "r1", "b");
        let c = entry(dir.path(), "r2", "a");
        s.put_transcripts(&[a.clone(), b.clone(), c.clone()])
            .unwrap();
        assert_eq!(s.meta().transcripts, 3);

        let removed = s.remove_transcripts(std::slice::from_ref(&a)).unwrap();
        assert_eq!(removed.entries, vec![a.clone()]);
        assert!(!dir.path().join(&a.path).exists());
        assert!(
            dir.path().join("transcripts/r1").is_dir(),
            "b is still there"
        );

        let removed = s.remove_transcripts(&[a, b, c]).unwrap();
        assert_eq!(removed.entries.len(), 2, "a was already gone");
        assert!(removed.problems.is_empty(), "{:?}", removed.problems);
        assert!(!dir.path().join("transcripts/r1").exists());
        assert!(!dir.path().join("transcripts/r2").exists());
        assert!(s.transcripts().unwrap().is_empty());
        assert_eq!(s.meta().transcripts, 0);
    }

    #[test]
    fn an_entry_pointing_outside_the_state_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("keep.txt");
        std::fs::write(&victim, "x").unwrap();
        let s = StateStore::open(dir.path(), "test").unwrap();
        let mut e = entry(dir.path(), "r1", "a");
        e.path = victim.display().to_string();
        s.put_transcripts(std::slice::from_ref(&e)).unwrap();
        let removed = s.remove_transcripts(&[e]).unwrap();
        assert_eq!(removed.problems.len(), 1);
        assert!(victim.exists());
    }
}
