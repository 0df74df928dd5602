//! One turn of a session: run the tool uses that may run, ask the model,
//! emit its answer, and again while it uses tools; then end the turn (idle
//! with its stop reason) or wait for the user.
//!
//! The model is reached only through [`Model`], resolved once per session;
//! this file must not know which backend answers.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::conversation::conversation;
use super::open_uses::UseState;
use super::tools::{builtin_policy, custom_tools};
use super::worker::{Step, Worker};
use crate::api::event::{
    AgentMessage, ContentBlock, ErrorObject, Event, Marker, ModelRequestEnd, RetryStatus,
    SessionError, StatusIdle, StopReason,
};
use crate::api::{Result, Usage};
use crate::model::{Model, ModelError, ModelRequest, ModelResponse};
use crate::sandbox::tools;

/// `max_tokens` of every model request.
pub(super) const MAX_TOKENS: u32 = 8192;

impl Worker {
    /// Runs the turn until it ends or waits for the user: runs the tool uses
    /// that may run, then asks the model, and again while it uses tools.
    pub(super) async fn drive(&mut self) -> Result<()> {
        loop {
            if self.interrupt_pending() {
                return self.interrupted(None).await;
            }
            let runnable: Vec<_> = self.open.in_state(UseState::Allowed).cloned().collect();
            for tool_use in runnable {
                match self
                    .cancellable(self.run_tool(&tool_use.name, &tool_use.input))
                    .await
                {
                    Step::Interrupted => return self.interrupted(None).await,
                    Step::Done(Ok(result)) => {
                        self.tool_result(&tool_use.id, &result.content, result.is_error)
                            .await?;
                    }
                    Step::Done(Err(message)) => {
                        self.tool_result(&tool_use.id, &message, true).await?;
                        return self.fail("unknown_error", &message).await;
                    }
                }
            }
            let waiting = self.open.waiting();
            if !waiting.is_empty() {
                return self.requires_action(waiting).await;
            }
            if !self.ask_model().await? {
                return Ok(());
            }
        }
    }

    /// One model request and its answer; whether the turn goes on (the
    /// model used tools) rather than ended.
    async fn ask_model(&mut self) -> Result<bool> {
        let model = match self.model().await {
            Ok(model) => model,
            Err(e) => {
                return self
                    .fail(error_type(&e), &e.to_string())
                    .await
                    .map(|()| false)
            }
        };
        let request = self.request();
        let start = self
            .emit(|id, processed_at| Event::SpanModelRequestStart(Marker { id, processed_at }))
            .await?;
        let response = match self.cancellable(model.complete(&request)).await {
            Step::Interrupted => return self.interrupted(Some(&start)).await.map(|()| false),
            Step::Done(response) => response,
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                self.span_end(&start, &Usage::default(), true).await?;
                return self
                    .fail(error_type(&e), &e.to_string())
                    .await
                    .map(|()| false);
            }
        };
        self.span_end(&start, &response.usage, false).await?;
        self.add_usage(&response.usage).await?;
        if self.emit_response(&response).await? {
            return Ok(true);
        }
        let reason = if response.stop_reason == "refusal" {
            StopReason::Refusal
        } else {
            StopReason::EndTurn
        };
        self.idle(reason).await.map(|()| false)
    }

    pub(super) async fn fail(&mut self, kind: &str, message: &str) -> Result<()> {
        self.emit(|id, processed_at| {
            Event::SessionError(SessionError {
                id,
                error: ErrorObject {
                    kind: kind.to_owned(),
                    message: message.to_owned(),
                    retry_status: RetryStatus::Terminal,
                },
                processed_at,
            })
        })
        .await?;
        self.idle(StopReason::RetriesExhausted).await
    }

    pub(super) async fn idle(&mut self, stop_reason: StopReason) -> Result<()> {
        self.emit(|id, processed_at| {
            Event::SessionStatusIdle(StatusIdle {
                id,
                stop_reason,
                processed_at,
            })
        })
        .await
        .map(drop)
    }

    pub(super) async fn requires_action(&mut self, event_ids: Vec<String>) -> Result<()> {
        self.idle(StopReason::RequiresAction { event_ids }).await
    }

    pub(super) async fn span_end(
        &mut self,
        start: &str,
        usage: &Usage,
        is_error: bool,
    ) -> Result<()> {
        self.emit(|id, processed_at| {
            Event::SpanModelRequestEnd(ModelRequestEnd {
                id,
                model_request_start_id: start.to_owned(),
                model_usage: *usage,
                is_error: Some(is_error),
                processed_at,
            })
        })
        .await
        .map(drop)
    }

    /// Emits the model's answer; whether it used tools.
    async fn emit_response(&mut self, response: &ModelResponse) -> Result<bool> {
        let mut text = Vec::new();
        let mut used_tools = false;
        for block in &response.content {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let t = block
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !t.is_empty() {
                        text.push(ContentBlock::text(t));
                    }
                }
                Some("tool_use") => {
                    if !text.is_empty() {
                        self.message(std::mem::take(&mut text)).await?;
                    }
                    used_tools = true;
                    let name = block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let input = match block.get("input") {
                        Some(Value::Object(input)) => input.clone(),
                        _ => Map::new(),
                    };
                    self.emit_tool_use(name, input).await?;
                }
                _ => {}
            }
        }
        if !text.is_empty() {
            self.message(text).await?;
        }
        Ok(used_tools)
    }

    async fn message(&mut self, content: Vec<ContentBlock>) -> Result<()> {
        self.emit(|id, processed_at| {
            Event::AgentMessage(AgentMessage {
                id,
                content,
                processed_at,
            })
        })
        .await
        .map(drop)
    }

    async fn model(&self) -> Result<Arc<dyn Model>, ModelError> {
        let mut cached = self.slot.model.lock().await;
        if let Some(model) = cached.as_ref() {
            return Ok(Arc::clone(model));
        }
        let id = &self.session.agent.model.id;
        let model = self.ctx.options.models.resolve(id)?;
        *cached = Some(Arc::clone(&model));
        Ok(model)
    }

    fn request(&self) -> ModelRequest {
        let agent = &self.session.agent;
        let tools = &agent.tools;
        let mut definitions: Vec<Value> = tools::definitions()
            .into_iter()
            .filter(|d| {
                d["name"]
                    .as_str()
                    .is_some_and(|name| builtin_policy(tools, name).is_some())
            })
            .collect();
        definitions.extend(custom_tools(tools).map(|t| {
            json!({"name": t.name, "description": t.description, "input_schema": t.input_schema})
        }));
        ModelRequest {
            model: agent.model.id.clone(),
            system: agent.system.clone(),
            messages: conversation(&self.history),
            tools: definitions,
            max_tokens: MAX_TOKENS,
        }
    }
}

/// The `session.error` type for a model error.
fn error_type(e: &ModelError) -> &'static str {
    match e {
        ModelError::Api { status: 529, .. } => "model_overloaded_error",
        ModelError::Api { status: 429, .. } => "model_rate_limited_error",
        _ => "model_request_failed_error",
    }
}
