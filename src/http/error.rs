//! What an error answer says and how a message quotes it: the API's error
//! envelope (`{"type":"error","error":{"type","message"},"request_id"}`, and
//! the shapes OpenAI-compatible servers use), the error kind and hint of a
//! status, excerpts of bodies, and reqwest errors without their URL.
//!
//! Knows the API's errors (`crate::api`) and nothing of its clients.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use crate::api::{ErrorKind, RuntimeError};

/// The most characters of a body or payload a message quotes.
pub const SNIPPET_CHARS: usize = 500;

/// At most [`SNIPPET_CHARS`] characters of `text`, trimmed; `…` marks a cut.
pub fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The fields of an error answer, each `None` when absent or empty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `error.type` (`not_found_error`, …).
    pub kind: Option<String>,
    /// `error.message`, or `error` itself when it is a string (Ollama).
    pub message: Option<String>,
    /// `error.details.error_code`.
    pub error_code: Option<String>,
    /// A `message` beside `error` (vLLM: `{"object":"error","message"}`).
    pub top_message: Option<String>,
    /// A `detail` beside `error` (FastAPI servers).
    pub detail: Option<String>,
    pub request_id: Option<String>,
}

impl Envelope {
    /// `body` as an envelope; `None` when it is not JSON.
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Value>(body)
            .ok()
            .map(|json| Self::from_json(&json))
    }

    /// The envelope of a JSON answer.
    pub fn from_json(json: &Value) -> Self {
        let mut envelope = match json.get("error") {
            Some(Value::String(s)) if !s.is_empty() => Envelope {
                message: Some(s.clone()),
                ..Envelope::default()
            },
            Some(error) => Self::from_error(error),
            None => Envelope::default(),
        };
        envelope.top_message = text(json, "message");
        envelope.detail = text(json, "detail");
        envelope.request_id = text(json, "request_id");
        envelope
    }

    /// The `error` object alone (`{type, message, details}`), as an event
    /// stream's `event: error` may send it without the wrapper.
    pub fn from_error(error: &Value) -> Self {
        Envelope {
            kind: text(error, "type"),
            message: text(error, "message"),
            error_code: error.get("details").and_then(|d| text(d, "error_code")),
            ..Envelope::default()
        }
    }

    /// `type: message` (or either alone), else a `message` or `detail`
    /// beside the error.
    pub fn summary(&self) -> Option<String> {
        let from_error = match (&self.kind, &self.message) {
            (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
            (None, Some(message)) => Some(message.clone()),
            (Some(kind), None) => Some(kind.clone()),
            (None, None) => None,
        };
        from_error
            .or_else(|| self.top_message.clone())
            .or_else(|| self.detail.clone())
    }

    /// The error kind `error.type` names, if the API knows it.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.kind.as_deref().and_then(kind_from_wire_type)
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The `error.type` strings of the API's error envelope.
pub fn kind_from_wire_type(kind: &str) -> Option<ErrorKind> {
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
pub fn kind_for_status(status: u16, wire_type: Option<&str>) -> ErrorKind {
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

/// What to do about an error of the Managed Agents API, by status.
pub fn hint(status: u16) -> Option<&'static str> {
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

/// The `request-id` header of an answer.
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// An error answer of the Managed Agents API → [`RuntimeError`]: the
/// envelope's message (and error code), the request id, and a hint; `label`
/// (`GET /v1/agents/…`) starts the message.
pub fn api_error(
    label: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> RuntimeError {
    let code = status.as_u16();
    let envelope = Envelope::parse(body).unwrap_or_default();
    let mut message = envelope
        .message
        .clone()
        .or_else(|| envelope.top_message.clone())
        .or_else(|| Some(snippet(&String::from_utf8_lossy(body))).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("no details").to_owned());
    if let Some(error_code) = &envelope.error_code {
        message = format!("{message} [{error_code}]");
    }
    let mut full = format!("{label}: {message}");
    if let Some(h) = hint(code) {
        full = format!("{full} (hint: {h})");
    }
    let mut error = RuntimeError::new(kind_for_status(code, envelope.kind.as_deref()), full);
    error.request_id = request_id(headers).or(envelope.request_id);
    error
}

/// The message of an error answer of a model endpoint: the envelope's
/// `type: message` (Anthropic, OpenAI), its `error` string (Ollama), a
/// `message` (vLLM) or `detail`, else the start of the body, else the
/// status's reason phrase.
pub fn model_error_message(status: StatusCode, body: &[u8]) -> String {
    if let Some(message) = Envelope::parse(body).and_then(|e| e.summary()) {
        return message;
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("no details").to_owned()
    } else {
        snippet(&text)
    }
}

/// A reqwest error and its causes, without the URL (the caller names it).
pub fn describe_reqwest(error: reqwest::Error) -> String {
    let timed_out = error.is_timeout();
    let error = error.without_url();
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    // Drop reqwest's and hyper's generic wrappers when something specific follows.
    let specific: Vec<String> = parts
        .iter()
        .filter(|p| *p != "error sending request" && !p.starts_with("client error ("))
        .cloned()
        .collect();
    if !specific.is_empty() {
        parts = specific;
    }
    let mut text = parts.join(": ");
    if timed_out && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
