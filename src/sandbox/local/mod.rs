//! The local sandbox: directories on this machine in which the built-in
//! tools run. It owns the provider ([`LocalSandboxes`]) and, in its files,
//! the workspace, its path rules, command launching and package
//! provisioning; it must not know about sessions beyond their ids, nor
//! about the agent loop.
//!
//! What is enforced here:
//!
//! * **File tools** ([`Sandbox::read_file`], [`Sandbox::write_file`],
//!   [`Sandbox::list_files`]) are confined to the workspace root. Paths are
//!   relative to it; absolute paths, `..` that climbs above the root and
//!   symlinks (anywhere in the path, dangling or not) that lead outside the
//!   canonical root are refused with [`SandboxError::Escape`] (`paths.rs`).
//!   Only regular files with a single link are read or replaced; reads are
//!   bounded; a write goes to a new file renamed over the old one, so a hard
//!   link never carries it elsewhere (`files.rs`).
//! * **Commands** ([`Sandbox::run`]) and package installs run confined by
//!   bubblewrap (`confine.rs`): the workspace, the system read-only and
//!   nothing else; own PID, user and network namespaces; no capabilities;
//!   limits; a fixed environment. `networking: limited` reaches only the
//!   allowed hosts through an egress proxy (`proxy.rs`, `bridge.rs`). Where
//!   bubblewrap does not work, commands refuse to run, unless the provider
//!   was built with [`Confinement::None`] (the manifest's
//!   `providers.local.sandbox: none`). Every process is launched by
//!   `process.rs`.
//! * **Packages** are installed once per environment by [`provision`] into an
//!   environment directory shared by that environment's workspaces.
//!

pub mod bridge;
mod confine;
mod files;
mod install;
mod paths;
mod process;
mod proxy;
#[cfg(test)]
pub(crate) mod test_support;
mod workspace;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

pub use self::confine::{bubblewrap, Bubblewrap, BRIDGE_COMMAND, BWRAP_ENV, SANDBOX_UID};
pub use self::install::{provision, Installers, PROVISIONED_MARKER};
pub use self::process::{Confinement, LaunchOptions, OUTPUT_LIMIT};
pub use self::proxy::{AllowList, EgressProxy, PACKAGE_REGISTRIES};
pub use self::workspace::{Workspace, WorkspaceOptions};
use super::{Limits, Network, Sandbox, SandboxError, SandboxProvider, SandboxSpec};

/// Sandboxes as directories on this machine: sessions' workspaces under
/// `ROOT/sessions/<session_id>/`, environments' packages under
/// `ROOT/environments/<environment_id>/`.
#[derive(Debug, Clone)]
pub struct LocalSandboxes {
    pub root: PathBuf,
    pub installers: Installers,
    pub confinement: Confinement,
    /// The agentform binary for the egress bridge; this executable if `None`.
    pub agentform_binary: Option<PathBuf>,
    /// Limits by environment address (`environment.NAME`); the default for
    /// environments not listed.
    pub limits: BTreeMap<String, Limits>,
}

impl LocalSandboxes {
    pub fn new(root: PathBuf) -> Self {
        LocalSandboxes {
            root,
            installers: Installers::default(),
            confinement: Confinement::default(),
            agentform_binary: None,
            limits: BTreeMap::new(),
        }
    }

    fn limits(&self, spec: &SandboxSpec) -> Limits {
        spec.environment_address
            .as_ref()
            .and_then(|address| self.limits.get(address))
            .copied()
            .unwrap_or_default()
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
        let proxy = match &spec.network {
            network @ Network::Limited {
                allowed_hosts,
                allow_package_managers,
            } if self.confinement == Confinement::Bubblewrap && network.reaches_anything() => {
                Some(Arc::new(EgressProxy::start(AllowList::new(
                    allowed_hosts,
                    *allow_package_managers,
                ))?))
            }
            _ => None,
        };
        let launch = LaunchOptions {
            confinement: self.confinement,
            network: spec.network.clone(),
            limits: self.limits(spec),
            agentform_binary: self.agentform_binary.clone(),
            proxy: proxy.clone(),
        };
        let env_dir = if packages.pip.is_empty() && packages.npm.is_empty() {
            None
        } else {
            let dir = self.root.join("environments").join(env_id);
            provision(&dir, packages, &self.installers, &launch)
                .await
                .map_err(|e| SandboxError::Provision(format!("environment `{env_id}`: {e}")))?;
            Some(dir)
        };
        let workspace = Workspace::create(
            self.session_dir(&spec.session_id),
            WorkspaceOptions {
                network: spec.network.clone(),
                env_dir,
                confinement: self.confinement,
                limits: self.limits(spec),
                agentform_binary: self.agentform_binary.clone(),
                proxy,
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

    fn remote(&self) -> bool {
        false
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
