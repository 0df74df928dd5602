//! Model backends for the local agent loop: real Claude over the Messages API,
//! any OpenAI-compatible endpoint, or a deterministic script.
//!
//! Requests and responses use the Messages API's shapes (content blocks of
//! `text`, `tool_use`, `tool_result`); backends translate as needed.
//!
//! Each backend owns its translation and its transport; they must not know
//! about sessions, events or the sandbox: the engine calls them.

pub mod anthropic;
mod endpoint;
pub mod openai;
pub mod scripted;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

pub use crate::api::Usage;

/// One model call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRequest {
    /// The agent's model id.
    pub model: String,
    pub system: Option<String>,
    /// `{role: "user" | "assistant", content: [blocks]}`, oldest first.
    pub messages: Vec<Value>,
    /// `{name, description, input_schema}` for every tool the agent may use.
    pub tools: Vec<Value>,
    pub max_tokens: u32,
}

/// One model answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelResponse {
    /// `text` and `tool_use` blocks (`{type: "tool_use", id, name, input}`).
    pub content: Vec<Value>,
    /// `end_turn`, `tool_use`, `max_tokens`, `refusal`, …
    pub stop_reason: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A setting is missing or wrong; names the setting.
    #[error("{0}")]
    Config(String),
    /// The endpoint could not be reached or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The endpoint answered with an error.
    #[error("model endpoint returned {status}: {message}")]
    Api {
        status: u16,
        message: String,
        retryable: bool,
    },
    /// The scripted model has no turn left for this call.
    #[error("{0}")]
    ScriptExhausted(String),
}

#[async_trait]
pub trait Model: Send + Sync {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError>;
}
