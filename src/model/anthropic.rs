//! Claude over the Messages API (`POST {base_url}/v1/messages`).
//!
//! Also home of the HTTP plumbing shared with the OpenAI-compatible backend:
//! one wall-clock deadline per call, a 10 s connect timeout, retries of
//! retryable API errors honoring `retry-after`, error-envelope parsing, and
//! scrubbing of the API key from every error message.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{Model, ModelError, ModelRequest, ModelResponse, Usage};

/// Where the Messages API lives unless configured otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// Environment variable that overrides [`DEFAULT_BASE_URL`].
pub const BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
/// Environment variable holding the API key unless configured otherwise.
pub const DEFAULT_API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The `anthropic-version` header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Wall-clock limit for one call, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach the Messages API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnthropicConfig {
    /// Defaults to `$ANTHROPIC_BASE_URL`, then [`DEFAULT_BASE_URL`].
    pub base_url: Option<String>,
    /// Name of the environment variable holding the key (not the key).
    pub api_key_env: String,
    /// Model id sent to the API instead of the request's.
    pub model: Option<String>,
    /// Wall-clock limit for one call, retries included.
    pub timeout: Duration,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            base_url: None,
            api_key_env: DEFAULT_API_KEY_ENV.to_owned(),
            model: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Claude over the Messages API.
pub struct AnthropicModel {
    endpoint: HttpEndpoint,
    model: Option<String>,
}

impl fmt::Debug for AnthropicModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicModel")
            .field("url", &self.endpoint.url)
            .field("model", &self.model)
            .field("timeout", &self.endpoint.timeout)
            .finish_non_exhaustive()
    }
}

impl AnthropicModel {
    /// Reads the key from `config.api_key_env` now; a missing or empty key
    /// is a [`ModelError::Config`] naming the variable.
    pub fn new(config: AnthropicConfig) -> Result<Self, ModelError> {
        let key = std::env::var(&config.api_key_env).ok();
        let key = resolve_api_key(&config.api_key_env, key)?;
        Self::with_api_key(config, key)
    }

    /// Like [`AnthropicModel::new`] with the key given directly
    /// (`config.api_key_env` only names it in messages).
    pub fn with_api_key(
        config: AnthropicConfig,
        api_key: impl Into<String>,
    ) -> Result<Self, ModelError> {
        let key = resolve_api_key(&config.api_key_env, Some(api_key.into()))?;
        let base_url =
            resolve_base_url(config.base_url.as_deref(), std::env::var(BASE_URL_ENV).ok());
        let mut key_value = HeaderValue::from_str(&key).map_err(|_| {
            ModelError::Config(format!(
                "{} contains characters that cannot be sent in an HTTP header",
                config.api_key_env
            ))
        })?;
        key_value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-api-key"), key_value);
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        let endpoint = HttpEndpoint::new(
            format!("{base_url}/v1/messages"),
            headers,
            config.timeout,
            Some(key),
        )?;
        Ok(AnthropicModel {
            endpoint,
            model: config.model,
        })
    }

    /// The full URL requests go to.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    fn request_body(&self, request: &ModelRequest) -> Value {
        let mut body = Map::new();
        let model = self.model.as_deref().unwrap_or(&request.model);
        body.insert("model".into(), Value::from(model));
        body.insert("max_tokens".into(), Value::from(request.max_tokens));
        if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
            body.insert("system".into(), Value::from(system));
        }
        body.insert("messages".into(), Value::Array(request.messages.clone()));
        if !request.tools.is_empty() {
            let tools = request.tools.iter().map(anthropic_tool).collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        Value::Object(body)
    }
}

#[async_trait]
impl Model for AnthropicModel {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let body = self.request_body(request);
        let (status, answer) = self.endpoint.post_json(&body).await?;
        parse_message(status, &answer).map_err(|e| self.endpoint.redact(e))
    }
}

/// `{name, description, input_schema}`, dropping anything else.
fn anthropic_tool(tool: &Value) -> Value {
    let mut out = Map::new();
    for key in ["name", "description", "input_schema"] {
        if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    if !out.contains_key("input_schema") {
        out.insert(
            "input_schema".into(),
            serde_json::json!({"type": "object", "properties": {}}),
        );
    }
    Value::Object(out)
}

/// A Messages API `message` object → [`ModelResponse`].
fn parse_message(status: u16, answer: &Value) -> Result<ModelResponse, ModelError> {
    let Some(blocks) = answer.get("content").and_then(Value::as_array) else {
        let message = error_message_from_json(answer).unwrap_or_else(|| {
            format!(
                "the answer is not a message: {}",
                snippet(&answer.to_string())
            )
        });
        return Err(ModelError::Api {
            status,
            message,
            retryable: false,
        });
    };
    let content = blocks
        .iter()
        .filter(|b| {
            matches!(
                b.get("type").and_then(Value::as_str),
                Some("text" | "tool_use")
            )
        })
        .cloned()
        .collect();
    let stop_reason = answer
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn")
        .to_owned();
    let usage = answer.get("usage");
    let count = |key: &str| {
        usage
            .and_then(|u| u.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Ok(ModelResponse {
        content,
        stop_reason,
        usage: Usage {
            input_tokens: count("input_tokens"),
            output_tokens: count("output_tokens"),
            cache_creation_input_tokens: count("cache_creation_input_tokens"),
            cache_read_input_tokens: count("cache_read_input_tokens"),
        },
    })
}

/// Missing or empty key → a [`ModelError::Config`] naming the variable.
fn resolve_api_key(var: &str, value: Option<String>) -> Result<String, ModelError> {
    match value {
        Some(key) if !key.trim().is_empty() => Ok(key.trim().to_owned()),
        _ => Err(ModelError::Config(format!(
            "{var} is not set; export it or choose another model backend"
        ))),
    }
}

/// Configured URL, else `$ANTHROPIC_BASE_URL`, else the public API; no trailing `/`.
fn resolve_base_url(configured: Option<&str>, from_env: Option<String>) -> String {
    let chosen = configured
        .map(str::to_owned)
        .filter(|s| !s.trim().is_empty())
        .or(from_env.filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    chosen.trim().trim_end_matches('/').to_owned()
}

// ---------------------------------------------------------------------------
// HTTP plumbing shared with `openai.rs`.

/// Retries of a retryable API error after the first attempt.
pub(crate) const MAX_RETRIES: u32 = 2;
/// Longest wait between attempts, whatever `retry-after` says.
pub(crate) const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One JSON endpoint with fixed headers (key included) and a per-call deadline.
pub(crate) struct HttpEndpoint {
    client: reqwest::Client,
    pub(crate) url: String,
    headers: HeaderMap,
    pub(crate) timeout: Duration,
    /// Scrubbed from every error message.
    secret: Option<String>,
}

impl HttpEndpoint {
    pub(crate) fn new(
        url: String,
        mut headers: HeaderMap,
        timeout: Duration,
        secret: Option<String>,
    ) -> Result<Self, ModelError> {
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| ModelError::Config(format!("invalid model endpoint URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ModelError::Config(format!(
                "invalid model endpoint URL {url:?}: the scheme must be http or https"
            )));
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .build()
            .map_err(|e| ModelError::Config(format!("cannot build an HTTP client: {e}")))?;
        Ok(HttpEndpoint {
            client,
            url,
            headers,
            timeout,
            secret: secret.filter(|s| !s.is_empty()),
        })
    }

    /// POSTs `body` and returns the status and JSON of a 2xx answer; retries
    /// retryable API errors (at most [`MAX_RETRIES`] times) while the deadline allows.
    pub(crate) async fn post_json(&self, body: &Value) -> Result<(u16, Value), ModelError> {
        let deadline = Instant::now() + self.timeout;
        let payload = serde_json::to_vec(body)
            .map_err(|e| ModelError::Config(format!("cannot encode the request: {e}")))?;
        let mut retries = 0;
        loop {
            let (error, retry_after) = match self.attempt(&payload, deadline).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let error = self.redact(error);
            let retryable = matches!(
                error,
                ModelError::Api {
                    retryable: true,
                    ..
                }
            );
            if !retryable || retries >= MAX_RETRIES {
                return Err(error);
            }
            let wait = retry_after
                .unwrap_or(Duration::from_millis(500 << retries))
                .min(MAX_RETRY_WAIT);
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            retries += 1;
            tracing::debug!(url = %self.url, %error, wait_ms = wait.as_millis() as u64, retry = retries, "retrying model call");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<(u16, Value), (ModelError, Option<Duration>)> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let exchange = async {
            let response = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .body(payload.to_vec())
                .send()
                .await?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = match tokio::time::timeout(remaining, exchange).await {
            Err(_) => {
                return Err((
                    ModelError::Unreachable(format!(
                        "cannot reach {}: no answer within {}",
                        self.url,
                        seconds(self.timeout)
                    )),
                    None,
                ))
            }
            Ok(Err(e)) => {
                return Err((
                    ModelError::Unreachable(format!(
                        "cannot reach {}: {}",
                        self.url,
                        describe_reqwest(e)
                    )),
                    None,
                ))
            }
            Ok(Ok(parts)) => parts,
        };
        let code = status.as_u16();
        if status.is_success() {
            return match serde_json::from_slice(&bytes) {
                Ok(json) => Ok((code, json)),
                Err(e) => Err((
                    ModelError::Api {
                        status: code,
                        message: format!(
                            "the answer is not JSON ({e}): {}",
                            snippet(&String::from_utf8_lossy(&bytes))
                        ),
                        retryable: false,
                    },
                    None,
                )),
            };
        }
        tracing::debug!(url = %self.url, status = code, "model endpoint returned an error");
        Err((
            ModelError::Api {
                status: code,
                message: error_message(status, &bytes),
                retryable: is_retryable(code),
            },
            retry_after,
        ))
    }

    /// Replaces the secret in an error's message.
    pub(crate) fn redact(&self, error: ModelError) -> ModelError {
        let Some(secret) = self.secret.as_deref() else {
            return error;
        };
        let scrub = |s: String| {
            if s.contains(secret) {
                s.replace(secret, "[redacted]")
            } else {
                s
            }
        };
        match error {
            ModelError::Config(m) => ModelError::Config(scrub(m)),
            ModelError::Unreachable(m) => ModelError::Unreachable(scrub(m)),
            ModelError::ScriptExhausted(m) => ModelError::ScriptExhausted(scrub(m)),
            ModelError::Api {
                status,
                message,
                retryable,
            } => ModelError::Api {
                status,
                message: scrub(message),
                retryable,
            },
        }
    }
}

/// 408, 409, 429 and every 5xx (529 included).
pub(crate) fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500..=599)
}

/// `retry-after-ms` or `retry-after` in (possibly fractional) seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(ms) = read("retry-after-ms") {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(3600.0)));
    }
    read(RETRY_AFTER.as_str()).map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// The message of an error answer: the error envelope when there is one
/// (Anthropic `{type:"error", error:{type, message}}`, OpenAI
/// `{error:{message, type}}`, Ollama `{error:"…"}`, vLLM `{message}`),
/// else the start of the body, else the status's reason phrase.
pub(crate) fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        if let Some(message) = error_message_from_json(&json) {
            return message;
        }
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("no details").to_owned()
    } else {
        snippet(&text)
    }
}

fn error_message_from_json(json: &Value) -> Option<String> {
    let str_at = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match json.get("error") {
        Some(Value::String(s)) if !s.is_empty() => return Some(s.clone()),
        Some(error @ Value::Object(_)) => {
            let message = str_at(error, "message");
            let kind = str_at(error, "type");
            match (kind, message) {
                (Some(kind), Some(message)) => return Some(format!("{kind}: {message}")),
                (None, Some(message)) => return Some(message),
                (Some(kind), None) => return Some(kind),
                (None, None) => {}
            }
        }
        _ => {}
    }
    str_at(json, "message").or_else(|| str_at(json, "detail"))
}

/// At most 500 characters of `text`, trimmed.
pub(crate) fn snippet(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(500) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The error and its causes, without the URL (the caller names it).
pub(crate) fn describe_reqwest(error: reqwest::Error) -> String {
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
pub(crate) mod test_server {
    //! A one-request-per-connection HTTP server for backend tests.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[derive(Debug, Clone)]
    pub struct Recorded {
        pub method: String,
        pub path: String,
        /// Lower-case names.
        pub headers: HashMap<String, String>,
        pub body: Value,
    }

    pub struct Canned {
        pub status: u16,
        pub headers: Vec<(&'static str, String)>,
        pub body: String,
    }

    impl Canned {
        pub fn json(status: u16, body: Value) -> Self {
            Canned {
                status,
                headers: Vec::new(),
                body: body.to_string(),
            }
        }

        pub fn header(mut self, name: &'static str, value: &str) -> Self {
            self.headers.push((name, value.to_owned()));
            self
        }
    }

    pub type Log = Arc<Mutex<Vec<Recorded>>>;

    /// Serves `responses` in order, one per connection; returns the base URL
    /// (`http://127.0.0.1:PORT`) and the log of requests (each recorded
    /// before its answer is written).
    pub async fn serve(responses: Vec<Canned>) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let task_log = log.clone();
        tokio::spawn(async move {
            for canned in responses {
                let (mut stream, _) = listener.accept().await.unwrap();
                let recorded = read_request(&mut stream).await;
                task_log.lock().unwrap().push(recorded);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    canned.status,
                    canned.body.len()
                );
                for (name, value) in &canned.headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                stream.write_all(head.as_bytes()).await.unwrap();
                stream.write_all(canned.body.as_bytes()).await.unwrap();
                stream.shutdown().await.ok();
            }
        });
        (base, log)
    }

    /// Accepts connections, reads their requests and never answers.
    pub async fn serve_silent() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = read_request(&mut stream).await;
                    // Hold the connection until the client gives up.
                    let mut sink = [0u8; 64];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        base
    }

    /// A base URL nothing listens on.
    pub async fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    async fn read_request(stream: &mut TcpStream) -> Recorded {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the request head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap().split(' ');
        let method = request_line.next().unwrap().to_owned();
        let path = request_line.next().unwrap().to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the request body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = &buf[head_end..head_end + length];
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).unwrap()
        };
        Recorded {
            method,
            path,
            headers,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::{closed_port, serve, serve_silent, Canned};
    use super::*;
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

    fn overloaded() -> Canned {
        Canned::json(
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )
        .header("retry-after", "0")
    }

    #[tokio::test]
    async fn sends_the_messages_api_request_and_parses_the_answer() {
        let (base, log) = serve(vec![Canned::json(200, message_answer())]).await;
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
        let (base, log) = serve(vec![Canned::json(200, answer)]).await;
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
        let (base, log) = serve(vec![Canned::json(400, envelope)]).await;
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
        let (base, log) = serve(vec![overloaded(), Canned::json(200, message_answer())]).await;
        let model = AnthropicModel::with_api_key(config(&base), KEY).unwrap();
        let response = model.complete(&request()).await.unwrap();
        assert_eq!(response.stop_reason, "tool_use");
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].body, log[1].body);
    }

    #[tokio::test]
    async fn gives_up_after_two_retries() {
        let (base, log) = serve(vec![overloaded(), overloaded(), overloaded()]).await;
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
        let busy = Canned::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        )
        .header("retry-after", "5");
        let (base, log) = serve(vec![busy]).await;
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
        let page = Canned {
            status: 404,
            headers: Vec::new(),
            body: "<html>not found</html>".into(),
        };
        let (base, _log) = serve(vec![page]).await;
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
        let (base, _log) = serve(vec![Canned::json(200, json!({"hello": "world"}))]).await;
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
        let error = AnthropicModel::with_api_key(AnthropicConfig::default(), "sk-bad\nkey-SECRET")
            .unwrap_err();
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

    #[test]
    fn retryable_statuses() {
        for status in [408, 409, 429, 500, 502, 503, 529] {
            assert!(is_retryable(status), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 422] {
            assert!(!is_retryable(status), "{status}");
        }
    }

    #[test]
    fn retry_after_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn error_envelopes() {
        let msg = |body: &str| error_message(StatusCode::BAD_GATEWAY, body.as_bytes());
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
        assert_eq!(msg(""), "Bad Gateway");
        assert_eq!(msg(&"x".repeat(600)).chars().count(), 501);
    }
}
