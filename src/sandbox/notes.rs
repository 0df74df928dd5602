//! The JSON files remote sandbox providers keep beside the workspaces
//! (where their sessions live, which templates or images were built): read
//! with a missing file as empty, written whole and renamed over the old
//! one, so a reader never sees half a file. Contents are the callers'.

use std::path::Path;

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
