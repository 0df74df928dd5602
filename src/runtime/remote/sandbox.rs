//! What a remote-loop provider implements: [`SandboxHost`], the service
//! that makes, finds, keeps alive and kills sandboxes, and
//! [`RemoteSandbox`], one sandbox's files, commands and ports. Only the
//! shapes: E2B implements them in `crate::runtime::e2b`, Modal in
//! `crate::runtime::modal`; what agentform
//! does with a sandbox is the rest of `remote`'s. Nothing here may hold a
//! credential in its `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Url;

use crate::sandbox::{CommandOutput, EnvironmentImage, Network, Packages};

/// What went wrong, as far as the runtime decides anything by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteErrorKind {
    /// The sandbox no longer exists: killed, or past its lifetime.
    Gone,
    /// The provider refused the credentials.
    Auth,
    /// Anything else, already retried as the provider's policy says.
    Failed,
}

/// A failed call to a sandbox or its host; the message names the call and
/// never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub kind: RemoteErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(RemoteErrorKind::Failed, message)
    }

    pub fn is_gone(&self) -> bool {
        self.kind == RemoteErrorKind::Gone
    }
}

/// How requests reach a port of a sandbox: a base URL and the headers
/// every request carries (routing, a traffic token marked sensitive).
#[derive(Clone)]
pub struct Route {
    pub url: Url,
    pub headers: HeaderMap,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// How a server started in a sandbox was left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A line of its output said it is ready (the line); it runs on.
    Ready(String),
    /// It ended first.
    Ended(CommandOutput),
    /// Its output could not be followed to the end (the stream broke):
    /// whether it runs is for the caller to find out.
    Unknown(String),
}

/// One sandbox, reached from this machine.
#[async_trait]
pub trait RemoteSandbox: Send + Sync {
    /// The provider's id of the sandbox.
    fn id(&self) -> &str;
    /// The home directory of its user, absolute; commands see it as `$HOME`.
    fn home(&self) -> &str;
    /// At most `limit` bytes of the file at the absolute `path`; `None`
    /// when there is no such file.
    async fn read_file(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, RemoteError>;
    /// Writes the file at the absolute `path` whole, making its parents.
    async fn write_file(&self, path: &str, contents: Bytes) -> Result<(), RemoteError>;
    /// Runs `bash -c command` in the home directory to its end (killed at
    /// the deadline).
    async fn run(&self, command: &str, deadline: Duration) -> Result<CommandOutput, RemoteError>;
    /// Starts `bash -c command` in the home directory with `envs` added to
    /// its environment, and leaves it running once a line of its output
    /// starts with `ready`; killed if it has not by the deadline.
    async fn start(
        &self,
        command: &str,
        envs: &BTreeMap<String, String>,
        ready: &str,
        deadline: Duration,
    ) -> Result<Started, RemoteError>;
    /// Where requests to `port` of the sandbox go.
    fn route(&self, port: u16) -> Route;
    /// The port the serve must listen on: 0 lets it choose (every port is
    /// reachable), a fixed one where only ports declared when the sandbox
    /// was made are.
    fn serve_port(&self) -> u16 {
        0
    }
}

/// A header the provider's egress sets on the sandbox's requests to a
/// host, so that a credential never enters the sandbox. `Debug` hides the
/// value.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderRule {
    pub host: String,
    pub name: String,
    pub value: String,
}

impl fmt::Debug for HeaderRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderRule")
            .field("host", &self.host)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A sandbox to make for one session.
#[derive(Debug, Clone)]
pub struct NewSandbox {
    /// Tags to find it by (strings only, as every provider takes them).
    pub metadata: BTreeMap<String, String>,
    /// What commands in it may reach: the session's environment.
    pub network: Network,
    /// Hosts reached besides (the model API), allowed under limited
    /// networking.
    pub model_hosts: Vec<String>,
    pub header_rules: Vec<HeaderRule>,
    /// Retries of the creation send it, so the provider makes one sandbox
    /// (`[a-z0-9-]`).
    pub idempotency_key: String,
    /// The environment's packages: a host that
    /// [preinstalls](SandboxHost::preinstalls_packages) them starts the
    /// sandbox from its image of them.
    pub packages: Packages,
}

/// A sandbox as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// RFC 3339.
    pub started_at: String,
    pub metadata: BTreeMap<String, String>,
}

/// The service that holds the sandboxes of one account.
#[async_trait]
pub trait SandboxHost: Send + Sync {
    /// The provider's name, as written in manifests (`e2b`).
    fn provider(&self) -> &str;
    /// Where its sandboxes live, recorded with every session (no secret).
    fn endpoint(&self) -> String;
    /// A new running sandbox.
    async fn create(&self, new: &NewSandbox) -> Result<Arc<dyn RemoteSandbox>, RemoteError>;
    /// A running sandbox, reconnected (its lifetime re-armed), with its
    /// metadata; `None` when it is gone.
    #[allow(clippy::type_complexity)]
    async fn connect(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<dyn RemoteSandbox>, BTreeMap<String, String>)>, RemoteError>;
    /// Whether the sandbox still runs.
    async fn alive(&self, id: &str) -> Result<bool, RemoteError>;
    /// Kills it; `false` when it was gone already.
    async fn kill(&self, id: &str) -> Result<bool, RemoteError>;
    /// Every sandbox whose metadata holds all of `metadata`.
    async fn list(&self, metadata: &[(&str, &str)]) -> Result<Vec<Listed>, RemoteError>;
    /// Re-arms the sandbox's lifetime; [`RemoteErrorKind::Gone`] when it
    /// is gone.
    async fn keep_alive(&self, id: &str) -> Result<(), RemoteError>;
    /// How often [`keep_alive`](Self::keep_alive) is due while a session
    /// is used.
    fn keep_alive_every(&self) -> Duration;
    /// Whether sandboxes start with their environment's pip and npm
    /// packages installed (the serve then installs none). The default: no,
    /// the serve installs them when it creates the environment.
    fn preinstalls_packages(&self) -> bool {
        false
    }
    /// The environment was created or its packages changed: build what its
    /// sessions' sandboxes start from. An error fails the environment's
    /// create or update. The default builds nothing.
    async fn provision(&self, _image: &EnvironmentImage) -> Result<(), RemoteError> {
        Ok(())
    }
    /// Puts `binary` at `path` (under the sandbox user's home, executable)
    /// in every sandbox made afterwards, so that launches do not upload it
    /// into each; `false` when this host cannot, and each launch uploads
    /// it (the default).
    async fn place_executable(&self, _path: &str, _binary: &Bytes) -> Result<bool, RemoteError> {
        Ok(false)
    }
    /// The environment was deleted: remove what was built for it. The
    /// default removes nothing.
    async fn retire(&self, _environment_id: &str) -> Result<(), RemoteError> {
        Ok(())
    }
}
