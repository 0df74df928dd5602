//! Claude over the Messages API (`POST {base_url}/v1/messages`): the
//! configuration, the request body and the parsing of the answer. The
//! transport (deadline, retries, redaction) is `model::endpoint`'s.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::endpoint::HttpEndpoint;
use super::{Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::http::{snippet, Envelope};

pub use super::endpoint::DEFAULT_TIMEOUT;

/// Where the Messages API lives unless configured otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// Environment variable that overrides [`DEFAULT_BASE_URL`].
pub const BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
/// Environment variable holding the API key unless configured otherwise.
pub const DEFAULT_API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// The `anthropic-version` header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
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
            .field("timeout", &self.endpoint.timeout())
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
        let message = Envelope::from_json(answer).summary().unwrap_or_else(|| {
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

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
