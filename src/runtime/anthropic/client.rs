//! The HTTP layer of the `anthropic` provider: one request at a time, with
//! the client-side rate limiter, retries, error mapping, redaction of the
//! credentials, and the checks that keep a retried request from taking
//! effect twice.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, DATE};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::limiter::{Limiter, RequestClass};
use super::retry::{self, RetryPolicy};
use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::runtime::{ErrorKind, Result, RuntimeError};

/// Pages read when looking for an object an earlier attempt may have created.
const MAX_ADOPTION_PAGES: usize = 50;
/// Slack on the server-clock estimate when a `date` header was seen.
const CLOCK_SLACK_KNOWN: Duration = Duration::from_secs(5);
/// Slack when the server's clock is unknown (the local clock is used).
const CLOCK_SLACK_UNKNOWN: Duration = Duration::from_secs(60);

/// Scrubs the credentials out of text that leaves the client.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// Secrets shorter than 8 characters are not real keys and are not scrubbed
    /// (replacing them would mangle every message).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Redactor {
            secrets: Arc::new(secrets.into_iter().filter(|s| s.len() >= 8).collect()),
        }
    }

    pub fn text(&self, mut text: String) -> String {
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "(sensitive)");
            }
        }
        text
    }

    pub fn error(&self, mut error: RuntimeError) -> RuntimeError {
        error.message = self.text(std::mem::take(&mut error.message));
        error.request_id = error.request_id.map(|id| self.text(id));
        error
    }
}

/// One API request.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    /// Path segments after the base URL, unescaped (`["v1", "agents", id]`).
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Req {
    pub fn new(method: Method, segments: &[&str]) -> Self {
        Req {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// `POST /v1/agents/agent_01…`, for messages.
    pub fn label(&self) -> String {
        format!("{} /{}", self.method, self.segments.join("/"))
    }

    fn class(&self) -> RequestClass {
        RequestClass {
            environment: self.segments.get(1).map(String::as_str) == Some("environments"),
            create: self.method == Method::POST && self.segments.len() == 2,
        }
    }
}

/// A successful JSON answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub value: Value,
    pub request_id: Option<String>,
}

/// What to check before resending a request an earlier attempt of which may
/// have taken effect (a connection broken after sending, a timeout, a 5xx).
#[derive(Debug, Clone)]
pub(crate) enum Dedup {
    /// Resend as is.
    None,
    /// A create: adopt a fresh object with the same `agentform.address` and
    /// `agentform.manifest` metadata instead of creating another.
    Create {
        /// The list endpoint (`["v1", "agents"]`).
        list: Vec<String>,
        address: String,
        manifest: String,
        /// The list endpoint takes `created_at[gte]`.
        time_filter: bool,
        /// Extra list filters (`agent_id` for sessions).
        filters: Vec<(String, String)>,
    },
    /// Sent events: return them as found in the history instead of sending
    /// them again.
    Events {
        session_id: String,
        events: Vec<Value>,
    },
    /// A delete: a 404 after an uncertain attempt means it went through.
    Delete { id: String, kind: &'static str },
    /// An agent update made against `version`: the next version, made after
    /// the first attempt, means it went through (resending would only meet
    /// a version conflict).
    AgentUpdate { id: String, version: u64 },
}

impl Dedup {
    /// The adoption check for a create body, when its metadata names the
    /// object; else [`Dedup::None`].
    pub fn create(body: &Value, list: &[&str], time_filter: bool) -> Self {
        let meta = |key: &str| {
            body.get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (Some(address), Some(manifest)) = (meta(META_ADDRESS), meta(META_MANIFEST)) else {
            return Dedup::None;
        };
        Dedup::Create {
            list: list.iter().map(|s| (*s).to_owned()).collect(),
            address,
            manifest,
            time_filter,
            filters: Vec::new(),
        }
    }

    fn checks(&self) -> bool {
        matches!(
            self,
            Dedup::Create { .. } | Dedup::Events { .. } | Dedup::AgentUpdate { .. }
        )
    }
}

/// A failed attempt.
struct Failure {
    error: RuntimeError,
    retryable: bool,
    /// The request may have reached the server and taken effect.
    uncertain: bool,
    status: Option<u16>,
    headers: Option<HeaderMap>,
}

impl Failure {
    fn transport(error: RuntimeError, uncertain: bool) -> Self {
        Failure {
            error,
            retryable: true,
            uncertain,
            status: None,
            headers: None,
        }
    }
}

/// The server's clock relative to ours, from `date` headers.
#[derive(Debug, Default)]
struct ServerClock {
    offset_ms: AtomicI64,
    known: AtomicBool,
}

impl ServerClock {
    fn observe(&self, headers: &HeaderMap) {
        let Some(date) = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::http_date)
        else {
            return;
        };
        let offset = date - OffsetDateTime::now_utc();
        self.offset_ms
            .store(offset.whole_milliseconds() as i64, Ordering::Relaxed);
        self.known.store(true, Ordering::Relaxed);
    }

    /// A time on the server's clock no later than `local` was there, with slack.
    fn not_before(&self, local: SystemTime) -> OffsetDateTime {
        let local = OffsetDateTime::from(local);
        if self.known.load(Ordering::Relaxed) {
            let offset = time::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
            local + offset - CLOCK_SLACK_KNOWN
        } else {
            local - CLOCK_SLACK_UNKNOWN
        }
    }
}

/// How the client reaches the API.
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
    headers: HeaderMap,
    pub redactor: Redactor,
    pub retry: RetryPolicy,
    limiter: Limiter,
    pub timeout: Duration,
    clock: ServerClock,
}

impl Http {
    pub fn new(
        base: Url,
        headers: HeaderMap,
        redactor: Redactor,
        retry: RetryPolicy,
        limiter: Limiter,
        timeout: Duration,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .user_agent(concat!("agentform/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                RuntimeError::new(
                    ErrorKind::Transport,
                    format!("cannot build an HTTP client: {e}"),
                )
            })?;
        Ok(Http {
            client,
            base,
            headers,
            redactor,
            retry,
            limiter,
            timeout,
            clock: ServerClock::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, req: &Req) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(&req.segments);
        }
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&req.query);
        }
        url
    }

    /// Sends `req`, retrying as the policy allows, and returns its JSON.
    pub async fn json(&self, req: &Req, dedup: &Dedup) -> Result<Reply> {
        self.execute(req, dedup)
            .await
            .map_err(|e| self.redactor.error(e))
    }

    async fn execute(&self, req: &Req, dedup: &Dedup) -> Result<Reply> {
        let started = SystemTime::now();
        let label = req.label();
        let mut retries = 0;
        let mut uncertain = false;
        let mut check = false;
        let mut last_error: Option<RuntimeError> = None;
        loop {
            if check {
                match self.already_done(dedup, started).await {
                    Ok(Some(value)) => {
                        tracing::info!(endpoint = %label, "an earlier attempt took effect; using its result");
                        return Ok(Reply {
                            value,
                            request_id: None,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let e = self.redactor.error(e);
                        let mut error = last_error.take().unwrap_or_else(|| e.clone());
                        if retries >= self.retry.max_retries {
                            error.message = format!(
                                "{}; whether an earlier attempt took effect is unknown ({})",
                                error.message, e.message
                            );
                            return Err(error);
                        }
                        let wait = self.retry.delay(retries, None);
                        tracing::debug!(endpoint = %label, error = %e, wait_ms = wait.as_millis() as u64, "checking for an earlier attempt failed; trying again");
                        last_error = Some(error);
                        tokio::time::sleep(wait).await;
                        retries += 1;
                        continue;
                    }
                }
            }
            let failure = match self.attempt_json(req).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            uncertain |= failure.uncertain;
            if let Dedup::Delete { id, kind } = dedup {
                if uncertain && failure.status == Some(404) {
                    tracing::info!(endpoint = %label, "deleted by an earlier attempt");
                    return Ok(Reply {
                        value: json!({"id": id, "type": kind}),
                        request_id: None,
                    });
                }
            }
            let error = self.redactor.error(failure.error);
            if !failure.retryable || retries >= self.retry.max_retries {
                return Err(error);
            }
            let wait = self.retry.delay(retries, failure.headers.as_ref());
            tracing::debug!(
                endpoint = %label,
                error = %error,
                retry = retries + 1,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            last_error = Some(error);
            tokio::time::sleep(wait).await;
            retries += 1;
            check = uncertain && dedup.checks();
        }
    }

    /// Opens a streaming response (2xx), retrying as the policy allows.
    pub async fn stream(&self, req: &Req) -> Result<reqwest::Response> {
        let label = req.label();
        let mut retries = 0;
        loop {
            let failure = match self.attempt(req, true).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let error = self.redactor.error(failure.error);
            if !failure.retryable || retries >= self.retry.max_retries {
                return Err(error);
            }
            let wait = self.retry.delay(retries, failure.headers.as_ref());
            tracing::debug!(endpoint = %label, error = %error, retry = retries + 1, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    /// One attempt returning JSON; its error is already redacted.
    async fn attempt_json(&self, req: &Req) -> Result<Reply, Failure> {
        self.attempt_json_inner(req).await.map_err(|mut f| {
            f.error = self.redactor.error(f.error);
            f
        })
    }

    async fn attempt_json_inner(&self, req: &Req) -> Result<Reply, Failure> {
        let label = req.label();
        let response = self.attempt(req, false).await?;
        let request_id = header_request_id(response.headers());
        let bytes = response.bytes().await.map_err(|e| {
            Failure::transport(
                RuntimeError::new(
                    ErrorKind::Transport,
                    format!("{label}: the answer broke off: {}", describe_reqwest(e)),
                ),
                true,
            )
        })?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                let mut error = RuntimeError::new(
                    ErrorKind::Api,
                    format!(
                        "{label}: the answer is not JSON ({e}): {}",
                        snippet(&String::from_utf8_lossy(&bytes))
                    ),
                );
                error.request_id.clone_from(&request_id);
                Failure {
                    error,
                    retryable: false,
                    uncertain: true,
                    status: None,
                    headers: None,
                }
            })?
        };
        Ok(Reply { value, request_id })
    }

    /// One attempt: the response when its status is 2xx.
    async fn attempt(&self, req: &Req, stream: bool) -> Result<reqwest::Response, Failure> {
        let label = req.label();
        let _permit = self.limiter.acquire(req.class()).await;
        let mut builder = self
            .client
            .request(req.method.clone(), self.url(req))
            .headers(self.headers.clone());
        builder = if stream {
            builder.header(ACCEPT, HeaderValue::from_static("text/event-stream"))
        } else {
            builder
                .header(ACCEPT, HeaderValue::from_static("application/json"))
                .timeout(self.timeout)
        };
        if let Some(body) = &req.body {
            builder = builder.body(body.to_string());
        }
        // A stream's body has no deadline; only its start does.
        let sent = match tokio::time::timeout(self.timeout, builder.send()).await {
            Ok(sent) => sent,
            Err(_) => {
                let message = format!("{label}: no answer within {} s", self.timeout.as_secs_f64());
                return Err(Failure::transport(
                    RuntimeError::new(ErrorKind::Transport, message),
                    true,
                ));
            }
        };
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let uncertain = !e.is_connect();
                let message = self.redactor.text(format!(
                    "{label}: cannot reach the API: {}",
                    describe_reqwest(e)
                ));
                return Err(Failure::transport(
                    RuntimeError::new(ErrorKind::Transport, message),
                    uncertain,
                ));
            }
        };
        self.clock.observe(response.headers());
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = tokio::time::timeout(self.timeout, response.bytes())
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let error = self
            .redactor
            .error(api_error(&label, status, &headers, &body));
        tracing::debug!(endpoint = %label, status = status.as_u16(), request_id = ?error.request_id, "the API returned an error");
        Err(Failure {
            error,
            retryable: retry::should_retry(status.as_u16(), &headers),
            uncertain: status.is_server_error(),
            status: Some(status.as_u16()),
            headers: Some(headers),
        })
    }

    /// Whether an uncertain earlier attempt took effect: its result if so.
    async fn already_done(&self, dedup: &Dedup, started: SystemTime) -> Result<Option<Value>> {
        let not_before = self.clock.not_before(started);
        match dedup {
            Dedup::None | Dedup::Delete { .. } => Ok(None),
            Dedup::Create {
                list,
                address,
                manifest,
                time_filter,
                filters,
            } => {
                let segments: Vec<&str> = list.iter().map(String::as_str).collect();
                let mut page: Option<String> = None;
                for _ in 0..MAX_ADOPTION_PAGES {
                    let mut req = Req::new(Method::GET, &segments).query("limit", "100");
                    for (k, v) in filters {
                        req = req.query(k, v.as_str());
                    }
                    if *time_filter {
                        if let Ok(ts) = not_before.format(&Rfc3339) {
                            req = req.query("created_at[gte]", ts);
                        }
                    }
                    if let Some(p) = &page {
                        req = req.query("page", p.as_str());
                    }
                    let reply = self.attempt_json(&req).await.map_err(|f| f.error)?;
                    let data = reply
                        .value
                        .get("data")
                        .and_then(Value::as_array)
                        .ok_or_else(|| {
                            RuntimeError::new(
                                ErrorKind::Api,
                                format!("{}: the answer is not a page", req.label()),
                            )
                        })?;
                    let found = data
                        .iter()
                        .filter(|o| {
                            let meta = |k: &str| o.get("metadata")?.get(k)?.as_str();
                            meta(META_ADDRESS) == Some(address.as_str())
                                && meta(META_MANIFEST) == Some(manifest.as_str())
                        })
                        .filter_map(|o| Some((created_at(o)?, o)))
                        .filter(|(at, _)| *at >= not_before)
                        .max_by_key(|(at, _)| *at);
                    if let Some((_, object)) = found {
                        return Ok(Some(object.clone()));
                    }
                    match reply.value.get("next_page").and_then(Value::as_str) {
                        Some(next) if !next.is_empty() => page = Some(next.to_owned()),
                        _ => break,
                    }
                }
                Ok(None)
            }
            Dedup::AgentUpdate { id, version } => {
                let req = Req::new(Method::GET, &["v1", "agents", id]);
                let reply = self.attempt_json(&req).await.map_err(|f| f.error)?;
                let newer = reply.value.get("version").and_then(Value::as_u64) == Some(version + 1);
                let since = reply
                    .value
                    .get("updated_at")
                    .and_then(Value::as_str)
                    .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
                    .is_some_and(|at| at >= not_before);
                Ok((newer && since).then_some(reply.value))
            }
            Dedup::Events { session_id, events } => {
                let req = Req::new(Method::GET, &["v1", "sessions", session_id, "events"])
                    .query("order", "desc")
                    .query("limit", "100");
                let reply = self.attempt_json(&req).await.map_err(|f| f.error)?;
                let Some(data) = reply.value.get("data").and_then(Value::as_array) else {
                    return Err(RuntimeError::new(
                        ErrorKind::Api,
                        format!("{}: the answer is not a page", req.label()),
                    ));
                };
                // Oldest first, only what was processed after the first attempt.
                let recent: Vec<&Value> = data
                    .iter()
                    .rev()
                    .filter(|e| match e.get("processed_at").and_then(Value::as_str) {
                        None => true,
                        Some(at) => OffsetDateTime::parse(at, &Rfc3339)
                            .map(|at| at >= not_before)
                            .unwrap_or(true),
                    })
                    .collect();
                let mut matched = Vec::with_capacity(events.len());
                let mut rest = recent.into_iter();
                for sent in events {
                    match rest.by_ref().find(|h| contains(h, sent)) {
                        Some(found) => matched.push(found.clone()),
                        None => return Ok(None),
                    }
                }
                Ok(Some(json!({ "data": matched })))
            }
        }
    }
}

/// Whether `have` holds everything `want` says (objects: every key of
/// `want`, a null matching an absent key; arrays: element by element).
pub(crate) fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| match h.get(k) {
            Some(hv) => contains(hv, wv),
            None => wv.is_null(),
        }),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        _ => have == want,
    }
}

fn created_at(object: &Value) -> Option<OffsetDateTime> {
    let at = object.get("created_at")?.as_str()?;
    OffsetDateTime::parse(at, &Rfc3339).ok()
}

fn header_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The `error.type` strings of the API's error envelope.
pub(crate) fn kind_from_wire_type(kind: &str) -> Option<ErrorKind> {
    Some(match kind {
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" | "billing_error" => ErrorKind::Permission,
        "not_found_error" => ErrorKind::NotFound,
        "conflict_error" => ErrorKind::Conflict,
        "rate_limit_error" => ErrorKind::RateLimit,
        "api_error" | "timeout_error" => ErrorKind::Api,
        "overloaded_error" => ErrorKind::Overloaded,
        _ => return None,
    })
}

/// The error kind of an HTTP status; the envelope's type for the others.
pub(crate) fn kind_for_status(status: u16, wire_type: Option<&str>) -> ErrorKind {
    match status {
        400 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::Permission,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        429 => ErrorKind::RateLimit,
        529 => ErrorKind::Overloaded,
        500..=599 => ErrorKind::Api,
        _ => match wire_type.and_then(kind_from_wire_type) {
            Some(kind) => kind,
            None if (400..500).contains(&status) => ErrorKind::InvalidRequest,
            None => ErrorKind::Api,
        },
    }
}

/// What to do about an error, by status.
pub(crate) fn hint(status: u16) -> Option<&'static str> {
    Some(match status {
        401 => "check ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN)",
        403 => "the credentials lack access to this object or to the Managed Agents beta",
        404 => "the object is gone: `agentform state rm ADDR` or re-apply",
        409 => "archived or changed object / version conflict",
        429 => "rate limited: lower the client rate limits or retry later",
        529 => "the API is overloaded: retry later",
        _ => return None,
    })
}

/// An error answer → [`RuntimeError`]: the envelope's message (and error
/// code), the request id, and a hint.
pub(crate) fn api_error(
    label: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> RuntimeError {
    let code = status.as_u16();
    let json = serde_json::from_slice::<Value>(body).ok();
    let envelope = json.as_ref().and_then(|j| j.get("error"));
    let text = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let wire_type = text(envelope, "type");
    let mut message = text(envelope, "message")
        .or_else(|| match envelope {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .or_else(|| text(json.as_ref(), "message"))
        .or_else(|| {
            let raw = String::from_utf8_lossy(body);
            Some(snippet(&raw)).filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("no details").to_owned());
    if let Some(error_code) = text(envelope.and_then(|e| e.get("details")), "error_code") {
        message = format!("{message} [{error_code}]");
    }
    let mut full = format!("{label}: {message}");
    if let Some(h) = hint(code) {
        full = format!("{full} (hint: {h})");
    }
    let mut error = RuntimeError::new(kind_for_status(code, wire_type.as_deref()), full);
    error.request_id = header_request_id(headers).or_else(|| text(json.as_ref(), "request_id"));
    error
}

/// At most 300 characters of `text`, trimmed.
pub(crate) fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A reqwest error and its causes, without the URL; shared with the model backends.
pub(crate) use crate::model::anthropic::describe_reqwest;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::runtime::anthropic::retry::tests::headers;

    fn envelope(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn statuses_map_to_kinds() {
        let cases = [
            (400, ErrorKind::InvalidRequest),
            (401, ErrorKind::Authentication),
            (403, ErrorKind::Permission),
            (404, ErrorKind::NotFound),
            (409, ErrorKind::Conflict),
            (429, ErrorKind::RateLimit),
            (500, ErrorKind::Api),
            (502, ErrorKind::Api),
            (503, ErrorKind::Api),
            (529, ErrorKind::Overloaded),
            (413, ErrorKind::InvalidRequest),
            (418, ErrorKind::InvalidRequest),
        ];
        for (status, kind) in cases {
            assert_eq!(kind_for_status(status, None), kind, "{status}");
        }
        assert_eq!(
            kind_for_status(402, Some("billing_error")),
            ErrorKind::Permission
        );
        assert_eq!(kind_for_status(408, Some("timeout_error")), ErrorKind::Api);
    }

    #[test]
    fn envelope_message_request_id_and_hint() {
        let label = "GET /v1/agents/agent_1";
        let e = api_error(
            label,
            StatusCode::NOT_FOUND,
            &headers(&[("request-id", "req_hdr")]),
            &envelope("not_found_error", "agent `agent_1` not found"),
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.request_id.as_deref(), Some("req_hdr"));
        assert!(e.message.starts_with(label), "{e}");
        assert!(e.message.contains("agent `agent_1` not found"), "{e}");
        assert!(
            e.message
                .contains("the object is gone: `agentform state rm ADDR` or re-apply"),
            "{e}"
        );
        let shown = e.to_string();
        assert!(shown.contains("not_found_error (404)"), "{shown}");
        assert!(shown.contains("[request_id: req_hdr]"), "{shown}");

        // The body's request_id when there is no header.
        let mut body: Value =
            serde_json::from_slice(&envelope("authentication_error", "invalid x-api-key")).unwrap();
        body["request_id"] = json!("req_body");
        let e = api_error(
            "POST /v1/agents",
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            body.to_string().as_bytes(),
        );
        assert_eq!(e.kind, ErrorKind::Authentication);
        assert_eq!(e.request_id.as_deref(), Some("req_body"));
        assert!(e.message.contains("check ANTHROPIC_API_KEY"), "{e}");

        let e = api_error(
            "POST /v1/agents/a",
            StatusCode::CONFLICT,
            &HeaderMap::new(),
            &envelope("conflict_error", "version mismatch"),
        );
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e
            .message
            .contains("archived or changed object / version conflict"));

        let e = api_error(
            "GET /v1/agents",
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            &envelope("rate_limit_error", "slow down"),
        );
        assert_eq!(e.kind, ErrorKind::RateLimit);
        assert!(e.message.contains("rate limited"));

        let e = api_error(
            "GET /v1/agents",
            StatusCode::from_u16(529).unwrap(),
            &HeaderMap::new(),
            &envelope("overloaded_error", "Overloaded"),
        );
        assert_eq!(e.kind, ErrorKind::Overloaded);
    }

    #[test]
    fn error_codes_and_odd_bodies() {
        let body = json!({"type": "error", "error": {"type": "invalid_request_error",
            "message": "The environment is archived", "details": {"error_code": "environment_archived"}}});
        let e = api_error(
            "POST /v1/environments/env_1",
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            body.to_string().as_bytes(),
        );
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(e
            .message
            .contains("The environment is archived [environment_archived]"));

        let e = api_error(
            "GET /v1/x",
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>bad gateway</html>",
        );
        assert_eq!(e.kind, ErrorKind::Api);
        assert!(e.message.contains("<html>bad gateway</html>"));

        let e = api_error(
            "GET /v1/x",
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            b"",
        );
        assert!(e.message.contains("Service Unavailable"), "{e}");
    }

    #[test]
    fn containment_for_event_matching() {
        let sent =
            json!({"type": "user.message", "content": [{"type": "text", "text": "hi"}], "x": null});
        let stored = json!({"id": "sevt_1", "type": "user.message", "processed_at": null,
            "content": [{"type": "text", "text": "hi", "citations": null}]});
        assert!(contains(&stored, &sent));
        let other = json!({"id": "sevt_2", "type": "user.message", "content": [{"type": "text", "text": "hello"}]});
        assert!(!contains(&other, &sent));
        let longer = json!({"type": "user.message", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "!"}]});
        assert!(!contains(&longer, &sent));
    }

    #[test]
    fn redaction_scrubs_every_secret() {
        let r = Redactor::new([
            "sk-ant-secret-1".to_owned(),
            "tok-secret-22".to_owned(),
            "x".to_owned(),
        ]);
        let mut e = RuntimeError::new(
            ErrorKind::Api,
            "bad key sk-ant-secret-1 and tok-secret-22 (x)",
        );
        e.request_id = Some("sk-ant-secret-1".into());
        let e = r.error(e);
        assert_eq!(e.message, "bad key (sensitive) and (sensitive) (x)");
        assert_eq!(e.request_id.as_deref(), Some("(sensitive)"));
    }

    #[test]
    fn request_classes() {
        let class = |m: Method, s: &[&str]| Req::new(m, s).class();
        assert_eq!(
            class(Method::POST, &["v1", "environments"]),
            RequestClass {
                environment: true,
                create: true
            }
        );
        assert_eq!(
            class(Method::GET, &["v1", "environments", "env_1"]),
            RequestClass {
                environment: true,
                create: false
            }
        );
        assert_eq!(
            class(Method::POST, &["v1", "sessions"]),
            RequestClass {
                environment: false,
                create: true
            }
        );
        assert_eq!(
            class(Method::POST, &["v1", "agents", "agent_1"]),
            RequestClass {
                environment: false,
                create: false
            }
        );
        assert_eq!(
            class(Method::GET, &["v1", "agents"]),
            RequestClass {
                environment: false,
                create: false
            }
        );
    }

    #[test]
    fn dedup_needs_both_metadata_keys() {
        let body =
            json!({"metadata": {"agentform.address": "agent.a", "agentform.manifest": "demo"}});
        assert!(matches!(
            Dedup::create(&body, &["v1", "agents"], true),
            Dedup::Create { .. }
        ));
        let body = json!({"metadata": {"agentform.address": "agent.a"}});
        assert!(matches!(
            Dedup::create(&body, &["v1", "agents"], true),
            Dedup::None
        ));
        assert!(matches!(
            Dedup::create(&json!({}), &["v1", "agents"], true),
            Dedup::None
        ));
    }

    #[test]
    fn server_clock_estimate() {
        let clock = ServerClock::default();
        let now = SystemTime::now();
        let unknown = clock.not_before(now);
        assert_eq!(
            (OffsetDateTime::from(now) - unknown).whole_seconds(),
            CLOCK_SLACK_UNKNOWN.as_secs() as i64
        );
        // A server an hour ahead.
        let ahead = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let date = ahead.format(&fmt).unwrap();
        clock.observe(&headers(&[("date", &date)]));
        let est = clock.not_before(now);
        let diff = (est - OffsetDateTime::from(now)).whole_seconds();
        assert!((3590..=3600).contains(&diff), "{diff}");
    }
}
