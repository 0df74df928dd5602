//! `agents.NAME`: the body of `POST /v1/agents`, with the model, tools, MCP
//! servers and skills it holds.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
