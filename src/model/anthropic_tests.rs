//! The Messages API backend against the shared test server: the request
//! sent, the answer parsed, errors, retries, deadlines and the key scrubbed.

use super::*;
use crate::http::test_server::{closed_port, serve_replies, serve_silent, Reply};
use serde_json::json;

const KEY: &str = "sk-ant-test-0123456789-SECRET";

fn config(base: &str) -> AnthropicConfig {
    AnthropicConfig {
        base_url: Some(base.to_owned()),
        ..AnthropicConfig::default()
    }
}

fn request() -> ModelRequest {
    ModelRequest {
        model: "claude-sonnet-4-6".into(),
        system: Some("You are terse.".into()),
        messages: vec![
            json!({"role": "user", "content": [{"type": "text", "text": "List files."}]}),
        ],
        tools: vec![json!({
            "name": "bash",
            "description": "Run a command",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            "internal_note": "not for the API"
        })],
        max_tokens: 1024,
    }
}

fn message_answer() -> Value {
    json!({
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Listing."},
            {"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {"command": "ls"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 3}
    })
}

fn overloaded() -> Reply {
    Reply::json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
    .header("retry-after", "0")
}

#[tokio::test]
async fn sends_the_messages_api_request_and_parses_the_answer() {
    let (base, log) = serve_replies(vec![Reply::json(200, message_answer())]).await;
    let model = AnthropicModel::with_api_key(config(&format!("{base}/")), KEY).unwrap();
    assert_eq!(model.url(), format!("{base}/v1/messages"));

    let response = model.complete(&request()).await.unwrap();
    assert_eq!(
        response.content,
        vec![
            json!({"type": "text", "text": "Listing."}),
            json!({"type": "tool_use", "id": "toolu_01", "name": "bash", "input": {"command": "ls"}}),
        ]
    );
    assert_eq!(response.stop_reason, "tool_use");
    assert_eq!(
        response.usage,
        Usage {
            input_tokens: 12,
            output_tokens: 7,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 3,
        }
    );

    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    let seen = &log[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(
        seen.body,
        json!({
            "model": "claude-sonnet-4-6",
            "max_tokens": 1024,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "List files."}]}],
            "tools": [{
                "name": "bash",
                "description": "Run a command",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}
            }]
        })
    );
}

#[tokio::test]
async fn model_override_and_optional_fields() {
    let answer = json!({"content": [{"type": "text", "text": "hi"}]});
    let (base, log) = serve_replies(vec![Reply::json(200, answer)]).await;
    let model = AnthropicModel::with_api_key(
        AnthropicConfig {
            model: Some("claude-haiku-4-5".into()),
            ..config(&base)
        },
        KEY,
    )
    .unwrap();
    let mut req = request();
    req.system = None;
    req.tools.clear();
    let response = model.complete(&req).await.unwrap();
    assert_eq!(response.stop_reason, "end_turn");
    assert_eq!(response.usage, Usage::default());

    let body = &log.lock().unwrap()[0].body;
    assert_eq!(body["model"], "claude-haiku-4-5");
    assert!(body.get("system").is_none());
    assert!(body.get("tools").is_none());
}

#[tokio::test]
async fn error_envelope_becomes_an_api_error_without_the_key() {
    let envelope = json!({
        "type": "error",
        "error": {"type": "invalid_request_error", "message": format!("bad key {KEY}")}
    });
    let (base, log) = serve_replies(vec![Reply::json(400, envelope)]).await;
    let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
    let error = model.complete(&request()).await.unwrap_err();
    assert_eq!(
        error,
        ModelError::Api {
            status: 400,
            message: "invalid_request_error: bad key [redacted]".into(),
            retryable: false,
        }
    );
    assert!(!error.to_string().contains(KEY));
    assert!(!format!("{error:?}").contains(KEY));
    assert!(!format!("{model:?}").contains(KEY));
    assert_eq!(log.lock().unwrap().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn retries_an_overloaded_answer_then_succeeds() {
    let (base, log) = serve_replies(vec![overloaded(), Reply::json(200, message_answer())]).await;
    let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
    let response = model.complete(&request()).await.unwrap();
    assert_eq!(response.stop_reason, "tool_use");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].body, log[1].body);
}

#[tokio::test]
async fn gives_up_after_two_retries() {
    let (base, log) = serve_replies(vec![overloaded(), overloaded(), overloaded()]).await;
    let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
    let error = model.complete(&request()).await.unwrap_err();
    assert_eq!(
        error,
        ModelError::Api {
            status: 529,
            message: "overloaded_error: Overloaded".into(),
            retryable: true,
        }
    );
    assert_eq!(
        error.to_string(),
        "model endpoint returned 529: overloaded_error: Overloaded"
    );
    assert_eq!(log.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn does_not_wait_past_the_deadline() {
    // retry-after is longer than the whole call may take: no retry.
    let busy = Reply::json(
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
    )
    .header("retry-after", "5");
    let (base, log) = serve_replies(vec![busy]).await;
    let model = AnthropicModel::with_api_key(
        AnthropicConfig {
            timeout: Duration::from_secs(2),
            ..config(&base)
        },
        KEY,
    )
    .unwrap();
    let error = model.complete(&request()).await.unwrap_err();
    assert!(matches!(
        error,
        ModelError::Api {
            status: 429,
            retryable: true,
            ..
        }
    ));
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn non_json_error_bodies_are_quoted() {
    let page = Reply::Json {
        status: 404,
        headers: Vec::new(),
        body: "<html>not found</html>".into(),
    };
    let (base, _log) = serve_replies(vec![page]).await;
    let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
    let error = model.complete(&request()).await.unwrap_err();
    assert_eq!(
        error,
        ModelError::Api {
            status: 404,
            message: "<html>not found</html>".into(),
            retryable: false,
        }
    );
}

#[tokio::test]
async fn a_success_that_is_not_a_message_is_an_error() {
    let (base, _log) = serve_replies(vec![Reply::json(200, json!({"hello": "world"}))]).await;
    let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
    let error = model.complete(&request()).await.unwrap_err();
    assert!(
        matches!(&error, ModelError::Api { status: 200, message, retryable: false } if message.contains("not a message")),
        "{error:?}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_fails_fast() {
    let base = closed_port().await;
    let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
    let error = tokio::time::timeout(Duration::from_secs(30), model.complete(&request()))
        .await
        .expect("a refused connection must not hang")
        .unwrap_err();
    let ModelError::Unreachable(message) = &error else {
        panic!("expected Unreachable, got {error:?}");
    };
    assert!(
        message.starts_with(&format!("cannot reach {base}/v1/messages: ")),
        "{message}"
    );
    assert!(!message.contains(KEY));
}

#[tokio::test]
async fn silent_endpoint_times_out() {
    let base = serve_silent().await;
    let model = AnthropicModel::with_api_key(
        AnthropicConfig {
            timeout: Duration::from_millis(300),
            ..config(&base)
        },
        KEY,
    )
    .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(30), model.complete(&request()))
        .await
        .expect("the wall-clock timeout must fire")
        .unwrap_err();
    assert_eq!(
        error,
        ModelError::Unreachable(format!(
            "cannot reach {base}/v1/messages: no answer within 0.3 s"
        ))
    );
}

#[test]
fn missing_or_empty_key_names_the_variable() {
    let error = AnthropicModel::new(AnthropicConfig {
        api_key_env: "AGENTFORM_TEST_NEVER_SET_KEY_7F3A".into(),
        ..AnthropicConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        error,
        ModelError::Config(
            "AGENTFORM_TEST_NEVER_SET_KEY_7F3A is not set; export it or choose another model backend"
                .into()
        )
    );
    let error = AnthropicModel::with_api_key(AnthropicConfig::default(), "  ").unwrap_err();
    assert_eq!(
        error,
        ModelError::Config(
            "ANTHROPIC_API_KEY is not set; export it or choose another model backend".into()
        )
    );
}

#[test]
fn a_key_that_cannot_be_a_header_is_a_config_error_without_the_key() {
    let error =
        AnthropicModel::with_api_key(AnthropicConfig::default(), "sk-bad\nkey-SECRET").unwrap_err();
    assert!(matches!(&error, ModelError::Config(m) if m.starts_with("ANTHROPIC_API_KEY ")));
    assert!(!error.to_string().contains("SECRET"));
}

#[test]
fn base_url_precedence() {
    assert_eq!(resolve_base_url(None, None), "https://api.anthropic.com");
    assert_eq!(
        resolve_base_url(None, Some("http://proxy:8080/".into())),
        "http://proxy:8080"
    );
    assert_eq!(
        resolve_base_url(Some("http://mine"), Some("http://proxy:8080".into())),
        "http://mine"
    );
    assert_eq!(
        resolve_base_url(Some(""), Some(String::new())),
        DEFAULT_BASE_URL
    );
}

#[test]
fn invalid_base_url_is_a_config_error() {
    let error = AnthropicModel::with_api_key(config("not a url"), KEY).unwrap_err();
    assert!(matches!(error, ModelError::Config(m) if m.contains("not a url")));
}

#[tokio::test]
async fn the_server_decides_with_x_should_retry_and_retry_after_ms() {
    // A 400 the server calls retryable, after the 1 ms it asks for.
    let again = Reply::json(
        400,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "try again"}}),
    )
    .header("x-should-retry", "true")
    .header("retry-after-ms", "1");
    let (base, log) = serve_replies(vec![again, Reply::json(200, message_answer())]).await;
    let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        model.complete(&request()).await.unwrap().stop_reason,
        "tool_use"
    );
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(log.lock().unwrap().len(), 2);

    // A 529 the server says not to retry.
    let final_ = overloaded().header("x-should-retry", "false");
    let (base, log) = serve_replies(vec![final_]).await;
    let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
    let error = model.complete(&request()).await.unwrap_err();
    assert_eq!(
        error,
        ModelError::Api {
            status: 529,
            message: "overloaded_error: Overloaded".into(),
            retryable: false,
        }
    );
    assert_eq!(log.lock().unwrap().len(), 1);
}
