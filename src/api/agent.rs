//! Agents: `BetaManagedAgentsAgent` and its parts other than tools and
//! multiagent teams (model config, execution identity, MCP servers, skills).
//!
//! Unions the API may grow keep an `Other` variant holding the raw JSON, so a
//! newer API's answer still parses and re-serializes untouched.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::multiagent::{AgentReference, Multiagent};
use super::tool::Tool;

/// `BetaManagedAgentsAgent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub archived_at: Option<String>,
    pub created_at: String,
    pub description: Option<String>,
    /// Always present in the API's answers; `None` (written as `null`) only
    /// when a leaner server left it out.
    pub execution_identity: Option<ExecutionIdentity>,
    pub mcp_servers: Vec<McpServer>,
    pub metadata: BTreeMap<String, String>,
    pub model: ModelConfig,
    pub multiagent: Option<Multiagent<AgentReference>>,
    pub name: String,
    pub skills: Vec<Skill>,
    pub system: Option<String>,
    pub tools: Vec<Tool>,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: String,
    pub version: u64,
}

/// `BetaManagedAgentsModelConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_geo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<Speed>,
}

/// `{type: "low" | … | "max"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Effort {
    Low,
    Medium,
    High,
    Xhigh,
    Max,
    #[serde(untagged)]
    Other(Value),
}

impl Effort {
    /// The levels, in the order the API lists them.
    pub const LEVELS: [&'static str; 5] = ["low", "medium", "high", "xhigh", "max"];

    pub fn from_level(level: &str) -> Option<Self> {
        Some(match level {
            "low" => Effort::Low,
            "medium" => Effort::Medium,
            "high" => Effort::High,
            "xhigh" => Effort::Xhigh,
            "max" => Effort::Max,
            _ => return None,
        })
    }
}

/// `"standard" | "fast"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speed {
    Standard,
    Fast,
    #[serde(untagged)]
    Other(String),
}

impl Speed {
    pub const NAMES: [&'static str; 2] = ["standard", "fast"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "standard" => Some(Speed::Standard),
            "fast" => Some(Speed::Fast),
            _ => None,
        }
    }
}

/// `BetaManagedAgentsExecutionIdentity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecutionIdentity {
    ServiceAccount,
    AwsRole {
        role_arn: String,
    },
    #[serde(untagged)]
    Other(Value),
}

/// `BetaManagedAgentsMCPServerURLDefinition`, the only kind so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum McpServer {
    #[serde(rename = "url")]
    Url { name: String, url: String },
    #[serde(untagged)]
    Other(Value),
}

impl McpServer {
    pub fn name(&self) -> Option<&str> {
        match self {
            McpServer::Url { name, .. } => Some(name),
            McpServer::Other(v) => v.get("name").and_then(Value::as_str),
        }
    }
}

/// `BetaManagedAgentsAnthropicSkill` / `BetaManagedAgentsCustomSkill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Skill {
    Anthropic {
        skill_id: String,
        version: String,
    },
    Custom {
        skill_id: String,
        version: String,
    },
    #[serde(untagged)]
    Other(Value),
}
