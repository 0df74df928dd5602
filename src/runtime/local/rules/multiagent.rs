//! The API's rules for an agent's `multiagent` team: references pinned to
//! an agent version, one level deep, `self` at most once; a
//! `multiagent_20261001` update merges level by level into the stored team.
//! Sessions get the team with every reference expanded to its agent.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::super::body::{
    array, as_object, check_keys, expected, field, invalid, nonempty_str, one_of, positive_int,
    present, required,
};
use super::super::store::Records;
use crate::api::limits::MAX_TEAM_AGENTS;
use crate::api::literal::AdvisorType;
use crate::api::multiagent::{
    CoordinatorAdvisor, CoordinatorAgent, InlineAgents, MultiagentAdvisor, Team,
};
use crate::api::{AgentReference, Multiagent, Result, ThreadAgent};

/// Who is resolving: the agent's id and the version being made, which
/// `{type: "self"}` stands for; and how often `self` appeared so far.
pub struct Resolver<'a> {
    pub records: &'a Records,
    pub own: (&'a str, u64),
    selves: usize,
}

impl<'a> Resolver<'a> {
    pub fn new(records: &'a Records, own: (&'a str, u64)) -> Self {
        Resolver {
            records,
            own,
            selves: 0,
        }
    }

    /// Resolves `multiagent`; `stored` is the agent's current team.
    pub fn multiagent(
        &mut self,
        value: &Value,
        stored: Option<&Multiagent<AgentReference>>,
    ) -> Result<Multiagent<AgentReference>> {
        let path = "multiagent";
        let map = as_object(value, path)?;
        let kind = one_of(
            required(map, path, "type")?,
            "multiagent.type",
            &["coordinator", "multiagent_20261001"],
        )?;
        if kind == "coordinator" {
            return self.coordinator(map);
        }

        check_keys(map, path, &["type", "advisor", "subagents", "workflows"])?;
        let (stored_advisor, stored_subagents, stored_workflows) = match stored {
            Some(Multiagent::Teams {
                advisor,
                subagents,
                workflows,
            }) => (Some(advisor), Some(subagents), Some(workflows)),
            _ => (None, None, None),
        };
        let advisor = match map.get("advisor") {
            None => stored_advisor
                .cloned()
                .unwrap_or(MultiagentAdvisor::Disabled),
            Some(Value::Null) => MultiagentAdvisor::Disabled,
            Some(v) => resolve_advisor(v)?,
        };
        let subagents = self.team(
            map.get("subagents"),
            stored_subagents,
            "multiagent.subagents",
        )?;
        let workflows = self.team(
            map.get("workflows"),
            stored_workflows,
            "multiagent.workflows",
        )?;
        Ok(Multiagent::Teams {
            advisor,
            subagents,
            workflows,
        })
    }

    fn coordinator(&mut self, map: &Map<String, Value>) -> Result<Multiagent<AgentReference>> {
        let path = "multiagent";
        check_keys(map, path, &["type", "agents"])?;
        let entries = array(required(map, path, "agents")?, "multiagent.agents")?;
        if entries.is_empty() || entries.len() > MAX_TEAM_AGENTS {
            return Err(invalid(format!(
                "`multiagent.agents`: expected 1 to {MAX_TEAM_AGENTS} entries"
            )));
        }
        let mut agents = Vec::with_capacity(entries.len());
        let mut ids = HashSet::new();
        let mut advisors = 0;
        for (i, entry) in entries.iter().enumerate() {
            let p = format!("multiagent.agents[{i}]");
            if entry.get("type").and_then(Value::as_str) == Some("advisor") {
                let entry_map = as_object(entry, &p)?;
                check_keys(entry_map, &p, &["type", "model"])?;
                let model = nonempty_str(required(entry_map, &p, "model")?, &field(&p, "model"))?;
                advisors += 1;
                if advisors > 1 {
                    return Err(invalid(format!("`{p}`: at most one advisor is allowed")));
                }
                agents.push(CoordinatorAgent::Advisor(CoordinatorAdvisor {
                    model: model.to_owned(),
                    kind: AdvisorType,
                }));
                continue;
            }
            let reference = self.reference(entry, &p)?;
            if !ids.insert(reference.id.clone()) {
                return Err(invalid(format!("`{p}`: agent is listed more than once")));
            }
            agents.push(CoordinatorAgent::Agent(reference));
        }
        Ok(Multiagent::Coordinator { agents })
    }

    /// `subagents` / `workflows` of `multiagent_20261001`.
    fn team(
        &mut self,
        value: Option<&Value>,
        stored: Option<&Team<AgentReference>>,
        path: &str,
    ) -> Result<Team<AgentReference>> {
        let default = || Team::Enabled {
            inline_agents: InlineAgents::Enabled,
            predefined_agents: Vec::new(),
        };
        let value = match value {
            None => return Ok(stored.cloned().unwrap_or_else(default)),
            Some(Value::Null) => return Ok(default()),
            Some(v) => v,
        };
        let map = as_object(value, path)?;
        if one_of(
            required(map, path, "type")?,
            &field(path, "type"),
            &["enabled", "disabled"],
        )? == "disabled"
        {
            check_keys(map, path, &["type"])?;
            return Ok(Team::Disabled);
        }
        check_keys(map, path, &["type", "inline_agents", "predefined_agents"])?;
        let (stored_inline, stored_predefined) = match stored {
            Some(Team::Enabled {
                inline_agents,
                predefined_agents,
            }) => (Some(inline_agents), Some(predefined_agents)),
            _ => (None, None),
        };
        let inline_agents = match map.get("inline_agents") {
            None => stored_inline.cloned().unwrap_or(InlineAgents::Enabled),
            Some(Value::Null) => InlineAgents::Enabled,
            Some(v) => {
                let p = field(path, "inline_agents");
                let m = as_object(v, &p)?;
                check_keys(m, &p, &["type"])?;
                let kind = one_of(
                    required(m, &p, "type")?,
                    &field(&p, "type"),
                    &["enabled", "disabled"],
                )?;
                if kind == "enabled" {
                    InlineAgents::Enabled
                } else {
                    InlineAgents::Disabled
                }
            }
        };
        let predefined_agents = match map.get("predefined_agents") {
            None => stored_predefined.cloned().unwrap_or_default(),
            Some(Value::Null) => Vec::new(),
            Some(v) => self.predefined(v, &field(path, "predefined_agents"))?,
        };
        if inline_agents == InlineAgents::Disabled && predefined_agents.is_empty() {
            return Err(invalid(format!(
                "`{path}.predefined_agents`: must name an agent when inline agents are disabled"
            )));
        }
        Ok(Team::Enabled {
            inline_agents,
            predefined_agents,
        })
    }

    fn predefined(&mut self, value: &Value, path: &str) -> Result<Vec<AgentReference>> {
        let entries = array(value, path)?;
        if entries.len() > MAX_TEAM_AGENTS {
            return Err(invalid(format!(
                "`{path}`: at most {MAX_TEAM_AGENTS} agents are allowed"
            )));
        }
        let mut ids = HashSet::new();
        let mut agents = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let ep = format!("{path}[{i}]");
            let reference = self.reference(entry, &ep)?;
            if !ids.insert(reference.id.clone()) {
                return Err(invalid(format!("`{ep}`: agent is listed more than once")));
            }
            agents.push(reference);
        }
        Ok(agents)
    }

    /// An agent id, `{type:"agent", id, version?}` or `{type:"self"}`, pinned
    /// to a version.
    fn reference(&mut self, value: &Value, path: &str) -> Result<AgentReference> {
        let (id, version) = match value {
            Value::String(id) => (id.as_str(), None),
            Value::Object(map) => {
                match one_of(
                    required(map, path, "type")?,
                    &field(path, "type"),
                    &["agent", "self"],
                )? {
                    "self" => {
                        check_keys(map, path, &["type"])?;
                        self.selves += 1;
                        if self.selves > 1 {
                            return Err(invalid(format!("`{path}`: `self` may appear only once")));
                        }
                        return Ok(AgentReference::new(self.own.0, self.own.1));
                    }
                    _ => {
                        check_keys(map, path, &["type", "id", "version"])?;
                        let id = nonempty_str(required(map, path, "id")?, &field(path, "id"))?;
                        let version = present(map, "version")
                            .map(|v| positive_int(v, &field(path, "version")))
                            .transpose()?;
                        (id, version)
                    }
                }
            }
            other => return Err(expected(path, "an agent id or reference", other)),
        };
        let current = match self.records.agent(id) {
            Err(e) if e.is_not_found() => {
                return Err(invalid(format!("`{path}`: agent `{id}` not found")))
            }
            other => other?,
        };
        if current.archived_at.is_some() {
            return Err(invalid(format!("`{path}`: agent `{id}` is archived")));
        }
        let pinned = match version {
            None => current,
            Some(v) => match self.records.agent_version(&current, v) {
                Err(e) if e.is_not_found() => {
                    return Err(invalid(format!(
                        "`{path}`: agent `{id}` has no version {v}"
                    )))
                }
                other => other?,
            },
        };
        if pinned.multiagent.is_some() {
            return Err(invalid(format!(
                "`{path}`: agent `{id}` is itself multiagent; only one level is allowed"
            )));
        }
        Ok(AgentReference::new(id, pinned.version))
    }
}

fn resolve_advisor(value: &Value) -> Result<MultiagentAdvisor> {
    let p = "multiagent.advisor";
    let m = as_object(value, p)?;
    match one_of(
        required(m, p, "type")?,
        "multiagent.advisor.type",
        &["enabled", "disabled"],
    )? {
        "enabled" => {
            check_keys(m, p, &["type", "model"])?;
            let model = nonempty_str(required(m, p, "model")?, "multiagent.advisor.model")?;
            Ok(MultiagentAdvisor::Enabled {
                model: model.to_owned(),
            })
        }
        _ => {
            check_keys(m, p, &["type"])?;
            Ok(MultiagentAdvisor::Disabled)
        }
    }
}

/// The team with every reference replaced by the agent version it pins,
/// as a session's snapshot holds it.
pub fn expand(
    records: &Records,
    team: &Multiagent<AgentReference>,
) -> Result<Multiagent<ThreadAgent>> {
    team.try_map(&mut |reference: &AgentReference| {
        let current = records.agent(&reference.id)?;
        let pinned = records.agent_version(&current, reference.version)?;
        Ok(ThreadAgent::from(&pinned))
    })
}
