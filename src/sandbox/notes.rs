//! The JSON files remote sandbox providers keep beside the workspaces
//! (where their sessions live, which templates or images were built): read
//! with a missing file as empty, written whole and renamed over the old
//! one, so a reader never sees half a file. Contents are the callers'.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The contents of `file`, or the empty value when it does not exist;
/// `what` names the contents in an error.
pub fn read<T: DeserializeOwned + Default>(file: &Path, what: &str) -> Result<T, String> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("`{}` is not a list of {what}: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("cannot read `{}`: {e}", file.display())),
    }
}

/// Writes `value` to `file` through a file of this process's own, renamed
/// over it.
pub fn write<T: Serialize>(file: &Path, value: &T) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    }
    let partial = file.with_extension(format!("json.{}.partial", std::process::id()));
    std::fs::write(&partial, json).map_err(|e| format!("`{}`: {e}", partial.display()))?;
    std::fs::rename(&partial, file).map_err(|e| format!("`{}`: {e}", file.display()))
}

/// Guards the read-modify-writes below within this process.
static CHANGING: Mutex<()> = Mutex::new(());

/// Adds `item` to the list in `file` unless it is there.
pub fn remember<T>(file: &Path, what: &str, item: &T) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + PartialEq + Clone,
{
    let _guard = CHANGING.lock().unwrap_or_else(PoisonError::into_inner);
    let mut known: Vec<T> = read(file, what)?;
    if known.contains(item) {
        return Ok(());
    }
    known.push(item.clone());
    write(file, &known)
}

/// Sets (or with `None` removes) `key`'s entry of the map in `file`; the
/// file is written only when that changes it.
pub fn set_entry<T>(file: &Path, what: &str, key: &str, value: Option<&T>) -> Result<(), String>
where
    T: Serialize + DeserializeOwned + PartialEq + Clone,
{
    let _guard = CHANGING.lock().unwrap_or_else(PoisonError::into_inner);
    let mut all: BTreeMap<String, T> = read(file, what)?;
    let changed = match value {
        Some(v) => all.insert(key.to_owned(), v.clone()).as_ref() != Some(v),
        None => all.remove(key).is_some(),
    };
    if !changed {
        return Ok(());
    }
    write(file, &all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_empty_and_a_written_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/notes.json");
        let empty: BTreeMap<String, u32> = read(&file, "notes").unwrap();
        assert!(empty.is_empty());
        write(&file, &BTreeMap::from([("a".to_owned(), 1u32)])).unwrap();
        let back: BTreeMap<String, u32> = read(&file, "notes").unwrap();
        assert_eq!(back, BTreeMap::from([("a".to_owned(), 1)]));
        std::fs::write(&file, "not json").unwrap();
        let e = read::<BTreeMap<String, u32>>(&file, "notes").unwrap_err();
        assert!(e.contains("is not a list of notes"), "{e}");
    }
}
