//! The API's rules for agents: what a create or update body may hold, how
//! each field resolves (model in object form, the default execution
//! identity, skills at `latest`, …), versions (an update that changes
//! something makes the next one; `version` in the body must be the current
//! one) and archival (permanent; an archived agent is frozen).

use serde_json::{Map, Value};

use super::super::body::{
    array, as_object, body_object, bounded_str, check_keys, clearable_text, expected, field,
    invalid, nonempty_str, one_of, one_of_as, positive_int, present, required, string,
};
use super::super::ids::{new_id, timestamp, AGENT_PREFIX};
use super::super::paging::page_versions;
use super::super::store::{write_lock, Records};
use super::metadata;
use super::multiagent::Resolver;
use super::tools::{check_mcp_references, resolve_mcp_servers, resolve_tools};
use crate::api::agent::{Effort, Speed};
use crate::api::limits::MAX_ROLE_ARN;
use crate::api::{
    Agent, ErrorKind, ExecutionIdentity, ListQuery, ModelConfig, Page, Result, RuntimeError, Skill,
};

const CREATE_KEYS: [&str; 10] = [
    "model",
    "name",
    "description",
    "execution_identity",
    "mcp_servers",
    "metadata",
    "multiagent",
    "skills",
    "system",
    "tools",
];

pub fn create(records: &Records, body: &Value) -> Result<Agent> {
    let body = body_object(body)?;
    check_keys(body, "", &CREATE_KEYS)?;
    let _guard = write_lock();
    let id = new_id(AGENT_PREFIX);
    let agent = build(records, &id, 1, None, body, &timestamp())?;
    records.put_agent_version(&agent)?;
    Ok(agent)
}

pub fn retrieve(records: &Records, id: &str, version: Option<u64>) -> Result<Agent> {
    let current = records.agent(id)?;
    match version {
        None => Ok(current),
        Some(0) => Err(invalid("`version`: expected an integer ≥ 1")),
        Some(v) if v == current.version => Ok(current),
        Some(v) => records.agent_version(&current, v),
    }
}

pub fn update(records: &Records, id: &str, body: &Value) -> Result<Agent> {
    let body = body_object(body)?;
    let mut allowed = CREATE_KEYS.to_vec();
    allowed.push("version");
    check_keys(body, "", &allowed)?;
    let expected = body
        .get("version")
        .map(|v| positive_int(v, "version"))
        .transpose()?;

    let _guard = write_lock();
    let current = records.agent(id)?;
    if current.archived_at.is_some() {
        return Err(invalid(format!("agent `{id}` is archived")));
    }
    if let Some(expected) = expected {
        if expected != current.version {
            return Err(RuntimeError::new(
                ErrorKind::Conflict,
                format!(
                    "version mismatch: agent `{id}` is at version {}, not {expected}",
                    current.version
                ),
            ));
        }
    }
    // The API does not make a version for an update that changes nothing.
    let unchanged = build(
        records,
        id,
        current.version,
        Some(&current),
        body,
        &current.updated_at,
    )?;
    if unchanged == current {
        return Ok(current);
    }
    let next = build(
        records,
        id,
        current.version + 1,
        Some(&current),
        body,
        &timestamp(),
    )?;
    records.put_agent_version(&next)?;
    Ok(next)
}

/// Idempotent, so a retry after a lost response succeeds.
pub fn archive(records: &Records, id: &str) -> Result<Agent> {
    let _guard = write_lock();
    let mut agent = records.agent(id)?;
    if agent.archived_at.is_none() {
        agent.archived_at = Some(timestamp());
        records.put_agent(&agent)?;
    }
    Ok(agent)
}

pub fn list_versions(records: &Records, id: &str, query: &ListQuery) -> Result<Page<Agent>> {
    let current = records.agent(id)?;
    page_versions(&records.vault, &records.versions, &current, query)
}

/// The agent an update (or create, without `base`) body produces, at
/// `version`. Omitted fields keep `base`'s values.
fn build(
    records: &Records,
    id: &str,
    version: u64,
    base: Option<&Agent>,
    body: &Map<String, Value>,
    updated_at: &str,
) -> Result<Agent> {
    let name = match (body.get("name"), base) {
        (None, Some(base)) => base.name.clone(),
        (None, None) | (Some(Value::Null), None) => return Err(invalid("`name`: required")),
        (Some(Value::Null), Some(_)) => return Err(invalid("`name`: cannot be cleared")),
        (Some(v), _) => nonempty_str(v, "name")?.to_owned(),
    };
    let model = match (body.get("model"), base) {
        (None, Some(base)) => base.model.clone(),
        (None, None) | (Some(Value::Null), None) => return Err(invalid("`model`: required")),
        (Some(Value::Null), Some(_)) => return Err(invalid("`model`: cannot be cleared")),
        (Some(v), _) => resolve_model(v, "model")?,
    };
    let description = clearable_text(
        body,
        "description",
        base.and_then(|b| b.description.clone()),
    )?;
    let system = clearable_text(body, "system", base.and_then(|b| b.system.clone()))?;
    let execution_identity = match body.get("execution_identity") {
        None => base.map_or(Some(ExecutionIdentity::ServiceAccount), |b| {
            b.execution_identity.clone()
        }),
        Some(Value::Null) => Some(ExecutionIdentity::ServiceAccount),
        Some(v) => Some(resolve_execution_identity(v, "execution_identity")?),
    };
    let mcp_servers = match body.get("mcp_servers") {
        None => base.map(|b| b.mcp_servers.clone()).unwrap_or_default(),
        Some(Value::Null) => Vec::new(),
        Some(v) => resolve_mcp_servers(v, "mcp_servers")?,
    };
    let skills = match body.get("skills") {
        None => base.map(|b| b.skills.clone()).unwrap_or_default(),
        Some(Value::Null) => Vec::new(),
        Some(v) => resolve_skills(v, "skills")?,
    };
    let tools = match body.get("tools") {
        None => base.map(|b| b.tools.clone()).unwrap_or_default(),
        Some(Value::Null) => Vec::new(),
        Some(v) => resolve_tools(v, "tools")?,
    };
    check_mcp_references(&mcp_servers, &tools, "")?;
    let stored_multiagent = base.and_then(|b| b.multiagent.as_ref());
    let multiagent = match body.get("multiagent") {
        None => stored_multiagent.cloned(),
        Some(Value::Null) => None,
        Some(v) => Some(Resolver::new(records, (id, version)).multiagent(v, stored_multiagent)?),
    };
    let metadata = match (body.get("metadata"), base) {
        (None, base) => base.map(|b| b.metadata.clone()).unwrap_or_default(),
        (Some(v), None) => metadata::parse(v, "metadata")?,
        (Some(v), Some(base)) => metadata::patch(&base.metadata, v, "metadata", false)?,
    };
    Ok(Agent {
        id: id.to_owned(),
        archived_at: None,
        created_at: base.map_or_else(|| updated_at.to_owned(), |b| b.created_at.clone()),
        description,
        execution_identity,
        mcp_servers,
        metadata,
        model,
        multiagent,
        name,
        skills,
        system,
        tools,
        kind: "agent".to_owned(),
        updated_at: updated_at.to_owned(),
        version,
    })
}

/// `ModelConfig`, always in object form with a `speed`.
pub fn resolve_model(value: &Value, path: &str) -> Result<ModelConfig> {
    match value {
        Value::String(_) => Ok(ModelConfig {
            id: nonempty_str(value, path)?.to_owned(),
            effort: None,
            inference_geo: None,
            speed: Some(Speed::Standard),
        }),
        Value::Object(map) => {
            check_keys(map, path, &["id", "effort", "inference_geo", "speed"])?;
            let id = nonempty_str(required(map, path, "id")?, &field(path, "id"))?;
            let effort = present(map, "effort")
                .map(|v| resolve_effort(v, &field(path, "effort")))
                .transpose()?;
            let inference_geo = present(map, "inference_geo")
                .map(|v| string(v, &field(path, "inference_geo")).map(str::to_owned))
                .transpose()?;
            let speed = match present(map, "speed") {
                None => Speed::Standard,
                Some(v) => one_of_as(v, &field(path, "speed"), &Speed::NAMES, Speed::from_name)?,
            };
            Ok(ModelConfig {
                id: id.to_owned(),
                effort,
                inference_geo,
                speed: Some(speed),
            })
        }
        other => Err(expected(path, "a model id or object", other)),
    }
}

fn resolve_effort(value: &Value, path: &str) -> Result<Effort> {
    match value {
        Value::String(_) => one_of_as(value, path, &Effort::LEVELS, Effort::from_level),
        Value::Object(map) => {
            check_keys(map, path, &["type"])?;
            one_of_as(
                required(map, path, "type")?,
                &field(path, "type"),
                &Effort::LEVELS,
                Effort::from_level,
            )
        }
        other => Err(expected(path, "an effort level or object", other)),
    }
}

fn resolve_execution_identity(value: &Value, path: &str) -> Result<ExecutionIdentity> {
    let map = as_object(value, path)?;
    match one_of(
        required(map, path, "type")?,
        &field(path, "type"),
        &["service_account", "aws_role"],
    )? {
        "aws_role" => {
            check_keys(map, path, &["type", "role_arn"])?;
            let arn = bounded_str(
                required(map, path, "role_arn")?,
                &field(path, "role_arn"),
                MAX_ROLE_ARN,
            )?;
            Ok(ExecutionIdentity::AwsRole {
                role_arn: arn.to_owned(),
            })
        }
        _ => {
            check_keys(map, path, &["type"])?;
            Ok(ExecutionIdentity::ServiceAccount)
        }
    }
}

pub fn resolve_skills(value: &Value, path: &str) -> Result<Vec<Skill>> {
    array(value, path)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = format!("{path}[{i}]");
            let map = as_object(item, &p)?;
            check_keys(map, &p, &["skill_id", "type", "version"])?;
            let skill_id = nonempty_str(required(map, &p, "skill_id")?, &field(&p, "skill_id"))?;
            let kind = one_of(
                required(map, &p, "type")?,
                &field(&p, "type"),
                &["anthropic", "custom"],
            )?;
            let version = match present(map, "version") {
                None => "latest",
                Some(v) => nonempty_str(v, &field(&p, "version"))?,
            };
            let (skill_id, version) = (skill_id.to_owned(), version.to_owned());
            Ok(if kind == "anthropic" {
                Skill::Anthropic { skill_id, version }
            } else {
                Skill::Custom { skill_id, version }
            })
        })
        .collect()
}
