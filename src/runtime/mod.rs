//! The runtime protocol: what every provider implements, in the shapes of the
//! Managed Agents API (`anthropic` Python SDK 2.10.0, `types/beta/`).
//!
//! Request bodies are JSON in the API's own field names; responses are typed
//! objects that serialize to exactly what the API returns.

pub mod anthropic;
pub mod local;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tools of `agent_toolset_20260401`, in the order the API lists them.
pub const TOOLSET_TOOLS: [&str; 8] = [
    "bash",
    "edit",
    "read",
    "write",
    "glob",
    "grep",
    "web_fetch",
    "web_search",
];

/// `BetaManagedAgentsAgent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub archived_at: Option<String>,
    pub created_at: String,
    pub description: Option<String>,
    pub execution_identity: Value,
    pub mcp_servers: Vec<Value>,
    pub metadata: BTreeMap<String, String>,
    pub model: Value,
    pub multiagent: Option<Value>,
    pub name: String,
    pub skills: Vec<Value>,
    pub system: Option<String>,
    pub tools: Vec<Value>,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: String,
    pub version: u64,
}

/// `BetaEnvironment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub id: String,
    pub archived_at: Option<String>,
    pub config: Value,
    pub created_at: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// `BetaManagedAgentsSession`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    /// Snapshot of the agent version the session runs (`BetaManagedAgentsSessionAgent`).
    pub agent: Value,
    pub archived_at: Option<String>,
    pub created_at: String,
    pub environment_id: String,
    pub metadata: BTreeMap<String, String>,
    pub outcome_evaluations: Vec<Value>,
    pub resources: Vec<Value>,
    pub stats: Value,
    pub status: String,
    pub title: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: String,
    pub usage: Value,
    pub vault_ids: Vec<String>,
}

impl Session {
    pub fn agent_id(&self) -> Option<&str> {
        self.agent.get("id").and_then(Value::as_str)
    }

    pub fn agent_version(&self) -> Option<u64> {
        self.agent.get("version").and_then(Value::as_u64)
    }
}

/// `{id, type: "environment_deleted" | "session_deleted"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One page of a list; `next_page` is an opaque cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Default 20, at most 100.
    pub limit: Option<u32>,
    pub page: Option<String>,
    pub include_archived: bool,
}

impl ListQuery {
    pub fn all() -> Self {
        ListQuery {
            limit: Some(100),
            page: None,
            include_archived: true,
        }
    }
}

/// The API's error types, by HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    Conflict,
    RateLimit,
    Api,
    Overloaded,
    /// The provider could not be reached or its storage failed.
    Transport,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::Permission => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::RateLimit => 429,
            ErrorKind::Api | ErrorKind::Transport => 500,
            ErrorKind::Overloaded => 529,
        }
    }

    /// The `error.type` string of the API's error envelope.
    pub fn wire_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::Conflict => "conflict_error",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Api | ErrorKind::Transport => "api_error",
            ErrorKind::Overloaded => "overloaded_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeError {
    pub kind: ErrorKind,
    pub message: String,
    pub request_id: Option<String>,
}

impl RuntimeError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RuntimeError {
            kind,
            message: message.into(),
            request_id: None,
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} `{id}` not found"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.wire_type(),
            self.kind.status(),
            self.message
        )?;
        if let Some(id) = &self.request_id {
            write!(f, " [request_id: {id}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuntimeError {}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

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

/// Accessors for the fields every event has.
pub mod event {
    use serde_json::Value;

    pub fn id(e: &Value) -> &str {
        e.get("id").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn kind(e: &Value) -> &str {
        e.get("type").and_then(Value::as_str).unwrap_or_default()
    }

    /// The `type` of a `session.status_idle` event's stop reason.
    pub fn stop_reason(e: &Value) -> Option<&str> {
        e.get("stop_reason")?.get("type")?.as_str()
    }

    /// The text of an event's `content` blocks, joined.
    pub fn text(e: &Value) -> String {
        let mut out = String::new();
        if let Some(blocks) = e.get("content").and_then(Value::as_array) {
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    out.push_str(t);
                }
            }
        }
        out
    }
}

/// Every item of a list, following `next_page` until it runs out.
pub async fn list_all<T, F, Fut>(mut fetch: F) -> Result<Vec<T>>
where
    F: FnMut(ListQuery) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>>>,
{
    let mut out = Vec::new();
    let mut query = ListQuery::all();
    loop {
        let page = fetch(query.clone()).await?;
        out.extend(page.data);
        match page.next_page {
            Some(next) if !next.is_empty() => query.page = Some(next),
            _ => return Ok(out),
        }
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
