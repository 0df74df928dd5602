//! Any OpenAI-compatible chat-completions endpoint (Ollama, vLLM, llama.cpp):
//! `POST {base_url}/chat/completions`, translated to and from the Messages
//! API shapes the agent loop uses.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::{json, Map, Value};

use super::endpoint::{HttpEndpoint, DEFAULT_TIMEOUT};
use super::{Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::http::snippet;

/// How to reach an OpenAI-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// Up to and including the version segment, e.g. `http://localhost:11434/v1`.
    pub base_url: String,
    /// Name of the environment variable holding a bearer key; `None` sends no key.
    pub api_key_env: Option<String>,
    /// Model id sent to the endpoint instead of the request's.
    pub model: Option<String>,
    /// Wall-clock limit for one call, retries included.
    pub timeout: Duration,
}

impl OpenAiConfig {
    /// No key, no model mapping, the default timeout (120 s).
    pub fn new(base_url: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            api_key_env: None,
            model: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A chat-completions endpoint behind the [`Model`] trait.
pub struct OpenAiModel {
    endpoint: HttpEndpoint,
    model: Option<String>,
    /// Numbers ids for tool calls the endpoint returns without one.
    next_call_id: AtomicU64,
}

impl fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("url", &self.endpoint.url)
            .field("model", &self.model)
            .field("timeout", &self.endpoint.timeout())
            .finish_non_exhaustive()
    }
}

impl OpenAiModel {
    /// Reads the key from `config.api_key_env` now when one is named; a
    /// named variable that is unset or empty is a [`ModelError::Config`].
    pub fn new(config: OpenAiConfig) -> Result<Self, ModelError> {
        let key = match &config.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(key),
                _ => return Err(missing_key(var)),
            },
        };
        Self::with_api_key(config, key)
    }

    /// Like [`OpenAiModel::new`] with the key (if any) given directly.
    pub fn with_api_key(config: OpenAiConfig, api_key: Option<String>) -> Result<Self, ModelError> {
        let base_url = config.base_url.trim().trim_end_matches('/');
        if base_url.is_empty() {
            return Err(ModelError::Config(
                "the openai backend needs base_url, e.g. http://localhost:11434/v1".into(),
            ));
        }
        let key_name = config.api_key_env.as_deref().unwrap_or("the API key");
        let key = match api_key {
            None => None,
            Some(key) if key.trim().is_empty() => return Err(missing_key(key_name)),
            Some(key) => Some(key.trim().to_owned()),
        };
        let mut headers = HeaderMap::new();
        if let Some(key) = &key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ModelError::Config(format!(
                    "{key_name} contains characters that cannot be sent in an HTTP header"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let endpoint = HttpEndpoint::new(
            format!("{base_url}/chat/completions"),
            headers,
            config.timeout,
            key,
        )?;
        Ok(OpenAiModel {
            endpoint,
            model: config.model,
            next_call_id: AtomicU64::new(1),
        })
    }

    /// The full URL requests go to.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    fn parse(&self, status: u16, answer: &Value) -> Result<ModelResponse, ModelError> {
        from_chat_completion(status, answer, || {
            format!("call_{}", self.next_call_id.fetch_add(1, Ordering::Relaxed))
        })
    }
}

#[async_trait]
impl Model for OpenAiModel {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let model = self.model.as_deref().unwrap_or(&request.model);
        let body = to_chat_request(request, model);
        let (status, answer) = self.endpoint.post_json(&body).await?;
        self.parse(status, &answer)
            .map_err(|e| self.endpoint.redact(e))
    }
}

fn missing_key(var: &str) -> ModelError {
    ModelError::Config(format!(
        "{var} is not set; export it or choose another model backend"
    ))
}

/// A Messages API request → a chat-completions request body.
fn to_chat_request(request: &ModelRequest, model: &str) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        translate_message(message, &mut messages);
    }
    let mut body = Map::new();
    body.insert("model".into(), Value::from(model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("max_tokens".into(), Value::from(request.max_tokens));
    body.insert("stream".into(), Value::Bool(false));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                let mut function = Map::new();
                function.insert(
                    "name".into(),
                    tool.get("name").cloned().unwrap_or(Value::Null),
                );
                if let Some(description) = tool.get("description").filter(|d| !d.is_null()) {
                    function.insert("description".into(), description.clone());
                }
                let parameters = tool
                    .get("input_schema")
                    .filter(|s| !s.is_null())
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                function.insert("parameters".into(), parameters);
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    Value::Object(body)
}

/// Content as a list of blocks (a bare string is one text block).
fn blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::Array(blocks)) => blocks.clone(),
        Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
        _ => Vec::new(),
    }
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

/// Text of the `text` blocks, separated by blank lines.
fn joined_text(blocks: &[Value]) -> Option<String> {
    let texts: Vec<&str> = blocks
        .iter()
        .filter(|b| block_type(b) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .filter(|t| !t.is_empty())
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n\n"))
}

/// One Messages API message → zero or more chat messages.
fn translate_message(message: &Value, out: &mut Vec<Value>) {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("user");
    let blocks = blocks(message.get("content"));
    match role {
        "assistant" => {
            let tool_calls: Vec<Value> = blocks
                .iter()
                .filter(|b| block_type(b) == Some("tool_use"))
                .map(|b| {
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    json!({
                        "id": b.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": b.get("name").cloned().unwrap_or(Value::Null),
                            "arguments": input.to_string(),
                        }
                    })
                })
                .collect();
            let mut chat = Map::new();
            chat.insert("role".into(), Value::from("assistant"));
            chat.insert(
                "content".into(),
                Value::from(joined_text(&blocks).unwrap_or_default()),
            );
            if !tool_calls.is_empty() {
                chat.insert("tool_calls".into(), Value::Array(tool_calls));
            }
            out.push(Value::Object(chat));
        }
        _ => {
            // Tool results first: they must follow the assistant's tool calls.
            for result in blocks
                .iter()
                .filter(|b| block_type(b) == Some("tool_result"))
            {
                let mut content =
                    joined_text(&self::blocks(result.get("content"))).unwrap_or_default();
                if result.get("is_error").and_then(Value::as_bool) == Some(true) {
                    content = format!("Error: {content}");
                }
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": result.get("tool_use_id").cloned().unwrap_or(Value::Null),
                    "content": content,
                }));
            }
            if let Some(text) = joined_text(&blocks) {
                out.push(json!({"role": role, "content": text}));
            }
        }
    }
}

/// A chat-completions answer → [`ModelResponse`]; `new_id` names tool calls
/// that come without an id.
fn from_chat_completion(
    status: u16,
    answer: &Value,
    mut new_id: impl FnMut() -> String,
) -> Result<ModelResponse, ModelError> {
    let Some(choice) = answer
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Err(ModelError::Api {
            status,
            message: format!(
                "the answer has no choices: {}",
                snippet(&answer.to_string())
            ),
            retryable: false,
        });
    };
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = match message.get("content") {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Array(parts)) => joined_text(parts),
        _ => None,
    };
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for call in calls {
        let function = call.get("function").unwrap_or(&Value::Null);
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(&mut new_id);
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        content.push(json!({
            "type": "tool_use",
            "id": id,
            "name": name,
            "input": tool_input(function.get("arguments")),
        }));
    }
    let has_calls = !calls.is_empty();
    let stop_reason = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("tool_calls" | "function_call") => "tool_use".to_owned(),
        // Some servers (Ollama) say `stop` even when they call tools.
        Some("stop") | None if has_calls => "tool_use".to_owned(),
        Some("stop") | None => "end_turn".to_owned(),
        Some("length") => "max_tokens".to_owned(),
        Some("content_filter") => "refusal".to_owned(),
        Some(other) => other.to_owned(),
    };
    let usage = answer.get("usage");
    let count = |v: Option<&Value>, key: &str| {
        v.and_then(|u| u.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let prompt = count(usage, "prompt_tokens");
    let cached = count(
        usage.and_then(|u| u.get("prompt_tokens_details")),
        "cached_tokens",
    )
    .min(prompt);
    Ok(ModelResponse {
        content,
        stop_reason,
        usage: Usage {
            // Like the Messages API, input_tokens excludes cache reads.
            input_tokens: prompt - cached,
            output_tokens: count(usage, "completion_tokens"),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        },
    })
}

/// `arguments` (a JSON string, or already an object) → a tool_use `input`;
/// anything that is not a JSON object becomes `{"_raw": text}`.
fn tool_input(arguments: Option<&Value>) -> Value {
    match arguments {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(Value::String(text)) if text.trim().is_empty() => json!({}),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Value::Object(map),
            _ => json!({"_raw": text}),
        },
        Some(other) => json!({"_raw": other.to_string()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_server::{closed_port, serve_replies, Reply};

    const KEY: &str = "sk-local-test-0123456789-SECRET";

    fn config(base: &str) -> OpenAiConfig {
        OpenAiConfig::new(format!("{base}/v1"))
    }

    fn conversation() -> ModelRequest {
        ModelRequest {
            model: "claude-sonnet-4-6".into(),
            system: Some("Be brief.".into()),
            messages: vec![
                json!({"role": "user", "content": [{"type": "text", "text": "What is in /tmp?"}]}),
                json!({"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_a", "name": "bash", "input": {"command": "ls /tmp"}}
                ]}),
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_a", "content": [{"type": "text", "text": "x.txt"}]},
                    {"type": "text", "text": "Thanks."}
                ]}),
                json!({"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_b", "name": "read", "input": {}}
                ]}),
                json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_b", "content": "denied", "is_error": true}
                ]}),
                json!({"role": "user", "content": "plain string"}),
            ],
            tools: vec![json!({
                "name": "bash",
                "description": "Run a command",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}
            })],
            max_tokens: 256,
        }
    }

    fn completion(message: Value, finish_reason: &str) -> Value {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}
        })
    }

    #[tokio::test]
    async fn translates_the_request_and_the_answer() {
        let answer = completion(
            json!({
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "bash", "arguments": "{not json"}}
                ]
            }),
            "tool_calls",
        );
        let (base, log) = serve_replies(vec![Reply::json(200, answer)]).await;
        let model = OpenAiModel::with_api_key(
            OpenAiConfig {
                api_key_env: Some("LOCAL_KEY".into()),
                model: Some("qwen3:8b".into()),
                ..config(&base)
            },
            Some(KEY.into()),
        )
        .unwrap();
        assert_eq!(model.url(), format!("{base}/v1/chat/completions"));

        let response = model.complete(&conversation()).await.unwrap();
        assert_eq!(
            response.content,
            vec![
                json!({"type": "text", "text": "Checking."}),
                json!({"type": "tool_use", "id": "call_1", "name": "bash", "input": {"command": "ls"}}),
                json!({"type": "tool_use", "id": "call_2", "name": "bash", "input": {"_raw": "{not json"}}),
            ]
        );
        assert_eq!(response.stop_reason, "tool_use");
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 40,
                output_tokens: 9,
                ..Usage::default()
            }
        );

        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        let seen = &log[0];
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/v1/chat/completions");
        assert_eq!(seen.headers["authorization"], format!("Bearer {KEY}"));
        assert_eq!(seen.headers["content-type"], "application/json");
        assert_eq!(
            seen.body,
            json!({
                "model": "qwen3:8b",
                "max_tokens": 256,
                "stream": false,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is in /tmp?"},
                    {"role": "assistant", "content": "Let me look.", "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls /tmp\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_a", "content": "x.txt"},
                    {"role": "user", "content": "Thanks."},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call_b", "type": "function", "function": {"name": "read", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_b", "content": "Error: denied"},
                    {"role": "user", "content": "plain string"}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "bash",
                    "description": "Run a command",
                    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}
                }}]
            })
        );
    }

    #[tokio::test]
    async fn no_key_no_authorization_and_the_request_model_id() {
        let answer = completion(json!({"role": "assistant", "content": "Hi."}), "stop");
        let (base, log) = serve_replies(vec![Reply::json(200, answer)]).await;
        let model = OpenAiModel::new(config(&base)).unwrap();
        let mut request = conversation();
        request.system = None;
        request.tools.clear();
        let response = model.complete(&request).await.unwrap();
        assert_eq!(
            response.content,
            vec![json!({"type": "text", "text": "Hi."})]
        );
        assert_eq!(response.stop_reason, "end_turn");

        let log = log.lock().unwrap();
        assert!(!log[0].headers.contains_key("authorization"));
        assert_eq!(log[0].body["model"], "claude-sonnet-4-6");
        assert!(log[0].body.get("tools").is_none());
        assert_eq!(log[0].body["messages"][0]["role"], "user");
    }

    #[test]
    fn finish_reasons_and_usage() {
        let parse = |answer: Value| from_chat_completion(200, &answer, || "gen".into()).unwrap();
        let text = json!({"role": "assistant", "content": "x"});
        assert_eq!(
            parse(completion(text.clone(), "stop")).stop_reason,
            "end_turn"
        );
        assert_eq!(
            parse(completion(text.clone(), "length")).stop_reason,
            "max_tokens"
        );
        assert_eq!(
            parse(completion(text.clone(), "content_filter")).stop_reason,
            "refusal"
        );

        // Ollama: tool calls without ids, arguments as an object, finish_reason "stop".
        let call = json!({"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "bash", "arguments": {"command": "pwd"}}}
        ]});
        let response = parse(completion(call, "stop"));
        assert_eq!(response.stop_reason, "tool_use");
        assert_eq!(
            response.content,
            vec![
                json!({"type": "tool_use", "id": "gen", "name": "bash", "input": {"command": "pwd"}})
            ]
        );

        let no_usage = json!({"choices": [{"message": {"content": null}, "finish_reason": null}]});
        let response = parse(no_usage);
        assert_eq!(response.content, Vec::<Value>::new());
        assert_eq!(response.stop_reason, "end_turn");
        assert_eq!(response.usage, Usage::default());

        let cached = json!({
            "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 60}}
        });
        assert_eq!(
            parse(cached).usage,
            Usage {
                input_tokens: 40,
                output_tokens: 5,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 60,
            }
        );

        let error =
            from_chat_completion(200, &json!({"object": "list"}), || "gen".into()).unwrap_err();
        assert!(matches!(
            error,
            ModelError::Api {
                status: 200,
                retryable: false,
                ..
            }
        ));
    }

    #[test]
    fn tool_arguments() {
        assert_eq!(tool_input(None), json!({}));
        assert_eq!(tool_input(Some(&json!(""))), json!({}));
        assert_eq!(tool_input(Some(&json!("{\"a\":1}"))), json!({"a": 1}));
        assert_eq!(tool_input(Some(&json!("[1,2]"))), json!({"_raw": "[1,2]"}));
        assert_eq!(
            tool_input(Some(&json!("{\"a\":"))),
            json!({"_raw": "{\"a\":"})
        );
    }

    #[tokio::test]
    async fn missing_ids_are_numbered_per_model() {
        let call = json!({"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"type": "function", "function": {"name": "b", "arguments": "{}"}}
        ]});
        let (base, _log) =
            serve_replies(vec![Reply::json(200, completion(call, "tool_calls"))]).await;
        let model = OpenAiModel::new(config(&base)).unwrap();
        let response = model.complete(&conversation()).await.unwrap();
        let ids: Vec<&str> = response
            .content
            .iter()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["call_1", "call_2"]);
    }

    #[tokio::test]
    async fn error_envelopes_become_api_errors() {
        let openai = Reply::json(
            401,
            json!({"error": {"message": format!("Incorrect API key provided: {KEY}"), "type": "invalid_request_error", "code": "invalid_api_key"}}),
        );
        let (base, log) = serve_replies(vec![openai]).await;
        let model = OpenAiModel::with_api_key(config(&base), Some(KEY.into())).unwrap();
        let error = model.complete(&conversation()).await.unwrap_err();
        assert_eq!(
            error,
            ModelError::Api {
                status: 401,
                message: "invalid_request_error: Incorrect API key provided: [redacted]".into(),
                retryable: false,
            }
        );
        assert!(!error.to_string().contains(KEY));
        assert!(!format!("{model:?}").contains(KEY));
        assert_eq!(log.lock().unwrap().len(), 1);

        let ollama = Reply::json(
            404,
            json!({"error": "model \"qwen3:8b\" not found, try pulling it first"}),
        );
        let (base, _log) = serve_replies(vec![ollama]).await;
        let model = OpenAiModel::new(config(&base)).unwrap();
        assert_eq!(
            model.complete(&conversation()).await.unwrap_err(),
            ModelError::Api {
                status: 404,
                message: "model \"qwen3:8b\" not found, try pulling it first".into(),
                retryable: false,
            }
        );
    }

    #[tokio::test]
    async fn retries_a_rate_limit_then_succeeds() {
        let busy =
            Reply::json(429, json!({"error": {"message": "busy"}})).header("retry-after", "0");
        let ok = Reply::json(200, completion(json!({"content": "done"}), "stop"));
        let (base, log) = serve_replies(vec![busy, ok]).await;
        let model = OpenAiModel::new(config(&base)).unwrap();
        let response = model.complete(&conversation()).await.unwrap();
        assert_eq!(
            response.content,
            vec![json!({"type": "text", "text": "done"})]
        );
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn unreachable_endpoint_fails_fast() {
        let base = closed_port().await;
        let model = OpenAiModel::new(config(&base)).unwrap();
        let error = tokio::time::timeout(Duration::from_secs(30), model.complete(&conversation()))
            .await
            .expect("a refused connection must not hang")
            .unwrap_err();
        assert!(
            matches!(&error, ModelError::Unreachable(m) if m.starts_with(&format!("cannot reach {base}/v1/chat/completions: "))),
            "{error:?}"
        );
    }

    #[test]
    fn configuration_errors() {
        let error = OpenAiModel::new(OpenAiConfig {
            api_key_env: Some("AGENTFORM_TEST_NEVER_SET_KEY_51C2".into()),
            ..OpenAiConfig::new("http://localhost:11434/v1")
        })
        .unwrap_err();
        assert_eq!(
            error,
            ModelError::Config(
                "AGENTFORM_TEST_NEVER_SET_KEY_51C2 is not set; export it or choose another model backend"
                    .into()
            )
        );
        let error = OpenAiModel::new(OpenAiConfig::new("  ")).unwrap_err();
        assert!(matches!(error, ModelError::Config(m) if m.contains("base_url")));
        let error = OpenAiModel::new(OpenAiConfig::new("localhost:11434")).unwrap_err();
        assert!(matches!(error, ModelError::Config(_)), "{error:?}");
    }
}
