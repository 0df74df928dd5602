//! The [`Workspace`]: one session's directory on this machine as a
//! [`Sandbox`]. File operations resolve their paths through `paths.rs` and
//! commands run through `process.rs`; it must not bypass either.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::confine;
use super::files;
use super::paths::resolve_in;
use super::process::{Confinement, LaunchOptions, Launcher};
use super::proxy::EgressProxy;
use super::{blocking, io_error};
use crate::sandbox::{CommandOutput, Limits, Network, Sandbox, SandboxError};

/// How to create a [`Workspace`].
#[derive(Debug, Clone, Default)]
pub struct WorkspaceOptions {
    pub network: Network,
    /// The environment directory that [`provision`](super::provision)
    /// installed packages into; commands see them through `PYTHONPATH`,
    /// `NODE_PATH` and `PATH`.
    pub env_dir: Option<PathBuf>,
    pub confinement: Confinement,
    pub limits: Limits,
    /// The agentform binary, for the egress bridge of limited networking;
    /// this executable if `None`.
    pub agentform_binary: Option<PathBuf>,
    /// The session's egress proxy, when its installs started one already.
    pub proxy: Option<Arc<EgressProxy>>,
}

/// A directory on this machine, used as a [`Sandbox`].
#[derive(Debug)]
pub struct Workspace {
    /// Canonical (symlink-free, absolute) root.
    root: PathBuf,
    launcher: Launcher,
    confinement: Confinement,
}

impl Workspace {
    /// Creates `root` (and its parents) and a workspace over it. Fails when
    /// commands are to be confined and this machine cannot confine them.
    pub fn create(root: PathBuf, mut options: WorkspaceOptions) -> Result<Self, SandboxError> {
        // Commands run in the root, so a relative env_dir would not resolve.
        if let Some(dir) = options.env_dir.as_mut() {
            if let Ok(absolute) = std::path::absolute(&*dir) {
                *dir = absolute;
            }
        }
        std::fs::create_dir_all(&root).map_err(|e| io_error(&root.to_string_lossy(), &e))?;
        let root =
            std::fs::canonicalize(&root).map_err(|e| io_error(&root.to_string_lossy(), &e))?;
        let launch = LaunchOptions {
            confinement: options.confinement,
            network: options.network.clone(),
            limits: options.limits,
            agentform_binary: options.agentform_binary.clone(),
            proxy: options.proxy.clone(),
        };
        let launcher = Launcher::new(root.clone(), options.env_dir, &launch)?;
        confine::hand_over(&root, options.confinement)
            .map_err(|e| io_error(&root.to_string_lossy(), &e))?;
        Ok(Self {
            root,
            launcher,
            confinement: options.confinement,
        })
    }

    /// Whether commands run confined (see `confine.rs`).
    pub fn confined(&self) -> bool {
        self.launcher.confined()
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether commands really run without network ([`Network::Limited`] and
    /// a working `unshare`). Always false for [`Network::Unrestricted`].
    pub fn network_enforced(&self) -> bool {
        self.launcher.network_enforced()
    }

    /// Resolves a workspace-relative path to an absolute one inside the root,
    /// following symlinks; see the module documentation of `local`.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, SandboxError> {
        resolve_in(&self.root, path)
    }
}

/// Every non-directory entry below `dir`, relative to `dir`, not descending
/// into symlinked directories.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        // `DirEntry::file_type` does not follow symlinks.
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

#[async_trait]
impl Sandbox for Workspace {
    /// Runs `bash -c command` in the root, confined (see `confine.rs`) unless
    /// the workspace opted out, with stdin null and the reduced environment;
    /// at the deadline everything it started is killed. See `process.rs`.
    async fn run(
        &self,
        command: &str,
        deadline: Duration,
        on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<CommandOutput, SandboxError> {
        self.launcher.run(command, deadline, on_output).await
    }

    async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, SandboxError> {
        let resolved = self.resolve(path)?;
        let path = path.to_string();
        blocking(move || files::read_prefix(&resolved, &path, limit)).await
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let resolved = self.resolve(path)?;
        if resolved == self.root {
            return Err(SandboxError::Io {
                path: path.to_string(),
                message: "is a directory".to_string(),
            });
        }
        let path = path.to_string();
        let contents = contents.to_vec();
        let (root, confinement) = (self.root.clone(), self.confinement);
        blocking(move || files::replace(&root, &resolved, &path, &contents, confinement)).await
    }

    /// Paths are relative to `dir` (so to the root for `""`), joined with `/`.
    /// Directories themselves are not listed; symlinks are, without
    /// descending into symlinked directories.
    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        let resolved = self.resolve(dir)?;
        let dir = dir.to_string();
        blocking(move || {
            let metadata = std::fs::metadata(&resolved).map_err(|e| io_error(&dir, &e))?;
            if !metadata.is_dir() {
                return Err(SandboxError::Io {
                    path: dir,
                    message: "not a directory".to_string(),
                });
            }
            let mut files = Vec::new();
            walk(&resolved, "", &mut files).map_err(|e| io_error(&dir, &e))?;
            files.sort();
            Ok(files)
        })
        .await
    }

    async fn teardown(&self) -> Result<(), SandboxError> {
        let root = self.root.clone();
        blocking(move || match std::fs::remove_dir_all(&root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&root.to_string_lossy(), &e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::test_support::workspace;
    use super::*;

    #[test]
    fn create_makes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(dir.path().join("a/b/c"), WorkspaceOptions::default()).unwrap();
        assert!(ws.root().is_dir());
        assert!(ws.root().is_absolute());
        assert!(!ws.network_enforced());
    }

    #[tokio::test]
    async fn files_round_trip() {
        let (_d, ws) = workspace();
        ws.write_file("deep/er/f.txt", b"one").await.unwrap();
        assert_eq!(
            ws.read_file("deep/er/f.txt", usize::MAX).await.unwrap(),
            b"one"
        );
        ws.write_file("deep/er/f.txt", b"two").await.unwrap();
        assert_eq!(
            ws.read_file("./deep/er/f.txt", usize::MAX).await.unwrap(),
            b"two"
        );
        assert!(matches!(
            ws.read_file("missing", usize::MAX).await,
            Err(SandboxError::Io { .. })
        ));
        assert!(matches!(
            ws.read_file("deep", usize::MAX).await,
            Err(SandboxError::Io { .. })
        ));
        assert!(matches!(
            ws.write_file("", b"x").await,
            Err(SandboxError::Io { .. })
        ));
    }

    #[tokio::test]
    async fn list_files_is_recursive_sorted_and_does_not_follow_dir_links() {
        let (_d, ws) = workspace();
        let root = ws.root().to_path_buf();
        for f in ["b.txt", "a/z.txt", "a/b/c.txt", ".hidden/x", "a.txt"] {
            ws.write_file(f, b"x").await.unwrap();
        }
        std::fs::create_dir(root.join("empty")).unwrap();
        symlink("a", root.join("link_to_a")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        let files = ws.list_files("").await.unwrap();
        assert_eq!(
            files,
            vec![
                ".hidden/x",
                "a.txt",
                "a/b/c.txt",
                "a/z.txt",
                "b.txt",
                "etc",
                "link_to_a"
            ]
        );
        assert_eq!(ws.list_files("a").await.unwrap(), vec!["b/c.txt", "z.txt"]);
        assert_eq!(ws.list_files("link_to_a/b").await.unwrap(), vec!["c.txt"]);
        assert!(matches!(
            ws.list_files("b.txt").await,
            Err(SandboxError::Io { .. })
        ));
        assert!(matches!(
            ws.list_files("nope").await,
            Err(SandboxError::Io { .. })
        ));
    }

    #[tokio::test]
    async fn teardown_removes_the_root() {
        let (_d, ws) = workspace();
        ws.write_file("f", b"x").await.unwrap();
        ws.teardown().await.unwrap();
        assert!(!ws.root().exists());
        ws.teardown().await.unwrap();
    }
}
