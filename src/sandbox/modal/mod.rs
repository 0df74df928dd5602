//! Modal as the place where the local runtime's built-in tools run
//! (`providers.local.sandbox: modal`): one Modal sandbox per session,
//! reached with a gRPC client of our own (tonic over HTTP/2, messages
//! generated from the official `modal` 1.6.4 descriptors — the source of
//! truth for every wire fact here). The agent loop stays in agentform and
//! sees only [`Sandbox`]; the model key never leaves this machine.
//!
//! * `config.rs`: settings, defaults and URL rules;
//! * `proto.rs`: the generated messages and clients (`build.rs`);
//! * `rpc.rs`: one connection and one call under the shared retry policy;
//! * `error.rs`: what a failed call was;
//! * `control.rs`: the control plane (app, image, sandboxes);
//! * `router.rs`: a sandbox's command router (exec, output, stdin);
//! * `exec.rs`: one command to its end (resumed output, deadline, kill);
//! * `mount.rs`: files Modal places in sandboxes (stored once, by digest);
//! * `image.rs`: an environment's image as Dockerfile commands;
//! * `images.rs`: that image built at apply and noted for its sessions;
//! * `location.rs`: where the sandboxes are, noted beside the workspaces
//!   for commands without a manifest;
//! * `sandbox.rs`: [`ModalSandbox`], the [`Sandbox`] of a session.
//!
//! [`ModalSandboxes`] opens sandboxes: it adopts the running sandbox of a
//! session (found by its `agentform.session` tag, e.g. after a crash)
//! instead of creating a duplicate, and terminates them by the same tag
//! when the session is archived or deleted. It builds an environment's
//! image when the environment is created or its packages change, and
//! opens the environment's sessions from it.
//! This module must not know the agent loop or the state, and never puts a
//! credential in a message, a log line or a sandbox.

mod config;
mod control;
mod error;
mod exec;
mod image;
mod images;
pub mod location;
mod mount;
pub mod proto;
mod router;
mod rpc;
mod sandbox;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

pub use self::config::{
    check_url, ModalConfig, DEFAULT_APP, DEFAULT_SERVER_URL, DEFAULT_TIMEOUT, MAX_TIMEOUT,
    SERVER_URL_ENV, TOKEN_ID_ENV, TOKEN_SECRET_ENV,
};
pub use self::control::{gone, Access, Listed, ModalApi};
pub use self::error::{ModalError, ModalErrorKind};
pub use self::exec::{capture, kill, run, shell, Captured, Fd, Outcome, Spec};
pub use self::image::{dockerfile, WORKSPACE};
pub use self::images::IMAGES_FILE;
pub use self::mount::{MountFile, LARGE_FILE_LIMIT};
use self::proto::client as pb;
pub use self::router::{ExitStatus, Router};
pub use self::rpc::{uuid4, CLIENT_HEADERS};
pub use self::sandbox::{confine, ModalSandbox};
use super::local::PACKAGE_REGISTRIES;
use super::{EnvironmentImage, Network, Sandbox, SandboxError, SandboxProvider, SandboxSpec};
use crate::api::META_MANIFEST;

/// The tag naming the session a sandbox belongs to: how it is found again.
pub const TAG_SESSION: &str = "agentform.session";
/// The tag naming the environment a sandbox was made for.
pub const TAG_ENVIRONMENT: &str = "agentform.environment";
/// The tag naming the session's address in the manifest (`session.chat`).
pub const TAG_ADDRESS: &str = crate::api::META_ADDRESS;

/// Sandboxes on Modal, one per session.
#[derive(Debug, Clone)]
pub struct ModalSandboxes {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    api: Arc<ModalApi>,
    /// Sessions archived through this provider: their sandboxes are not
    /// opened again (a turn still running would otherwise start one).
    archived: Mutex<HashSet<String>>,
    /// Where to note this account's location before the first image or
    /// sandbox.
    note: Option<PathBuf>,
    noted: AtomicBool,
    /// The environments' images, noted beside `note`.
    images: images::Images,
}

impl ModalSandboxes {
    pub fn new(config: ModalConfig) -> Result<Self, String> {
        Self::noting(config, None)
    }

    /// Sandboxes that note where they are in `note` (see `location.rs`)
    /// before the first image or sandbox is made, and their environments'
    /// images beside it.
    pub fn noting(config: ModalConfig, note: Option<PathBuf>) -> Result<Self, String> {
        let api = Arc::new(ModalApi::new(config)?);
        Ok(ModalSandboxes {
            shared: Arc::new(Shared {
                api,
                archived: Mutex::new(HashSet::new()),
                images: images::Images {
                    file: note.as_ref().map(|n| n.with_file_name(IMAGES_FILE)),
                },
                note,
                noted: AtomicBool::new(false),
            }),
        })
    }

    pub fn api(&self) -> &Arc<ModalApi> {
        &self.shared.api
    }
}

fn modal_error(e: ModalError) -> SandboxError {
    SandboxError::Other(e.message)
}

impl Shared {
    /// The tags a session's sandbox carries.
    fn tags(&self, spec: &SandboxSpec) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::from([(TAG_SESSION.to_owned(), spec.session_id.clone())]);
        let environment = spec
            .environment_address
            .clone()
            .unwrap_or_else(|| spec.environment_id.clone());
        tags.insert(TAG_ENVIRONMENT.to_owned(), environment);
        if let Some(address) = &spec.session_address {
            tags.insert(TAG_ADDRESS.to_owned(), address.clone());
        }
        if let Some(project) = &self.api.config().project {
            tags.insert(META_MANIFEST.to_owned(), project.clone());
        }
        tags
    }

    /// The session's sandbox, running: the one it has, else a new one.
    async fn open_router(&self, spec: &SandboxSpec) -> Result<Arc<Router>, SandboxError> {
        if self.is_archived(&spec.session_id) {
            return Err(SandboxError::Other(format!(
                "session `{}` is archived: its Modal sandbox was terminated and is not started again",
                spec.session_id
            )));
        }
        let access = match self.adopt(&spec.session_id).await.map_err(modal_error)? {
            Some(access) => access,
            None => self.note_location()?.create(spec).await.map_err(|e| {
                SandboxError::Provision(format!(
                    "Modal sandbox of environment `{}`: {}",
                    spec.environment_id, e.message
                ))
            })?,
        };
        let router = Router::new(Arc::clone(&self.api), access).map_err(modal_error)?;
        Ok(Arc::new(router))
    }

    /// Notes where this account's sandboxes are, once per process.
    fn note_location(&self) -> Result<&Self, SandboxError> {
        let Some(file) = &self.note else {
            return Ok(self);
        };
        if self.noted.load(Ordering::Relaxed) {
            return Ok(self);
        }
        location::remember(file, &location::ModalLocation::of(self.api.config())).map_err(|e| {
            SandboxError::Provision(format!("cannot note where Modal sandboxes are: {e}"))
        })?;
        self.noted.store(true, Ordering::Relaxed);
        Ok(self)
    }

    fn is_archived(&self, session_id: &str) -> bool {
        let archived = self.archived.lock().unwrap_or_else(PoisonError::into_inner);
        archived.contains(session_id)
    }

    /// Terminates every sandbox tagged with the session.
    async fn terminate_all(&self, session_id: &str) -> Result<(), SandboxError> {
        let filter = BTreeMap::from([(TAG_SESSION.to_owned(), session_id.to_owned())]);
        let found = self.api.list(&filter).await.map_err(modal_error)?;
        for listed in found {
            if listed.tags.get(TAG_SESSION).map(String::as_str) == Some(session_id) {
                self.api
                    .terminate(&listed.sandbox_id)
                    .await
                    .map_err(modal_error)?;
                tracing::info!(sandbox = %listed.sandbox_id, session = session_id, "terminated the session's Modal sandbox");
            }
        }
        Ok(())
    }

    /// The newest running sandbox of the session; the others (duplicates)
    /// are terminated.
    async fn adopt(&self, session_id: &str) -> Result<Option<Access>, ModalError> {
        let filter = BTreeMap::from([(TAG_SESSION.to_owned(), session_id.to_owned())]);
        let mut found = self.api.list(&filter).await?;
        found.retain(|l| l.tags.get(TAG_SESSION).map(String::as_str) == Some(session_id));
        // The newest first.
        found.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
        let mut adopted: Option<Access> = None;
        for listed in found {
            if adopted.is_none() && !listed.finished {
                match self.api.access(&listed.sandbox_id).await {
                    Ok(access) => {
                        tracing::info!(sandbox = %listed.sandbox_id, session = session_id, "adopting the session's Modal sandbox");
                        adopted = Some(access);
                        continue;
                    }
                    Err(e) if e.is(ModalErrorKind::SandboxGone) => {}
                    Err(e) => return Err(e),
                }
            }
            tracing::info!(sandbox = %listed.sandbox_id, session = session_id, "terminating a duplicate Modal sandbox");
            self.api.terminate(&listed.sandbox_id).await?;
        }
        Ok(adopted)
    }

    /// A new sandbox for the session, from its environment's image (the
    /// one built at apply; built now for an environment without one). A
    /// create whose answer was lost may have made one: it is looked for by
    /// its tags before trying again, so retries make at most one.
    async fn create(&self, spec: &SandboxSpec) -> Result<Access, ModalError> {
        let config = self.api.config();
        let noted = self
            .images
            .image_for(&self.api, &spec.environment_id, &spec.packages);
        let image_id = match noted {
            Some(id) => id,
            None => {
                let builder_version = self.api.builder_version().await?;
                self.api
                    .image(dockerfile(&spec.packages, &builder_version))
                    .await?
            }
        };
        let definition = pb::Sandbox {
            image_id,
            timeout_secs: u32::try_from(config.timeout.as_secs().max(1)).unwrap_or(u32::MAX),
            workdir: Some(WORKSPACE.to_owned()),
            network_access: Some(network_access(&spec.network)),
            resources: Some(pb::Resources::default()),
            ..Default::default()
        };
        let tags = self.tags(spec);
        let mut attempt = 0;
        loop {
            match self
                .api
                .create(definition.clone(), &tags, BTreeMap::new())
                .await
            {
                Ok(access) => {
                    tracing::info!(sandbox = %access.sandbox_id, session = %spec.session_id, "created a Modal sandbox");
                    return Ok(access);
                }
                Err(e) if e.is_transient() && attempt < config.retry.max_retries => {
                    tracing::debug!(session = %spec.session_id, "creating a Modal sandbox: {e}");
                    tokio::time::sleep(config.retry.delay(attempt, None)).await;
                    attempt += 1;
                    if let Some(access) = self.adopt(&spec.session_id).await? {
                        return Ok(access);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Modal's network access for a sandbox's networking.
pub fn network_access(network: &Network) -> pb::NetworkAccess {
    use pb::network_access::NetworkAccessType;
    match network {
        Network::Unrestricted => pb::NetworkAccess {
            network_access_type: NetworkAccessType::Open as i32,
            ..Default::default()
        },
        Network::Limited {
            allowed_hosts,
            allow_package_managers,
        } => {
            let mut domains = allowed_hosts.clone();
            if *allow_package_managers {
                domains.extend(PACKAGE_REGISTRIES.iter().map(|h| (*h).to_owned()));
            }
            let kind = if domains.is_empty() {
                NetworkAccessType::Blocked
            } else {
                NetworkAccessType::Allowlist
            };
            pb::NetworkAccess {
                network_access_type: kind as i32,
                allowed_domains: domains,
                ..Default::default()
            }
        }
    }
}

#[async_trait]
impl SandboxProvider for ModalSandboxes {
    async fn open(&self, spec: &SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let router = self.shared.open_router(spec).await?;
        Ok(Arc::new(ModalSandbox::new(
            Arc::clone(&self.shared),
            spec.clone(),
            router,
        )))
    }

    /// Terminates every running sandbox tagged with the session.
    async fn remove(&self, session_id: &str) -> Result<(), SandboxError> {
        self.shared.terminate_all(session_id).await
    }

    /// Terminates every sandbox of the session, and opens none for it
    /// again: a Modal sandbox costs while it runs, and an archived
    /// session's workspace is not kept there.
    async fn archive(&self, session_id: &str) -> Result<(), SandboxError> {
        self.shared
            .archived
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session_id.to_owned());
        self.shared.terminate_all(session_id).await
    }

    /// Builds the environment's image (see `images.rs`).
    async fn provision(&self, image: &EnvironmentImage) -> Result<(), SandboxError> {
        self.shared.note_location()?;
        self.shared.images.provision(&self.shared.api, image).await
    }

    /// Forgets the environment's image; Modal keeps it (see `images.rs`).
    async fn retire(&self, environment_id: &str) -> Result<(), SandboxError> {
        self.shared.images.retire(environment_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_networking_is_an_allowlist_of_domains() {
        use pb::network_access::NetworkAccessType;
        let open = network_access(&Network::Unrestricted);
        assert_eq!(open.network_access_type, NetworkAccessType::Open as i32);
        let limited = network_access(&Network::Limited {
            allowed_hosts: vec!["api.example.com".into()],
            allow_package_managers: true,
        });
        assert_eq!(
            limited.network_access_type,
            NetworkAccessType::Allowlist as i32
        );
        assert!(limited
            .allowed_domains
            .contains(&"api.example.com".to_owned()));
        assert!(limited.allowed_domains.contains(&"pypi.org".to_owned()));
        let none = network_access(&Network::Limited {
            allowed_hosts: Vec::new(),
            allow_package_managers: false,
        });
        assert_eq!(none.network_access_type, NetworkAccessType::Blocked as i32);
    }
}
