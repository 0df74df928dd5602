//! The runtime protocol: what every provider implements, in the shapes of the
//! Managed Agents API (`anthropic` Python SDK 2.10.0, `types/beta/`).
//!
//! Request bodies are JSON in the API's own field names; responses are typed
//! objects that serialize to exactly what the API returns.
//!
//! It owns the protocol trait and its providers (`local`, `anthropic`,
//! `e2b` over the remote loop of `remote`); it must not know about plans,
//! manifests or the state's records.

pub mod anthropic;
pub mod e2b;
pub mod local;
pub mod modal;
pub mod remote;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::db::Db;

pub use crate::api::event;
pub use crate::api::limits::TOOLSET_TOOLS;
pub use crate::api::{
    list_all, Agent, Deleted, Environment, ErrorKind, ListQuery, Page, Result, RuntimeError,
    Session,
};

/// The protocol every provider implements. `async-trait` because providers sit
/// behind `dyn` and are chosen per resource at run time.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// The provider's name, as written in manifests.
    fn name(&self) -> &str;

    /// Where a remote provider's objects live (its base URL); `None` for
    /// the embedded runtime, whose objects live in the state database.
    fn endpoint(&self) -> Option<String> {
        None
    }

    /// Whether every effect of a create is a write to `db` (the state's
    /// database), made durable before the call returns: then nothing can
    /// be left behind that is not in `db`.
    fn writes_only_to(&self, _db: &Arc<dyn Db>) -> bool {
        false
    }

    async fn create_agent(&self, body: Value) -> Result<Agent>;
    async fn retrieve_agent(&self, id: &str, version: Option<u64>) -> Result<Agent>;
    async fn list_agents(&self, query: &ListQuery) -> Result<Page<Agent>>;
    /// Makes a new version; a `version` in the body must equal the current one.
    async fn update_agent(&self, id: &str, body: Value) -> Result<Agent>;
    async fn list_agent_versions(&self, id: &str, query: &ListQuery) -> Result<Page<Agent>>;
    async fn archive_agent(&self, id: &str) -> Result<Agent>;

    async fn create_environment(&self, body: Value) -> Result<Environment>;
    async fn retrieve_environment(&self, id: &str) -> Result<Environment>;
    async fn list_environments(&self, query: &ListQuery) -> Result<Page<Environment>>;
    async fn update_environment(&self, id: &str, body: Value) -> Result<Environment>;
    async fn archive_environment(&self, id: &str) -> Result<Environment>;
    async fn delete_environment(&self, id: &str) -> Result<Deleted>;

    async fn create_session(&self, body: Value) -> Result<Session>;
    async fn retrieve_session(&self, id: &str) -> Result<Session>;
    async fn list_sessions(&self, query: &ListQuery) -> Result<Page<Session>>;
    async fn update_session(&self, id: &str, body: Value) -> Result<Session>;
    async fn archive_session(&self, id: &str) -> Result<Session>;
    async fn delete_session(&self, id: &str) -> Result<Deleted>;

    /// `POST /v1/sessions/{id}/events`: the events as accepted, with their ids.
    async fn send_events(&self, session_id: &str, events: Vec<Value>) -> Result<Vec<Value>>;
    /// `GET /v1/sessions/{id}/events`: the history, oldest first.
    async fn list_events(&self, session_id: &str, query: &ListQuery) -> Result<Page<Value>>;
    /// `GET /v1/sessions/{id}/events/stream`: events from now on; nothing is replayed.
    async fn stream_events(&self, session_id: &str) -> Result<EventStream>;

    /// Sends `user.interrupt`.
    async fn interrupt(&self, session_id: &str) -> Result<()> {
        self.send_events(
            session_id,
            vec![serde_json::json!({"type": "user.interrupt"})],
        )
        .await
        .map(|_| ())
    }
}

/// A live event stream. Events are JSON exactly as the API sends them, so
/// unknown event types and fields pass through untouched.
pub struct EventStream {
    source: Box<dyn EventSource>,
}

/// What an [`EventStream`] reads from; each provider has its own.
#[async_trait]
pub trait EventSource: Send {
    /// The next event; `None` when the stream ended; an error when it broke
    /// (the caller reconnects and merges the history).
    async fn next(&mut self) -> Option<Result<Value>>;
}

impl EventStream {
    pub fn new(source: impl EventSource + 'static) -> Self {
        EventStream {
            source: Box::new(source),
        }
    }

    pub async fn next(&mut self) -> Option<Result<Value>> {
        self.source.next().await
    }
}

/// The providers a command can reach, by name.
#[derive(Clone, Default)]
pub struct Providers {
    map: BTreeMap<String, std::sync::Arc<dyn Runtime>>,
}

impl Providers {
    pub fn insert(&mut self, runtime: std::sync::Arc<dyn Runtime>) {
        self.map.insert(runtime.name().to_string(), runtime);
    }

    pub fn get(&self, name: &str) -> Result<std::sync::Arc<dyn Runtime>> {
        self.map.get(name).cloned().ok_or_else(|| {
            RuntimeError::new(
                ErrorKind::Transport,
                format!(
                    "provider `{name}` is not available in this build; available: {}",
                    self.map.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }
}
