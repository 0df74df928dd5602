//! Events of a session's stream and history (`BetaManagedAgentsSessionEvent`
//! and the send params, SDK 2.10.0 `types/beta/sessions/`): the typed
//! [`Event`] the engine builds and reads, and accessors over raw JSON.
//!
//! Streams, histories and transcripts carry events as the JSON received.
//! [`Event::from_value`] gives a typed variant only when that variant writes
//! back exactly the same JSON; anything else — an unknown type, a known type
//! with a field not modelled here, a `null` where the typed form omits the
//! field — is kept whole as [`Event::Other`]. So `from_value(v).to_value()`
//! is always `v`, and serializing an [`Event`] writes what the `Value` would.
//!
//! Optional fields of the SDK are `Option`s left out when `None`, except the
//! `processed_at` of user events, which is `null` until processed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::session::Usage;

/// One event of a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    UserMessage(UserMessage),
    UserInterrupt(UserInterrupt),
    UserToolConfirmation(UserToolConfirmation),
    UserCustomToolResult(UserCustomToolResult),
    AgentMessage(AgentMessage),
    AgentThinking(Marker),
    AgentToolUse(AgentToolUse),
    AgentToolResult(AgentToolResult),
    AgentCustomToolUse(AgentCustomToolUse),
    SessionStatusRunning(Marker),
    SessionStatusIdle(StatusIdle),
    SessionStatusTerminated(Marker),
    SessionError(SessionError),
    SessionDeleted(Marker),
    SpanModelRequestStart(Marker),
    SpanModelRequestEnd(ModelRequestEnd),
    /// Any other event, or one the typed variants would not write back
    /// exactly; kept as received.
    Other(Value),
}

/// The typed variants' serde, derived on a mirror so that [`Event`]'s own
/// impls, which keep [`Event::Other`] exact, are the only public ones.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Event", tag = "type")]
enum EventDef {
    #[serde(rename = "user.message")]
    UserMessage(UserMessage),
    #[serde(rename = "user.interrupt")]
    UserInterrupt(UserInterrupt),
    #[serde(rename = "user.tool_confirmation")]
    UserToolConfirmation(UserToolConfirmation),
    #[serde(rename = "user.custom_tool_result")]
    UserCustomToolResult(UserCustomToolResult),
    #[serde(rename = "agent.message")]
    AgentMessage(AgentMessage),
    #[serde(rename = "agent.thinking")]
    AgentThinking(Marker),
    #[serde(rename = "agent.tool_use")]
    AgentToolUse(AgentToolUse),
    #[serde(rename = "agent.tool_result")]
    AgentToolResult(AgentToolResult),
    #[serde(rename = "agent.custom_tool_use")]
    AgentCustomToolUse(AgentCustomToolUse),
    #[serde(rename = "session.status_running")]
    SessionStatusRunning(Marker),
    #[serde(rename = "session.status_idle")]
    SessionStatusIdle(StatusIdle),
    #[serde(rename = "session.status_terminated")]
    SessionStatusTerminated(Marker),
    #[serde(rename = "session.error")]
    SessionError(SessionError),
    #[serde(rename = "session.deleted")]
    SessionDeleted(Marker),
    #[serde(rename = "span.model_request_start")]
    SpanModelRequestStart(Marker),
    #[serde(rename = "span.model_request_end")]
    SpanModelRequestEnd(ModelRequestEnd),
    #[serde(skip)]
    Other(Value),
}

/// An event that is only its id and time (`session.status_running`,
/// `span.model_request_start`, `session.deleted`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub id: String,
    pub processed_at: String,
}

/// `BetaManagedAgentsUserMessageEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMessage {
    pub id: String,
    pub content: Vec<ContentBlock>,
    /// `null` until the session's worker processed it.
    pub processed_at: Option<String>,
}

/// `BetaManagedAgentsUserInterruptEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInterrupt {
    pub id: String,
    pub processed_at: Option<String>,
}

/// `BetaManagedAgentsUserToolConfirmationEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserToolConfirmation {
    pub id: String,
    pub result: Confirmation,
    pub tool_use_id: String,
    /// Only with `result: deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_message: Option<String>,
    pub processed_at: Option<String>,
}

/// The `result` of a tool confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    Allow,
    Deny,
}

/// `BetaManagedAgentsUserCustomToolResultEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserCustomToolResult {
    pub id: String,
    pub custom_tool_use_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<ContentBlock>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    pub processed_at: Option<String>,
}

/// `BetaManagedAgentsAgentMessageEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMessage {
    pub id: String,
    pub content: Vec<ContentBlock>,
    pub processed_at: String,
}

/// `BetaManagedAgentsAgentToolUseEvent`: a built-in tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentToolUse {
    pub id: String,
    pub name: String,
    pub input: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_permission: Option<Permission>,
    /// Which policy gave `evaluated_permission`; absent when the call was
    /// refused before any policy applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<ToolEvaluation>,
    pub processed_at: String,
}

/// `BetaManagedAgentsAgentEvaluatedPermission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Ask,
    Deny,
}

/// `BetaManagedAgentsAgentToolEvaluation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolEvaluation {
    AlwaysAllow,
    AlwaysAsk,
    Auto {
        evaluated_permission: AutoPermission,
    },
}

/// `BetaManagedAgentsAgentAutoEvaluatedPermission`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AutoPermission {
    Allow,
    Ask { reason_code: String },
    Deny { reason_code: String },
}

/// `BetaManagedAgentsAgentToolResultEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentToolResult {
    pub id: String,
    pub tool_use_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<ContentBlock>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    pub processed_at: String,
}

/// `BetaManagedAgentsAgentCustomToolUseEvent`: the client runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCustomToolUse {
    pub id: String,
    pub name: String,
    pub input: Map<String, Value>,
    pub processed_at: String,
}

/// `BetaManagedAgentsSessionStatusIdleEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusIdle {
    pub id: String,
    pub stop_reason: StopReason,
    pub processed_at: String,
}

/// Why a session went idle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    /// Waiting for the user to resolve these events.
    RequiresAction {
        event_ids: Vec<String>,
    },
    RetriesExhausted,
    BudgetReached,
    Refusal,
}

impl StopReason {
    /// Its `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::RequiresAction { .. } => "requires_action",
            StopReason::RetriesExhausted => "retries_exhausted",
            StopReason::BudgetReached => "budget_reached",
            StopReason::Refusal => "refusal",
        }
    }
}

/// `BetaManagedAgentsSessionErrorEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionError {
    pub id: String,
    pub error: ErrorObject,
    pub processed_at: String,
}

/// A session error's `error` (`model_overloaded_error`, `unknown_error`, …);
/// the kinds with fields of their own stay [`Event::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub retry_status: RetryStatus,
}

/// What the client should do after a session error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RetryStatus {
    Retrying,
    Exhausted,
    Terminal,
}

/// `BetaManagedAgentsSpanModelRequestEndEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRequestEnd {
    pub id: String,
    pub model_request_start_id: String,
    pub model_usage: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    pub processed_at: String,
}

/// A content block of a message or tool result: text, or any other block
/// (image, document, redacted, search result) kept as received.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentBlock {
    Text { text: String },
    Other(Value),
}

/// [`ContentBlock`]'s typed serde; see [`EventDef`].
#[derive(Serialize, Deserialize)]
#[serde(remote = "ContentBlock", tag = "type", rename_all = "snake_case")]
enum ContentBlockDef {
    Text {
        text: String,
    },
    #[serde(skip)]
    Other(Value),
}

impl ContentBlock {
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text { text: text.into() }
    }

    /// Its `type`; empty when it has none.
    pub fn kind(&self) -> &str {
        match self {
            ContentBlock::Text { .. } => "text",
            ContentBlock::Other(v) => kind(v),
        }
    }

    pub fn from_value(value: Value) -> Self {
        exact(
            value,
            |v| ContentBlockDef::deserialize(v),
            ContentBlock::Other,
        )
    }

    pub fn to_value(&self) -> Value {
        match self {
            ContentBlock::Other(v) => v.clone(),
            typed => typed_value(|s| ContentBlockDef::serialize(typed, s)),
        }
    }
}

impl Serialize for ContentBlock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ContentBlock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(ContentBlock::from_value)
    }
}

impl Event {
    /// The typed form of `value` when it writes back exactly `value`,
    /// otherwise [`Event::Other`].
    pub fn from_value(value: Value) -> Self {
        exact(value, |v| EventDef::deserialize(v), Event::Other)
    }

    /// The JSON of the event, as received for [`Event::Other`].
    pub fn to_value(&self) -> Value {
        match self {
            Event::Other(v) => v.clone(),
            typed => typed_value(|s| EventDef::serialize(typed, s)),
        }
    }

    /// Its `type`; empty when it has none.
    pub fn kind(&self) -> &str {
        match self {
            Event::UserMessage(_) => "user.message",
            Event::UserInterrupt(_) => "user.interrupt",
            Event::UserToolConfirmation(_) => "user.tool_confirmation",
            Event::UserCustomToolResult(_) => "user.custom_tool_result",
            Event::AgentMessage(_) => "agent.message",
            Event::AgentThinking(_) => "agent.thinking",
            Event::AgentToolUse(_) => "agent.tool_use",
            Event::AgentToolResult(_) => "agent.tool_result",
            Event::AgentCustomToolUse(_) => "agent.custom_tool_use",
            Event::SessionStatusRunning(_) => "session.status_running",
            Event::SessionStatusIdle(_) => "session.status_idle",
            Event::SessionStatusTerminated(_) => "session.status_terminated",
            Event::SessionError(_) => "session.error",
            Event::SessionDeleted(_) => "session.deleted",
            Event::SpanModelRequestStart(_) => "span.model_request_start",
            Event::SpanModelRequestEnd(_) => "span.model_request_end",
            Event::Other(v) => kind(v),
        }
    }

    /// Its `id`; empty when it has none.
    pub fn id(&self) -> &str {
        match self {
            Event::UserMessage(e) => &e.id,
            Event::UserInterrupt(e) => &e.id,
            Event::UserToolConfirmation(e) => &e.id,
            Event::UserCustomToolResult(e) => &e.id,
            Event::AgentMessage(e) => &e.id,
            Event::AgentToolUse(e) => &e.id,
            Event::AgentToolResult(e) => &e.id,
            Event::AgentCustomToolUse(e) => &e.id,
            Event::SessionStatusIdle(e) => &e.id,
            Event::SessionError(e) => &e.id,
            Event::SpanModelRequestEnd(e) => &e.id,
            Event::AgentThinking(e)
            | Event::SessionStatusRunning(e)
            | Event::SessionStatusTerminated(e)
            | Event::SessionDeleted(e)
            | Event::SpanModelRequestStart(e) => &e.id,
            Event::Other(v) => id(v),
        }
    }

    /// Marks the event processed at `at` (user events are `null` until
    /// then; others are processed when made, and get the new time too).
    pub fn set_processed_at(&mut self, at: String) {
        match self {
            Event::UserMessage(e) => e.processed_at = Some(at),
            Event::UserInterrupt(e) => e.processed_at = Some(at),
            Event::UserToolConfirmation(e) => e.processed_at = Some(at),
            Event::UserCustomToolResult(e) => e.processed_at = Some(at),
            Event::AgentMessage(e) => e.processed_at = at,
            Event::AgentToolUse(e) => e.processed_at = at,
            Event::AgentToolResult(e) => e.processed_at = at,
            Event::AgentCustomToolUse(e) => e.processed_at = at,
            Event::SessionStatusIdle(e) => e.processed_at = at,
            Event::SessionError(e) => e.processed_at = at,
            Event::SpanModelRequestEnd(e) => e.processed_at = at,
            Event::AgentThinking(e)
            | Event::SessionStatusRunning(e)
            | Event::SessionStatusTerminated(e)
            | Event::SessionDeleted(e)
            | Event::SpanModelRequestStart(e) => e.processed_at = at,
            Event::Other(Value::Object(map)) => {
                map.insert("processed_at".to_owned(), Value::String(at));
            }
            Event::Other(_) => {}
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Through `Value`, so the keys come out as a `Value`'s would.
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Event::from_value)
    }
}

/// `parse(&value)` when it writes back exactly `value`, else `other(value)`.
fn exact<T: Serialize>(
    value: Value,
    parse: impl FnOnce(&Value) -> Result<T, serde_json::Error>,
    other: impl FnOnce(Value) -> T,
) -> T {
    match parse(&value) {
        Ok(typed) if serde_json::to_value(&typed).is_ok_and(|back| back == value) => typed,
        _ => other(value),
    }
}

/// The JSON a typed form writes. It cannot fail: every key is a string and
/// no field is a float.
fn typed_value(
    write: impl FnOnce(serde_json::value::Serializer) -> Result<Value, serde_json::Error>,
) -> Value {
    write(serde_json::value::Serializer).unwrap_or_default()
}

// ----- accessors over raw JSON ----------------------------------------------------

pub fn id(e: &Value) -> &str {
    e.get("id").and_then(Value::as_str).unwrap_or_default()
}

pub fn kind(e: &Value) -> &str {
    e.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// The `type` of a `session.status_idle` event's stop reason.
pub fn stop_reason(e: &Value) -> Option<&str> {
    e.get("stop_reason")?.get("type")?.as_str()
}

/// The text of an event's `content` blocks, joined.
pub fn text(e: &Value) -> String {
    let mut out = String::new();
    if let Some(blocks) = e.get("content").and_then(Value::as_array) {
        for b in blocks {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                out.push_str(t);
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
