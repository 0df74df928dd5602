//! Sessions: `BetaManagedAgentsSession`, the agent snapshot it runs, its
//! stats and usage; deletions; token usage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::agent::{Agent, ExecutionIdentity, McpServer, ModelConfig, Skill};
use super::literal::AgentType;
use super::multiagent::Multiagent;
use super::resource::SessionResource;
use super::tool::Tool;

/// `BetaManagedAgentsSession`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    /// Snapshot of the agent version the session runs.
    pub agent: SessionAgent,
    pub archived_at: Option<String>,
    pub created_at: String,
    pub environment_id: String,
    pub metadata: BTreeMap<String, String>,
    /// The local runtime has no outcomes; kept as the API sent them.
    pub outcome_evaluations: Vec<Value>,
    pub resources: Vec<SessionResource>,
    pub stats: SessionStats,
    pub status: String,
    pub title: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: String,
    pub usage: SessionUsage,
    pub vault_ids: Vec<String>,
}

impl Session {
    pub fn agent_id(&self) -> Option<&str> {
        Some(&self.agent.id)
    }

    pub fn agent_version(&self) -> Option<u64> {
        Some(self.agent.version)
    }
}

/// `BetaManagedAgentsSessionAgent`: an agent version without its
/// bookkeeping fields, its team's agents in full.
///
/// A leaner server may send only `{id, version, type}`; the rest then
/// takes its empty value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionAgent {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub execution_identity: Option<ExecutionIdentity>,
    #[serde(default)]
    pub mcp_servers: Vec<McpServer>,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub multiagent: Option<Multiagent<ThreadAgent>>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub skills: Vec<Skill>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    #[serde(rename = "type", default)]
    pub kind: AgentType,
    pub version: u64,
}

/// `BetaManagedAgentsSessionThreadAgent`: like [`SessionAgent`], without a
/// team of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadAgent {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub execution_identity: Option<ExecutionIdentity>,
    #[serde(default)]
    pub mcp_servers: Vec<McpServer>,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub skills: Vec<Skill>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    #[serde(rename = "type", default)]
    pub kind: AgentType,
    pub version: u64,
}

impl From<&Agent> for ThreadAgent {
    fn from(agent: &Agent) -> Self {
        ThreadAgent {
            id: agent.id.clone(),
            description: agent.description.clone(),
            execution_identity: agent.execution_identity.clone(),
            mcp_servers: agent.mcp_servers.clone(),
            model: agent.model.clone(),
            name: agent.name.clone(),
            skills: agent.skills.clone(),
            system: agent.system.clone(),
            tools: agent.tools.clone(),
            kind: AgentType,
            version: agent.version,
        }
    }
}

impl SessionAgent {
    /// The snapshot of `agent`, with its team already expanded.
    pub fn new(agent: &Agent, multiagent: Option<Multiagent<ThreadAgent>>) -> Self {
        let t = ThreadAgent::from(agent);
        SessionAgent {
            id: t.id,
            description: t.description,
            execution_identity: t.execution_identity,
            mcp_servers: t.mcp_servers,
            model: t.model,
            multiagent,
            name: t.name,
            skills: t.skills,
            system: t.system,
            tools: t.tools,
            kind: AgentType,
            version: t.version,
        }
    }
}

/// `BetaManagedAgentsSessionStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

/// `BetaManagedAgentsSessionUsage`: counters appear once something counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation: Option<CacheCreationUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// `BetaMonetaryAmount`, as the API sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_cost: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// `BetaManagedAgentsServerToolUsage`, as the API sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tool_use: Option<Value>,
}

/// `BetaManagedAgentsCacheCreationUsage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCreationUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_1h_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_5m_input_tokens: Option<u64>,
}

/// `{id, type: "environment_deleted" | "session_deleted"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Token usage, as sessions and the Messages API count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}
