//! The `anthropic` provider: the real Managed Agents API over HTTPS.
//!
//! Paths, page wrappers, the event stream and the error envelope follow the
//! wire notes (official SDK). Every request carries `anthropic-version`,
//! `anthropic-beta: managed-agents-2026-04-01` and the credentials
//! (`x-api-key` for an API key, `Authorization: Bearer` for an auth token);
//! the credentials are kept in [`Secret`]s and scrubbed from every error.
//!
//! Requests go through a client-side rate limiter ([`RateLimits`]) and are
//! retried by the shared policy of [`crate::http`] (as the SDKs do:
//! connection errors, 408, 409, 429, 5xx, honoring `x-should-retry` and
//! `retry-after`). A retried create adopts the object an earlier attempt made
//! (same `agentform.address` and `agentform.manifest` metadata) instead of
//! making another; sent events and deletes get the same care (`dedup`).
//!
//! Objects are parsed into the typed shapes of [`crate::runtime`]; events stay
//! raw JSON so unknown types and fields pass through.

mod client;
mod clock;
mod dedup;
mod limiter;
mod request;
mod sse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::{
    Agent, Deleted, Environment, ErrorKind, EventStream, ListQuery, Page, Result, Runtime,
    RuntimeError, Session,
};
use crate::http::Redactor;
use client::Http;
use dedup::Dedup;
use limiter::Limiter;
use request::{Reply, Req};

pub use crate::http::RetryPolicy;
pub use limiter::RateLimits;
pub use sse::{SseDecoder, SseFrame};

/// The provider's name in manifests.
pub const PROVIDER_NAME: &str = "anthropic";
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
pub const API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
pub const AUTH_TOKEN_ENV: &str = "ANTHROPIC_AUTH_TOKEN";
/// The `anthropic-version` header.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The `anthropic-beta` header of every Managed Agents endpoint.
pub const MANAGED_AGENTS_BETA: &str = "managed-agents-2026-04-01";
/// Per-attempt limit (for a stream: until its response starts).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest silence on an event stream (the API sends pings) before it
/// counts as dropped and the runner reconnects.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A credential: `Debug` and `Display` print `(sensitive)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(sensitive)")
    }
}

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct AnthropicOptions {
    /// Defaults to [`DEFAULT_BASE_URL`]; may have a path prefix.
    pub base_url: Option<String>,
    /// Sent as `x-api-key`.
    pub api_key: Option<Secret>,
    /// Sent as `Authorization: Bearer`.
    pub auth_token: Option<Secret>,
    pub limits: RateLimits,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Per-attempt limit (for a stream: until its response starts).
    pub timeout: Duration,
    /// First backoff step; the policy's default when `None`.
    pub retry_backoff: Option<Duration>,
    /// Where the credentials came from, for messages.
    pub key_env: String,
    pub token_env: String,
    /// Sent with every request besides the API's own (a remote sandbox's
    /// routing headers); values marked sensitive are kept out of errors.
    pub headers: HeaderMap,
}

impl Default for AnthropicOptions {
    fn default() -> Self {
        AnthropicOptions {
            base_url: None,
            api_key: None,
            auth_token: None,
            limits: RateLimits::default(),
            max_retries: crate::http::retry::DEFAULT_MAX_RETRIES,
            timeout: DEFAULT_TIMEOUT,
            retry_backoff: None,
            key_env: API_KEY_ENV.to_owned(),
            token_env: AUTH_TOKEN_ENV.to_owned(),
            headers: HeaderMap::new(),
        }
    }
}

/// The Managed Agents API as a [`Runtime`].
pub struct AnthropicRuntime {
    http: Http,
    stream_idle: Duration,
}

impl fmt::Debug for AnthropicRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicRuntime")
            .field("base_url", &self.http.base_url())
            .field("timeout", &self.http.client.timeout)
            .field("retry", &self.http.client.retry)
            .finish_non_exhaustive()
    }
}

impl AnthropicRuntime {
    /// Credentials from `ANTHROPIC_API_KEY` or `ANTHROPIC_AUTH_TOKEN`; the
    /// base URL from `base_url_override`, else `ANTHROPIC_BASE_URL`, else
    /// the public API.
    pub fn from_env(base_url_override: Option<String>, limits: RateLimits) -> Result<Self> {
        Self::new(options_from(
            base_url_override,
            limits,
            (API_KEY_ENV, AUTH_TOKEN_ENV),
            |name| std::env::var(name).ok(),
        ))
    }

    pub fn new(options: AnthropicOptions) -> Result<Self> {
        let nonempty = |s: &Option<Secret>| {
            s.as_ref()
                .map(|s| Secret::new(s.expose().trim()))
                .filter(|s| !s.expose().is_empty())
        };
        let api_key = nonempty(&options.api_key);
        let auth_token = nonempty(&options.auth_token);
        if api_key.is_none() && auth_token.is_none() {
            return Err(RuntimeError::new(
                ErrorKind::Authentication,
                format!(
                    "the `{PROVIDER_NAME}` provider has no credentials: set {} \
                     (sent as `x-api-key`) or {} (sent as `Authorization: Bearer`)",
                    options.key_env, options.token_env
                ),
            ));
        }
        let base = parse_base_url(options.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))?;
        let mut headers = HeaderMap::new();
        if let Some(key) = &api_key {
            headers.insert(
                HeaderName::from_static("x-api-key"),
                sensitive(key.expose(), &options.key_env)?,
            );
        }
        if let Some(token) = &auth_token {
            let value = format!("Bearer {}", token.expose());
            headers.insert(AUTHORIZATION, sensitive(&value, &options.token_env)?);
        }
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        headers.insert(
            HeaderName::from_static("anthropic-beta"),
            HeaderValue::from_static(MANAGED_AGENTS_BETA),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let sensitive_extras: Vec<String> = options
            .headers
            .values()
            .filter(|v| v.is_sensitive())
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for (name, value) in &options.headers {
            headers.insert(name.clone(), value.clone());
        }
        let redactor = Redactor::new(
            [api_key, auth_token]
                .into_iter()
                .flatten()
                .map(|s| s.expose().to_owned())
                .chain(sensitive_extras),
        );
        let mut policy = RetryPolicy {
            max_retries: options.max_retries,
            ..RetryPolicy::default()
        };
        if let Some(b) = options.retry_backoff {
            policy.initial_backoff = b;
            policy.max_backoff = policy.max_backoff.max(b);
        }
        let http = Http::new(
            base,
            headers,
            redactor,
            policy,
            Limiter::new(options.limits),
            options.timeout,
        )?;
        Ok(AnthropicRuntime {
            http,
            stream_idle: STREAM_IDLE_TIMEOUT.max(options.timeout),
        })
    }

    /// The provider for a command over a state whose records of this
    /// provider were made at `recorded` endpoints (`None`: before endpoints
    /// were recorded, the default). Without a base URL of its own (manifest
    /// or environment) the command goes where the objects are; one that
    /// would reach objects somewhere else is refused.
    pub fn for_state(mut options: AnthropicOptions, recorded: &[Option<String>]) -> Result<Self> {
        let chosen = options.base_url.is_some();
        // Recorded endpoints are `base_url()`s already; only the default needs its form.
        let default = parse_base_url(DEFAULT_BASE_URL)?.to_string();
        let mut recorded: Vec<String> = recorded
            .iter()
            .map(|e| e.clone().unwrap_or_else(|| default.clone()))
            .collect();
        recorded.sort();
        recorded.dedup();
        if let (false, [only]) = (chosen, recorded.as_slice()) {
            options.base_url = Some(only.clone());
        }
        let runtime = Self::new(options)?;
        let elsewhere: Vec<&str> = recorded
            .iter()
            .map(String::as_str)
            .filter(|e| *e != runtime.base_url())
            .collect();
        if !elsewhere.is_empty() {
            return Err(RuntimeError::invalid(format!(
                "the state holds `{PROVIDER_NAME}` objects at {}, but this command would reach {}\n\
                 hint: set `providers.{PROVIDER_NAME}.base_url` (or {BASE_URL_ENV}) to where they live, \
                 or `agentform state rm` the records of objects that live elsewhere",
                elsewhere.join(", "),
                runtime.base_url(),
            )));
        }
        Ok(runtime)
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.http.client.retry
    }

    /// Replaces the retry policy (tests and benchmarks use short backoffs).
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) {
        self.http.client.retry = policy;
    }

    async fn call<T: DeserializeOwned>(&self, req: Req, dedup: Dedup, shape: Shape) -> Result<T> {
        let label = req.label();
        let reply = self.http.json(&req, &dedup).await?;
        parse(&label, shape, reply).map_err(|e| self.http.redactor().error(e))
    }
}

/// The options of a base URL, limits and the variables (key, token) that
/// hold the credentials, reading variables with `var`.
pub fn options_from(
    base_url_override: Option<String>,
    limits: RateLimits,
    (key_env, token_env): (&str, &str),
    var: impl Fn(&str) -> Option<String>,
) -> AnthropicOptions {
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    AnthropicOptions {
        base_url: nonempty(base_url_override).or_else(|| nonempty(var(BASE_URL_ENV))),
        api_key: nonempty(var(key_env)).map(Secret::from),
        auth_token: nonempty(var(token_env)).map(Secret::from),
        limits,
        key_env: key_env.to_owned(),
        token_env: token_env.to_owned(),
        ..AnthropicOptions::default()
    }
}

fn parse_base_url(raw: &str) -> Result<Url> {
    crate::http::check_base_url(raw).map_err(|why| {
        RuntimeError::invalid(format!(
            "the `{PROVIDER_NAME}` provider's base URL {:?} is invalid: {why}",
            raw.trim()
        ))
    })
}

fn sensitive(value: &str, var: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        RuntimeError::new(
            ErrorKind::Authentication,
            format!("{var} contains characters that cannot be sent in an HTTP header"),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

// ----- parsing ------------------------------------------------------------------

/// What a response is, for messages and for defaults of fields a server
/// may leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Agent,
    Environment,
    Session,
    Deleted,
    Page(Item),
    SentEvents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Agent,
    Environment,
    Session,
    Event,
}

#[derive(Clone, Copy)]
enum Fill {
    Object,
    Array,
    Null,
}

impl Fill {
    fn value(self) -> Value {
        match self {
            Fill::Object => Value::Object(Map::new()),
            Fill::Array => Value::Array(Vec::new()),
            Fill::Null => Value::Null,
        }
    }
}

/// Collections and open objects that are always present in the SDK's
/// models; filled in when missing so a leaner server still parses.
const AGENT_FILL: &[(&str, Fill)] = &[
    ("execution_identity", Fill::Null),
    ("mcp_servers", Fill::Array),
    ("metadata", Fill::Object),
    ("skills", Fill::Array),
    ("tools", Fill::Array),
];
const ENVIRONMENT_FILL: &[(&str, Fill)] = &[("config", Fill::Null), ("metadata", Fill::Object)];
const SESSION_FILL: &[(&str, Fill)] = &[
    ("metadata", Fill::Object),
    ("outcome_evaluations", Fill::Array),
    ("resources", Fill::Array),
    ("stats", Fill::Object),
    ("usage", Fill::Object),
    ("vault_ids", Fill::Array),
];

impl Item {
    fn name(self) -> &'static str {
        match self {
            Item::Agent => "agent",
            Item::Environment => "environment",
            Item::Session => "session",
            Item::Event => "event",
        }
    }

    fn fill(self) -> &'static [(&'static str, Fill)] {
        match self {
            Item::Agent => AGENT_FILL,
            Item::Environment => ENVIRONMENT_FILL,
            Item::Session => SESSION_FILL,
            Item::Event => &[],
        }
    }
}

impl Shape {
    fn name(self) -> String {
        match self {
            Shape::Agent => "an agent".into(),
            Shape::Environment => "an environment".into(),
            Shape::Session => "a session".into(),
            Shape::Deleted => "a deletion confirmation".into(),
            Shape::Page(item) => format!("a page of {}s", item.name()),
            Shape::SentEvents => "a list of sent events".into(),
        }
    }
}

fn fill(value: &mut Value, item: Item) {
    if let Value::Object(map) = value {
        for (key, default) in item.fill() {
            let entry = map.entry(*key).or_insert(Value::Null);
            if entry.is_null() {
                *entry = default.value();
            }
        }
    }
}

/// A reply → `T`; anything that does not fit is an [`ErrorKind::Api`] error
/// naming the endpoint and the offending field.
fn parse<T: DeserializeOwned>(label: &str, shape: Shape, reply: Reply) -> Result<T> {
    let Reply {
        mut value,
        request_id,
    } = reply;
    match shape {
        Shape::Agent => fill(&mut value, Item::Agent),
        Shape::Environment => fill(&mut value, Item::Environment),
        Shape::Session => fill(&mut value, Item::Session),
        Shape::Page(item) => {
            if let Some(data) = value.get_mut("data").and_then(Value::as_array_mut) {
                data.iter_mut().for_each(|v| fill(v, item));
            }
        }
        Shape::Deleted | Shape::SentEvents => {}
    }
    let shown = crate::http::snippet(&value.to_string());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        let mut error = RuntimeError::new(
            ErrorKind::Api,
            format!(
                "{label}: the answer is not {}{at}: {}: {shown}",
                shape.name(),
                e.inner()
            ),
        );
        error.request_id = request_id;
        error
    })
}

/// `{data: [...]}` of `POST /v1/sessions/{id}/events`; `data` may be absent.
#[derive(serde::Deserialize)]
struct SentEvents {
    #[serde(default)]
    data: Option<Vec<Value>>,
}

// ----- requests -----------------------------------------------------------------

fn list_req(segments: &[&str], query: &ListQuery, archivable: bool) -> Req {
    let mut req = Req::new(Method::GET, segments);
    if let Some(limit) = query.limit {
        req = req.query("limit", limit.to_string());
    }
    if let Some(page) = query.page.as_deref().filter(|p| !p.is_empty()) {
        req = req.query("page", page);
    }
    if archivable && query.include_archived {
        req = req.query("include_archived", "true");
    }
    req
}

#[async_trait]
impl Runtime for AnthropicRuntime {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn endpoint(&self) -> Option<String> {
        Some(self.base_url().to_owned())
    }

    async fn create_agent(&self, body: Value) -> Result<Agent> {
        let dedup = Dedup::create(&body, &["v1", "agents"], true);
        let req = Req::new(Method::POST, &["v1", "agents"]).body(body);
        self.call(req, dedup, Shape::Agent).await
    }

    async fn retrieve_agent(&self, id: &str, version: Option<u64>) -> Result<Agent> {
        let mut req = Req::new(Method::GET, &["v1", "agents", id]);
        if let Some(v) = version {
            req = req.query("version", v.to_string());
        }
        self.call(req, Dedup::None, Shape::Agent).await
    }

    async fn list_agents(&self, query: &ListQuery) -> Result<Page<Agent>> {
        let req = list_req(&["v1", "agents"], query, true);
        self.call(req, Dedup::None, Shape::Page(Item::Agent)).await
    }

    async fn update_agent(&self, id: &str, body: Value) -> Result<Agent> {
        let dedup = match body.get("version").and_then(Value::as_u64) {
            Some(version) => Dedup::AgentUpdate {
                id: id.to_owned(),
                version,
            },
            None => Dedup::None,
        };
        let req = Req::new(Method::POST, &["v1", "agents", id]).body(body);
        self.call(req, dedup, Shape::Agent).await
    }

    async fn list_agent_versions(&self, id: &str, query: &ListQuery) -> Result<Page<Agent>> {
        let req = list_req(&["v1", "agents", id, "versions"], query, false);
        self.call(req, Dedup::None, Shape::Page(Item::Agent)).await
    }

    async fn archive_agent(&self, id: &str) -> Result<Agent> {
        let req = Req::new(Method::POST, &["v1", "agents", id, "archive"]);
        self.call(req, Dedup::None, Shape::Agent).await
    }

    async fn create_environment(&self, body: Value) -> Result<Environment> {
        let dedup = Dedup::create(&body, &["v1", "environments"], false);
        let req = Req::new(Method::POST, &["v1", "environments"]).body(body);
        self.call(req, dedup, Shape::Environment).await
    }

    async fn retrieve_environment(&self, id: &str) -> Result<Environment> {
        let req = Req::new(Method::GET, &["v1", "environments", id]);
        self.call(req, Dedup::None, Shape::Environment).await
    }

    async fn list_environments(&self, query: &ListQuery) -> Result<Page<Environment>> {
        let req = list_req(&["v1", "environments"], query, true);
        self.call(req, Dedup::None, Shape::Page(Item::Environment))
            .await
    }

    async fn update_environment(&self, id: &str, body: Value) -> Result<Environment> {
        let req = Req::new(Method::POST, &["v1", "environments", id]).body(body);
        self.call(req, Dedup::None, Shape::Environment).await
    }

    async fn archive_environment(&self, id: &str) -> Result<Environment> {
        let req = Req::new(Method::POST, &["v1", "environments", id, "archive"]);
        self.call(req, Dedup::None, Shape::Environment).await
    }

    async fn delete_environment(&self, id: &str) -> Result<Deleted> {
        let req = Req::new(Method::DELETE, &["v1", "environments", id]);
        let dedup = Dedup::Delete {
            id: id.to_owned(),
            kind: "environment_deleted",
        };
        self.call(req, dedup, Shape::Deleted).await
    }

    async fn create_session(&self, body: Value) -> Result<Session> {
        let mut dedup = Dedup::create(&body, &["v1", "sessions"], true);
        if let Dedup::Create { filters, .. } = &mut dedup {
            let agent = body.get("agent");
            let agent_id = agent
                .and_then(Value::as_str)
                .or_else(|| agent.and_then(|a| a.get("id")).and_then(Value::as_str));
            if let Some(agent_id) = agent_id {
                filters.push(("agent_id".into(), agent_id.to_owned()));
            }
        }
        let req = Req::new(Method::POST, &["v1", "sessions"]).body(body);
        self.call(req, dedup, Shape::Session).await
    }

    async fn retrieve_session(&self, id: &str) -> Result<Session> {
        let req = Req::new(Method::GET, &["v1", "sessions", id]);
        self.call(req, Dedup::None, Shape::Session).await
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Page<Session>> {
        let req = list_req(&["v1", "sessions"], query, true);
        self.call(req, Dedup::None, Shape::Page(Item::Session))
            .await
    }

    async fn update_session(&self, id: &str, body: Value) -> Result<Session> {
        let req = Req::new(Method::POST, &["v1", "sessions", id]).body(body);
        self.call(req, Dedup::None, Shape::Session).await
    }

    async fn archive_session(&self, id: &str) -> Result<Session> {
        let req = Req::new(Method::POST, &["v1", "sessions", id, "archive"]);
        self.call(req, Dedup::None, Shape::Session).await
    }

    async fn delete_session(&self, id: &str) -> Result<Deleted> {
        let req = Req::new(Method::DELETE, &["v1", "sessions", id]);
        let dedup = Dedup::Delete {
            id: id.to_owned(),
            kind: "session_deleted",
        };
        self.call(req, dedup, Shape::Deleted).await
    }

    async fn send_events(&self, session_id: &str, events: Vec<Value>) -> Result<Vec<Value>> {
        let dedup = Dedup::Events {
            session_id: session_id.to_owned(),
            events: events.clone(),
        };
        let req = Req::new(Method::POST, &["v1", "sessions", session_id, "events"])
            .body(json!({ "events": events }));
        let sent: SentEvents = self.call(req, dedup, Shape::SentEvents).await?;
        Ok(sent.data.unwrap_or_default())
    }

    async fn list_events(&self, session_id: &str, query: &ListQuery) -> Result<Page<Value>> {
        let req = list_req(&["v1", "sessions", session_id, "events"], query, false);
        self.call(req, Dedup::None, Shape::Page(Item::Event)).await
    }

    async fn stream_events(&self, session_id: &str) -> Result<EventStream> {
        let req = Req::new(
            Method::GET,
            &["v1", "sessions", session_id, "events", "stream"],
        );
        let label = req.label();
        let response = self.http.stream(&req).await?;
        Ok(EventStream::new(sse::SseSource::new(
            response,
            self.stream_idle,
            label,
            self.http.redactor().clone(),
        )))
    }
}
