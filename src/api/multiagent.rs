//! Multiagent teams: the `coordinator` and `multiagent_20261001` shapes.
//!
//! One shape serves agents and sessions: an agent's team names other agents
//! by [`AgentReference`] (pinned to a version), a session's snapshot holds
//! them in full ([`crate::api::session::ThreadAgent`]); `A` is which.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::literal::{AdvisorType, AgentType};

/// `BetaManagedAgentsMultiagent` (`A` = [`AgentReference`]) and
/// `BetaManagedAgentsSessionMultiagent` (`A` = a thread agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Multiagent<A> {
    #[serde(rename = "coordinator")]
    Coordinator { agents: Vec<CoordinatorAgent<A>> },
    #[serde(rename = "multiagent_20261001")]
    Teams {
        advisor: MultiagentAdvisor,
        subagents: Team<A>,
        workflows: Team<A>,
    },
    #[serde(untagged)]
    Other(Value),
}

/// One of a coordinator's `agents`: an agent, or the advisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CoordinatorAgent<A> {
    Agent(A),
    Advisor(CoordinatorAdvisor),
    Other(Value),
}

/// `BetaManagedAgentsAdvisor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorAdvisor {
    pub model: String,
    #[serde(rename = "type")]
    pub kind: AdvisorType,
}

/// `BetaManagedAgentsAgentReference`: `{type: "agent", id, version}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReference {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: AgentType,
    pub version: u64,
}

impl AgentReference {
    pub fn new(id: impl Into<String>, version: u64) -> Self {
        AgentReference {
            id: id.into(),
            kind: AgentType,
            version,
        }
    }
}

/// `advisor` of `multiagent_20261001`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MultiagentAdvisor {
    Enabled {
        model: String,
    },
    Disabled,
    #[serde(untagged)]
    Other(Value),
}

/// `subagents` / `workflows` of `multiagent_20261001`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Team<A> {
    Enabled {
        inline_agents: InlineAgents,
        predefined_agents: Vec<A>,
    },
    Disabled,
    #[serde(untagged)]
    Other(Value),
}

/// Whether a team may define agents that are not saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InlineAgents {
    Enabled,
    Disabled,
    #[serde(untagged)]
    Other(Value),
}

impl<A> Multiagent<A> {
    /// The same team with every agent replaced by `f`'s answer for it.
    pub fn try_map<B, E>(
        &self,
        f: &mut impl FnMut(&A) -> Result<B, E>,
    ) -> Result<Multiagent<B>, E> {
        Ok(match self {
            Multiagent::Coordinator { agents } => Multiagent::Coordinator {
                agents: agents
                    .iter()
                    .map(|entry| {
                        Ok(match entry {
                            CoordinatorAgent::Agent(a) => CoordinatorAgent::Agent(f(a)?),
                            CoordinatorAgent::Advisor(a) => CoordinatorAgent::Advisor(a.clone()),
                            CoordinatorAgent::Other(v) => CoordinatorAgent::Other(v.clone()),
                        })
                    })
                    .collect::<Result<_, E>>()?,
            },
            Multiagent::Teams {
                advisor,
                subagents,
                workflows,
            } => Multiagent::Teams {
                advisor: advisor.clone(),
                subagents: subagents.try_map(f)?,
                workflows: workflows.try_map(f)?,
            },
            Multiagent::Other(v) => Multiagent::Other(v.clone()),
        })
    }
}

impl<A> Team<A> {
    fn try_map<B, E>(&self, f: &mut impl FnMut(&A) -> Result<B, E>) -> Result<Team<B>, E> {
        Ok(match self {
            Team::Enabled {
                inline_agents,
                predefined_agents,
            } => Team::Enabled {
                inline_agents: inline_agents.clone(),
                predefined_agents: predefined_agents.iter().map(f).collect::<Result<_, E>>()?,
            },
            Team::Disabled => Team::Disabled,
            Team::Other(v) => Team::Other(v.clone()),
        })
    }
}
