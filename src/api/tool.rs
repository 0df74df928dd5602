//! An agent's tools as the API answers them: the built-in toolset with every
//! tool's resolved config, MCP toolsets, custom tools, and the permission
//! policies and web options they carry.
//!
//! An unknown tool type (a newer API's) is kept as raw JSON in
//! [`Tool::Other`] and re-serializes untouched.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One entry of an agent's `tools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Tool {
    /// `agent_toolset_20260401` (see [`crate::api::limits::TOOLSET`]).
    #[serde(rename = "agent_toolset_20260401")]
    AgentToolset(AgentToolset),
    #[serde(rename = "mcp_toolset")]
    McpToolset(McpToolset),
    #[serde(rename = "custom")]
    Custom(CustomTool),
    #[serde(untagged)]
    Other(Value),
}

/// `BetaManagedAgentsAgentToolset20260401`: a config for every tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentToolset {
    pub configs: Vec<AgentToolConfig>,
    pub default_config: ToolsetDefaultConfig,
}

/// One tool of the toolset (`BetaManagedAgents{Bash,…,WebSearch}ToolConfig`):
/// `type` equals `name`; the web options belong to `web_fetch` and
/// `web_search` only and are absent unless set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentToolConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub enabled: bool,
    pub permission_policy: PermissionPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_domains: Option<Vec<String>>,
    /// `web_fetch` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_content_tokens: Option<u64>,
    /// `web_fetch` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_sources: Option<UrlSources>,
    /// `web_search` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_location: Option<UserLocation>,
}

/// The resolved `default_config` of a toolset (agent or MCP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolsetDefaultConfig {
    pub enabled: bool,
    pub permission_policy: PermissionPolicy,
}

/// `{type: "always_allow" | "always_ask" | "auto"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PermissionPolicy {
    AlwaysAllow,
    AlwaysAsk,
    Auto,
    #[serde(untagged)]
    Other(Value),
}

impl PermissionPolicy {
    pub const NAMES: [&'static str; 3] = ["always_allow", "always_ask", "auto"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "always_allow" => Some(PermissionPolicy::AlwaysAllow),
            "always_ask" => Some(PermissionPolicy::AlwaysAsk),
            "auto" => Some(PermissionPolicy::Auto),
            _ => None,
        }
    }

    /// Its `type`, when it has one.
    pub fn name(&self) -> Option<&str> {
        match self {
            PermissionPolicy::AlwaysAllow => Some("always_allow"),
            PermissionPolicy::AlwaysAsk => Some("always_ask"),
            PermissionPolicy::Auto => Some("auto"),
            PermissionPolicy::Other(v) => v.get("type").and_then(Value::as_str),
        }
    }
}

/// `BetaManagedAgentsWebFetchURLSources`: absent sources allow all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UrlSources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tool_results: Option<ToolFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tool_results: Option<ToolFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input: Option<UserInputSource>,
}

/// Which tools' results a URL may come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolFilter {
    All,
    None,
    Only {
        tools: Vec<ToolReference>,
    },
    Except {
        tools: Vec<ToolReference>,
    },
    #[serde(untagged)]
    Other(Value),
}

/// `{type: "tool_reference", name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "tool_reference")]
pub struct ToolReference {
    pub name: String,
}

/// Whether URLs the user wrote may be fetched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserInputSource {
    All,
    None,
    #[serde(untagged)]
    Other(Value),
}

/// `BetaManagedAgentsUserLocation` (`type: "approximate"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "approximate")]
pub struct UserLocation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `BetaManagedAgentsMCPToolset`: configs for the tools named, defaults for
/// the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpToolset {
    pub mcp_server_name: String,
    pub configs: Vec<McpToolConfig>,
    pub default_config: ToolsetDefaultConfig,
}

/// `BetaManagedAgentsMCPToolConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpToolConfig {
    pub name: String,
    pub enabled: bool,
    pub permission_policy: PermissionPolicy,
}

/// `BetaManagedAgentsCustomTool`: the client runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomTool {
    pub name: String,
    pub description: String,
    /// A JSON Schema of `type: "object"`, kept as given (it is open).
    pub input_schema: Map<String, Value>,
}
