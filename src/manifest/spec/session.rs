//! `sessions.NAME`: the session to create (agent, environment, resources) and
//! the scripted conversation `agentform run` drives in it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A session: an agent (latest or a pinned version) running in an environment.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    pub provider: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// An agent name (its latest version) or `{ name, version }` to pin one.
    pub agent: AgentRefSpec,
    /// An environment name.
    pub environment: String,
    pub title: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The scripted conversation `agentform run` drives, in order.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
    /// Handlers for the agent's custom tools, by tool name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolHandlerSpec>,
    /// Answers to tool confirmations (`always_ask` tools), by tool name; a tool
    /// without an entry is denied.
    #[serde(default)]
    pub confirm: BTreeMap<String, ConfirmSpec>,
    /// Wall-clock limit for the whole conversation, e.g. `5m`.
    pub timeout: Option<String>,
    /// Mounted into the session's container: repositories, files, memory
    /// stores. A change replaces the session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<SessionResourceSpec>,
    /// Vaults whose stored credentials the agent may use. A change replaces the session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vault_ids: Vec<String>,
}

/// A session resource, as `POST /v1/sessions` takes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionResourceSpec {
    GithubRepository {
        url: String,
        /// Always treated as a secret: never stored, shown or logged. Write
        /// `{{ env('GITHUB_TOKEN') }}` rather than the token itself.
        #[serde(skip_serializing_if = "Option::is_none")]
        authorization_token: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        checkout: Option<CheckoutSpec>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mount_path: Option<String>,
    },
    File {
        file_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        mount_path: Option<String>,
    },
    MemoryStore {
        memory_store_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        access: Option<MemoryAccess>,
        #[serde(skip_serializing_if = "Option::is_none")]
        instructions: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CheckoutSpec {
    Branch { name: String },
    Commit { sha: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemoryAccess {
    ReadWrite,
    ReadOnly,
}

/// One turn of a scripted conversation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The user message; templated with `vars` and `replies` (earlier replies, from 0).
    pub send: String,
    /// Checks on the turn's result; all must hold.
    #[serde(default)]
    pub expect: Vec<Expectation>,
    /// Wall-clock limit for this step, e.g. `30s`, `2m`, `500ms` (default `5m`).
    pub timeout: Option<String>,
    /// Interrupt the agent when this happens during the step.
    pub interrupt: Option<InterruptSpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// The reply contains this text.
    Contains(String),
    NotContains(String),
    /// The reply matches this regular expression.
    Regex(String),
    /// The reply, trimmed, equals this text.
    Equals(String),
    /// The reply is JSON and the value at `path` (e.g. `total` or `items.0.name`) equals `equals`.
    Json {
        path: String,
        equals: Value,
    },
    /// A tool with this name was used in the turn.
    ToolUsed(String),
    ToolNotUsed(String),
    /// Number of model calls in the turn.
    Turns {
        min: Option<u32>,
        max: Option<u32>,
    },
    /// How the turn ended: `end_turn`, `requires_action`, `retries_exhausted`, …
    StopReason(String),
    /// From sending to idle, in milliseconds.
    MaxLatencyMs(u64),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum InterruptSpec {
    /// After this many events of the step.
    AfterEvents(u32),
    /// This long after sending.
    AfterMs(u64),
    /// When the agent uses this tool.
    OnTool(String),
}

/// What answers a custom tool call.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolHandlerSpec {
    /// Always this text.
    Result(String),
    /// A host command (`bash -c`); the tool input arrives as JSON on stdin and
    /// stdout is the result. A non-zero exit makes an error result.
    Run(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConfirmSpec {
    Allow,
    Deny,
    /// Deny with this message to the agent.
    #[serde(untagged)]
    DenyWith {
        deny: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum AgentRefSpec {
    Latest(String),
    Pinned(PinnedAgentSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinnedAgentSpec {
    pub name: String,
    /// Agent version, from 1.
    pub version: u64,
}
