//! E2B as the place where the local runtime's built-in tools run
//! (`providers.local.sandbox: e2b`): one E2B sandbox per session, reached
//! with a client written on reqwest after the official SDK (`e2b` 2.63.0,
//! the source of truth for every wire fact here). The agent loop stays in
//! agentform and sees only [`Sandbox`]; the model key never leaves this
//! machine.
//!
//! * `config.rs`: settings, defaults and URL rules;
//! * `api.rs`: the control plane (create, list, get, kill, timeout);
//! * `request.rs`: one request under the shared HTTP policy;
//! * `connect.rs`, `stream.rs`, `envd.rs`: envd's Connect RPC, process
//!   streams, files and ports;
//! * `exec.rs`: one command to its end (deadline, re-attach, kill);
//! * `provision.rs`: the workspace and packages set up at open;
//! * `template.rs`, `images.rs`: an environment's template, built at
//!   apply from its packages, which its sessions start from;
//! * `sandbox.rs`: [`E2bSandbox`], the [`Sandbox`] of a session;
//! * `output.rs`: output capped as the local sandbox caps it.
//!
//! * `location.rs`: where the sandboxes are, noted beside the workspaces
//!   for commands without a manifest.
//!
//! [`E2bSandboxes`] opens sandboxes: it adopts the running sandbox of a
//! session (found by its `agentform.session` metadata, e.g. after a crash)
//! instead of creating a duplicate, and kills them by the same metadata
//! when the session is archived or deleted. The client here (control
//! plane, envd, ports) also carries `provider: e2b` (the remote loop, a
//! runtime of its own above this module). This module must not know the
//! agent loop or the state, and never puts a credential in a message, a
//! log line or a sandbox.

mod api;
mod config;
mod connect;
mod envd;
mod error;
mod exec;
mod images;
pub mod location;
pub(crate) mod output;
mod provision;
mod request;
mod sandbox;
mod stream;
mod template;
mod wire;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

pub use self::api::{metadata_query, Connection, E2bApi};
pub use self::config::{
    check_url, parse_version, E2bConfig, API_KEY_ENV, DEFAULT_DOMAIN, DEFAULT_TEMPLATE,
    DEFAULT_TIMEOUT, DOMAIN_ENV, ENVD_PORT, MAX_TIMEOUT, MIN_ENVD_VERSION,
};
pub use self::envd::{Entry, Envd, PortRoute, ProcessSpec, Selector, Signal};
pub use self::error::{E2bError, E2bErrorKind};
pub use self::exec::{new_tag, run as run_command, start as start_command, Started};
pub use self::images::{Images, TEMPLATES_FILE};
pub use self::provision::{setup_script, with_packages, HOME, WORKSPACE};
use self::sandbox::Live;
pub use self::sandbox::{confine, E2bSandbox};
pub use self::stream::{Exit, ProcessEvent, ProcessStream, StreamError};
pub use self::wire::{NetworkConfig, NetworkRule, NewSandbox, ALL_TRAFFIC};
use super::local::PACKAGE_REGISTRIES;
use super::{EnvironmentImage, Network, Sandbox, SandboxError, SandboxProvider, SandboxSpec};
use crate::api::META_MANIFEST;

/// Metadata naming the session a sandbox belongs to: how it is found again.
pub const META_SESSION: &str = "agentform.session";
/// Metadata naming the environment a sandbox was provisioned from.
pub const META_ENVIRONMENT: &str = "agentform.environment";
/// How long setting up a sandbox (packages) may take.
const SETUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Sandboxes on E2B, one per session.
#[derive(Debug, Clone)]
pub struct E2bSandboxes {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    api: Arc<E2bApi>,
    /// Sessions archived through this provider: their sandboxes are not
    /// opened again (a turn still running would otherwise start one).
    archived: Mutex<HashSet<String>>,
    /// Where to note this account's location before the first sandbox.
    note: Option<PathBuf>,
    noted: AtomicBool,
    /// The environments' templates, noted beside `note`.
    images: images::Images,
}

impl E2bSandboxes {
    pub fn new(config: E2bConfig) -> Result<Self, String> {
        Self::noting(config, None)
    }

    /// Sandboxes that note where they are in `note` (see `location.rs`)
    /// before the first one is made.
    pub fn noting(config: E2bConfig, note: Option<PathBuf>) -> Result<Self, String> {
        let api = Arc::new(E2bApi::new(config)?);
        Ok(E2bSandboxes {
            shared: Arc::new(Shared {
                api,
                archived: Mutex::new(HashSet::new()),
                images: images::Images {
                    file: note
                        .as_ref()
                        .map(|n| n.with_file_name(images::TEMPLATES_FILE)),
                },
                note,
                noted: AtomicBool::new(false),
            }),
        })
    }

    pub fn api(&self) -> &Arc<E2bApi> {
        &self.shared.api
    }
}

fn e2b_error(e: E2bError) -> SandboxError {
    SandboxError::Other(e.message)
}

impl Shared {
    /// The metadata a session's sandbox carries.
    fn metadata(&self, spec: &SandboxSpec) -> BTreeMap<String, String> {
        let mut metadata = BTreeMap::from([(META_SESSION.to_owned(), spec.session_id.clone())]);
        let environment = spec
            .environment_address
            .clone()
            .unwrap_or_else(|| spec.environment_id.clone());
        metadata.insert(META_ENVIRONMENT.to_owned(), environment);
        if let Some(project) = &self.api.config().project {
            metadata.insert(META_MANIFEST.to_owned(), project.clone());
        }
        metadata
    }

    /// The session's sandbox, running and set up: the one it has, else a
    /// new one. None for an archived session.
    async fn open_live(&self, spec: &SandboxSpec) -> Result<Arc<Live>, SandboxError> {
        if self.is_archived(&spec.session_id) {
            return Err(SandboxError::Other(format!(
                "session `{}` is archived: its E2B sandbox was killed and is not started again",
                spec.session_id
            )));
        }
        let connection = match self.adopt(&spec.session_id).await.map_err(e2b_error)? {
            Some(connection) => connection,
            None => {
                self.note_location()?;
                self.create(spec).await.map_err(e2b_error)?
            }
        };
        let version = parse_version(&connection.envd_version);
        if version.is_none_or(|v| v < MIN_ENVD_VERSION) {
            let id = connection.sandbox_id.clone();
            let _ = self.api.kill(&id).await;
            return Err(SandboxError::Provision(format!(
                "E2B sandbox `{id}` runs envd {}, older than {}.{}.{} which agentform needs; \
                 rebuild the template `{}`",
                connection.envd_version,
                MIN_ENVD_VERSION.0,
                MIN_ENVD_VERSION.1,
                MIN_ENVD_VERSION.2,
                self.api.config().template
            )));
        }
        let envd = self.api.envd(&connection);
        self.set_up(&envd, spec).await?;
        Ok(Arc::new(Live::new(envd)))
    }

    /// The newest running sandbox of the session, its timeout re-armed;
    /// the others (duplicates) are killed.
    async fn adopt(&self, session_id: &str) -> Result<Option<Connection>, E2bError> {
        let mut found = self.api.list(&[(META_SESSION, session_id)]).await?;
        // The newest first.
        found.sort_by_key(|l| std::cmp::Reverse(started_at(&l.started_at)));
        let mut adopted: Option<Connection> = None;
        for listed in found {
            if listed.metadata.get(META_SESSION).map(String::as_str) != Some(session_id) {
                continue;
            }
            if adopted.is_none() && listed.state == "running" {
                if let Some(detail) = self.api.get(&listed.sandbox_id).await? {
                    if detail.state == "running" {
                        let id = detail.sandbox_id.clone();
                        self.api.set_timeout(&id, self.api.config().timeout).await?;
                        tracing::info!(sandbox = %id, session = session_id, "adopting the session's E2B sandbox");
                        adopted = Some(detail.into());
                        continue;
                    }
                }
            }
            tracing::info!(sandbox = %listed.sandbox_id, session = session_id, "killing a duplicate E2B sandbox");
            self.api.kill(&listed.sandbox_id).await?;
        }
        Ok(adopted)
    }

    /// Notes where this account's sandboxes are, once per process.
    fn note_location(&self) -> Result<(), SandboxError> {
        let Some(file) = &self.note else {
            return Ok(());
        };
        if self.noted.load(Ordering::Relaxed) {
            return Ok(());
        }
        location::remember(file, &location::E2bLocation::of(self.api.config())).map_err(|e| {
            SandboxError::Provision(format!("cannot note where E2B sandboxes are: {e}"))
        })?;
        self.noted.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn is_archived(&self, session_id: &str) -> bool {
        let archived = self.archived.lock().unwrap_or_else(PoisonError::into_inner);
        archived.contains(session_id)
    }

    /// Kills every sandbox of the session.
    async fn kill_all(&self, session_id: &str) -> Result<(), SandboxError> {
        let found = self
            .api
            .list(&[(META_SESSION, session_id)])
            .await
            .map_err(e2b_error)?;
        for listed in found {
            if listed.metadata.get(META_SESSION).map(String::as_str) == Some(session_id) {
                self.api.kill(&listed.sandbox_id).await.map_err(e2b_error)?;
                tracing::info!(sandbox = %listed.sandbox_id, session = session_id, "killed the session's E2B sandbox");
            }
        }
        Ok(())
    }

    /// A new sandbox for the session; retries make at most one (they reuse
    /// the idempotency key).
    async fn create(&self, spec: &SandboxSpec) -> Result<Connection, E2bError> {
        let config = self.api.config();
        let network = match &spec.network {
            Network::Unrestricted => None,
            Network::Limited {
                allowed_hosts,
                allow_package_managers,
            } => {
                let mut hosts = allowed_hosts.clone();
                if *allow_package_managers {
                    hosts.extend(PACKAGE_REGISTRIES.iter().map(|h| (*h).to_owned()));
                }
                Some(NetworkConfig::only(hosts))
            }
        };
        let body = NewSandbox {
            template_id: self
                .images
                .template_for(&self.api, &spec.environment_id, &spec.packages),
            timeout: api::seconds(config.timeout),
            auto_pause: false,
            metadata: self.metadata(spec),
            env_vars: BTreeMap::new(),
            network,
        };
        let key = idempotency_key(&spec.session_id);
        let connection = self.api.create(&body, &key).await?;
        tracing::info!(sandbox = %connection.sandbox_id, session = %spec.session_id, "created an E2B sandbox");
        Ok(connection)
    }

    /// Makes the workspace and installs the packages.
    async fn set_up(&self, envd: &Envd, spec: &SandboxSpec) -> Result<(), SandboxError> {
        let mut process = ProcessSpec::bash(&provision::setup_script(&spec.packages));
        process.cwd = Some(HOME.to_owned());
        let retry = self.api.config().retry;
        let failed = |message: String| {
            SandboxError::Provision(format!(
                "E2B sandbox `{}` of environment `{}`: {message}",
                envd.sandbox_id(),
                spec.environment_id
            ))
        };
        let out = exec::run(envd, process, SETUP_DEADLINE, &retry, &mut |_| {})
            .await
            .map_err(|e| failed(e.message))?;
        match (out.timed_out, out.exit_code) {
            (false, Some(0)) => Ok(()),
            (true, _) => Err(failed(format!("set-up timed out after {SETUP_DEADLINE:?}"))),
            (false, code) => {
                let status = code.map_or("killed by a signal".to_owned(), |c| {
                    format!("exit code {c}")
                });
                let text = out.output.trim_end();
                let mut cut = text.len().saturating_sub(2000);
                while !text.is_char_boundary(cut) {
                    cut += 1;
                }
                Err(failed(format!(
                    "installing packages failed ({status})\n{}",
                    &text[cut..]
                )))
            }
        }
    }
}

/// An RFC 3339 time; unreadable ones sort first.
fn started_at(raw: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()
}

/// An `Idempotency-Key` (`[a-z0-9-]`, at most 255) for one creation of a
/// session's sandbox: retries of it share the key, a later creation (the
/// first one gone) does not.
pub fn idempotency_key(session_id: &str) -> String {
    let session: String = session_id
        .chars()
        .take(64)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    format!("agentform-{session}-{:016x}", fastrand::u64(..))
}

#[async_trait]
impl SandboxProvider for E2bSandboxes {
    async fn open(&self, spec: &SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let live = self.shared.open_live(spec).await?;
        Ok(Arc::new(E2bSandbox::new(
            Arc::clone(&self.shared),
            spec.clone(),
            live,
        )))
    }

    /// Kills every sandbox of the session.
    async fn remove(&self, session_id: &str) -> Result<(), SandboxError> {
        self.shared.kill_all(session_id).await
    }

    /// Kills every sandbox of the session, and opens none for it again:
    /// an archived session's workspace is not kept on E2B, where a
    /// sandbox costs while it runs.
    async fn archive(&self, session_id: &str) -> Result<(), SandboxError> {
        self.shared
            .archived
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session_id.to_owned());
        self.shared.kill_all(session_id).await
    }

    /// Builds the environment's template from its packages.
    async fn provision(&self, image: &EnvironmentImage) -> Result<(), SandboxError> {
        self.shared.images.provision(&self.shared.api, image).await
    }

    /// Deletes the environment's template.
    async fn retire(&self, environment_id: &str) -> Result<(), SandboxError> {
        self.shared
            .images
            .retire(&self.shared.api, environment_id)
            .await
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_lowercase_words_and_differ_per_creation() {
        let a = idempotency_key("sesn_01ABCdef");
        let b = idempotency_key("sesn_01ABCdef");
        assert!(a.starts_with("agentform-sesn-01abcdef-"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert_ne!(a, b);
        assert!(idempotency_key(&"x".repeat(1000)).len() <= 255);
    }
}
