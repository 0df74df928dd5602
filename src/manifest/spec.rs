//! The manifest as written: serde types with no logic, one per YAML construct.
//!
//! Agent and environment bodies use the Managed Agents API's own field names, so
//! the body of `agents.NAME` is the body `POST /v1/agents` takes (with `name`
//! defaulting to the key).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One manifest file. Several files combine into one manifest.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "agentform manifest")]
pub struct FileSpec {
    /// Manifest format version; always `1`.
    pub version: Option<u32>,
    /// Project name, recorded on every created object as `agentform.manifest`.
    /// Defaults to the name of the manifest's directory.
    pub name: Option<String>,
    /// Template variables, available as `{{ vars.NAME }}`; `-var NAME=VALUE` overrides them.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Default provider for every resource: `local` (embedded, the default) or
    /// `anthropic` (the Managed Agents API).
    pub provider: Option<String>,
    /// Settings per provider.
    #[serde(default)]
    pub providers: ProvidersSpec,
    /// Sandbox templates, keyed by name.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentSpec>,
    /// Agents, keyed by name. Every change makes a new immutable version.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSpec>,
    /// Sessions: an agent running in an environment.
    #[serde(default)]
    pub sessions: BTreeMap<String, SessionSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvidersSpec {
    pub local: Option<LocalProviderSpec>,
    pub anthropic: Option<AnthropicProviderSpec>,
}

/// Settings of the `anthropic` provider: Anthropic's Managed Agents API.
/// Credentials never appear here: they come from the environment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnthropicProviderSpec {
    /// Where the API is, e.g. `http://127.0.0.1:8787` for `agentform serve`.
    /// Defaults to `ANTHROPIC_BASE_URL`, else `https://api.anthropic.com`.
    pub base_url: Option<String>,
    /// The variable holding the API key, sent as `x-api-key` (default `ANTHROPIC_API_KEY`).
    pub api_key_env: Option<String>,
    /// The variable holding a bearer token (default `ANTHROPIC_AUTH_TOKEN`).
    pub auth_token_env: Option<String>,
    /// Retries after a failed attempt (connection errors, 408, 409, 429, 5xx); default 4.
    pub max_retries: Option<u32>,
    /// Backoff before the first retry, doubled for each further one, e.g. `500ms` (the default).
    pub retry_backoff: Option<String>,
    /// Limit for one attempt, e.g. `2m` (the default); a stream's limit is until it starts.
    pub timeout: Option<String>,
    /// Client-side budgets; the API's documented per-organization limits by default.
    #[serde(default)]
    pub rate_limits: RateLimitsSpec,
}

/// Client-side request budgets of the `anthropic` provider.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsSpec {
    /// Requests to `/v1/environments` per minute (default 60).
    pub environments_per_minute: Option<LimitSpec>,
    /// Environment requests in flight at once (default 5).
    pub environments_concurrency: Option<LimitSpec>,
    /// Creating requests (`POST /v1/agents`, `/v1/environments`, `/v1/sessions`) per minute (default 300).
    pub creates_per_minute: Option<LimitSpec>,
    /// Every other request, per minute (default 600).
    pub other_per_minute: Option<LimitSpec>,
}

/// A positive number, or `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LimitSpec {
    Count(u32),
    Word(Unlimited),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unlimited {
    Unlimited,
}

impl LimitSpec {
    /// `None` for unlimited.
    pub fn get(self) -> Option<u32> {
        match self {
            LimitSpec::Count(n) => Some(n),
            LimitSpec::Word(Unlimited::Unlimited) => None,
        }
    }
}

/// Settings of the embedded local runtime.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalProviderSpec {
    /// Delay added to every runtime call, to make the local runtime behave like a
    /// remote one in tests and benchmarks. `AGENTFORM_LOCAL_LATENCY_MS` overrides it.
    pub latency_ms: Option<u64>,
    /// The backend behind each model id agents use, e.g.
    /// `claude-sonnet-4-6: { backend: anthropic }`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelBackendSpec>,
}

/// How the local agent loop answers for one model id.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelBackendSpec {
    /// Claude over the Messages API; the key comes from `api_key_env`
    /// (default `ANTHROPIC_API_KEY`) and is never stored.
    Anthropic {
        base_url: Option<String>,
        api_key_env: Option<String>,
        /// Model id sent to the API, when it differs from the agent's.
        model: Option<String>,
    },
    /// Any OpenAI-compatible chat-completions endpoint (Ollama, vLLM, llama.cpp).
    Openai {
        base_url: String,
        api_key_env: Option<String>,
        model: Option<String>,
    },
    /// Deterministic answers: `turns`, or the model turns of a recorded transcript.
    Scripted {
        #[serde(default)]
        turns: Vec<crate::model::scripted::ScriptTurn>,
        /// A transcript written by `agentform run`, relative to the manifest.
        transcript: Option<String>,
    },
}

/// `POST /v1/agents`, as a manifest entry.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Provider for this agent; defaults to the manifest's `provider`.
    #[serde(skip_serializing)]
    pub provider: Option<String>,
    /// Extra dependencies, as addresses such as `environment.data`.
    #[serde(default, skip_serializing)]
    pub depends_on: Vec<String>,
    /// Agent name; defaults to the key.
    pub name: Option<String>,
    /// A model id such as `claude-sonnet-4-6`, or a model configuration object.
    pub model: ModelSpec,
    /// System prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tools: `agent_toolset_20260401`, `mcp_toolset` or `custom`. At most 256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// URL MCP servers, referenced by `mcp_toolset` tools. At most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServerSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<SkillSpec>,
    /// Passed to the API as is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_identity: Option<serde_json::Map<String, Value>>,
    /// Passed to the API as is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiagent: Option<serde_json::Map<String, Value>>,
    /// At most 16 pairs in all (agentform uses two); keys ≤ 64, values ≤ 512 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelSpec {
    Id(String),
    Config(ModelConfigSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfigSpec {
    pub id: String,
    /// `low`, `medium`, `high`, `xhigh`, `max` or `{type: LEVEL}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effort: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_geo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<Speed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Speed {
    Standard,
    Fast,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ToolSpec {
    /// The built-in tools: bash, edit, read, write, glob, grep, web_fetch, web_search.
    #[serde(rename = "agent_toolset_20260401")]
    AgentToolset {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        configs: Vec<ToolConfigSpec>,
        #[serde(skip_serializing_if = "Option::is_none")]
        default_config: Option<ToolDefaultSpec>,
    },
    /// Tools of an MCP server declared in `mcp_servers`.
    #[serde(rename = "mcp_toolset")]
    McpToolset {
        mcp_server_name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        configs: Vec<ToolConfigSpec>,
        #[serde(skip_serializing_if = "Option::is_none")]
        default_config: Option<ToolDefaultSpec>,
    },
    /// A tool executed by the client: the session waits for `user.custom_tool_result`.
    #[serde(rename = "custom")]
    Custom {
        name: String,
        description: String,
        input_schema: serde_json::Map<String, Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolConfigSpec {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_policy: Option<PermissionPolicy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDefaultSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_policy: Option<PermissionPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PermissionPolicy {
    AlwaysAllow,
    AlwaysAsk,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpServerSpec {
    Url { name: String, url: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SkillSpec {
    Anthropic {
        skill_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    Custom {
        skill_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
}

/// `POST /v1/environments`, as a manifest entry.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    #[serde(skip_serializing)]
    pub provider: Option<String>,
    #[serde(default, skip_serializing)]
    pub depends_on: Vec<String>,
    /// Environment name, unique per organization; defaults to the key.
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<EnvironmentConfigSpec>,
    /// `organization` or `account`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Organization,
    Account,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnvironmentConfigSpec {
    /// A sandbox in the provider's cloud (or on this machine, for `local`).
    Cloud {
        #[serde(skip_serializing_if = "Option::is_none")]
        packages: Option<PackagesSpec>,
        #[serde(skip_serializing_if = "Option::is_none")]
        networking: Option<NetworkingSpec>,
    },
}

/// Packages installed once per environment, by package manager.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackagesSpec {
    /// Always `packages`; may be omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<PackagesType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apt: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cargo: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gem: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npm: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pip: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PackagesType {
    Packages,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkingSpec {
    Unrestricted,
    Limited {
        #[serde(skip_serializing_if = "Option::is_none")]
        allowed_hosts: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        allow_mcp_servers: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        allow_package_managers: Option<bool>,
    },
}

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
