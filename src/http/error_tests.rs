//! The error envelope, kinds, hints and excerpts, as messages show them.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::http::retry::tests::headers;

fn envelope(kind: &str, message: &str) -> Vec<u8> {
    json!({"type": "error", "error": {"type": kind, "message": message}})
        .to_string()
        .into_bytes()
}

#[test]
fn snippets_are_cut_at_one_length() {
    assert_eq!(snippet("  short \n"), "short");
    let long = snippet(&"é".repeat(SNIPPET_CHARS + 100));
    assert_eq!(long.chars().count(), SNIPPET_CHARS + 1);
    assert!(long.ends_with('…'));
    assert_eq!(
        snippet(&"x".repeat(SNIPPET_CHARS)),
        "x".repeat(SNIPPET_CHARS)
    );
}

#[test]
fn envelope_fields() {
    let e = Envelope::parse(
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"no",
            "details":{"error_code":"environment_archived"}},"request_id":"req_1"}"#,
    )
    .unwrap();
    assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
    assert_eq!(e.message.as_deref(), Some("no"));
    assert_eq!(e.error_code.as_deref(), Some("environment_archived"));
    assert_eq!(e.request_id.as_deref(), Some("req_1"));
    assert_eq!(e.error_kind(), Some(ErrorKind::InvalidRequest));
    assert_eq!(Envelope::parse(b"<html>"), None);
    assert_eq!(
        Envelope::from_error(&json!({"type": "overloaded_error", "message": "busy"})).error_kind(),
        Some(ErrorKind::Overloaded)
    );
    assert_eq!(
        Envelope::from_json(&json!({"error": ""})),
        Envelope::default()
    );
}

#[test]
fn model_error_messages() {
    let msg = |body: &str| model_error_message(StatusCode::BAD_GATEWAY, body.as_bytes());
    assert_eq!(
        msg(r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#),
        "api_error: boom"
    );
    assert_eq!(
        msg(r#"{"error":{"message":"no such model"}}"#),
        "no such model"
    );
    assert_eq!(
        msg(r#"{"error":"model 'x' not found"}"#),
        "model 'x' not found"
    );
    assert_eq!(msg(r#"{"object":"error","message":"bad"}"#), "bad");
    assert_eq!(msg(r#"{"detail":"Not Found"}"#), "Not Found");
    assert_eq!(msg(""), "Bad Gateway");
    assert_eq!(msg(&"x".repeat(600)).chars().count(), 501);
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
