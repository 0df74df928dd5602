//! The local sandbox: directories on this machine in which the built-in
//! tools run. It owns the provider ([`LocalSandboxes`]) and, in its files,
//! the workspace, its path rules, command launching and package
//! provisioning; it must not know about sessions beyond their ids, nor
//! about the agent loop.
//!
//! What is enforced here, and what is not:
//!
//! * **File tools** ([`Sandbox::read_file`], [`Sandbox::write_file`],
//!   [`Sandbox::list_files`]) are confined to the workspace root. Paths are
//!   relative to it; absolute paths, `..` that climbs above the root and
//!   symlinks (anywhere in the path, dangling or not) that lead outside the
//!   canonical root are refused with [`SandboxError::Escape`]. The check
//!   resolves symlinks component by component, the way the kernel does, and
//!   the file operation then uses the resolved, symlink-free path. Known
//!   limits: a concurrent process that swaps a directory for a symlink between
//!   the check and the use (TOCTOU) is not defended against, nor are hard
//!   links to outside files. The rules live in `paths.rs`.
//! * **Commands** ([`Sandbox::run`]) start in the root with a reduced
//!   environment, but are *not* confined to it: `bash` can read and write
//!   whatever the user running agentform can. The only isolation is the
//!   network one, see [`Network::Limited`]. Every process is launched by
//!   `process.rs`.
//! * **Packages** are installed once per environment by [`provision`] into an
//!   environment directory shared by that environment's workspaces.
//!
//! [`Network::Limited`]: super::Network::Limited

mod install;
mod paths;
mod process;
#[cfg(test)]
mod test_support;
mod workspace;

use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

pub use self::install::{provision, Installers, PROVISIONED_MARKER};
pub use self::process::OUTPUT_LIMIT;
pub use self::workspace::{Workspace, WorkspaceOptions};
use super::{Sandbox, SandboxError, SandboxProvider, SandboxSpec};

/// Sandboxes as directories on this machine: sessions' workspaces under
/// `ROOT/sessions/<session_id>/`, environments' packages under
/// `ROOT/environments/<environment_id>/`.
#[derive(Debug, Clone)]
pub struct LocalSandboxes {
    pub root: PathBuf,
    pub installers: Installers,
}

impl LocalSandboxes {
    pub fn new(root: PathBuf) -> Self {
        LocalSandboxes {
            root,
            installers: Installers::default(),
        }
    }

    fn session_dir(&self, session_id: &str) -> PathBuf {
        self.root.join("sessions").join(session_id)
    }
}

#[async_trait]
impl SandboxProvider for LocalSandboxes {
    async fn open(&self, spec: &SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let env_id = &spec.environment_id;
        let packages = &spec.packages;
        let env_dir = if packages.pip.is_empty() && packages.npm.is_empty() {
            None
        } else {
            let dir = self.root.join("environments").join(env_id);
            provision(&dir, packages, &self.installers)
                .await
                .map_err(|e| SandboxError::Provision(format!("environment `{env_id}`: {e}")))?;
            Some(dir)
        };
        let workspace = Workspace::create(
            self.session_dir(&spec.session_id),
            WorkspaceOptions {
                network: spec.network.clone(),
                env_dir,
            },
        )?;
        Ok(Arc::new(workspace))
    }

    async fn remove(&self, session_id: &str) -> Result<(), SandboxError> {
        let dir = self.session_dir(session_id);
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_error(&dir.to_string_lossy(), &e)),
            _ => Ok(()),
        })
        .await
    }
}

fn io_error(path: &str, e: &std::io::Error) -> SandboxError {
    SandboxError::Io {
        path: path.to_string(),
        message: e.to_string(),
    }
}

/// Runs blocking file-system work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SandboxError::Other(format!("file-system task failed: {e}")))?
}
