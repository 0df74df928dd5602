//! File operations of the file tools on resolved paths: reading a bounded
//! prefix of a regular file and replacing a file's contents. Paths come
//! from `paths.rs` already confined; this module refuses what could still
//! lead elsewhere (a file swapped after the check, FIFOs and devices that
//! would block or never end, files with several hard links) and never
//! writes through an existing inode, so a hard link cannot carry a write
//! outside the workspace.

use std::fs::{Metadata, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::confine;
use super::io_error;
use super::process::Confinement;
use crate::sandbox::SandboxError;

fn refuse(path: &str, message: &str) -> SandboxError {
    SandboxError::Io {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// Why a file (by its metadata) may not be read or replaced, if it may not.
fn unusable(metadata: &Metadata) -> Option<&'static str> {
    let kind = metadata.file_type();
    if kind.is_dir() {
        Some("is a directory")
    } else if !kind.is_file() {
        Some("is not a regular file (a FIFO, socket or device); refusing to open it")
    } else if metadata.nlink() > 1 {
        Some("has more than one hard link; refusing to use it")
    } else {
        None
    }
}

/// At most `limit` bytes from the start of the regular file at `resolved`.
pub(super) fn read_prefix(
    resolved: &Path,
    path: &str,
    limit: usize,
) -> Result<Vec<u8>, SandboxError> {
    let before = std::fs::symlink_metadata(resolved).map_err(|e| io_error(path, &e))?;
    if let Some(why) = unusable(&before) {
        return Err(refuse(path, why));
    }
    // Non-blocking, so that a FIFO put in its place meanwhile cannot hang us.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(resolved)
        .map_err(|e| io_error(path, &e))?;
    let opened = file.metadata().map_err(|e| io_error(path, &e))?;
    if opened.dev() != before.dev() || opened.ino() != before.ino() {
        return Err(refuse(
            path,
            "changed while being opened; refusing to read it",
        ));
    }
    if let Some(why) = unusable(&opened) {
        return Err(refuse(path, why));
    }
    let mut bytes = Vec::with_capacity(limit.min(opened.len() as usize).min(1 << 20));
    file.take(limit as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, &e))?;
    Ok(bytes)
}

/// Replaces the file at `resolved` (inside `root`) with `contents`: written
/// to a new file beside it, then renamed over it. Parent directories are
/// created; when confined commands run as another user, what is created is
/// handed to it.
pub(super) fn replace(
    root: &Path,
    resolved: &Path,
    path: &str,
    contents: &[u8],
    confinement: Confinement,
) -> Result<(), SandboxError> {
    match std::fs::symlink_metadata(resolved) {
        Ok(m) if m.is_dir() => return Err(refuse(path, "is a directory")),
        Ok(m) if !m.is_file() && !m.file_type().is_symlink() => {
            return Err(refuse(
                path,
                "is not a regular file; refusing to replace it",
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path, &e)),
    }
    let parent = resolved
        .parent()
        .ok_or_else(|| refuse(path, "has no parent directory"))?;
    create_dirs(root, parent, confinement).map_err(|e| io_error(path, &e))?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = resolved.file_name().unwrap_or_default().to_string_lossy();
    let temp = parent.join(format!(
        ".{name}.agentform-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(contents)?;
        drop(file);
        confine::hand_over(&temp, confinement)?;
        std::fs::rename(&temp, resolved)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io_error(path, &e));
    }
    Ok(())
}

/// `dir` and its missing ancestors below `root`, handed over as they are made.
fn create_dirs(root: &Path, dir: &Path, confinement: Confinement) -> std::io::Result<()> {
    if dir == root || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if parent.starts_with(root) {
            create_dirs(root, parent, confinement)?;
        }
    }
    match std::fs::create_dir(dir) {
        Ok(()) => confine::hand_over(dir, confinement),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_limit_and_refuse_odd_files() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_prefix(&file, "f", 4).unwrap(), b"0123");
        assert_eq!(read_prefix(&file, "f", 100).unwrap(), b"0123456789");
        let link = d.path().join("hard");
        std::fs::hard_link(&file, &link).unwrap();
        let e = read_prefix(&link, "hard", 4).unwrap_err();
        assert!(e.to_string().contains("hard link"), "{e}");
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read_prefix(&fifo, "fifo", 4).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_prefix(d.path(), "dir", 4).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn a_replaced_hard_link_leaves_the_other_name_alone() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"precious").unwrap();
        let inside = root.join("link");
        std::fs::hard_link(&outside, &inside).unwrap();
        replace(&root, &inside, "link", b"overwritten", Confinement::None).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        assert_eq!(std::fs::read(&inside).unwrap(), b"overwritten");
        replace(
            &root,
            &root.join("a/b/c"),
            "a/b/c",
            b"deep",
            Confinement::None,
        )
        .unwrap();
        assert_eq!(std::fs::read(root.join("a/b/c")).unwrap(), b"deep");
        let leftovers: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("agentform"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
