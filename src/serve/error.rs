//! The API's error envelope:
//! `{"type":"error","error":{"type":…,"message":…},"request_id":"req_…"}`.
//!
//! Handlers return [`ApiError`]; its response carries the error as an
//! extension, and the server's middleware writes the body once it knows the
//! request id (so every error, from a handler, an extractor, a fallback or a
//! panic, gets the same envelope).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::runtime::{ErrorKind, RuntimeError};

/// An error as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// `error.type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    pub message: String,
    /// Seconds, sent as `retry-after`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", message)
    }

    /// The envelope for a response some layer below the handlers made with
    /// only a status (none should, but nothing leaves without an envelope).
    pub fn from_status(status: StatusCode) -> Self {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 => "conflict_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            500.. => "api_error",
            _ => "invalid_request_error",
        };
        let message = status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned();
        Self::new(status, kind, message)
    }

    /// The JSON envelope.
    pub fn body(&self, request_id: Option<&str>) -> Value {
        let mut body = json!({
            "type": "error",
            "error": {"type": self.kind, "message": self.message},
        });
        if let Some(id) = request_id {
            body["request_id"] = json!(id);
        }
        body
    }

    /// The response, body included; the middleware rewrites the body with
    /// the request id.
    pub fn response(&self, request_id: Option<&str>) -> Response {
        let bytes = serde_json::to_vec(&self.body(request_id)).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let status =
            StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match e.kind {
            // Storage failures are the server's, not the client's; say so
            // without hiding what happened.
            ErrorKind::Transport => format!("internal error: {}", e.message),
            _ => e.message,
        };
        ApiError::new(status, e.kind.wire_type(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.response(None);
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_keep_their_status_and_type() {
        for (kind, status, wire) in [
            (ErrorKind::InvalidRequest, 400, "invalid_request_error"),
            (ErrorKind::NotFound, 404, "not_found_error"),
            (ErrorKind::Conflict, 409, "conflict_error"),
            (ErrorKind::RateLimit, 429, "rate_limit_error"),
            (ErrorKind::Transport, 500, "api_error"),
            (ErrorKind::Overloaded, 529, "overloaded_error"),
        ] {
            let e = ApiError::from(RuntimeError::new(kind, "m"));
            assert_eq!(e.status.as_u16(), status);
            assert_eq!(e.kind, wire);
        }
    }

    #[test]
    fn envelope_shape() {
        let e = ApiError::not_found("agent `x` not found");
        assert_eq!(
            e.body(Some("req_1")),
            json!({
                "type": "error",
                "error": {"type": "not_found_error", "message": "agent `x` not found"},
                "request_id": "req_1",
            })
        );
        assert_eq!(
            ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED).kind,
            "invalid_request_error"
        );
    }
}
