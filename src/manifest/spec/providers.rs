//! `providers:`: settings of the local runtime, of the `anthropic` provider
//! and of E2B and Modal (where the local runtime's tools may run).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvidersSpec {
    pub local: Option<LocalProviderSpec>,
    pub anthropic: Option<AnthropicProviderSpec>,
    pub e2b: Option<E2bProviderSpec>,
    pub modal: Option<ModalProviderSpec>,
}

/// Settings of Modal, where the local runtime's built-in tools run with
/// `local: { sandbox: modal }`: one Modal sandbox per session. Credentials
/// never appear here: the token comes from the environment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModalProviderSpec {
    /// The variable holding the Modal token id (default `MODAL_TOKEN_ID`).
    pub token_id_env: Option<String>,
    /// The variable holding the Modal token secret (default `MODAL_TOKEN_SECRET`).
    pub token_secret_env: Option<String>,
    /// Modal's API, e.g. `https://api.modal.com:443` (the default, unless
    /// `MODAL_SERVER_URL` is set); plain `http://` only on a loopback
    /// address, for tests.
    pub server_url: Option<String>,
    /// The Modal app the sandboxes belong to (default `agentform`; made
    /// when missing).
    pub app: Option<String>,
    /// A sandbox's lifetime, e.g. `1h` (the default), at most `24h`: fixed
    /// when the sandbox is made (Modal cannot extend it).
    pub timeout: Option<String>,
    /// `provider: modal`: the agentform executable uploaded into each
    /// sandbox, a static x86_64 Linux build (`scripts/build-static.sh`).
    /// Default: this executable, when it is static (against a loopback
    /// `server_url`, as it is).
    pub agent_binary: Option<String>,
}

/// Settings of E2B: where the local runtime's built-in tools run with
/// `local: { sandbox: e2b }`, and where whole sessions run with
/// `provider: e2b` (the agent loop too: agentform serves itself in the
/// sandbox). One E2B sandbox per session. Credentials never appear here:
/// the API key and the model keys come from the environment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct E2bProviderSpec {
    /// The variable holding the E2B API key (default `E2B_API_KEY`).
    pub api_key_env: Option<String>,
    /// E2B's domain: the API is `https://api.DOMAIN`, sandboxes are reached
    /// under it. Defaults to `E2B_DOMAIN`, else `e2b.app`.
    pub domain: Option<String>,
    /// The control plane's URL, instead of `https://api.DOMAIN` (plain
    /// `http://` only on a loopback address, for tests).
    pub api_url: Option<String>,
    /// Where sandboxes are reached (envd and ports), instead of E2B's sandbox
    /// proxy (plain `http://` only on a loopback address, for tests).
    pub sandbox_url: Option<String>,
    /// The sandbox template (default `base`).
    pub template: Option<String>,
    /// How long a sandbox lives without activity, e.g. `1h` (the default);
    /// re-armed while its session runs. E2B caps it (1 h Hobby, 24 h Pro).
    pub timeout: Option<String>,
    /// `provider: e2b`: the agentform executable uploaded into each
    /// sandbox, a static x86_64 Linux build (`scripts/build-static.sh`).
    /// Default: this executable, when it is static (against a loopback
    /// `api_url`, as it is).
    pub agent_binary: Option<String>,
    /// `provider: e2b`: how the model's key reaches the loop in the
    /// sandbox. `env` (the default): as a variable of its serve process,
    /// never written to a file, the state or a transcript. `inject`: the
    /// key never enters the sandbox; E2B's egress proxy sets the key's
    /// header on the sandbox's requests to the model's host. Stage 1
    /// (`local: { sandbox: e2b }`) keeps the loop and its key on this
    /// machine, so it is unaffected.
    pub model_key: Option<ModelKeySpec>,
}

/// How a remote loop gets its model's key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKeySpec {
    /// A variable of the serve process in the sandbox.
    #[default]
    Env,
    /// Never in the sandbox: the sandbox is made with an egress rule that
    /// sets the key's header (`x-api-key`, or `authorization: Bearer …` for
    /// `openai` backends) on its requests to the model's host; the serve
    /// holds a placeholder.
    Inject,
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
    /// Where the built-in tools run: `bubblewrap` (the default: confined,
    /// refused where bubblewrap does not work), `none` (unconfined, with
    /// the rights of the user running agentform; plan and run warn) or
    /// `e2b` (one E2B sandbox per session, see `providers.e2b`) or `modal`
    /// (one Modal sandbox per session, see `providers.modal`).
    #[serde(default)]
    pub sandbox: SandboxKind,
}

/// The local runtime's sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxKind {
    #[default]
    Bubblewrap,
    None,
    E2b,
    Modal,
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
