//! Backups of a state's records as JSON files under `STATE/backups/`,
//! written before a change, the newest N kept, and brought back by
//! `agentform state restore`.
//!
//! A backup holds the small things: resource records, intents, the
//! transcript index, and the other trees of the database the caller does
//! not exclude (the local runtime's objects), copied verbatim. It must not
//! hold the local runtime's event history, nor interpret the trees it copies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::db::Group;
use super::marker::{self, Meta};
use super::{Intent, ResourceRecord, StateError, StateStore, TranscriptEntry, META, META_KEY};

pub const BACKUPS_DIR: &str = "backups";
/// Backups kept unless told otherwise.
pub const DEFAULT_KEEP: usize = 10;

const FORMAT: u32 = 1;
/// sled's own tree, always present and unused.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

/// One backup file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub format: u32,
    pub lineage: String,
    pub serial: u64,
    pub created_at: String,
    pub resources: Vec<ResourceRecord>,
    pub intents: Vec<Intent>,
    pub transcripts: Vec<TranscriptEntry>,
    /// Other trees of the database, by name, entry by entry.
    #[serde(default)]
    pub trees: BTreeMap<String, Vec<TreeEntry>>,
}

/// One entry of a copied tree: the key in hex, the value as the JSON it
/// holds (or in hex when it is not JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeEntry {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
}

/// A backup file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    pub path: PathBuf,
    /// The file name, e.g. `20261125T101500.123Z-7.json`.
    pub name: String,
}

/// The backups of the state in `dir`, oldest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<BackupFile>> {
    let entries = match std::fs::read_dir(dir.join(BACKUPS_DIR)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".json") && path.is_file() {
            out.push(BackupFile {
                name: name.to_string(),
                path: path.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads a backup file.
pub fn read(path: &Path) -> Result<Backup, StateError> {
    let bad = |message: String| StateError::BadBackup {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let backup: Backup = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if backup.format != FORMAT {
        return Err(bad(format!(
            "format {} is not the format {FORMAT} this agentform writes",
            backup.format
        )));
    }
    Ok(backup)
}

impl StateStore {
    /// Writes a backup of the records and every tree not in `skip`, then
    /// removes all but the newest [`backups`](StateStore::backups_kept); the
    /// file written, or `None` when backups are turned off or the state was
    /// never written to (there is nothing to bring back).
    pub fn backup(&self, skip: &[&str]) -> Result<Option<PathBuf>, StateError> {
        let meta = self.meta();
        if self.backups == 0 || meta.serial == 0 {
            return Ok(None);
        }
        let backup = Backup {
            format: FORMAT,
            lineage: meta.lineage.clone(),
            serial: meta.serial,
            created_at: super::now(),
            resources: self.list()?,
            intents: self.intents()?,
            transcripts: self.transcripts()?,
            trees: self.copy_trees(skip)?,
        };
        let dir = self.dir.join(BACKUPS_DIR);
        std::fs::create_dir_all(&dir).map_err(|error| StateError::Write {
            path: dir.clone(),
            error,
        })?;
        let path = unused(&dir, &file_stem(meta.serial));
        let text = serde_json::to_vec_pretty(&backup).map_err(|e| StateError::Corrupt {
            key: "backup".into(),
            message: e.to_string(),
        })?;
        marker::write_atomic(&path, &text)?;
        self.rotate()?;
        Ok(Some(path))
    }

    /// Removes the oldest backups beyond the number kept.
    fn rotate(&self) -> Result<(), StateError> {
        let files = list(&self.dir).map_err(|error| StateError::Write {
            path: self.dir.join(BACKUPS_DIR),
            error,
        })?;
        let excess = files.len().saturating_sub(self.backups);
        for old in &files[..excess] {
            std::fs::remove_file(&old.path).map_err(|error| StateError::Write {
                path: old.path.clone(),
                error,
            })?;
        }
        Ok(())
    }

    /// Every tree of the database but the state's own, sled's and `skip`.
    fn copy_trees(&self, skip: &[&str]) -> Result<BTreeMap<String, Vec<TreeEntry>>, StateError> {
        let mut out = BTreeMap::new();
        for name in self.db.tree_names()? {
            let text = name.as_str();
            if name.as_bytes() == SLED_DEFAULT_TREE
                || super::OWN_TREES.contains(&text)
                || skip.contains(&text)
            {
                continue;
            }
            let tree = self.db.open_tree(&name)?;
            let mut entries = Vec::new();
            for item in tree.iter() {
                let (key, value) = item?;
                let json = serde_json::from_slice::<Value>(&value).ok();
                entries.push(TreeEntry {
                    key: hex(&key),
                    hex: json.is_none().then(|| hex(&value)),
                    json,
                });
            }
            out.insert(text.to_string(), entries);
        }
        Ok(out)
    }

    /// Replaces the records (and the trees the backup holds) with the
    /// backup's, under the backup's lineage at a serial above every serial
    /// the state has had; the new serial.
    pub fn restore(&self, backup: &Backup) -> Result<Meta, StateError> {
        let restored = {
            let mut meta = self.lock_meta();
            let on_disk = marker::read(&self.dir)
                .ok()
                .flatten()
                .map_or(0, |m| m.serial);
            let count = |keys: Vec<String>| {
                keys.into_iter()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len() as u64
            };
            let next = Meta {
                lineage: backup.lineage.clone(),
                serial: meta.serial.max(on_disk).max(backup.serial) + 1,
                resources: count(
                    backup
                        .resources
                        .iter()
                        .map(|r| r.address.to_string())
                        .collect(),
                ),
                transcripts: count(
                    backup
                        .transcripts
                        .iter()
                        .map(super::transcripts::key)
                        .collect(),
                ),
            };
            let bytes = super::encode("state meta", &next)?;
            let mut failed = None;
            self.db
                .group(&mut |group| {
                    if let Err(e) = self.replace_trees(group, backup) {
                        failed = Some(e);
                        return Err(super::db::DbError("the backup was not restored".into()));
                    }
                    group.put(META, META_KEY, &bytes)
                })
                .map_err(|e| failed.take().unwrap_or(e.into()))?;
            *meta = next.clone();
            next
        };
        self.make_durable(restored.serial, true)?;
        Ok(restored)
    }

    /// The records and the copied trees, as the backup holds them.
    fn replace_trees(&self, group: &dyn Group, backup: &Backup) -> Result<(), StateError> {
        group.clear(super::RESOURCES)?;
        for r in &backup.resources {
            let key = r.address.to_string();
            group.put(super::RESOURCES, key.as_bytes(), &super::encode(&key, r)?)?;
        }
        group.clear(super::INTENTS)?;
        for i in &backup.intents {
            let key = i.address.to_string();
            group.put(super::INTENTS, key.as_bytes(), &super::encode(&key, i)?)?;
        }
        group.clear(super::TRANSCRIPTS)?;
        for t in &backup.transcripts {
            let key = super::transcripts::key(t);
            group.put(super::TRANSCRIPTS, key.as_bytes(), &super::encode(&key, t)?)?;
        }
        for (name, entries) in &backup.trees {
            group.clear(name)?;
            for e in entries {
                let bad = |what: &str| StateError::Corrupt {
                    key: format!("{name}/{}", e.key),
                    message: format!("the backup's {what} is not hex"),
                };
                let key = unhex(&e.key).ok_or_else(|| bad("key"))?;
                let value = match (&e.json, &e.hex) {
                    (Some(v), _) => serde_json::to_vec(v).unwrap_or_default(),
                    (None, Some(h)) => unhex(h).ok_or_else(|| bad("value"))?,
                    (None, None) => Vec::new(),
                };
                group.put(name, &key, &value)?;
            }
        }
        Ok(())
    }
}

/// `20261125T101500.123Z-7`: sorts by time.
fn file_stem(serial: u64) -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z-{serial}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `dir/STEM.json`, or `dir/STEM-N.json` when that exists already.
fn unused(dir: &Path, stem: &str) -> PathBuf {
    let mut path = dir.join(format!("{stem}.json"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stem}-{n}.json"));
        n += 1;
    }
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff, b'a'];
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_name_in_use_gets_a_suffix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.json"), "").unwrap();
        assert_eq!(unused(dir.path(), "x"), dir.path().join("x-2.json"));
    }
}
