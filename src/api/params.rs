//! Typed request parameters, once a provider has checked and resolved them.

use super::agent::{Agent, McpServer, ModelConfig, Skill};
use super::tool::Tool;

/// The fields an `agent_with_overrides` session agent replaces in the
/// agent's snapshot (`None`: kept); the saved agent is not changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentOverrides {
    pub model: Option<ModelConfig>,
    pub mcp_servers: Option<Vec<McpServer>>,
    pub skills: Option<Vec<Skill>>,
    pub tools: Option<Vec<Tool>>,
    /// `Some(None)` clears the system prompt.
    pub system: Option<Option<String>>,
}

impl AgentOverrides {
    pub fn apply(self, agent: &mut Agent) {
        if let Some(model) = self.model {
            agent.model = model;
        }
        if let Some(servers) = self.mcp_servers {
            agent.mcp_servers = servers;
        }
        if let Some(skills) = self.skills {
            agent.skills = skills;
        }
        if let Some(tools) = self.tools {
            agent.tools = tools;
        }
        if let Some(system) = self.system {
            agent.system = system;
        }
    }
}
