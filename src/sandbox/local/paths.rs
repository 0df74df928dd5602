//! Confined path resolution: the one place that decides whether a
//! workspace-relative path stays inside the root, and what it resolves to.
//! It reads metadata and symlinks only; it must not open, create or change
//! anything.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::io_error;
use crate::sandbox::SandboxError;

/// Symlinks followed while resolving one path before giving up (as Linux).
const MAX_SYMLINKS: usize = 40;

fn escape(path: &str) -> SandboxError {
    SandboxError::Escape(path.to_string())
}

/// The names of a relative path, `.` dropped and `..` kept; `None` when it
/// is absolute.
fn relative_names(path: &Path) -> Option<Vec<OsString>> {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return None,
            Component::CurDir => {}
            Component::ParentDir => names.push("..".into()),
            Component::Normal(name) => names.push(name.to_os_string()),
        }
    }
    Some(names)
}

/// Resolves `path` (relative to the canonical `root`) to an absolute path
/// inside `root` without symlinks in its existing part, or fails with
/// [`SandboxError::Escape`].
pub(super) fn resolve_in(root: &Path, path: &str) -> Result<PathBuf, SandboxError> {
    // Names still to walk, next one last; symlink targets are spliced in.
    let mut pending = relative_names(Path::new(path)).ok_or_else(|| escape(path))?;
    pending.reverse();
    // Real (non-symlink or missing) names below root.
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            // The stack holds no symlinks, so its parent is the physical one.
            if stack.pop().is_none() {
                return Err(escape(path));
            }
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&stack);
        candidate.push(&name);
        // Missing (or unreadable): nothing to follow.
        let is_link = std::fs::symlink_metadata(&candidate)
            .is_ok_and(|metadata| metadata.file_type().is_symlink());
        if !is_link {
            stack.push(name);
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(SandboxError::Io {
                path: path.to_string(),
                message: "too many levels of symbolic links".to_string(),
            });
        }
        let target = std::fs::read_link(&candidate).map_err(|e| io_error(path, &e))?;
        let relative = if target.is_absolute() {
            // An absolute target restarts the walk at the root.
            stack.clear();
            inside_root(root, &target, path)?
        } else {
            target
        };
        let spliced = relative_names(&relative).ok_or_else(|| escape(path))?;
        pending.extend(spliced.into_iter().rev());
    }
    let mut resolved = root.to_path_buf();
    resolved.extend(&stack);
    Ok(resolved)
}

/// The absolute symlink `target` relative to `root`, or an escape of `path`.
fn inside_root(root: &Path, target: &Path, path: &str) -> Result<PathBuf, SandboxError> {
    if let Ok(rest) = target.strip_prefix(root) {
        return Ok(rest.to_path_buf());
    }
    // Maybe inside through another spelling of the root (e.g. a symlinked
    // /tmp); only an existing target can tell.
    let real = std::fs::canonicalize(target).map_err(|_| escape(path))?;
    real.strip_prefix(root)
        .map(Path::to_path_buf)
        .map_err(|_| escape(path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::test_support::{is_escape, workspace};
    use crate::sandbox::{Sandbox, SandboxError};

    #[test]
    fn resolve_plain_paths() {
        let (_d, ws) = workspace();
        let root = ws.root().to_path_buf();
        assert_eq!(ws.resolve("").unwrap(), root);
        assert_eq!(ws.resolve(".").unwrap(), root);
        assert_eq!(ws.resolve("a/b.txt").unwrap(), root.join("a/b.txt"));
        assert_eq!(ws.resolve("./a//b/../c").unwrap(), root.join("a/c"));
        assert_eq!(ws.resolve("a/..").unwrap(), root);
    }

    #[tokio::test]
    async fn refuses_lexical_escapes() {
        let (_d, ws) = workspace();
        for path in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "..",
            "a/b/../../../x",
            "/",
        ] {
            assert!(is_escape(ws.resolve(path)), "{path}");
            assert!(is_escape(ws.read_file(path, usize::MAX).await), "{path}");
            assert!(is_escape(ws.write_file(path, b"x").await), "{path}");
            assert!(is_escape(ws.list_files(path).await), "{path}");
        }
        assert_eq!(
            ws.read_file("../x", usize::MAX).await.unwrap_err(),
            SandboxError::Escape("../x".into())
        );
    }

    #[tokio::test]
    async fn refuses_symlinks_out() {
        let (d, ws) = workspace();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        let root = ws.root().to_path_buf();
        symlink("/etc", root.join("etc")).unwrap();
        symlink(&outside, root.join("out_dir")).unwrap();
        symlink(outside.join("secret"), root.join("secret_link")).unwrap();
        symlink("../outside", root.join("rel_out")).unwrap();
        // A dangling symlink whose target is outside.
        symlink(outside.join("new_file"), root.join("dangling")).unwrap();
        symlink("../outside/new_rel", root.join("dangling_rel")).unwrap();
        // A symlinked parent directory.
        std::fs::create_dir(root.join("sub")).unwrap();
        symlink(&outside, root.join("sub/parent_link")).unwrap();

        for path in [
            "etc/passwd",
            "etc",
            "out_dir/secret",
            "secret_link",
            "rel_out/secret",
            "sub/parent_link/secret",
        ] {
            assert!(is_escape(ws.read_file(path, usize::MAX).await), "{path}");
        }
        for path in [
            "dangling",
            "dangling_rel",
            "out_dir/new",
            "out_dir/deeper/new",
            "sub/parent_link/new",
            "secret_link",
            "etc/x",
        ] {
            assert!(is_escape(ws.write_file(path, b"pwned").await), "{path}");
        }
        assert!(is_escape(ws.list_files("out_dir").await));
        assert!(is_escape(ws.list_files("etc").await));
        assert!(!outside.join("new_file").exists());
        assert!(!outside.join("new_rel").exists());
        assert!(!outside.join("new").exists());
        assert!(!outside.join("deeper").exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "s"
        );
    }

    #[tokio::test]
    async fn follows_symlinks_that_stay_inside() {
        let (_d, ws) = workspace();
        let root = ws.root().to_path_buf();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::fs::write(root.join("real/dir/f.txt"), "hi").unwrap();
        symlink("real/dir", root.join("rel_link")).unwrap();
        symlink(root.join("real"), root.join("abs_link")).unwrap();
        symlink("../real/dir/f.txt", root.join("real/up_link")).unwrap();
        symlink("inside_new.txt", root.join("dangling_in")).unwrap();
        assert_eq!(
            ws.read_file("rel_link/f.txt", usize::MAX).await.unwrap(),
            b"hi"
        );
        assert_eq!(
            ws.read_file("abs_link/dir/f.txt", usize::MAX)
                .await
                .unwrap(),
            b"hi"
        );
        assert_eq!(
            ws.read_file("real/up_link", usize::MAX).await.unwrap(),
            b"hi"
        );
        // `..` after a symlink is physical: rel_link/.. is real/, not the root.
        assert_eq!(ws.resolve("rel_link/..").unwrap(), root.join("real"));
        ws.write_file("dangling_in", b"ok").await.unwrap();
        assert_eq!(std::fs::read(root.join("inside_new.txt")).unwrap(), b"ok");
        // A symlink that climbs above the root through a link is refused.
        symlink("../../..", root.join("real/dir/climb")).unwrap();
        assert!(is_escape(ws.resolve("real/dir/climb/x")));
    }

    #[tokio::test]
    async fn symlink_loops_fail_cleanly() {
        let (_d, ws) = workspace();
        let root = ws.root().to_path_buf();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        assert!(matches!(
            ws.read_file("a", usize::MAX).await,
            Err(SandboxError::Io { .. })
        ));
    }
}
