//! The remote loop (`provider: e2b` and `provider: modal`): the whole agent loop
//! of a session runs in a sandbox of its own on the provider's machines.
//! Per session agentform makes a sandbox, uploads its own executable,
//! starts `agentform serve` there (`launch.rs`) and drives it through the
//! sandbox's port with the same client as the `anthropic` provider
//! (retries, idempotent creates, stream reconnects). The session's
//! environment, agent version and session are created in that serve; the
//! ids map back (`ids.rs`, `session.rs`), events pass through unchanged,
//! and a sandbox that dies under a live stream ends it with a
//! `session.error` (`stream.rs`).
//!
//! Agents and environments are definitions: they stay in the embedded
//! runtime's records (`local`), so plan, apply and destroy treat them as
//! they treat every provider's. This module knows no provider: it drives
//! the [`SandboxHost`] / [`RemoteSandbox`] traits (`sandbox.rs`), which
//! E2B implements in `crate::runtime::e2b` and Modal in
//! `crate::runtime::modal`. It never writes a credential
//! anywhere but the serve's own environment and the header rules the
//! provider's egress applies (`model_key: inject`).

mod ids;
mod launch;
mod sandbox;
mod session;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::anthropic::{AnthropicOptions, AnthropicRuntime, RateLimits, Secret};
use super::{
    Agent, Deleted, Environment, ErrorKind, EventStream, ListQuery, Page, Result, Runtime,
    RuntimeError, Session,
};

use super::local::image_of;
pub use ids::{serve_key, session_id, split_session_id};
pub use launch::{command as serve_command, READY, SERVE_KEY_ENV};
pub use sandbox::{
    HeaderRule, Listed, NewSandbox, RemoteError, RemoteErrorKind, RemoteSandbox, Route,
    SandboxHost, Started,
};

/// Metadata marking a sandbox that runs a remote loop.
pub const META_LOOP: &str = "agentform.loop";
pub const LOOP_REMOTE: &str = "remote";
/// Metadata: agentform's (local) ids of the session's agent and environment.
pub const META_AGENT: &str = "agentform.agent";
pub const META_AGENT_VERSION: &str = "agentform.agent_version";
pub const META_ENVIRONMENT: &str = "agentform.environment";

/// How a remote loop is set up.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The executable uploaded into every sandbox (checked by the caller).
    pub binary: PathBuf,
    /// The serve manifest uploaded beside it: the model backends.
    pub manifest: String,
    /// Variables set for the serve (model keys), by name.
    pub model_envs: Vec<(String, Secret)>,
    /// Hosts the models are reached at, allowed under limited networking.
    pub model_hosts: Vec<String>,
    /// Headers the provider's egress sets on the sandbox's requests (the
    /// model keys under `model_key: inject`); `Debug` hides their values.
    pub header_rules: Vec<HeaderRule>,
    /// The provider's key: the serve keys are derived from it.
    pub key: Secret,
    /// How long the serve may take to listen.
    pub ready_deadline: Duration,
    /// The client's retries towards the serve.
    pub max_retries: u32,
    pub retry_backoff: Option<Duration>,
}

/// The remote loop as a [`Runtime`].
pub struct RemoteRuntime {
    host: Arc<dyn SandboxHost>,
    local: Arc<dyn Runtime>,
    options: RemoteOptions,
    binary: tokio::sync::OnceCell<Bytes>,
    /// Whether the host placed the executable for every sandbox (else
    /// each launch uploads it), decided once per process.
    placed: tokio::sync::OnceCell<bool>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl std::fmt::Debug for RemoteRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRuntime")
            .field("provider", &self.host.provider())
            .field("binary", &self.options.binary)
            .finish_non_exhaustive()
    }
}

/// The serve of one sandbox, reached from here.
pub(crate) struct Client {
    pub sandbox: Arc<dyn RemoteSandbox>,
    pub api: AnthropicRuntime,
    pub metadata: BTreeMap<String, String>,
    rearmed: Mutex<Instant>,
}

impl RemoteRuntime {
    /// A remote loop on `host`, its definitions kept by `local`.
    pub fn new(
        host: Arc<dyn SandboxHost>,
        local: Arc<dyn Runtime>,
        options: RemoteOptions,
    ) -> Self {
        RemoteRuntime {
            host,
            local,
            options,
            binary: tokio::sync::OnceCell::new(),
            placed: tokio::sync::OnceCell::new(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The executable's bytes, read once per process.
    async fn binary(&self) -> Result<Bytes> {
        let path = self.options.binary.clone();
        self.binary
            .get_or_try_init(|| async move {
                let read = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || std::fs::read(path)
                })
                .await
                .map_err(|e| RuntimeError::invalid(e.to_string()))?;
                read.map(Bytes::from).map_err(|e| {
                    RuntimeError::invalid(format!(
                        "cannot read the agent binary `{}`: {e}",
                        path.display()
                    ))
                })
            })
            .await
            .cloned()
    }

    /// What a launch runs: the executable the host placed for every
    /// sandbox (once per process), or the bytes each launch uploads.
    async fn executable(&self) -> Result<launch::Executable> {
        let binary = self.binary().await?;
        let placed = self
            .placed
            .get_or_try_init(|| self.host.place_executable(launch::PLACED, &binary))
            .await
            .map_err(|e| self.error(e))?;
        Ok(match placed {
            true => launch::Executable::Placed,
            false => launch::Executable::Upload(binary),
        })
    }

    /// The client of the serve on `port` of `sandbox`.
    fn client(
        &self,
        sandbox: Arc<dyn RemoteSandbox>,
        port: u16,
        metadata: BTreeMap<String, String>,
    ) -> Result<Client> {
        let route = sandbox.route(port);
        let options = AnthropicOptions {
            base_url: Some(route.url.to_string()),
            api_key: Some(Secret::new(serve_key(
                self.options.key.expose(),
                sandbox.id(),
            ))),
            limits: RateLimits {
                environments_per_minute: None,
                environments_concurrency: None,
                creates_per_minute: None,
                other_per_minute: None,
            },
            max_retries: self.options.max_retries,
            retry_backoff: self.options.retry_backoff,
            key_env: format!("the derived key of the serve in sandbox `{}`", sandbox.id()),
            headers: route.headers,
            ..AnthropicOptions::default()
        };
        let api = AnthropicRuntime::new(options)?;
        Ok(Client {
            sandbox,
            api,
            metadata,
            rearmed: Mutex::new(Instant::now()),
        })
    }

    /// The client of a session's sandbox: the one this process made, else
    /// reconnected (which re-arms its lifetime). Not found when the
    /// sandbox is gone.
    async fn reach(&self, session: &str) -> Result<(Arc<Client>, String)> {
        let (remote, sandbox_id) =
            split_session_id(session).ok_or_else(|| RuntimeError::not_found("session", session))?;
        let client = self.client_of(sandbox_id, session).await?;
        Ok((client, remote.to_owned()))
    }

    /// The client of the serve in `sandbox_id`: the one this process made,
    /// else reconnected. Not found (naming the session `of`) when the
    /// sandbox is gone.
    async fn client_of(&self, sandbox_id: &str, of: &str) -> Result<Arc<Client>> {
        let known = self.lock_clients().get(sandbox_id).cloned();
        if let Some(client) = known {
            self.keep_alive(&client).await?;
            return Ok(client);
        }
        let (sandbox, metadata) = self
            .host
            .connect(sandbox_id)
            .await
            .map_err(|e| self.error(e))?
            .ok_or_else(|| gone(self.host.provider(), of, sandbox_id))?;
        let port = launch::port(sandbox.as_ref())
            .await
            .map_err(|e| self.error(e))?;
        let client = Arc::new(self.client(sandbox, port, metadata)?);
        self.lock_clients()
            .insert(sandbox_id.to_owned(), Arc::clone(&client));
        Ok(client)
    }

    /// Re-arms the sandbox's lifetime when it is due.
    async fn keep_alive(&self, client: &Client) -> Result<()> {
        let due = {
            let mut at = client
                .rearmed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due = at.elapsed() >= self.host.keep_alive_every();
            if due {
                *at = Instant::now();
            }
            due
        };
        if due {
            self.host
                .keep_alive(client.sandbox.id())
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Client>>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, sandbox_id: &str) {
        self.lock_clients().remove(sandbox_id);
    }

    /// A provider error as the runtime's.
    /// A failed provisioning of `environment`, as the embedded runtime
    /// words it.
    fn unprovisioned(&self, environment: &Environment, e: RemoteError) -> RuntimeError {
        RuntimeError::new(
            ErrorKind::InvalidRequest,
            format!(
                "environment `{}` cannot be provisioned: {}: {}",
                environment.name,
                self.host.provider(),
                e.message
            ),
        )
    }

    fn error(&self, e: RemoteError) -> RuntimeError {
        let kind = match e.kind {
            RemoteErrorKind::Gone => ErrorKind::NotFound,
            RemoteErrorKind::Auth => ErrorKind::Authentication,
            RemoteErrorKind::Failed => ErrorKind::Transport,
        };
        RuntimeError::new(kind, format!("{}: {}", self.host.provider(), e.message))
    }

    /// A serve's answer about a session, when the sandbox may be gone:
    /// a failure against a dead sandbox (a transport error, or the
    /// provider's proxy answering for it, 404 included) is "gone".
    async fn settle<T>(&self, session: &str, sandbox_id: &str, r: Result<T>) -> Result<T> {
        match r {
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::Transport | ErrorKind::Api | ErrorKind::NotFound
                ) =>
            {
                if let Ok(false) = self.host.alive(sandbox_id).await {
                    self.forget(sandbox_id);
                    return Err(gone(self.host.provider(), session, sandbox_id));
                }
                Err(e)
            }
            other => other,
        }
    }
}

/// The error of a session whose sandbox is gone.
fn gone(provider: &str, session: &str, sandbox: &str) -> RuntimeError {
    RuntimeError::new(
        ErrorKind::NotFound,
        format!(
            "session `{session}` not found: its {provider} sandbox `{sandbox}` is gone \
             (killed, or past its lifetime)"
        ),
    )
}

#[async_trait]
impl Runtime for RemoteRuntime {
    fn name(&self) -> &str {
        self.host.provider()
    }

    fn endpoint(&self) -> Option<String> {
        Some(self.host.endpoint())
    }

    async fn create_agent(&self, body: Value) -> Result<Agent> {
        self.local.create_agent(body).await
    }
    async fn retrieve_agent(&self, id: &str, version: Option<u64>) -> Result<Agent> {
        self.local.retrieve_agent(id, version).await
    }
    async fn list_agents(&self, query: &ListQuery) -> Result<Page<Agent>> {
        self.local.list_agents(query).await
    }
    async fn update_agent(&self, id: &str, body: Value) -> Result<Agent> {
        self.local.update_agent(id, body).await
    }
    async fn list_agent_versions(&self, id: &str, query: &ListQuery) -> Result<Page<Agent>> {
        self.local.list_agent_versions(id, query).await
    }
    async fn archive_agent(&self, id: &str) -> Result<Agent> {
        self.local.archive_agent(id).await
    }

    /// Created in the embedded runtime, then provisioned on the host; a
    /// failed provisioning removes it again.
    async fn create_environment(&self, body: Value) -> Result<Environment> {
        let created = self.local.create_environment(body).await?;
        if let Err(e) = self.host.provision(&image_of(&created)).await {
            if let Err(undo) = self.local.delete_environment(&created.id).await {
                tracing::warn!(environment = %created.id, "cannot remove an environment that failed to provision: {undo}");
            }
            return Err(self.unprovisioned(&created, e));
        }
        Ok(created)
    }
    async fn retrieve_environment(&self, id: &str) -> Result<Environment> {
        self.local.retrieve_environment(id).await
    }
    async fn list_environments(&self, query: &ListQuery) -> Result<Page<Environment>> {
        self.local.list_environments(query).await
    }
    /// Updated in the embedded runtime, then provisioned on the host when
    /// its packages changed; a failed provisioning puts the previous
    /// config back.
    async fn update_environment(&self, id: &str, body: Value) -> Result<Environment> {
        let previous = self.local.retrieve_environment(id).await?;
        let updated = self.local.update_environment(id, body).await?;
        let image = image_of(&updated);
        if image.packages == image_of(&previous).packages {
            return Ok(updated);
        }
        if let Err(e) = self.host.provision(&image).await {
            let back = serde_json::json!({ "config": previous.config });
            if let Err(undo) = self.local.update_environment(id, back).await {
                tracing::warn!(environment = %id, "cannot put back the config of an environment that failed to provision: {undo}");
            }
            return Err(self.unprovisioned(&updated, e));
        }
        Ok(updated)
    }
    async fn archive_environment(&self, id: &str) -> Result<Environment> {
        self.local.archive_environment(id).await
    }
    /// Deleted in the embedded runtime, then what the host built for it
    /// removed; a failure there is only logged (the environment is gone).
    async fn delete_environment(&self, id: &str) -> Result<Deleted> {
        let deleted = self.local.delete_environment(id).await?;
        if let Err(e) = self.host.retire(id).await {
            tracing::warn!(environment = %id, "cannot remove what was built for a deleted environment: {e}");
        }
        Ok(deleted)
    }

    async fn create_session(&self, body: Value) -> Result<Session> {
        session::create(self, body).await
    }

    async fn retrieve_session(&self, id: &str) -> Result<Session> {
        let (client, remote) = self.reach(id).await?;
        let r = client.api.retrieve_session(&remote).await;
        let s = self.settle(id, client.sandbox.id(), r).await?;
        Ok(session::map_back(s, &client))
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Page<Session>> {
        session::list(self, query).await
    }

    async fn update_session(&self, id: &str, body: Value) -> Result<Session> {
        let (client, remote) = self.reach(id).await?;
        let r = client.api.update_session(&remote, body).await;
        let s = self.settle(id, client.sandbox.id(), r).await?;
        Ok(session::map_back(s, &client))
    }

    /// Archives the session in its serve, then kills its sandbox: an
    /// archived session runs nothing, and a sandbox costs while it runs.
    async fn archive_session(&self, id: &str) -> Result<Session> {
        let (client, remote) = self.reach(id).await?;
        let r = client.api.archive_session(&remote).await;
        let s = self.settle(id, client.sandbox.id(), r).await?;
        let sandbox_id = client.sandbox.id().to_owned();
        self.forget(&sandbox_id);
        self.host
            .kill(&sandbox_id)
            .await
            .map_err(|e| self.error(e))?;
        tracing::info!(sandbox = %sandbox_id, session = id, "archived; killed its sandbox");
        Ok(session::map_back(s, &client))
    }

    /// Kills the session's sandbox, and with it everything of the session.
    async fn delete_session(&self, id: &str) -> Result<Deleted> {
        let (_, sandbox_id) =
            split_session_id(id).ok_or_else(|| RuntimeError::not_found("session", id))?;
        self.forget(sandbox_id);
        let killed = self
            .host
            .kill(sandbox_id)
            .await
            .map_err(|e| self.error(e))?;
        if !killed {
            return Err(gone(self.host.provider(), id, sandbox_id));
        }
        tracing::info!(sandbox = %sandbox_id, session = id, "deleted; killed its sandbox");
        Ok(Deleted {
            id: id.to_owned(),
            kind: "session_deleted".to_owned(),
        })
    }

    async fn send_events(&self, session_id: &str, events: Vec<Value>) -> Result<Vec<Value>> {
        let (client, remote) = self.reach(session_id).await?;
        let r = client.api.send_events(&remote, events).await;
        self.settle(session_id, client.sandbox.id(), r).await
    }

    async fn list_events(&self, session_id: &str, query: &ListQuery) -> Result<Page<Value>> {
        let (client, remote) = self.reach(session_id).await?;
        let r = client.api.list_events(&remote, query).await;
        self.settle(session_id, client.sandbox.id(), r).await
    }

    async fn stream_events(&self, session_id: &str) -> Result<EventStream> {
        let (client, remote) = self.reach(session_id).await?;
        let r = client.api.stream_events(&remote).await;
        let inner = self.settle(session_id, client.sandbox.id(), r).await?;
        Ok(stream::watched(
            inner,
            Arc::clone(&self.host),
            client.sandbox.id().to_owned(),
        ))
    }
}
