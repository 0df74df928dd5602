//! The E2B client's error: what kind of failure it was (so that callers can
//! tell a gone sandbox from a refused request), the HTTP status when there
//! was an answer, and a message that names the call and never a secret
//! (callers build it through a [`Redactor`]).

use reqwest::StatusCode;
use serde_json::Value;

use crate::http::{describe_reqwest, snippet, Redactor};

/// What went wrong, as far as a caller decides anything by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E2bErrorKind {
    /// 401 or 403 (Connect: `unauthenticated`, `permission_denied`).
    Auth,
    /// 404 (Connect: `not_found`): the object, file or process is not there.
    NotFound,
    /// The sandbox no longer exists: killed, or past its timeout.
    SandboxGone,
    /// 429 (Connect: `resource_exhausted`).
    RateLimited,
    /// Another refusal of the request (4xx, Connect's client-side codes).
    Rejected,
    /// 5xx (Connect: `internal`, `unavailable`, …).
    Server,
    /// No answer: the connection failed, broke or timed out.
    Connection,
    /// An answer that does not read as E2B's.
    Protocol,
}

/// A failed E2B call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct E2bError {
    pub kind: E2bErrorKind,
    /// The HTTP status of the answer, when there was one.
    pub status: Option<u16>,
    /// Redacted: it may be logged and shown.
    pub message: String,
}

/// What the sandbox proxy says when the sandbox does not exist any more
/// (the SDK's `SANDBOX_NOT_FOUND_MESSAGE`).
pub const SANDBOX_NOT_FOUND: &str = "was not found";

impl E2bError {
    pub fn new(kind: E2bErrorKind, message: impl Into<String>) -> Self {
        E2bError {
            kind,
            status: None,
            message: message.into(),
        }
    }

    pub fn is(&self, kind: E2bErrorKind) -> bool {
        self.kind == kind
    }

    /// A reqwest failure of `label` (no answer), without its URL.
    pub fn connection(label: &str, error: reqwest::Error, redactor: &Redactor) -> Self {
        let text = redactor.text(format!("E2B {label}: {}", describe_reqwest(error)));
        E2bError::new(E2bErrorKind::Connection, text)
    }

    /// An error answer of `label`: E2B's `{code, message}` body (or a
    /// Connect error `{code: "not_found", message}`), with a hint for
    /// statuses a user can act on. `key_env` names the API key's variable.
    pub fn answer(
        label: &str,
        status: StatusCode,
        body: &[u8],
        key_env: &str,
        redactor: &Redactor,
    ) -> Self {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| snippet(&String::from_utf8_lossy(body)));
        let connect_code = json
            .as_ref()
            .and_then(|j| j.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let code = status.as_u16();
        let kind = match (code, connect_code.as_deref()) {
            (502, _) if message.contains(SANDBOX_NOT_FOUND) => E2bErrorKind::SandboxGone,
            (_, Some(c)) => connect_kind(c),
            (401 | 403, _) => E2bErrorKind::Auth,
            (404, _) => E2bErrorKind::NotFound,
            (429, _) => E2bErrorKind::RateLimited,
            (500..=599, _) => E2bErrorKind::Server,
            _ => E2bErrorKind::Rejected,
        };
        let reason = status.canonical_reason().unwrap_or("error");
        let mut text = if message.is_empty() {
            format!("E2B {label}: {code} {reason}")
        } else {
            format!("E2B {label}: {code} {reason}: {message}")
        };
        match kind {
            E2bErrorKind::Auth => {
                text.push_str(&format!(" (hint: check the API key in `{key_env}`)"))
            }
            E2bErrorKind::SandboxGone => {
                text.push_str(" (the sandbox was killed or reached its timeout)")
            }
            _ => {}
        }
        E2bError {
            kind,
            status: Some(code),
            message: redactor.text(text),
        }
    }

    /// The error of a Connect stream's end frame or of a unary call's body.
    pub fn rpc(label: &str, code: &str, message: &str, redactor: &Redactor) -> Self {
        let kind = if message.contains(SANDBOX_NOT_FOUND) && code == "unavailable" {
            E2bErrorKind::SandboxGone
        } else {
            connect_kind(code)
        };
        E2bError::new(
            kind,
            redactor.text(format!("E2B {label}: {code}: {message}")),
        )
    }

    /// An answer that does not read as E2B's.
    pub fn protocol(label: &str, why: impl std::fmt::Display, redactor: &Redactor) -> Self {
        E2bError::new(
            E2bErrorKind::Protocol,
            redactor.text(format!("E2B {label}: unexpected answer: {why}")),
        )
    }
}

/// The kind of a Connect error code.
fn connect_kind(code: &str) -> E2bErrorKind {
    match code {
        "unauthenticated" | "permission_denied" => E2bErrorKind::Auth,
        "not_found" => E2bErrorKind::NotFound,
        "resource_exhausted" => E2bErrorKind::RateLimited,
        "invalid_argument"
        | "already_exists"
        | "failed_precondition"
        | "out_of_range"
        | "unimplemented"
        | "canceled" => E2bErrorKind::Rejected,
        _ => E2bErrorKind::Server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(["e2b_secret_key_123".to_owned()])
    }

    #[test]
    fn answers_read_as_their_kind_with_hints_and_no_secret() {
        let e = E2bError::answer(
            "POST /v2/sandboxes",
            StatusCode::UNAUTHORIZED,
            br#"{"code":401,"message":"Invalid API key e2b_secret_key_123"}"#,
            "E2B_API_KEY",
            &redactor(),
        );
        assert_eq!(e.kind, E2bErrorKind::Auth);
        assert_eq!(e.status, Some(401));
        assert_eq!(
            e.message,
            "E2B POST /v2/sandboxes: 401 Unauthorized: Invalid API key (sensitive) (hint: check the API key in `E2B_API_KEY`)"
        );
        let gone = E2bError::answer(
            "POST /process.Process/Start",
            StatusCode::BAD_GATEWAY,
            br#"{"code":502,"message":"The sandbox sbx1 was not found"}"#,
            "K",
            &redactor(),
        );
        assert_eq!(gone.kind, E2bErrorKind::SandboxGone);
        let not_found = E2bError::answer(
            "POST /process.Process/SendSignal",
            StatusCode::NOT_FOUND,
            br#"{"code":"not_found","message":"process 7 not found"}"#,
            "K",
            &redactor(),
        );
        assert_eq!(not_found.kind, E2bErrorKind::NotFound);
        let busy = E2bError::answer(
            "GET /x",
            StatusCode::SERVICE_UNAVAILABLE,
            b"",
            "K",
            &redactor(),
        );
        assert_eq!(
            (busy.kind, busy.message.as_str()),
            (E2bErrorKind::Server, "E2B GET /x: 503 Service Unavailable")
        );
        let limited = E2bError::answer(
            "GET /x",
            StatusCode::TOO_MANY_REQUESTS,
            b"slow down",
            "K",
            &redactor(),
        );
        assert_eq!(limited.kind, E2bErrorKind::RateLimited);
        assert!(limited.message.ends_with(": slow down"));
    }

    #[test]
    fn rpc_errors_map_connect_codes() {
        let r = redactor();
        assert_eq!(
            E2bError::rpc("s", "not_found", "m", &r).kind,
            E2bErrorKind::NotFound
        );
        assert_eq!(
            E2bError::rpc("s", "internal", "m", &r).kind,
            E2bErrorKind::Server
        );
        assert_eq!(
            E2bError::rpc("s", "unavailable", "The sandbox x was not found", &r).kind,
            E2bErrorKind::SandboxGone
        );
        assert_eq!(
            E2bError::rpc("s", "invalid_argument", "m", &r).kind,
            E2bErrorKind::Rejected
        );
    }
}
