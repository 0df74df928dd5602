//! The API's rules for session records: the `agent` a session runs (latest,
//! pinned or with overrides) snapshotted at creation, its environment, its
//! `resources` in their response shapes; updates of title and metadata;
//! archival and deletion of the record.
//!
//! What happens to a session's events and worker is `live.rs`'s.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::super::body::{
    array, as_object, body_object, check_keys, expected, field, invalid, nonempty_str, one_of,
    one_of_as, optional_str, positive_int, present, required, string, string_list,
};
use super::super::ids::{new_id, timestamp, RESOURCE_PREFIX, SESSION_PREFIX};
use super::super::store::{write_lock, Records};
use super::agent::{resolve_model, resolve_skills};
use super::tools::{check_mcp_references, resolve_mcp_servers, resolve_tools};
use super::{metadata, multiagent};
use crate::api::limits::MAX_MEMORY_INSTRUCTIONS;
use crate::api::params::AgentOverrides;
use crate::api::resource::{
    Checkout, FileResource, GithubRepositoryResource, MemoryAccess, MemoryStoreResource,
};
use crate::api::{
    Agent, Deleted, Result, RuntimeError, Session, SessionAgent, SessionResource, SessionStats,
    SessionUsage,
};

const CREATE_KEYS: [&str; 8] = [
    "agent",
    "environment_id",
    "title",
    "metadata",
    "vault_ids",
    "resources",
    "budget",
    "initial_events",
];

pub fn create(records: &Records, body: &Value) -> Result<Session> {
    let body = body_object(body)?;
    check_keys(body, "", &CREATE_KEYS)?;
    for unsupported in ["budget", "initial_events"] {
        if present(body, unsupported).is_some() {
            return Err(invalid(format!(
                "`{unsupported}`: not supported by the local runtime"
            )));
        }
    }
    let choice = parse_agent_choice(required(body, "", "agent")?)?;
    let environment_id = nonempty_str(required(body, "", "environment_id")?, "environment_id")?;
    let title = optional_str(body, "", "title")?;
    let metadata = match body.get("metadata") {
        None => BTreeMap::new(),
        Some(v) => metadata::parse(v, "metadata")?,
    };
    let vault_ids = match present(body, "vault_ids") {
        None => Vec::new(),
        Some(v) => string_list(v, "vault_ids")?,
    };
    let now = timestamp();
    let resources = match present(body, "resources") {
        None => Vec::new(),
        Some(v) => resolve_resources(v, &now)?,
    };

    let _guard = write_lock();
    let current = records.agent(choice.id)?;
    if current.archived_at.is_some() {
        return Err(invalid(format!("agent `{}` is archived", choice.id)));
    }
    let mut agent = match choice.version {
        None => current,
        Some(v) => match records.agent_version(&current, v) {
            Err(e) if e.is_not_found() => {
                return Err(invalid(format!("agent `{}` has no version {v}", choice.id)))
            }
            other => other?,
        },
    };
    if let Some(overrides) = choice.overrides {
        resolve_overrides(overrides)?.apply(&mut agent);
        check_mcp_references(&agent.mcp_servers, &agent.tools, "agent")?;
    }
    let environment = records.environment(environment_id)?;
    if environment.archived_at.is_some() {
        return Err(invalid(format!(
            "environment `{environment_id}` is archived"
        )));
    }
    let session = Session {
        id: new_id(SESSION_PREFIX),
        agent: snapshot(records, &agent)?,
        archived_at: None,
        created_at: now.clone(),
        environment_id: environment_id.to_owned(),
        metadata,
        outcome_evaluations: Vec::new(),
        resources,
        stats: SessionStats {
            active_seconds: Some(0.0),
            duration_seconds: Some(0.0),
        },
        status: "idle".to_owned(),
        title,
        kind: "session".to_owned(),
        updated_at: now,
        usage: SessionUsage::default(),
        vault_ids,
    };
    records.put_session(&session)?;
    Ok(session)
}

pub fn update(records: &Records, id: &str, body: &Value) -> Result<Session> {
    let body = body_object(body)?;
    check_keys(body, "", &["title", "metadata"])?;

    let _guard = write_lock();
    let current = records.session(id)?;
    if current.archived_at.is_some() {
        return Err(invalid(format!("session `{id}` is archived")));
    }
    let mut next = current.clone();
    if body.contains_key("title") {
        next.title = optional_str(body, "", "title")?;
    }
    if let Some(metadata) = body.get("metadata") {
        next.metadata = metadata::patch(&current.metadata, metadata, "metadata", false)?;
    }
    if next == current {
        return Ok(current);
    }
    next.updated_at = timestamp();
    records.put_session(&next)?;
    Ok(next)
}

pub fn archive(records: &Records, id: &str) -> Result<Session> {
    let _guard = write_lock();
    let mut session = records.session(id)?;
    if session.archived_at.is_none() {
        session.archived_at = Some(timestamp());
        records.put_session(&session)?;
    }
    Ok(session)
}

/// Removes the record; its events and worker are `live.rs`'s to forget.
pub fn delete(records: &Records, id: &str) -> Result<Deleted> {
    let _guard = write_lock();
    if !records.remove_session(id)? {
        return Err(RuntimeError::not_found("session", id));
    }
    Ok(Deleted {
        id: id.to_owned(),
        kind: "session_deleted".to_owned(),
    })
}

/// `BetaManagedAgentsSessionAgent`: the agent without its bookkeeping
/// fields, with multiagent references expanded to full agent snapshots.
fn snapshot(records: &Records, agent: &Agent) -> Result<SessionAgent> {
    let multiagent = agent
        .multiagent
        .as_ref()
        .map(|team| multiagent::expand(records, team))
        .transpose()?;
    Ok(SessionAgent::new(agent, multiagent))
}

/// `agent` of a session create, checked; overrides are resolved once the
/// agent is known to exist.
struct AgentChoice<'a> {
    id: &'a str,
    version: Option<u64>,
    overrides: Option<&'a Map<String, Value>>,
}

/// An id, `{type:"agent", id, version?}` or
/// `{type:"agent_with_overrides", id, version?, …}`.
fn parse_agent_choice(value: &Value) -> Result<AgentChoice<'_>> {
    let path = "agent";
    let map = match value {
        Value::String(_) => {
            return Ok(AgentChoice {
                id: nonempty_str(value, path)?,
                version: None,
                overrides: None,
            })
        }
        Value::Object(map) => map,
        other => return Err(expected(path, "an agent id or object", other)),
    };
    let kind = one_of(
        required(map, path, "type")?,
        "agent.type",
        &["agent", "agent_with_overrides"],
    )?;
    if kind == "agent" {
        check_keys(map, path, &["type", "id", "version"])?;
    } else {
        check_keys(
            map,
            path,
            &[
                "type",
                "id",
                "version",
                "mcp_servers",
                "model",
                "skills",
                "system",
                "tools",
            ],
        )?;
    }
    Ok(AgentChoice {
        id: nonempty_str(required(map, path, "id")?, "agent.id")?,
        version: present(map, "version")
            .map(|v| positive_int(v, "agent.version"))
            .transpose()?,
        overrides: (kind == "agent_with_overrides").then_some(map),
    })
}

/// `agent_with_overrides`: the fields it replaces in the snapshot only.
fn resolve_overrides(overrides: &Map<String, Value>) -> Result<AgentOverrides> {
    Ok(AgentOverrides {
        model: present(overrides, "model")
            .map(|v| resolve_model(v, "agent.model"))
            .transpose()?,
        mcp_servers: present(overrides, "mcp_servers")
            .map(|v| resolve_mcp_servers(v, "agent.mcp_servers"))
            .transpose()?,
        skills: present(overrides, "skills")
            .map(|v| resolve_skills(v, "agent.skills"))
            .transpose()?,
        tools: present(overrides, "tools")
            .map(|v| resolve_tools(v, "agent.tools"))
            .transpose()?,
        system: overrides
            .contains_key("system")
            .then(|| optional_str(overrides, "agent", "system"))
            .transpose()?,
    })
}

/// Session `resources`, in their response shapes.
fn resolve_resources(value: &Value, now: &str) -> Result<Vec<SessionResource>> {
    let mut resources = Vec::new();
    for (i, item) in array(value, "resources")?.iter().enumerate() {
        let p = format!("resources[{i}]");
        let map = as_object(item, &p)?;
        let kind = one_of(
            required(map, &p, "type")?,
            &field(&p, "type"),
            &["github_repository", "file", "memory_store"],
        )?;
        let resource = match kind {
            "github_repository" => {
                SessionResource::GithubRepository(resolve_repository(map, &p, now)?)
            }
            "file" => {
                check_keys(map, &p, &["type", "file_id", "mount_path"])?;
                let file_id = nonempty_str(required(map, &p, "file_id")?, &field(&p, "file_id"))?;
                let mount_path = optional_str(map, &p, "mount_path")?
                    .unwrap_or_else(|| format!("/mnt/session/uploads/{file_id}"));
                SessionResource::File(FileResource {
                    id: new_id(RESOURCE_PREFIX),
                    created_at: now.to_owned(),
                    file_id: file_id.to_owned(),
                    mount_path,
                    updated_at: now.to_owned(),
                })
            }
            _ => SessionResource::MemoryStore(resolve_memory_store(map, &p)?),
        };
        resources.push(resource);
    }
    Ok(resources)
}

fn resolve_repository(
    map: &Map<String, Value>,
    p: &str,
    now: &str,
) -> Result<GithubRepositoryResource> {
    check_keys(
        map,
        p,
        &[
            "type",
            "url",
            "authorization_token",
            "checkout",
            "mount_path",
        ],
    )?;
    let url = nonempty_str(required(map, p, "url")?, &field(p, "url"))?;
    if let Some(token) = present(map, "authorization_token") {
        string(token, &field(p, "authorization_token"))?;
    }
    let repo = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    let mount_path =
        optional_str(map, p, "mount_path")?.unwrap_or_else(|| format!("/workspace/{repo}"));
    let checkout = present(map, "checkout")
        .map(|v| resolve_checkout(v, &field(p, "checkout")))
        .transpose()?;
    Ok(GithubRepositoryResource {
        id: new_id(RESOURCE_PREFIX),
        created_at: now.to_owned(),
        mount_path,
        updated_at: now.to_owned(),
        url: url.to_owned(),
        checkout,
    })
}

fn resolve_memory_store(map: &Map<String, Value>, p: &str) -> Result<MemoryStoreResource> {
    check_keys(
        map,
        p,
        &["type", "memory_store_id", "access", "instructions"],
    )?;
    let store = nonempty_str(
        required(map, p, "memory_store_id")?,
        &field(p, "memory_store_id"),
    )?;
    let access = match present(map, "access") {
        None => MemoryAccess::ReadWrite,
        Some(v) => one_of_as(
            v,
            &field(p, "access"),
            &MemoryAccess::NAMES,
            MemoryAccess::from_name,
        )?,
    };
    let instructions = match present(map, "instructions") {
        None => None,
        Some(v) => {
            let instructions = string(v, &field(p, "instructions"))?;
            if instructions.chars().count() > MAX_MEMORY_INSTRUCTIONS {
                return Err(invalid(format!(
                    "`{p}.instructions`: must be at most {MAX_MEMORY_INSTRUCTIONS} characters"
                )));
            }
            Some(instructions.to_owned())
        }
    };
    Ok(MemoryStoreResource {
        memory_store_id: store.to_owned(),
        access: Some(access),
        description: None,
        instructions,
        mount_path: None,
        name: None,
    })
}

fn resolve_checkout(value: &Value, path: &str) -> Result<Checkout> {
    let map = as_object(value, path)?;
    let (kind, key) = match one_of(
        required(map, path, "type")?,
        &field(path, "type"),
        &["branch", "commit"],
    )? {
        "branch" => ("branch", "name"),
        _ => ("commit", "sha"),
    };
    check_keys(map, path, &["type", key])?;
    let v = nonempty_str(required(map, path, key)?, &field(path, key))?.to_owned();
    Ok(if kind == "branch" {
        Checkout::Branch { name: v }
    } else {
        Checkout::Commit { sha: v }
    })
}
