//! The embedded local runtime: the Managed Agents API's objects and rules,
//! persisted in a caller-provided `sled::Db`, for offline use and tests.
//!
//! Request bodies are validated and resolved the way the API does it (see the
//! wire notes: toolsets get every tool's config, models the object form, …),
//! so plans computed against this runtime match the real one.
//!
//! Sessions run for real: events users send go to a per-session worker (the
//! agent loop in `agent_loop.rs`) that calls the model the options resolve
//! and runs the built-in tools in a workspace on this machine; see
//! `events.rs` for how events are stored and streamed.

mod agent_loop;
mod events;
#[cfg(test)]
mod loop_tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Display;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use super::{
    Agent, Deleted, Environment, ErrorKind, EventStream, ListQuery, Page, Result, Runtime,
    RuntimeError, Session,
};
use crate::model::{Model, ModelError};
use crate::sandbox::{NoSandboxes, SandboxProvider};
use events::{Ctx, Hub, LiveEvents, OpenUses, Store, EVENT_PREFIX};

const AGENTS_TREE: &str = "local.agents";
const VERSIONS_TREE: &str = "local.agent_versions";
const ENVIRONMENTS_TREE: &str = "local.environments";
const SESSIONS_TREE: &str = "local.sessions";

const AGENT_PREFIX: &str = "agent";
const ENVIRONMENT_PREFIX: &str = "env";
const SESSION_PREFIX: &str = "sesn";
const RESOURCE_PREFIX: &str = "sres";

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
const PAGE_PREFIX: &str = "page_";

const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;
const MAX_TOOLS: usize = 256;
const MAX_MCP_SERVERS: usize = 20;

use crate::runtime::TOOLSET_TOOLS;
const EFFORTS: [&str; 5] = ["low", "medium", "high", "xhigh", "max"];
const PERMISSION_POLICIES: [&str; 3] = ["always_allow", "always_ask", "auto"];
const PACKAGE_MANAGERS: [&str; 6] = ["apt", "cargo", "gem", "go", "npm", "pip"];

const AGENT_CREATE_KEYS: [&str; 10] = [
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
const ENVIRONMENT_KEYS: [&str; 5] = ["name", "config", "description", "metadata", "scope"];
const SESSION_CREATE_KEYS: [&str; 8] = [
    "agent",
    "environment_id",
    "title",
    "metadata",
    "vault_ids",
    "resources",
    "budget",
    "initial_events",
];

/// Tool calls past this are killed, unless [`LocalOptions::tool_deadline`]
/// says otherwise.
pub const DEFAULT_TOOL_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct LocalOptions {
    /// Slept after each call's work is done, like a remote API's response time.
    pub latency: Duration,
    /// Where tools run: one sandbox per session. Without one, tool calls
    /// fail with a `session.error`.
    pub sandboxes: Arc<dyn SandboxProvider>,
    /// The model backend of an agent's model id; asked once per session.
    pub models: Arc<dyn ModelResolver>,
    /// How long one tool call may run.
    pub tool_deadline: Duration,
    /// Fault injection for tests and demos: every event stream ends after this
    /// many events, as if the connection dropped.
    pub drop_stream_after: Option<usize>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            latency: Duration::ZERO,
            sandboxes: Arc::new(NoSandboxes),
            models: Arc::new(NoModels),
            tool_deadline: DEFAULT_TOOL_DEADLINE,
            drop_stream_after: None,
        }
    }
}

impl std::fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOptions")
            .field("latency", &self.latency)
            .field("sandboxes", &self.sandboxes)
            .field("models", &format_args!("<dyn ModelResolver>"))
            .field("tool_deadline", &self.tool_deadline)
            .finish()
    }
}

/// What the API's list endpoints filter and order by beyond [`ListQuery`]
/// (their query parameters, e.g. `GET /v1/sessions?statuses[]=idle`). The
/// [`Runtime`] methods list with the default: everything, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Newest first (`order=desc`).
    pub descending: bool,
    /// Bounds on `created_at` (on `processed_at` for events).
    pub time: TimeRange,
    /// Sessions: of this agent.
    pub agent_id: Option<String>,
    /// Sessions: of this version of `agent_id`.
    pub agent_version: Option<u64>,
    /// Sessions: in one of these statuses (any when empty).
    pub statuses: Vec<String>,
    /// Sessions: with this memory store among their resources.
    pub memory_store_id: Option<String>,
    /// Sessions: of this deployment (the local runtime has none).
    pub deployment_id: Option<String>,
    /// Events: of one of these types (any when empty).
    pub types: Vec<String>,
}

/// `created_at[gt]`, `[gte]`, `[lt]`, `[lte]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub gt: Option<OffsetDateTime>,
    pub gte: Option<OffsetDateTime>,
    pub lt: Option<OffsetDateTime>,
    pub lte: Option<OffsetDateTime>,
}

impl TimeRange {
    pub fn is_unbounded(&self) -> bool {
        *self == TimeRange::default()
    }

    /// Whether an RFC 3339 timestamp is within the bounds; one that does not
    /// parse is outside any bound.
    pub fn contains(&self, timestamp: &str) -> bool {
        if self.is_unbounded() {
            return true;
        }
        let Ok(t) =
            OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        else {
            return false;
        };
        self.gt.is_none_or(|b| t > b)
            && self.gte.is_none_or(|b| t >= b)
            && self.lt.is_none_or(|b| t < b)
            && self.lte.is_none_or(|b| t <= b)
    }
}

impl ListFilter {
    fn keeps_session(&self, session: &Session) -> bool {
        self.agent_id
            .as_deref()
            .is_none_or(|id| session.agent_id() == Some(id))
            && self
                .agent_version
                .is_none_or(|v| session.agent_version() == Some(v))
            && (self.statuses.is_empty() || self.statuses.contains(&session.status))
            && self.memory_store_id.as_deref().is_none_or(|store| {
                session.resources.iter().any(|r| {
                    r.get("type").and_then(Value::as_str) == Some("memory_store")
                        && r.get("memory_store_id").and_then(Value::as_str) == Some(store)
                })
            })
            && self.deployment_id.is_none()
            && self.time.contains(&session.created_at)
    }

    fn keeps_event(&self, event: &Value) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == super::event::kind(event)))
            && (self.time.is_unbounded()
                || event
                    .get("processed_at")
                    .and_then(Value::as_str)
                    .is_some_and(|t| self.time.contains(t)))
    }
}

/// Gives the model backend for an agent's model id (`model.id`). Called once
/// per session, when its loop first needs the model, so each session gets
/// its own instance if the resolver makes one per call.
pub trait ModelResolver: Send + Sync {
    fn resolve(&self, model_id: &str) -> Result<Arc<dyn Model>, ModelError>;
}

impl<F> ModelResolver for F
where
    F: Fn(&str) -> Result<Arc<dyn Model>, ModelError> + Send + Sync,
{
    fn resolve(&self, model_id: &str) -> Result<Arc<dyn Model>, ModelError> {
        self(model_id)
    }
}

/// The default resolver: no model is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModels;

impl ModelResolver for NoModels {
    fn resolve(&self, model_id: &str) -> Result<Arc<dyn Model>, ModelError> {
        Err(ModelError::Config(format!(
            "no model backend is configured for model `{model_id}`; declare one under \
             `providers.local.models`"
        )))
    }
}

/// The `local` provider: the Managed Agents API emulated over sled trees
/// named `local.*`.
pub struct LocalRuntime {
    agents: sled::Tree,
    /// Every agent version, append-only, keyed by agent id + big-endian version.
    versions: sled::Tree,
    environments: sled::Tree,
    sessions: sled::Tree,
    options: LocalOptions,
    /// Session events and what the session workers share.
    store: Store,
    hub: Hub,
}

impl Drop for LocalRuntime {
    /// Workers stop with their runtime; a turn they leave running carries on
    /// when the session is next used.
    fn drop(&mut self) {
        for worker in self.hub.take_workers() {
            worker.abort();
        }
    }
}

/// One lock for the process rather than per runtime: several runtimes may
/// share a Db, and mutations are read-modify-writes across trees.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

fn write_lock() -> MutexGuard<'static, ()> {
    // The guarded data is `()`, so a panic elsewhere cannot leave it broken.
    WRITE_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalRuntime {
    pub fn open(db: &sled::Db, options: LocalOptions) -> Result<Self> {
        Ok(LocalRuntime {
            agents: db.open_tree(AGENTS_TREE).map_err(store_err)?,
            versions: db.open_tree(VERSIONS_TREE).map_err(store_err)?,
            environments: db.open_tree(ENVIRONMENTS_TREE).map_err(store_err)?,
            sessions: db.open_tree(SESSIONS_TREE).map_err(store_err)?,
            options,
            store: Store::open(db)?,
            hub: Hub::default(),
        })
    }

    /// Stops every session worker of this runtime and waits until they are
    /// gone (so nothing holds the Db any more). A turn that was running is
    /// carried on when its session is next sent to or streamed.
    pub async fn shutdown(&self) {
        for worker in self.hub.take_workers() {
            worker.abort();
            let _ = worker.await;
        }
    }

    /// `GET /v1/agents` with its filters (`created_at` bounds).
    pub async fn list_agents_where(
        &self,
        query: &ListQuery,
        filter: &ListFilter,
    ) -> Result<Page<Agent>> {
        let result = page_where(&self.agents, query, filter.descending, |a: &Agent| {
            filter.time.contains(&a.created_at)
        });
        self.respond(result).await
    }

    /// `GET /v1/sessions` with its filters and order.
    pub async fn list_sessions_where(
        &self,
        query: &ListQuery,
        filter: &ListFilter,
    ) -> Result<Page<Session>> {
        let result = page_where(&self.sessions, query, filter.descending, |s: &Session| {
            filter.keeps_session(s)
        });
        self.respond(result).await
    }

    /// `GET /v1/sessions/{id}/events` with its filters and order.
    pub async fn list_events_where(
        &self,
        session_id: &str,
        query: &ListQuery,
        filter: &ListFilter,
    ) -> Result<Page<Value>> {
        let result = self.load_session(session_id).and_then(|_| {
            self.store.page(session_id, query, filter.descending, |e| {
                filter.keeps_event(e)
            })
        });
        self.respond(result).await
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            store: self.store.clone(),
            options: self.options.clone(),
        }
    }

    /// Applies the configured latency after the work is done, so a caller
    /// that dies while waiting leaves the effect in place but unreported.
    async fn respond<T>(&self, result: Result<T>) -> Result<T> {
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
        result
    }

    /// Like [`respond`](Self::respond) for calls that change something: the
    /// change is on disk before the caller hears of it, as with a remote API.
    async fn respond_durable<T>(&self, result: Result<T>) -> Result<T> {
        let result = match result {
            Ok(v) => self.store.flush().await.map(|()| v),
            Err(e) => Err(e),
        };
        self.respond(result).await
    }

    // ----- agents -------------------------------------------------------------

    fn create_agent_now(&self, body: &Value) -> Result<Agent> {
        let body = body_object(body)?;
        check_keys(body, "", &AGENT_CREATE_KEYS)?;
        let _guard = write_lock();
        let id = new_id(AGENT_PREFIX);
        let agent = self.build_agent(&id, 1, None, body, &timestamp())?;
        self.put_agent_version(&agent)?;
        Ok(agent)
    }

    fn retrieve_agent_now(&self, id: &str, version: Option<u64>) -> Result<Agent> {
        let current = self.load_agent(id)?;
        match version {
            None => Ok(current),
            Some(0) => Err(invalid("`version`: expected an integer ≥ 1")),
            Some(v) if v == current.version => Ok(current),
            Some(v) => self.load_agent_version(&current, v),
        }
    }

    fn update_agent_now(&self, id: &str, body: &Value) -> Result<Agent> {
        let body = body_object(body)?;
        let mut allowed = AGENT_CREATE_KEYS.to_vec();
        allowed.push("version");
        check_keys(body, "", &allowed)?;
        let expected = body
            .get("version")
            .map(|v| positive_int(v, "version"))
            .transpose()?;

        let _guard = write_lock();
        let current = self.load_agent(id)?;
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
        let unchanged = self.build_agent(
            id,
            current.version,
            Some(&current),
            body,
            &current.updated_at,
        )?;
        if unchanged == current {
            return Ok(current);
        }
        let next = self.build_agent(id, current.version + 1, Some(&current), body, &timestamp())?;
        self.put_agent_version(&next)?;
        Ok(next)
    }

    fn archive_agent_now(&self, id: &str) -> Result<Agent> {
        let _guard = write_lock();
        let mut agent = self.load_agent(id)?;
        // Idempotent, so a retry after a lost response succeeds.
        if agent.archived_at.is_none() {
            agent.archived_at = Some(timestamp());
            self.agents
                .insert(id.as_bytes(), encode(&agent)?)
                .map_err(store_err)?;
        }
        Ok(agent)
    }

    fn list_agents_now(&self, query: &ListQuery) -> Result<Page<Agent>> {
        page_by_id(&self.agents, query)
    }

    fn list_agent_versions_now(&self, id: &str, query: &ListQuery) -> Result<Page<Agent>> {
        let current = self.load_agent(id)?;
        let limit = page_limit(query)?;
        let upper = match non_empty_cursor(query) {
            None => Bound::Included(version_key(id, current.version)),
            Some(cursor) => {
                let before = cursor
                    .strip_prefix(PAGE_PREFIX)
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| invalid("`page`: invalid page cursor"))?;
                Bound::Excluded(version_key(id, before.min(current.version + 1)))
            }
        };
        let lower = Bound::Included(version_key(id, 0));
        let mut data = Vec::new();
        let mut more = false;
        for item in self.versions.range((lower, upper)).rev() {
            let (_, bytes) = item.map_err(store_err)?;
            if data.len() == limit {
                more = true;
                break;
            }
            let mut agent: Agent = decode(&bytes)?;
            agent.archived_at.clone_from(&current.archived_at);
            data.push(agent);
        }
        let next_page = match data.last() {
            Some(last) if more => Some(format!("{PAGE_PREFIX}{}", last.version)),
            _ => None,
        };
        Ok(Page { data, next_page })
    }

    fn load_agent(&self, id: &str) -> Result<Agent> {
        get(&self.agents, id.as_bytes())?.ok_or_else(|| RuntimeError::not_found("agent", id))
    }

    /// A stored version, showing the agent's current archival state.
    fn load_agent_version(&self, current: &Agent, version: u64) -> Result<Agent> {
        if version == current.version {
            return Ok(current.clone());
        }
        if version > current.version {
            return Err(RuntimeError::new(
                ErrorKind::NotFound,
                format!("agent `{}` version {version} not found", current.id),
            ));
        }
        let mut agent: Agent = get(&self.versions, &version_key(&current.id, version))?
            .ok_or_else(|| {
                RuntimeError::new(
                    ErrorKind::NotFound,
                    format!("agent `{}` version {version} not found", current.id),
                )
            })?;
        agent.archived_at.clone_from(&current.archived_at);
        Ok(agent)
    }

    /// Writes the agent's version record, then its current record.
    ///
    /// Not a sled transaction: sled 0.34's transactions and batches take a
    /// process-wide write lock that deadlocks with a concurrent flush (which
    /// the session workers do often). A version record past the current
    /// version, left by a crash between the two writes, is never shown and
    /// is overwritten by the next update.
    fn put_agent_version(&self, agent: &Agent) -> Result<()> {
        let bytes = encode(agent)?;
        self.versions
            .insert(version_key(&agent.id, agent.version), bytes.as_slice())
            .map_err(store_err)?;
        self.agents
            .insert(agent.id.as_bytes(), bytes)
            .map_err(store_err)?;
        Ok(())
    }

    /// The agent an update (or create, without `base`) body produces, at
    /// `version`. Omitted fields keep `base`'s values.
    fn build_agent(
        &self,
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
            (Some(v), _) => bounded_str(v, "name", usize::MAX)?.to_owned(),
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
            None => base.map_or_else(default_execution_identity, |b| b.execution_identity.clone()),
            Some(Value::Null) => default_execution_identity(),
            Some(v) => resolve_execution_identity(v, "execution_identity")?,
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
            Some(v) => Some(self.resolve_multiagent(v, stored_multiagent, (id, version))?),
        };
        let metadata = match (body.get("metadata"), base) {
            (None, base) => base.map(|b| b.metadata.clone()).unwrap_or_default(),
            (Some(v), None) => parse_metadata(v, "metadata")?,
            (Some(v), Some(base)) => patch_metadata(&base.metadata, v, "metadata", false)?,
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

    /// Resolves `multiagent`: agent references are pinned to a version, and a
    /// `multiagent_20261001` update merges level by level into the stored one.
    fn resolve_multiagent(
        &self,
        value: &Value,
        stored: Option<&Value>,
        own: (&str, u64),
    ) -> Result<Value> {
        let path = "multiagent";
        let map = as_object(value, path)?;
        let kind = one_of(
            required(map, path, "type")?,
            "multiagent.type",
            &["coordinator", "multiagent_20261001"],
        )?;
        let mut selves = 0;
        if kind == "coordinator" {
            check_keys(map, path, &["type", "agents"])?;
            let entries = array(required(map, path, "agents")?, "multiagent.agents")?;
            if entries.is_empty() || entries.len() > 20 {
                return Err(invalid("`multiagent.agents`: expected 1 to 20 entries"));
            }
            let mut agents = Vec::with_capacity(entries.len());
            let mut ids = HashSet::new();
            let mut advisors = 0;
            for (i, entry) in entries.iter().enumerate() {
                let p = format!("multiagent.agents[{i}]");
                if entry.get("type").and_then(Value::as_str) == Some("advisor") {
                    let entry_map = as_object(entry, &p)?;
                    check_keys(entry_map, &p, &["type", "model"])?;
                    let model = bounded_str(
                        required(entry_map, &p, "model")?,
                        &field(&p, "model"),
                        usize::MAX,
                    )?;
                    advisors += 1;
                    if advisors > 1 {
                        return Err(invalid(format!("`{p}`: at most one advisor is allowed")));
                    }
                    agents.push(json!({"type": "advisor", "model": model}));
                    continue;
                }
                let reference = self.resolve_agent_reference(entry, &p, own, &mut selves)?;
                if !ids.insert(reference["id"].clone()) {
                    return Err(invalid(format!("`{p}`: agent is listed more than once")));
                }
                agents.push(reference);
            }
            return Ok(json!({"type": "coordinator", "agents": agents}));
        }

        check_keys(map, path, &["type", "advisor", "subagents", "workflows"])?;
        let stored = stored.filter(|s| s.get("type").and_then(Value::as_str) == Some(kind));
        let advisor = match map.get("advisor") {
            None => stored
                .and_then(|s| s.get("advisor"))
                .cloned()
                .unwrap_or_else(|| json!({"type": "disabled"})),
            Some(Value::Null) => json!({"type": "disabled"}),
            Some(v) => {
                let p = "multiagent.advisor";
                let m = as_object(v, p)?;
                match one_of(
                    required(m, p, "type")?,
                    "multiagent.advisor.type",
                    &["enabled", "disabled"],
                )? {
                    "enabled" => {
                        check_keys(m, p, &["type", "model"])?;
                        let model = bounded_str(
                            required(m, p, "model")?,
                            "multiagent.advisor.model",
                            usize::MAX,
                        )?;
                        json!({"type": "enabled", "model": model})
                    }
                    _ => {
                        check_keys(m, p, &["type"])?;
                        json!({"type": "disabled"})
                    }
                }
            }
        };
        let mut team = |key: &str| {
            self.resolve_team(
                map.get(key),
                stored.and_then(|s| s.get(key)),
                &field(path, key),
                own,
                &mut selves,
            )
        };
        let subagents = team("subagents")?;
        let workflows = team("workflows")?;
        Ok(json!({
            "type": kind,
            "advisor": advisor,
            "subagents": subagents,
            "workflows": workflows,
        }))
    }

    /// `subagents` / `workflows` of `multiagent_20261001`.
    fn resolve_team(
        &self,
        value: Option<&Value>,
        stored: Option<&Value>,
        path: &str,
        own: (&str, u64),
        selves: &mut usize,
    ) -> Result<Value> {
        let default = || {
            json!({
                "type": "enabled",
                "inline_agents": {"type": "enabled"},
                "predefined_agents": [],
            })
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
            return Ok(json!({"type": "disabled"}));
        }
        check_keys(map, path, &["type", "inline_agents", "predefined_agents"])?;
        let stored = stored.filter(|s| s.get("type").and_then(Value::as_str) == Some("enabled"));
        let inline_agents = match map.get("inline_agents") {
            None => stored
                .and_then(|s| s.get("inline_agents"))
                .cloned()
                .unwrap_or_else(|| json!({"type": "enabled"})),
            Some(Value::Null) => json!({"type": "enabled"}),
            Some(v) => {
                let p = field(path, "inline_agents");
                let m = as_object(v, &p)?;
                check_keys(m, &p, &["type"])?;
                let kind = one_of(
                    required(m, &p, "type")?,
                    &field(&p, "type"),
                    &["enabled", "disabled"],
                )?;
                json!({"type": kind})
            }
        };
        let predefined_agents = match map.get("predefined_agents") {
            None => stored
                .and_then(|s| s.get("predefined_agents"))
                .cloned()
                .unwrap_or_else(|| json!([])),
            Some(Value::Null) => json!([]),
            Some(v) => {
                let p = field(path, "predefined_agents");
                let entries = array(v, &p)?;
                if entries.len() > 20 {
                    return Err(invalid(format!("`{p}`: at most 20 agents are allowed")));
                }
                let mut ids = HashSet::new();
                let mut agents = Vec::with_capacity(entries.len());
                for (i, entry) in entries.iter().enumerate() {
                    let ep = format!("{p}[{i}]");
                    let reference = self.resolve_agent_reference(entry, &ep, own, selves)?;
                    if !ids.insert(reference["id"].clone()) {
                        return Err(invalid(format!("`{ep}`: agent is listed more than once")));
                    }
                    agents.push(reference);
                }
                Value::Array(agents)
            }
        };
        let inline_disabled = inline_agents["type"] == "disabled";
        if inline_disabled && predefined_agents.as_array().is_none_or(Vec::is_empty) {
            return Err(invalid(format!(
                "`{path}.predefined_agents`: must name an agent when inline agents are disabled"
            )));
        }
        Ok(json!({
            "type": "enabled",
            "inline_agents": inline_agents,
            "predefined_agents": predefined_agents,
        }))
    }

    /// An agent id, `{type:"agent", id, version?}` or `{type:"self"}`, pinned
    /// as `{type:"agent", id, version}`.
    fn resolve_agent_reference(
        &self,
        value: &Value,
        path: &str,
        own: (&str, u64),
        selves: &mut usize,
    ) -> Result<Value> {
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
                        *selves += 1;
                        if *selves > 1 {
                            return Err(invalid(format!("`{path}`: `self` may appear only once")));
                        }
                        return Ok(json!({"type": "agent", "id": own.0, "version": own.1}));
                    }
                    _ => {
                        check_keys(map, path, &["type", "id", "version"])?;
                        let id = bounded_str(
                            required(map, path, "id")?,
                            &field(path, "id"),
                            usize::MAX,
                        )?;
                        let version = present(map, "version")
                            .map(|v| positive_int(v, &field(path, "version")))
                            .transpose()?;
                        (id, version)
                    }
                }
            }
            other => return Err(expected(path, "an agent id or reference", other)),
        };
        let current = match self.load_agent(id) {
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
            Some(v) => match self.load_agent_version(&current, v) {
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
        Ok(json!({"type": "agent", "id": id, "version": pinned.version}))
    }

    /// `BetaManagedAgentsSessionAgent`: the agent without its bookkeeping
    /// fields, with multiagent references expanded to full agent snapshots.
    fn session_agent(&self, agent: &Agent) -> Result<Value> {
        let mut snapshot = thread_agent(agent);
        let multiagent = match &agent.multiagent {
            None => Value::Null,
            Some(m) => {
                let mut m = m.clone();
                if let Some(agents) = m.get_mut("agents").and_then(Value::as_array_mut) {
                    self.expand_references(agents)?;
                }
                for team in ["subagents", "workflows"] {
                    if let Some(agents) = m
                        .get_mut(team)
                        .and_then(|t| t.get_mut("predefined_agents"))
                        .and_then(Value::as_array_mut)
                    {
                        self.expand_references(agents)?;
                    }
                }
                m
            }
        };
        snapshot.insert("multiagent".to_owned(), multiagent);
        Ok(Value::Object(snapshot))
    }

    fn expand_references(&self, entries: &mut [Value]) -> Result<()> {
        for entry in entries {
            if entry.get("type").and_then(Value::as_str) != Some("agent") {
                continue;
            }
            let id = entry.get("id").and_then(Value::as_str).unwrap_or_default();
            let version = entry
                .get("version")
                .and_then(Value::as_u64)
                .unwrap_or_default();
            let current = self.load_agent(id)?;
            *entry = Value::Object(thread_agent(&self.load_agent_version(&current, version)?));
        }
        Ok(())
    }

    // ----- environments -------------------------------------------------------

    fn create_environment_now(&self, body: &Value) -> Result<Environment> {
        let body = body_object(body)?;
        check_keys(body, "", &ENVIRONMENT_KEYS)?;
        let name = bounded_str(required(body, "", "name")?, "name", usize::MAX)?;
        let config = match present(body, "config") {
            None => default_environment_config(),
            Some(v) => resolve_environment_config(v, None)?,
        };
        let description = optional_str(body, "", "description")?;
        let metadata = match body.get("metadata") {
            None => BTreeMap::new(),
            Some(v) => parse_metadata(v, "metadata")?,
        };
        let scope = optional_scope(body)?;

        let _guard = write_lock();
        self.check_environment_name_free(name, None)?;
        let now = timestamp();
        let environment = Environment {
            id: new_id(ENVIRONMENT_PREFIX),
            archived_at: None,
            config,
            created_at: now.clone(),
            description,
            metadata,
            name: name.to_owned(),
            kind: "environment".to_owned(),
            updated_at: now,
            scope,
        };
        put(&self.environments, &environment.id, &environment)?;
        Ok(environment)
    }

    fn update_environment_now(&self, id: &str, body: &Value) -> Result<Environment> {
        let body = body_object(body)?;
        check_keys(body, "", &ENVIRONMENT_KEYS)?;

        let _guard = write_lock();
        let current = self.load_environment(id)?;
        if current.archived_at.is_some() {
            return Err(invalid(format!("environment `{id}` is archived")));
        }
        let mut next = current.clone();
        if let Some(name) = present(body, "name") {
            let name = bounded_str(name, "name", usize::MAX)?;
            if name != current.name {
                self.check_environment_name_free(name, Some(id))?;
            }
            name.clone_into(&mut next.name);
        }
        if let Some(config) = present(body, "config") {
            next.config = resolve_environment_config(config, Some(&current.config))?;
        }
        if body.contains_key("description") {
            next.description = optional_str(body, "", "description")?;
        }
        if let Some(metadata) = body.get("metadata") {
            next.metadata = patch_metadata(&current.metadata, metadata, "metadata", true)?;
        }
        if let Some(scope) = optional_scope(body)? {
            next.scope = Some(scope);
        }
        if next == current {
            return Ok(current);
        }
        next.updated_at = timestamp();
        put(&self.environments, id, &next)?;
        Ok(next)
    }

    fn archive_environment_now(&self, id: &str) -> Result<Environment> {
        let _guard = write_lock();
        let mut environment = self.load_environment(id)?;
        if environment.archived_at.is_none() {
            environment.archived_at = Some(timestamp());
            put(&self.environments, id, &environment)?;
        }
        Ok(environment)
    }

    fn delete_environment_now(&self, id: &str) -> Result<Deleted> {
        let _guard = write_lock();
        match self.environments.remove(id.as_bytes()).map_err(store_err)? {
            None => Err(RuntimeError::not_found("environment", id)),
            Some(_) => Ok(Deleted {
                id: id.to_owned(),
                kind: "environment_deleted".to_owned(),
            }),
        }
    }

    fn load_environment(&self, id: &str) -> Result<Environment> {
        get(&self.environments, id.as_bytes())?
            .ok_or_else(|| RuntimeError::not_found("environment", id))
    }

    /// Names are unique among environments that are not archived.
    fn check_environment_name_free(&self, name: &str, except: Option<&str>) -> Result<()> {
        for item in self.environments.iter() {
            let (_, bytes) = item.map_err(store_err)?;
            let other: Environment = decode(&bytes)?;
            if other.archived_at.is_none()
                && other.name == name
                && Some(other.id.as_str()) != except
            {
                return Err(RuntimeError::new(
                    ErrorKind::Conflict,
                    format!(
                        "environment name `{name}` is already used by `{}`",
                        other.id
                    ),
                ));
            }
        }
        Ok(())
    }

    // ----- sessions -----------------------------------------------------------

    fn create_session_now(&self, body: &Value) -> Result<Session> {
        let body = body_object(body)?;
        check_keys(body, "", &SESSION_CREATE_KEYS)?;
        for unsupported in ["budget", "initial_events"] {
            if present(body, unsupported).is_some() {
                return Err(invalid(format!(
                    "`{unsupported}`: not supported by the local runtime"
                )));
            }
        }
        let choice = parse_agent_choice(required(body, "", "agent")?)?;
        let environment_id = bounded_str(
            required(body, "", "environment_id")?,
            "environment_id",
            usize::MAX,
        )?;
        let title = optional_str(body, "", "title")?;
        let metadata = match body.get("metadata") {
            None => BTreeMap::new(),
            Some(v) => parse_metadata(v, "metadata")?,
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
        let current = self.load_agent(choice.id)?;
        if current.archived_at.is_some() {
            return Err(invalid(format!("agent `{}` is archived", choice.id)));
        }
        let mut agent = match choice.version {
            None => current,
            Some(v) => match self.load_agent_version(&current, v) {
                Err(e) if e.is_not_found() => {
                    return Err(invalid(format!("agent `{}` has no version {v}", choice.id)))
                }
                other => other?,
            },
        };
        if let Some(overrides) = choice.overrides {
            apply_overrides(&mut agent, overrides)?;
        }
        let environment = self.load_environment(environment_id)?;
        if environment.archived_at.is_some() {
            return Err(invalid(format!(
                "environment `{environment_id}` is archived"
            )));
        }
        let session = Session {
            id: new_id(SESSION_PREFIX),
            agent: self.session_agent(&agent)?,
            archived_at: None,
            created_at: now.clone(),
            environment_id: environment_id.to_owned(),
            metadata,
            outcome_evaluations: Vec::new(),
            resources,
            stats: json!({"active_seconds": 0.0, "duration_seconds": 0.0}),
            status: "idle".to_owned(),
            title,
            kind: "session".to_owned(),
            updated_at: now,
            usage: json!({}),
            vault_ids,
        };
        put(&self.sessions, &session.id, &session)?;
        Ok(session)
    }

    fn update_session_now(&self, id: &str, body: &Value) -> Result<Session> {
        let body = body_object(body)?;
        check_keys(body, "", &["title", "metadata"])?;

        let _guard = write_lock();
        let current = self.load_session(id)?;
        if current.archived_at.is_some() {
            return Err(invalid(format!("session `{id}` is archived")));
        }
        let mut next = current.clone();
        if body.contains_key("title") {
            next.title = optional_str(body, "", "title")?;
        }
        if let Some(metadata) = body.get("metadata") {
            next.metadata = patch_metadata(&current.metadata, metadata, "metadata", false)?;
        }
        if next == current {
            return Ok(current);
        }
        next.updated_at = timestamp();
        put(&self.sessions, id, &next)?;
        Ok(next)
    }

    fn archive_session_now(&self, id: &str) -> Result<Session> {
        let _guard = write_lock();
        let mut session = self.load_session(id)?;
        if session.archived_at.is_none() {
            session.archived_at = Some(timestamp());
            put(&self.sessions, id, &session)?;
        }
        Ok(session)
    }

    fn delete_session_now(&self, id: &str) -> Result<Deleted> {
        let _guard = write_lock();
        match self.sessions.remove(id.as_bytes()).map_err(store_err)? {
            None => Err(RuntimeError::not_found("session", id)),
            Some(_) => Ok(Deleted {
                id: id.to_owned(),
                kind: "session_deleted".to_owned(),
            }),
        }
    }

    fn load_session(&self, id: &str) -> Result<Session> {
        get(&self.sessions, id.as_bytes())?.ok_or_else(|| RuntimeError::not_found("session", id))
    }

    // ----- events -------------------------------------------------------------

    fn send_events_now(&self, session_id: &str, params: &[Value]) -> Result<Vec<Value>> {
        self.load_session(session_id)?;
        let slot = self.hub.slot(&self.store, session_id)?;
        let mut state = slot.state();
        // Checked again under the slot lock, which deletion takes too.
        let session = self.load_session(session_id)?;
        if state.deleted {
            return Err(RuntimeError::not_found("session", session_id));
        }
        if session.archived_at.is_some() {
            return Err(invalid(format!("session `{session_id}` is archived")));
        }
        // The inbox first: an event the worker moves meanwhile is then in
        // both (and counted once) rather than in neither.
        let inbox = self.store.inbox(session_id)?;
        let history = self.store.history(session_id)?;
        let processed: HashSet<&str> = history.iter().map(super::event::id).collect();
        let unprocessed = inbox
            .iter()
            .map(|(_, e)| e)
            .filter(|e| !processed.contains(super::event::id(e)));
        let open = OpenUses::replay(history.iter().chain(unprocessed));
        let accepted = events::accept(params, open)?;
        self.store.push_inbox(session_id, &accepted)?;
        let interrupts = accepted
            .iter()
            .filter(|e| super::event::kind(e) == "user.interrupt")
            .count() as u64;
        if interrupts > 0 {
            slot.interrupts.send_modify(|n| *n += interrupts);
        }
        agent_loop::ensure_worker(&self.ctx(), &slot, &mut state);
        Ok(accepted)
    }

    fn stream_events_now(&self, session_id: &str) -> Result<EventStream> {
        let session = self.load_session(session_id)?;
        let slot = self.hub.slot(&self.store, session_id)?;
        let mut state = slot.state();
        if state.deleted {
            return Err(RuntimeError::not_found("session", session_id));
        }
        let rx = slot.subscribe();
        // A turn a stopped process left running carries on.
        if session.status == "running" {
            agent_loop::ensure_worker(&self.ctx(), &slot, &mut state);
        }
        Ok(EventStream::new(LiveEvents {
            rx,
            ended: false,
            drop_after: self.options.drop_stream_after,
        }))
    }

    /// After the session record is gone: stops its worker, ends its streams,
    /// removes its events and its workspace.
    async fn forget_session(&self, id: &str) -> Result<()> {
        let slot = self.hub.slot(&self.store, id)?;
        let worker = {
            let mut state = slot.state();
            state.deleted = true;
            state.worker.take()
        };
        if let Some(worker) = worker {
            worker.abort();
            let _ = worker.await;
        }
        self.store.clear(id)?;
        agent_loop::remove_workspace(&slot, self.options.sandboxes.as_ref()).await;
        self.hub.remove(id);
        slot.broadcast(json!({
            "id": new_id(EVENT_PREFIX),
            "type": "session.deleted",
            "processed_at": timestamp(),
        }));
        Ok(())
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &str {
        "local"
    }

    async fn create_agent(&self, body: Value) -> Result<Agent> {
        let result = self.create_agent_now(&body);
        self.respond_durable(result).await
    }

    async fn retrieve_agent(&self, id: &str, version: Option<u64>) -> Result<Agent> {
        let result = self.retrieve_agent_now(id, version);
        self.respond(result).await
    }

    async fn list_agents(&self, query: &ListQuery) -> Result<Page<Agent>> {
        let result = self.list_agents_now(query);
        self.respond(result).await
    }

    async fn update_agent(&self, id: &str, body: Value) -> Result<Agent> {
        let result = self.update_agent_now(id, &body);
        self.respond_durable(result).await
    }

    async fn list_agent_versions(&self, id: &str, query: &ListQuery) -> Result<Page<Agent>> {
        let result = self.list_agent_versions_now(id, query);
        self.respond(result).await
    }

    async fn archive_agent(&self, id: &str) -> Result<Agent> {
        let result = self.archive_agent_now(id);
        self.respond_durable(result).await
    }

    async fn create_environment(&self, body: Value) -> Result<Environment> {
        let result = self.create_environment_now(&body);
        self.respond_durable(result).await
    }

    async fn retrieve_environment(&self, id: &str) -> Result<Environment> {
        let result = self.load_environment(id);
        self.respond(result).await
    }

    async fn list_environments(&self, query: &ListQuery) -> Result<Page<Environment>> {
        let result = page_by_id(&self.environments, query);
        self.respond(result).await
    }

    async fn update_environment(&self, id: &str, body: Value) -> Result<Environment> {
        let result = self.update_environment_now(id, &body);
        self.respond_durable(result).await
    }

    async fn archive_environment(&self, id: &str) -> Result<Environment> {
        let result = self.archive_environment_now(id);
        self.respond_durable(result).await
    }

    async fn delete_environment(&self, id: &str) -> Result<Deleted> {
        let result = self.delete_environment_now(id);
        self.respond_durable(result).await
    }

    async fn create_session(&self, body: Value) -> Result<Session> {
        let result = self.create_session_now(&body);
        self.respond_durable(result).await
    }

    async fn retrieve_session(&self, id: &str) -> Result<Session> {
        let result = self.load_session(id);
        self.respond(result).await
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Page<Session>> {
        let result = page_by_id(&self.sessions, query);
        self.respond(result).await
    }

    async fn update_session(&self, id: &str, body: Value) -> Result<Session> {
        let result = self.update_session_now(id, &body);
        self.respond_durable(result).await
    }

    async fn archive_session(&self, id: &str) -> Result<Session> {
        let result = self.archive_session_now(id);
        if result.is_ok() {
            self.hub.release_idle(id);
        }
        self.respond_durable(result).await
    }

    async fn delete_session(&self, id: &str) -> Result<Deleted> {
        let result = match self.delete_session_now(id) {
            Ok(deleted) => self.forget_session(id).await.map(|()| deleted),
            Err(e) => Err(e),
        };
        self.respond_durable(result).await
    }

    async fn send_events(&self, session_id: &str, events: Vec<Value>) -> Result<Vec<Value>> {
        let result = self.send_events_now(session_id, &events);
        self.respond_durable(result).await
    }

    async fn list_events(&self, session_id: &str, query: &ListQuery) -> Result<Page<Value>> {
        let result = self
            .load_session(session_id)
            .and_then(|_| self.store.page(session_id, query, false, |_| true));
        self.respond(result).await
    }

    async fn stream_events(&self, session_id: &str) -> Result<EventStream> {
        let result = self.stream_events_now(session_id);
        self.respond(result).await
    }
}

// ----- storage ----------------------------------------------------------------

fn store_err(e: impl Display) -> RuntimeError {
    RuntimeError::new(ErrorKind::Transport, format!("local runtime storage: {e}"))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| store_err(format!("cannot encode record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| store_err(format!("corrupt record: {e}")))
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>> {
    match tree.get(key).map_err(store_err)? {
        None => Ok(None),
        Some(bytes) => decode(&bytes).map(Some),
    }
}

fn put<T: Serialize>(tree: &sled::Tree, id: &str, value: &T) -> Result<()> {
    tree.insert(id.as_bytes(), encode(value)?)
        .map_err(store_err)?;
    Ok(())
}

fn version_key(id: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 8);
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(&version.to_be_bytes());
    key
}

// ----- pagination -------------------------------------------------------------

fn page_limit(query: &ListQuery) -> Result<usize> {
    match query.limit.unwrap_or(DEFAULT_LIMIT) {
        limit @ 1..=MAX_LIMIT => Ok(limit as usize),
        other => Err(invalid(format!(
            "`limit`: must be between 1 and {MAX_LIMIT}, got {other}"
        ))),
    }
}

fn non_empty_cursor(query: &ListQuery) -> Option<&str> {
    query.page.as_deref().filter(|p| !p.is_empty())
}

/// The objects listed by id: the key is the id, which sorts by creation.
trait Listed: DeserializeOwned {
    const PREFIX: &'static str;
    fn id(&self) -> &str;
    fn archived(&self) -> bool;
}

impl Listed for Agent {
    const PREFIX: &'static str = AGENT_PREFIX;
    fn id(&self) -> &str {
        &self.id
    }
    fn archived(&self) -> bool {
        self.archived_at.is_some()
    }
}

impl Listed for Environment {
    const PREFIX: &'static str = ENVIRONMENT_PREFIX;
    fn id(&self) -> &str {
        &self.id
    }
    fn archived(&self) -> bool {
        self.archived_at.is_some()
    }
}

impl Listed for Session {
    const PREFIX: &'static str = SESSION_PREFIX;
    fn id(&self) -> &str {
        &self.id
    }
    fn archived(&self) -> bool {
        self.archived_at.is_some()
    }
}

/// A page of a tree keyed by id, in id order; the cursor is the last id
/// returned.
fn page_by_id<T: Listed>(tree: &sled::Tree, query: &ListQuery) -> Result<Page<T>> {
    page_where(tree, query, false, |_| true)
}

/// A page of the objects of a tree keyed by id that `keep` accepts, in id
/// order (newest first when `descending`); the cursor is the last id
/// returned, and the next page continues after it in the same direction.
fn page_where<T: Listed>(
    tree: &sled::Tree,
    query: &ListQuery,
    descending: bool,
    keep: impl Fn(&T) -> bool,
) -> Result<Page<T>> {
    let limit = page_limit(query)?;
    let after = match non_empty_cursor(query) {
        None => None,
        Some(cursor) => Some(
            cursor
                .strip_prefix(PAGE_PREFIX)
                .filter(|id| is_id(id, T::PREFIX))
                .ok_or_else(|| invalid("`page`: invalid page cursor"))?,
        ),
    };
    let items: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
        match (after, descending) {
            (None, false) => Box::new(tree.iter()),
            (None, true) => Box::new(tree.iter().rev()),
            (Some(after), false) => Box::new(
                tree.range::<&[u8], _>((Bound::Excluded(after.as_bytes()), Bound::Unbounded)),
            ),
            (Some(after), true) => Box::new(
                tree.range::<&[u8], _>((Bound::Unbounded, Bound::Excluded(after.as_bytes())))
                    .rev(),
            ),
        };
    let mut data: Vec<T> = Vec::new();
    let mut more = false;
    for item in items {
        let (_, bytes) = item.map_err(store_err)?;
        let value: T = decode(&bytes)?;
        if (value.archived() && !query.include_archived) || !keep(&value) {
            continue;
        }
        if data.len() == limit {
            more = true;
            break;
        }
        data.push(value);
    }
    let next_page = match data.last() {
        Some(last) if more => Some(format!("{PAGE_PREFIX}{}", last.id())),
        _ => None,
    };
    Ok(Page { data, next_page })
}

// ----- ids and timestamps -----------------------------------------------------

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_TIME_CHARS: usize = 11;
const ID_COUNTER_CHARS: usize = 3;
const ID_RANDOM_CHARS: usize = 8;
/// The part after `<prefix>_`: "01", time, counter, random.
const ID_BODY_LEN: usize = 2 + ID_TIME_CHARS + ID_COUNTER_CHARS + ID_RANDOM_CHARS;
const COUNTER_SPAN: u32 = 62 * 62 * 62;

/// The (millisecond, counter) of the last id made in this process.
static ID_CLOCK: Mutex<(u64, u32)> = Mutex::new((0, 0));

/// `<prefix>_01…`: base62 in ASCII order, so ids made later in this process
/// sort after earlier ones, even within a millisecond or if the clock steps
/// back.
fn new_id(prefix: &str) -> String {
    let now_ms = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or_default();
    let (ms, counter) = {
        let mut clock = ID_CLOCK.lock().unwrap_or_else(PoisonError::into_inner);
        if now_ms > clock.0 {
            *clock = (now_ms, 0);
        } else if clock.1 + 1 < COUNTER_SPAN {
            clock.1 += 1;
        } else {
            *clock = (clock.0 + 1, 0);
        }
        *clock
    };
    let mut id = format!("{prefix}_01");
    push_base62(&mut id, ms, ID_TIME_CHARS);
    push_base62(&mut id, u64::from(counter), ID_COUNTER_CHARS);
    for _ in 0..ID_RANDOM_CHARS {
        id.push(char::from(BASE62[fastrand::usize(..BASE62.len())]));
    }
    id
}

fn push_base62(out: &mut String, mut n: u64, width: usize) {
    let mut digits = vec![b'0'; width];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.extend(digits.into_iter().map(char::from));
}

fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| {
            body.len() == ID_BODY_LEN
                && body.starts_with("01")
                && body.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-04-01T12:00:00.123456Z`.
fn timestamp() -> String {
    let now = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    )
}

// ----- body access --------------------------------------------------------------

fn invalid(message: impl Into<String>) -> RuntimeError {
    RuntimeError::invalid(message)
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(path: &str, what: &str, got: &Value) -> RuntimeError {
    invalid(format!("`{path}`: expected {what}, got {}", type_name(got)))
}

fn body_object(body: &Value) -> Result<&Map<String, Value>> {
    body.as_object().ok_or_else(|| {
        invalid(format!(
            "request body: expected an object, got {}",
            type_name(body)
        ))
    })
}

fn as_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| expected(path, "an object", value))
}

fn array<'a>(value: &'a Value, path: &str) -> Result<&'a Vec<Value>> {
    value
        .as_array()
        .ok_or_else(|| expected(path, "an array", value))
}

/// Rejects fields the API does not know, as it does.
fn check_keys(map: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<()> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(invalid(format!("`{}`: unknown field", field(path, key)))),
    }
}

/// The value of `key`, treating null like absence.
fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn required<'a>(map: &'a Map<String, Value>, path: &str, key: &str) -> Result<&'a Value> {
    present(map, key).ok_or_else(|| invalid(format!("`{}`: required", field(path, key))))
}

fn string<'a>(value: &'a Value, path: &str) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| expected(path, "a string", value))
}

/// A string of 1 to `max` characters.
fn bounded_str<'a>(value: &'a Value, path: &str, max: usize) -> Result<&'a str> {
    let s = string(value, path)?;
    let len = s.chars().count();
    if len == 0 {
        return Err(invalid(format!("`{path}`: must not be empty")));
    }
    if len > max {
        return Err(invalid(format!(
            "`{path}`: must be at most {max} characters"
        )));
    }
    Ok(s)
}

fn one_of<'a>(value: &'a Value, path: &str, allowed: &[&str]) -> Result<&'a str> {
    let s = string(value, path)?;
    if allowed.contains(&s) {
        Ok(s)
    } else {
        Err(invalid(format!(
            "`{path}`: expected one of {}, got `{s}`",
            allowed.join(", ")
        )))
    }
}

fn boolean(value: &Value, path: &str) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| expected(path, "a boolean", value))
}

fn positive_int(value: &Value, path: &str) -> Result<u64> {
    value
        .as_u64()
        .filter(|n| *n >= 1)
        .ok_or_else(|| expected(path, "an integer ≥ 1", value))
}

/// An optional string field; absent or null give `None`.
fn optional_str(map: &Map<String, Value>, path: &str, key: &str) -> Result<Option<String>> {
    present(map, key)
        .map(|v| string(v, &field(path, key)).map(str::to_owned))
        .transpose()
}

fn string_list(value: &Value, path: &str) -> Result<Vec<String>> {
    array(value, path)?
        .iter()
        .enumerate()
        .map(|(i, v)| bounded_str(v, &format!("{path}[{i}]"), usize::MAX).map(str::to_owned))
        .collect()
}

/// An agent text field on create/update: omitted keeps `base`; null or ""
/// clears.
fn clearable_text(
    body: &Map<String, Value>,
    key: &str,
    base: Option<String>,
) -> Result<Option<String>> {
    match body.get(key) {
        None => Ok(base),
        Some(Value::Null) => Ok(None),
        Some(v) => {
            let s = string(v, key)?;
            Ok((!s.is_empty()).then(|| s.to_owned()))
        }
    }
}

fn optional_scope(body: &Map<String, Value>) -> Result<Option<String>> {
    present(body, "scope")
        .map(|v| one_of(v, "scope", &["organization", "account"]).map(str::to_owned))
        .transpose()
}

// ----- metadata -----------------------------------------------------------------

fn parse_metadata(value: &Value, path: &str) -> Result<BTreeMap<String, String>> {
    let mut metadata = BTreeMap::new();
    for (key, v) in as_object(value, path)? {
        let s = string(v, &format!("{path}.{key}"))?;
        metadata.insert(key.clone(), s.to_owned());
    }
    check_metadata(&metadata, path)?;
    Ok(metadata)
}

/// A metadata PATCH: strings upsert, null (and "" when `empty_deletes`)
/// deletes; a null patch changes nothing.
fn patch_metadata(
    base: &BTreeMap<String, String>,
    patch: &Value,
    path: &str,
    empty_deletes: bool,
) -> Result<BTreeMap<String, String>> {
    let mut metadata = base.clone();
    if patch.is_null() {
        return Ok(metadata);
    }
    for (key, v) in as_object(patch, path)? {
        match v {
            Value::Null => {
                metadata.remove(key);
            }
            Value::String(s) if s.is_empty() && empty_deletes => {
                metadata.remove(key);
            }
            Value::String(s) => {
                metadata.insert(key.clone(), s.clone());
            }
            other => {
                return Err(expected(
                    &format!("{path}.{key}"),
                    "a string or null",
                    other,
                ))
            }
        }
    }
    check_metadata(&metadata, path)?;
    Ok(metadata)
}

fn check_metadata(metadata: &BTreeMap<String, String>, path: &str) -> Result<()> {
    if metadata.len() > MAX_METADATA_PAIRS {
        return Err(invalid(format!(
            "`{path}`: at most {MAX_METADATA_PAIRS} pairs are allowed, got {}",
            metadata.len()
        )));
    }
    for (key, value) in metadata {
        let key_len = key.chars().count();
        if key_len == 0 || key_len > MAX_METADATA_KEY {
            return Err(invalid(format!(
                "`{path}`: key `{key}` must be 1 to {MAX_METADATA_KEY} characters"
            )));
        }
        if value.chars().count() > MAX_METADATA_VALUE {
            return Err(invalid(format!(
                "`{path}.{key}`: value must be at most {MAX_METADATA_VALUE} characters"
            )));
        }
    }
    Ok(())
}

// ----- agent fields -------------------------------------------------------------

/// `ModelConfig`, always in object form with a `speed`.
fn resolve_model(value: &Value, path: &str) -> Result<Value> {
    match value {
        Value::String(_) => {
            let id = bounded_str(value, path, usize::MAX)?;
            Ok(json!({"id": id, "speed": "standard"}))
        }
        Value::Object(map) => {
            check_keys(map, path, &["id", "effort", "inference_geo", "speed"])?;
            let id = bounded_str(required(map, path, "id")?, &field(path, "id"), usize::MAX)?;
            let mut model = Map::new();
            model.insert("id".to_owned(), json!(id));
            if let Some(effort) = present(map, "effort") {
                model.insert(
                    "effort".to_owned(),
                    resolve_effort(effort, &field(path, "effort"))?,
                );
            }
            if let Some(geo) = present(map, "inference_geo") {
                let geo = string(geo, &field(path, "inference_geo"))?;
                model.insert("inference_geo".to_owned(), json!(geo));
            }
            let speed = match present(map, "speed") {
                None => "standard",
                Some(v) => one_of(v, &field(path, "speed"), &["standard", "fast"])?,
            };
            model.insert("speed".to_owned(), json!(speed));
            Ok(Value::Object(model))
        }
        other => Err(expected(path, "a model id or object", other)),
    }
}

fn resolve_effort(value: &Value, path: &str) -> Result<Value> {
    let level = match value {
        Value::String(_) => one_of(value, path, &EFFORTS)?,
        Value::Object(map) => {
            check_keys(map, path, &["type"])?;
            one_of(required(map, path, "type")?, &field(path, "type"), &EFFORTS)?
        }
        other => return Err(expected(path, "an effort level or object", other)),
    };
    Ok(json!({"type": level}))
}

fn default_execution_identity() -> Value {
    json!({"type": "service_account"})
}

fn resolve_execution_identity(value: &Value, path: &str) -> Result<Value> {
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
                2048,
            )?;
            Ok(json!({"type": "aws_role", "role_arn": arn}))
        }
        _ => {
            check_keys(map, path, &["type"])?;
            Ok(default_execution_identity())
        }
    }
}

fn resolve_mcp_servers(value: &Value, path: &str) -> Result<Vec<Value>> {
    let items = array(value, path)?;
    if items.len() > MAX_MCP_SERVERS {
        return Err(invalid(format!(
            "`{path}`: at most {MAX_MCP_SERVERS} MCP servers are allowed"
        )));
    }
    let mut names = HashSet::new();
    let mut servers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let map = as_object(item, &p)?;
        check_keys(map, &p, &["name", "type", "url"])?;
        let name = bounded_str(required(map, &p, "name")?, &field(&p, "name"), 255)?;
        one_of(required(map, &p, "type")?, &field(&p, "type"), &["url"])?;
        let url = bounded_str(required(map, &p, "url")?, &field(&p, "url"), usize::MAX)?;
        if !names.insert(name) {
            return Err(invalid(format!(
                "`{p}.name`: duplicate MCP server name `{name}`"
            )));
        }
        servers.push(json!({"name": name, "type": "url", "url": url}));
    }
    Ok(servers)
}

/// The API rejects toolsets naming unknown servers and servers no toolset uses.
fn check_mcp_references(servers: &[Value], tools: &[Value], path: &str) -> Result<()> {
    let names = |items: &[Value], kind: Option<&str>, key: &str| -> BTreeSet<String> {
        items
            .iter()
            .filter(|t| kind.is_none() || t.get("type").and_then(Value::as_str) == kind)
            .filter_map(|t| t.get(key).and_then(Value::as_str).map(str::to_owned))
            .collect()
    };
    let server_names = names(servers, None, "name");
    let toolset_names = names(tools, Some("mcp_toolset"), "mcp_server_name");
    if let Some(name) = toolset_names.difference(&server_names).next() {
        return Err(invalid(format!(
            "`{}`: mcp_toolset references unknown MCP server `{name}`",
            field(path, "tools")
        )));
    }
    if let Some(name) = server_names.difference(&toolset_names).next() {
        return Err(invalid(format!(
            "`{}`: MCP server `{name}` is not referenced by any mcp_toolset in `tools`",
            field(path, "mcp_servers")
        )));
    }
    Ok(())
}

fn resolve_skills(value: &Value, path: &str) -> Result<Vec<Value>> {
    array(value, path)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = format!("{path}[{i}]");
            let map = as_object(item, &p)?;
            check_keys(map, &p, &["skill_id", "type", "version"])?;
            let skill_id = bounded_str(
                required(map, &p, "skill_id")?,
                &field(&p, "skill_id"),
                usize::MAX,
            )?;
            let kind = one_of(
                required(map, &p, "type")?,
                &field(&p, "type"),
                &["anthropic", "custom"],
            )?;
            let version = match present(map, "version") {
                None => "latest",
                Some(v) => bounded_str(v, &field(&p, "version"), usize::MAX)?,
            };
            Ok(json!({"skill_id": skill_id, "type": kind, "version": version}))
        })
        .collect()
}

fn resolve_tools(value: &Value, path: &str) -> Result<Vec<Value>> {
    let items = array(value, path)?;
    if items.len() > MAX_TOOLS {
        return Err(invalid(format!(
            "`{path}`: at most {MAX_TOOLS} tools are allowed"
        )));
    }
    // web_fetch's url_sources may name the custom tools of the same array.
    let custom_names: HashSet<&str> = items
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("custom"))
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    let mut toolset_seen = false;
    let mut mcp_seen = HashSet::new();
    let mut custom_seen = HashSet::new();
    let mut tools = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let map = as_object(item, &p)?;
        let type_path = field(&p, "type");
        let tool = match string(required(map, &p, "type")?, &type_path)? {
            "agent_toolset_20260401" => {
                if std::mem::replace(&mut toolset_seen, true) {
                    return Err(invalid(format!(
                        "`{type_path}`: agent_toolset_20260401 may appear only once"
                    )));
                }
                resolve_agent_toolset(map, &p, &custom_names)?
            }
            "mcp_toolset" => {
                let tool = resolve_mcp_toolset(map, &p)?;
                if !mcp_seen.insert(tool["mcp_server_name"].clone()) {
                    return Err(invalid(format!(
                        "`{p}.mcp_server_name`: MCP server already has a toolset"
                    )));
                }
                tool
            }
            "custom" => {
                let tool = resolve_custom_tool(map, &p)?;
                if !custom_seen.insert(tool["name"].clone()) {
                    return Err(invalid(format!("`{p}.name`: duplicate custom tool name")));
                }
                tool
            }
            other => {
                return Err(invalid(format!(
                    "`{type_path}`: unknown tool type `{other}`"
                )))
            }
        };
        tools.push(tool);
    }
    Ok(tools)
}

/// A toolset's `default_config`, resolved: `(enabled, permission_policy)`.
fn resolve_default_config(
    map: &Map<String, Value>,
    path: &str,
    default_policy: &str,
) -> Result<(bool, Value)> {
    let Some(value) = present(map, "default_config") else {
        return Ok((true, json!({"type": default_policy})));
    };
    let p = field(path, "default_config");
    let config = as_object(value, &p)?;
    check_keys(config, &p, &["enabled", "permission_policy"])?;
    let enabled = present(config, "enabled")
        .map(|v| boolean(v, &field(&p, "enabled")))
        .transpose()?
        .unwrap_or(true);
    let policy = match present(config, "permission_policy") {
        None => json!({"type": default_policy}),
        Some(v) => permission_policy(v, &field(&p, "permission_policy"))?,
    };
    Ok((enabled, policy))
}

fn permission_policy(value: &Value, path: &str) -> Result<Value> {
    let map = as_object(value, path)?;
    check_keys(map, path, &["type"])?;
    let kind = one_of(
        required(map, path, "type")?,
        &field(path, "type"),
        &PERMISSION_POLICIES,
    )?;
    Ok(json!({"type": kind}))
}

/// A tool config's `enabled` and `permission_policy`, falling back to the
/// toolset's resolved default.
fn resolve_tool_switches(
    map: Option<&Map<String, Value>>,
    path: &str,
    default: &(bool, Value),
) -> Result<(bool, Value)> {
    let Some(map) = map else {
        return Ok(default.clone());
    };
    let enabled = present(map, "enabled")
        .map(|v| boolean(v, &field(path, "enabled")))
        .transpose()?
        .unwrap_or(default.0);
    let policy = match present(map, "permission_policy") {
        None => default.1.clone(),
        Some(v) => permission_policy(v, &field(path, "permission_policy"))?,
    };
    Ok((enabled, policy))
}

fn resolve_agent_toolset(
    map: &Map<String, Value>,
    path: &str,
    custom_names: &HashSet<&str>,
) -> Result<Value> {
    check_keys(map, path, &["type", "configs", "default_config"])?;
    let default = resolve_default_config(map, path, "always_allow")?;
    let mut overrides: BTreeMap<&str, (String, &Map<String, Value>)> = BTreeMap::new();
    if let Some(configs) = present(map, "configs") {
        for (i, item) in array(configs, &field(path, "configs"))?.iter().enumerate() {
            let p = format!("{path}.configs[{i}]");
            let config = as_object(item, &p)?;
            let name = one_of(
                required(config, &p, "name")?,
                &field(&p, "name"),
                &TOOLSET_TOOLS,
            )?;
            if let Some(kind) = present(config, "type") {
                if string(kind, &field(&p, "type"))? != name {
                    return Err(invalid(format!("`{p}.type`: must equal `name` (`{name}`)")));
                }
            }
            let mut allowed = vec!["name", "type", "enabled", "permission_policy"];
            match name {
                "web_fetch" => allowed.extend([
                    "url_sources",
                    "allowed_domains",
                    "blocked_domains",
                    "max_content_tokens",
                ]),
                "web_search" => {
                    allowed.extend(["allowed_domains", "blocked_domains", "user_location"])
                }
                _ => {}
            }
            check_keys(config, &p, &allowed)?;
            if overrides.insert(name, (p.clone(), config)).is_some() {
                return Err(invalid(format!("`{p}.name`: `{name}` is configured twice")));
            }
        }
    }
    let mut configs = Vec::with_capacity(TOOLSET_TOOLS.len());
    for name in TOOLSET_TOOLS {
        let given = overrides.get(name);
        let p = given.map_or(path, |(p, _)| p.as_str());
        let (enabled, policy) = resolve_tool_switches(given.map(|(_, m)| *m), p, &default)?;
        let mut config = Map::new();
        config.insert("name".to_owned(), json!(name));
        config.insert("type".to_owned(), json!(name));
        config.insert("enabled".to_owned(), json!(enabled));
        config.insert("permission_policy".to_owned(), policy);
        if let Some((p, given)) = given {
            resolve_web_options(name, given, p, custom_names, &mut config)?;
        }
        configs.push(Value::Object(config));
    }
    Ok(json!({
        "type": "agent_toolset_20260401",
        "configs": configs,
        "default_config": {"enabled": default.0, "permission_policy": default.1},
    }))
}

/// The extra options of `web_fetch` and `web_search`; nulls are dropped.
fn resolve_web_options(
    name: &str,
    given: &Map<String, Value>,
    path: &str,
    custom_names: &HashSet<&str>,
    out: &mut Map<String, Value>,
) -> Result<()> {
    let mut domain_lists = 0;
    for key in ["allowed_domains", "blocked_domains"] {
        let Some(value) = present(given, key) else {
            continue;
        };
        let p = field(path, key);
        let domains = string_list(value, &p)?;
        if domains.is_empty() {
            return Err(invalid(format!(
                "`{p}`: must not be empty; omit it instead"
            )));
        }
        if domains.len() > 64 {
            return Err(invalid(format!("`{p}`: at most 64 domains are allowed")));
        }
        domain_lists += 1;
        out.insert(key.to_owned(), json!(domains));
    }
    if domain_lists > 1 {
        return Err(invalid(format!(
            "`{path}`: `allowed_domains` and `blocked_domains` cannot be combined"
        )));
    }
    if name == "web_fetch" {
        if let Some(value) = present(given, "max_content_tokens") {
            let tokens = positive_int(value, &field(path, "max_content_tokens"))?;
            out.insert("max_content_tokens".to_owned(), json!(tokens));
        }
        if let Some(value) = present(given, "url_sources") {
            let sources = resolve_url_sources(value, &field(path, "url_sources"), custom_names)?;
            out.insert("url_sources".to_owned(), sources);
        }
    }
    if name == "web_search" {
        if let Some(value) = present(given, "user_location") {
            let p = field(path, "user_location");
            let location = as_object(value, &p)?;
            check_keys(
                location,
                &p,
                &["type", "city", "country", "region", "timezone"],
            )?;
            one_of(
                required(location, &p, "type")?,
                &field(&p, "type"),
                &["approximate"],
            )?;
            let mut resolved = Map::new();
            resolved.insert("type".to_owned(), json!("approximate"));
            for key in ["city", "country", "region", "timezone"] {
                if let Some(v) = optional_str(location, &p, key)? {
                    resolved.insert(key.to_owned(), json!(v));
                }
            }
            out.insert("user_location".to_owned(), Value::Object(resolved));
        }
    }
    Ok(())
}

fn resolve_url_sources(value: &Value, path: &str, custom_names: &HashSet<&str>) -> Result<Value> {
    let map = as_object(value, path)?;
    check_keys(
        map,
        path,
        &["client_tool_results", "server_tool_results", "user_input"],
    )?;
    let mut out = Map::new();
    if let Some(v) = present(map, "client_tool_results") {
        let filter = tool_filter(v, &field(path, "client_tool_results"), &|name| {
            custom_names.contains(name)
        })?;
        out.insert("client_tool_results".to_owned(), filter);
    }
    if let Some(v) = present(map, "server_tool_results") {
        let filter = tool_filter(v, &field(path, "server_tool_results"), &|name| {
            matches!(name, "web_search" | "web_fetch")
        })?;
        out.insert("server_tool_results".to_owned(), filter);
    }
    if let Some(v) = present(map, "user_input") {
        let p = field(path, "user_input");
        let kind = match v {
            Value::String(_) => one_of(v, &p, &["all", "none"])?,
            _ => {
                let m = as_object(v, &p)?;
                check_keys(m, &p, &["type"])?;
                one_of(
                    required(m, &p, "type")?,
                    &field(&p, "type"),
                    &["all", "none"],
                )?
            }
        };
        out.insert("user_input".to_owned(), json!({"type": kind}));
    }
    let all_none = ["client_tool_results", "server_tool_results", "user_input"]
        .iter()
        .all(|k| out.get(*k).is_some_and(|v| v["type"] == "none"));
    if all_none {
        return Err(invalid(format!(
            "`{path}`: cannot set every source to `none`"
        )));
    }
    Ok(Value::Object(out))
}

/// `"all"`, `"none"` or `{type, tools?}`; `known` says which tool names may be
/// referenced.
fn tool_filter(value: &Value, path: &str, known: &dyn Fn(&str) -> bool) -> Result<Value> {
    const KINDS: [&str; 4] = ["all", "none", "only", "except"];
    if value.is_string() {
        let kind = one_of(value, path, &["all", "none"])?;
        return Ok(json!({"type": kind}));
    }
    let map = as_object(value, path)?;
    let kind = one_of(required(map, path, "type")?, &field(path, "type"), &KINDS)?;
    if matches!(kind, "all" | "none") {
        check_keys(map, path, &["type"])?;
        return Ok(json!({"type": kind}));
    }
    check_keys(map, path, &["type", "tools"])?;
    let p = field(path, "tools");
    let items = array(required(map, path, "tools")?, &p)?;
    if items.is_empty() || items.len() > 128 {
        return Err(invalid(format!("`{p}`: expected 1 to 128 entries")));
    }
    let mut names = HashSet::new();
    let mut tools = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{p}[{i}]");
        let reference = as_object(item, &ip)?;
        check_keys(reference, &ip, &["name", "type"])?;
        let name = bounded_str(
            required(reference, &ip, "name")?,
            &field(&ip, "name"),
            usize::MAX,
        )?;
        one_of(
            required(reference, &ip, "type")?,
            &field(&ip, "type"),
            &["tool_reference"],
        )?;
        if !names.insert(name) {
            return Err(invalid(format!("`{ip}.name`: `{name}` is listed twice")));
        }
        if !known(name) {
            return Err(invalid(format!(
                "`{ip}.name`: `{name}` cannot be referenced here"
            )));
        }
        tools.push(json!({"name": name, "type": "tool_reference"}));
    }
    Ok(json!({"type": kind, "tools": tools}))
}

fn resolve_mcp_toolset(map: &Map<String, Value>, path: &str) -> Result<Value> {
    check_keys(
        map,
        path,
        &["type", "mcp_server_name", "configs", "default_config"],
    )?;
    let server = bounded_str(
        required(map, path, "mcp_server_name")?,
        &field(path, "mcp_server_name"),
        255,
    )?;
    let default = resolve_default_config(map, path, "always_ask")?;
    let mut names = HashSet::new();
    let mut configs = Vec::new();
    if let Some(given) = present(map, "configs") {
        for (i, item) in array(given, &field(path, "configs"))?.iter().enumerate() {
            let p = format!("{path}.configs[{i}]");
            let config = as_object(item, &p)?;
            check_keys(config, &p, &["name", "enabled", "permission_policy"])?;
            let name = bounded_str(required(config, &p, "name")?, &field(&p, "name"), 128)?;
            if !names.insert(name) {
                return Err(invalid(format!("`{p}.name`: `{name}` is configured twice")));
            }
            let (enabled, policy) = resolve_tool_switches(Some(config), &p, &default)?;
            configs.push(json!({"name": name, "enabled": enabled, "permission_policy": policy}));
        }
    }
    Ok(json!({
        "type": "mcp_toolset",
        "mcp_server_name": server,
        "configs": configs,
        "default_config": {"enabled": default.0, "permission_policy": default.1},
    }))
}

fn resolve_custom_tool(map: &Map<String, Value>, path: &str) -> Result<Value> {
    check_keys(map, path, &["type", "name", "description", "input_schema"])?;
    let name_path = field(path, "name");
    let name = bounded_str(required(map, path, "name")?, &name_path, 128)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(format!(
            "`{name_path}`: may contain only letters, digits, underscores and hyphens"
        )));
    }
    let description = string(
        required(map, path, "description")?,
        &field(path, "description"),
    )?;
    let schema_path = field(path, "input_schema");
    let mut schema = as_object(required(map, path, "input_schema")?, &schema_path)?.clone();
    one_of(
        required(&schema, &schema_path, "type")?,
        &field(&schema_path, "type"),
        &["object"],
    )?;
    if let Some(properties) = present(&schema, "properties") {
        as_object(properties, &field(&schema_path, "properties"))?;
    }
    if let Some(required_names) = present(&schema, "required") {
        string_list(required_names, &field(&schema_path, "required"))?;
    }
    schema.retain(|key, v| !(v.is_null() && matches!(key.as_str(), "properties" | "required")));
    Ok(json!({
        "type": "custom",
        "name": name,
        "description": description,
        "input_schema": schema,
    }))
}

/// `BetaManagedAgentsSessionThreadAgent`: an agent version without its
/// bookkeeping fields and without `multiagent`.
fn thread_agent(agent: &Agent) -> Map<String, Value> {
    let value = json!({
        "id": agent.id,
        "description": agent.description,
        "execution_identity": agent.execution_identity,
        "mcp_servers": agent.mcp_servers,
        "model": agent.model,
        "name": agent.name,
        "skills": agent.skills,
        "system": agent.system,
        "tools": agent.tools,
        "type": "agent",
        "version": agent.version,
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

// ----- environment config ---------------------------------------------------------

fn default_packages() -> Value {
    json!({"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []})
}

fn default_environment_config() -> Value {
    json!({"type": "cloud", "networking": {"type": "unrestricted"}, "packages": default_packages()})
}

/// A config with every field resolved; on update (`stored` given) omitted
/// fields keep their stored values and the type cannot change.
fn resolve_environment_config(value: &Value, stored: Option<&Value>) -> Result<Value> {
    let path = "config";
    let map = as_object(value, path)?;
    let kind = one_of(
        required(map, path, "type")?,
        "config.type",
        &["cloud", "self_hosted"],
    )?;
    if let Some(stored) = stored {
        let stored_kind = stored
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if stored_kind != kind {
            return Err(invalid(format!(
                "`config.type`: cannot change from `{stored_kind}` to `{kind}` after creation"
            )));
        }
    }
    if kind == "self_hosted" {
        check_keys(map, path, &["type"])?;
        return Ok(json!({"type": "self_hosted"}));
    }
    check_keys(map, path, &["type", "networking", "packages"])?;
    let stored_networking = stored.and_then(|s| s.get("networking"));
    let networking = match present(map, "networking") {
        None => stored_networking
            .cloned()
            .unwrap_or_else(|| json!({"type": "unrestricted"})),
        Some(v) => resolve_networking(v, stored_networking)?,
    };
    let stored_packages = stored.and_then(|s| s.get("packages"));
    let packages = match present(map, "packages") {
        None => stored_packages.cloned().unwrap_or_else(default_packages),
        Some(v) => resolve_packages(v, stored_packages)?,
    };
    let limited_without_managers =
        networking["type"] == "limited" && networking["allow_package_managers"] == false;
    let has_packages = PACKAGE_MANAGERS
        .iter()
        .any(|m| packages[*m].as_array().is_some_and(|l| !l.is_empty()));
    if limited_without_managers && has_packages {
        return Err(invalid(
            "`config.packages`: limited networking needs `allow_package_managers: true`",
        ));
    }
    Ok(json!({"type": "cloud", "networking": networking, "packages": packages}))
}

fn resolve_networking(value: &Value, stored: Option<&Value>) -> Result<Value> {
    let path = "config.networking";
    let map = as_object(value, path)?;
    let kind = one_of(
        required(map, path, "type")?,
        "config.networking.type",
        &["unrestricted", "limited"],
    )?;
    if kind == "unrestricted" {
        check_keys(map, path, &["type"])?;
        return Ok(json!({"type": "unrestricted"}));
    }
    check_keys(
        map,
        path,
        &[
            "type",
            "allow_mcp_servers",
            "allow_package_managers",
            "allowed_hosts",
        ],
    )?;
    let stored = stored.filter(|s| s["type"] == "limited");
    let mut networking = json!({
        "type": "limited",
        "allow_mcp_servers": false,
        "allow_package_managers": false,
        "allowed_hosts": [],
    });
    for key in ["allow_mcp_servers", "allow_package_managers"] {
        networking[key] = match present(map, key) {
            Some(v) => json!(boolean(v, &field(path, key))?),
            None => stored.map_or(json!(false), |s| s[key].clone()),
        };
    }
    networking["allowed_hosts"] = match present(map, "allowed_hosts") {
        Some(v) => json!(string_list(v, "config.networking.allowed_hosts")?),
        None => stored.map_or(json!([]), |s| s["allowed_hosts"].clone()),
    };
    Ok(networking)
}

fn resolve_packages(value: &Value, stored: Option<&Value>) -> Result<Value> {
    let path = "config.packages";
    let map = as_object(value, path)?;
    let mut allowed = PACKAGE_MANAGERS.to_vec();
    allowed.push("type");
    check_keys(map, path, &allowed)?;
    if let Some(kind) = present(map, "type") {
        one_of(kind, "config.packages.type", &["packages"])?;
    }
    let mut packages = default_packages();
    for manager in PACKAGE_MANAGERS {
        packages[manager] = match present(map, manager) {
            Some(v) => json!(string_list(v, &field(path, manager))?),
            None => stored
                .and_then(|s| s.get(manager))
                .cloned()
                .unwrap_or_else(|| json!([])),
        };
    }
    Ok(packages)
}

// ----- session fields ---------------------------------------------------------------

struct AgentChoice<'a> {
    id: &'a str,
    version: Option<u64>,
    overrides: Option<&'a Map<String, Value>>,
}

/// `agent` of a session create: an id, `{type:"agent", id, version?}` or
/// `{type:"agent_with_overrides", id, version?, …}`.
fn parse_agent_choice(value: &Value) -> Result<AgentChoice<'_>> {
    let path = "agent";
    let map = match value {
        Value::String(_) => {
            return Ok(AgentChoice {
                id: bounded_str(value, path, usize::MAX)?,
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
        id: bounded_str(required(map, path, "id")?, "agent.id", usize::MAX)?,
        version: present(map, "version")
            .map(|v| positive_int(v, "agent.version"))
            .transpose()?,
        overrides: (kind == "agent_with_overrides").then_some(map),
    })
}

/// `agent_with_overrides`: replaces the given fields of the snapshot only.
fn apply_overrides(agent: &mut Agent, overrides: &Map<String, Value>) -> Result<()> {
    if let Some(v) = present(overrides, "model") {
        agent.model = resolve_model(v, "agent.model")?;
    }
    if let Some(v) = present(overrides, "mcp_servers") {
        agent.mcp_servers = resolve_mcp_servers(v, "agent.mcp_servers")?;
    }
    if let Some(v) = present(overrides, "skills") {
        agent.skills = resolve_skills(v, "agent.skills")?;
    }
    if let Some(v) = present(overrides, "tools") {
        agent.tools = resolve_tools(v, "agent.tools")?;
    }
    if overrides.contains_key("system") {
        agent.system = optional_str(overrides, "agent", "system")?;
    }
    check_mcp_references(&agent.mcp_servers, &agent.tools, "agent")
}

/// Session `resources`, in their response shapes.
fn resolve_resources(value: &Value, now: &str) -> Result<Vec<Value>> {
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
                check_keys(
                    map,
                    &p,
                    &[
                        "type",
                        "url",
                        "authorization_token",
                        "checkout",
                        "mount_path",
                    ],
                )?;
                let url = bounded_str(required(map, &p, "url")?, &field(&p, "url"), usize::MAX)?;
                if let Some(token) = present(map, "authorization_token") {
                    string(token, &field(&p, "authorization_token"))?;
                }
                let repo = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url);
                let repo = repo.strip_suffix(".git").unwrap_or(repo);
                let mount_path = optional_str(map, &p, "mount_path")?
                    .unwrap_or_else(|| format!("/workspace/{repo}"));
                let mut resource = json!({
                    "id": new_id(RESOURCE_PREFIX),
                    "created_at": now,
                    "mount_path": mount_path,
                    "type": "github_repository",
                    "updated_at": now,
                    "url": url,
                });
                if let Some(checkout) = present(map, "checkout") {
                    resource["checkout"] = resolve_checkout(checkout, &field(&p, "checkout"))?;
                }
                resource
            }
            "file" => {
                check_keys(map, &p, &["type", "file_id", "mount_path"])?;
                let file_id = bounded_str(
                    required(map, &p, "file_id")?,
                    &field(&p, "file_id"),
                    usize::MAX,
                )?;
                let mount_path = optional_str(map, &p, "mount_path")?
                    .unwrap_or_else(|| format!("/mnt/session/uploads/{file_id}"));
                json!({
                    "id": new_id(RESOURCE_PREFIX),
                    "created_at": now,
                    "file_id": file_id,
                    "mount_path": mount_path,
                    "type": "file",
                    "updated_at": now,
                })
            }
            _ => {
                check_keys(
                    map,
                    &p,
                    &["type", "memory_store_id", "access", "instructions"],
                )?;
                let store = bounded_str(
                    required(map, &p, "memory_store_id")?,
                    &field(&p, "memory_store_id"),
                    usize::MAX,
                )?;
                let access = match present(map, "access") {
                    None => "read_write",
                    Some(v) => one_of(v, &field(&p, "access"), &["read_write", "read_only"])?,
                };
                let mut resource =
                    json!({"memory_store_id": store, "type": "memory_store", "access": access});
                if let Some(v) = present(map, "instructions") {
                    let instructions = string(v, &field(&p, "instructions"))?;
                    if instructions.chars().count() > 4096 {
                        return Err(invalid(format!(
                            "`{p}.instructions`: must be at most 4096 characters"
                        )));
                    }
                    resource["instructions"] = json!(instructions);
                }
                resource
            }
        };
        resources.push(resource);
    }
    Ok(resources)
}

fn resolve_checkout(value: &Value, path: &str) -> Result<Value> {
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
    let v = bounded_str(required(map, path, key)?, &field(path, key), usize::MAX)?;
    Ok(json!({"type": kind, key: v}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::list_all;
    use std::sync::Arc;

    struct Fixture {
        _dir: tempfile::TempDir,
        db: sled::Db,
        rt: LocalRuntime,
    }

    /// Opens a Db that was just closed. sled's own I/O threads may still
    /// hold the closed one's file (and its lock) for a moment after the last
    /// handle is dropped, and say nothing when they let go, so this retries.
    pub(super) fn reopen(path: &std::path::Path) -> sled::Db {
        let mut attempts = 0;
        loop {
            match sled::open(path) {
                Ok(db) => return db,
                Err(e) if attempts < 500 && e.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("reopen {}: {e}", path.display()),
            }
        }
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path().join("db")).expect("open sled");
        let rt = LocalRuntime::open(&db, LocalOptions::default()).expect("open runtime");
        Fixture { _dir: dir, db, rt }
    }

    fn agent_body(name: &str) -> Value {
        json!({"name": name, "model": "claude-sonnet-4-6"})
    }

    async fn environment(rt: &LocalRuntime, name: &str) -> Environment {
        rt.create_environment(json!({"name": name}))
            .await
            .expect("create environment")
    }

    fn assert_kind<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind) -> RuntimeError {
        match result {
            Err(e) if e.kind == kind => e,
            other => panic!("expected {kind:?}, got {other:?}"),
        }
    }

    #[test]
    fn ids_are_fixed_width_and_sorted() {
        let ids: Vec<String> = (0..500).map(|_| new_id(AGENT_PREFIX)).collect();
        for id in &ids {
            assert!(is_id(id, AGENT_PREFIX), "{id}");
            assert!(id.starts_with("agent_01"));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(!is_id("agent_01", AGENT_PREFIX));
        assert!(!is_id(&new_id(SESSION_PREFIX), AGENT_PREFIX));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = timestamp();
        assert!(ts.ends_with('Z'), "{ts}");
        let format = time::format_description::well_known::Rfc3339;
        assert!(OffsetDateTime::parse(&ts, &format).is_ok(), "{ts}");
    }

    #[tokio::test]
    async fn agent_create_resolves_fields() {
        let f = fixture();
        let agent = f
            .rt
            .create_agent(json!({
                "name": "coder",
                "model": {"id": "claude-opus-4-7", "effort": "high"},
                "skills": [{"type": "anthropic", "skill_id": "xlsx"}],
                "mcp_servers": [{"name": "docs", "type": "url", "url": "https://mcp.example.com"}],
                "tools": [
                    {
                        "type": "agent_toolset_20260401",
                        "default_config": {"permission_policy": {"type": "always_ask"}},
                        "configs": [{"name": "bash", "enabled": false}],
                    },
                    {"type": "mcp_toolset", "mcp_server_name": "docs", "configs": [{"name": "search"}]},
                    {
                        "type": "custom",
                        "name": "lookup",
                        "description": "Look something up",
                        "input_schema": {"type": "object", "properties": {}},
                    },
                ],
                "metadata": {"team": "infra"},
            }))
            .await
            .expect("create");
        assert!(agent.id.starts_with("agent_01"));
        assert_eq!(agent.version, 1);
        assert_eq!(agent.kind, "agent");
        assert_eq!(
            agent.model,
            json!({"id": "claude-opus-4-7", "effort": {"type": "high"}, "speed": "standard"})
        );
        assert_eq!(agent.execution_identity, json!({"type": "service_account"}));
        assert_eq!(agent.skills[0]["version"], "latest");

        let toolset = &agent.tools[0];
        let configs = toolset["configs"].as_array().expect("configs");
        let names: Vec<&str> = configs.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, TOOLSET_TOOLS);
        assert_eq!(
            configs[0],
            json!({"name": "bash", "type": "bash", "enabled": false, "permission_policy": {"type": "always_ask"}})
        );
        assert_eq!(configs[1]["enabled"], true);
        assert_eq!(
            configs[1]["permission_policy"],
            json!({"type": "always_ask"})
        );
        assert_eq!(
            toolset["default_config"],
            json!({"enabled": true, "permission_policy": {"type": "always_ask"}})
        );
        let mcp = &agent.tools[1];
        assert_eq!(
            mcp["configs"][0],
            json!({"name": "search", "enabled": true, "permission_policy": {"type": "always_ask"}})
        );
        assert_eq!(
            mcp["default_config"]["permission_policy"],
            json!({"type": "always_ask"})
        );
        assert_eq!(agent.tools[2]["name"], "lookup");

        // Required response fields are all there.
        let wire = serde_json::to_value(&agent).expect("serialize");
        for key in [
            "id",
            "created_at",
            "execution_identity",
            "mcp_servers",
            "metadata",
            "model",
            "name",
            "skills",
            "tools",
            "type",
            "updated_at",
            "version",
        ] {
            assert!(wire.get(key).is_some(), "missing {key}");
        }

        // Resolving a resolved agent changes nothing.
        let again =
            f.rt.update_agent(
                &agent.id,
                json!({"tools": agent.tools, "model": agent.model, "skills": agent.skills}),
            )
            .await
            .expect("update");
        assert_eq!(again, agent);
    }

    #[tokio::test]
    async fn agent_versions_and_updates() {
        let f = fixture();
        let rt = &f.rt;
        let v1 = rt
            .create_agent(json!({"name": "a", "model": "claude-sonnet-4-6", "system": "one", "metadata": {"k": "v", "x": "y"}}))
            .await
            .expect("create");
        assert_eq!(rt.retrieve_agent(&v1.id, None).await.expect("retrieve"), v1);

        let v2 = rt
            .update_agent(
                &v1.id,
                json!({"version": 1, "system": "two", "metadata": {"x": null, "z": "w"}}),
            )
            .await
            .expect("update");
        assert_eq!(v2.version, 2);
        assert_eq!(v2.system.as_deref(), Some("two"));
        assert_eq!(v2.name, "a");
        assert_eq!(v2.created_at, v1.created_at);
        let metadata: Vec<(&str, &str)> = v2
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(metadata, [("k", "v"), ("z", "w")]);

        // A no-op update keeps the version.
        let same = rt
            .update_agent(&v1.id, json!({"system": "two", "name": "a"}))
            .await
            .expect("no-op update");
        assert_eq!(same, v2);

        let conflict = assert_kind(
            rt.update_agent(&v1.id, json!({"version": 1, "system": "three"}))
                .await,
            ErrorKind::Conflict,
        );
        assert!(
            conflict.message.contains("version mismatch"),
            "{}",
            conflict.message
        );

        assert_eq!(rt.retrieve_agent(&v1.id, Some(1)).await.expect("v1"), v1);
        assert_eq!(rt.retrieve_agent(&v1.id, Some(2)).await.expect("v2"), v2);
        assert_kind(
            rt.retrieve_agent(&v1.id, Some(3)).await,
            ErrorKind::NotFound,
        );

        let versions = rt
            .list_agent_versions(&v1.id, &ListQuery::default())
            .await
            .expect("versions");
        let numbers: Vec<u64> = versions.data.iter().map(|a| a.version).collect();
        assert_eq!(numbers, [2, 1]);
        assert_eq!(versions.next_page, None);

        // Null clears what may be cleared, but not the name or model.
        let v3 = rt
            .update_agent(&v1.id, json!({"system": null, "metadata": {"k": null}}))
            .await
            .expect("clear");
        assert_eq!((v3.version, v3.system, v3.metadata.len()), (3, None, 1));
        assert_kind(
            rt.update_agent(&v1.id, json!({"name": null})).await,
            ErrorKind::InvalidRequest,
        );
        assert_kind(
            rt.update_agent(&v1.id, json!({"model": null})).await,
            ErrorKind::InvalidRequest,
        );
        assert_kind(
            rt.update_agent(&v1.id, json!({"name": ""})).await,
            ErrorKind::InvalidRequest,
        );
        assert_kind(
            rt.update_agent("agent_missing", json!({})).await,
            ErrorKind::NotFound,
        );
    }

    #[tokio::test]
    async fn version_pages_walk_newest_first() {
        let f = fixture();
        let agent = f.rt.create_agent(agent_body("a")).await.expect("create");
        for i in 0..4 {
            f.rt.update_agent(&agent.id, json!({"system": format!("s{i}")}))
                .await
                .expect("update");
        }
        let rt = &f.rt;
        let all = list_all(|mut q| {
            q.limit = Some(2);
            let id = agent.id.clone();
            async move { rt.list_agent_versions(&id, &q).await }
        })
        .await
        .expect("list");
        let numbers: Vec<u64> = all.iter().map(|a| a.version).collect();
        assert_eq!(numbers, [5, 4, 3, 2, 1]);
    }

    #[tokio::test]
    async fn archived_agents_are_frozen() {
        let f = fixture();
        let rt = &f.rt;
        let agent = rt.create_agent(agent_body("a")).await.expect("create");
        let env = environment(rt, "env").await;

        let archived = rt.archive_agent(&agent.id).await.expect("archive");
        assert!(archived.archived_at.is_some());
        assert_eq!(archived.version, 1);
        // Archiving again is idempotent: same object, same timestamp.
        assert_eq!(
            rt.archive_agent(&agent.id).await.expect("archive again"),
            archived
        );
        assert!(rt
            .retrieve_agent(&agent.id, Some(1))
            .await
            .expect("v1")
            .archived_at
            .is_some());

        let e = assert_kind(
            rt.update_agent(&agent.id, json!({"system": "x"})).await,
            ErrorKind::InvalidRequest,
        );
        assert!(e.message.contains("archived"), "{}", e.message);
        assert_kind(
            rt.create_session(json!({"agent": agent.id, "environment_id": env.id}))
                .await,
            ErrorKind::InvalidRequest,
        );

        assert!(rt
            .list_agents(&ListQuery::default())
            .await
            .expect("list")
            .data
            .is_empty());
        let with_archived = ListQuery {
            include_archived: true,
            ..ListQuery::default()
        };
        assert_eq!(
            rt.list_agents(&with_archived)
                .await
                .expect("list")
                .data
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn environment_config_is_resolved() {
        let f = fixture();
        let rt = &f.rt;
        let plain = environment(rt, "plain").await;
        assert_eq!(plain.config, default_environment_config());
        assert_eq!(plain.kind, "environment");

        let env = rt
            .create_environment(json!({
                "name": "limited",
                "config": {
                    "type": "cloud",
                    "networking": {"type": "limited", "allow_package_managers": true},
                    "packages": {"pip": ["requests"]},
                },
                "scope": "organization",
            }))
            .await
            .expect("create");
        let packages = &env.config["packages"];
        for manager in PACKAGE_MANAGERS {
            assert!(packages[manager].is_array(), "{manager} missing");
        }
        assert_eq!(packages["pip"], json!(["requests"]));
        assert_eq!(packages["type"], "packages");
        assert_eq!(
            env.config["networking"],
            json!({"type": "limited", "allow_mcp_servers": false, "allow_package_managers": true, "allowed_hosts": []})
        );
        assert_eq!(env.scope.as_deref(), Some("organization"));

        // Packages under limited networking need package managers allowed.
        assert_kind(
            rt.create_environment(json!({
                "name": "bad",
                "config": {"type": "cloud", "networking": {"type": "limited"}, "packages": {"npm": ["x"]}},
            }))
            .await,
            ErrorKind::InvalidRequest,
        );

        // Update: omitted config fields persist, the type cannot change.
        let updated = rt
            .update_environment(
                &env.id,
                json!({"config": {"type": "cloud", "packages": {"npm": ["left-pad"]}}}),
            )
            .await
            .expect("update");
        assert_eq!(updated.config["packages"]["pip"], json!(["requests"]));
        assert_eq!(updated.config["packages"]["npm"], json!(["left-pad"]));
        assert_eq!(updated.config["networking"], env.config["networking"]);
        assert_kind(
            rt.update_environment(&env.id, json!({"config": {"type": "self_hosted"}}))
                .await,
            ErrorKind::InvalidRequest,
        );
    }

    #[tokio::test]
    async fn environment_names_are_unique() {
        let f = fixture();
        let rt = &f.rt;
        let first = environment(rt, "prod").await;
        let other = environment(rt, "staging").await;
        assert_kind(
            rt.create_environment(json!({"name": "prod"})).await,
            ErrorKind::Conflict,
        );
        assert_kind(
            rt.update_environment(&other.id, json!({"name": "prod"}))
                .await,
            ErrorKind::Conflict,
        );
        // Renaming to its own name is fine; archived names are free again.
        rt.update_environment(&first.id, json!({"name": "prod"}))
            .await
            .expect("same name");
        rt.archive_environment(&first.id).await.expect("archive");
        environment(rt, "prod").await;
    }

    #[tokio::test]
    async fn environment_update_archive_delete() {
        let f = fixture();
        let rt = &f.rt;
        let env = rt
            .create_environment(
                json!({"name": "e", "description": "d", "metadata": {"a": "1", "b": "2"}}),
            )
            .await
            .expect("create");
        let same = rt
            .update_environment(&env.id, json!({}))
            .await
            .expect("no-op");
        assert_eq!(same, env);
        let updated = rt
            .update_environment(
                &env.id,
                json!({"metadata": {"a": "", "b": null, "c": "3"}, "description": null}),
            )
            .await
            .expect("update");
        assert_eq!(updated.metadata.keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(updated.description, None);

        let archived = rt.archive_environment(&env.id).await.expect("archive");
        assert!(archived.archived_at.is_some());
        let e = assert_kind(
            rt.update_environment(&env.id, json!({"description": "x"}))
                .await,
            ErrorKind::InvalidRequest,
        );
        assert!(e.message.contains("is archived"), "{}", e.message);

        let deleted = rt.delete_environment(&env.id).await.expect("delete");
        assert_eq!(
            deleted,
            Deleted {
                id: env.id.clone(),
                kind: "environment_deleted".into()
            }
        );
        assert_kind(rt.retrieve_environment(&env.id).await, ErrorKind::NotFound);
        assert_kind(rt.delete_environment(&env.id).await, ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn sessions_snapshot_the_agent() {
        let f = fixture();
        let rt = &f.rt;
        let agent = rt.create_agent(agent_body("a")).await.expect("create");
        rt.update_agent(&agent.id, json!({"system": "newer"}))
            .await
            .expect("update");
        let env = environment(rt, "env").await;

        let pinned = rt
            .create_session(json!({
                "agent": {"type": "agent", "id": agent.id, "version": 1},
                "environment_id": env.id,
                "title": "t",
                "metadata": {"k": "v"},
            }))
            .await
            .expect("pinned session");
        assert!(pinned.id.starts_with("sesn_01"));
        assert_eq!(pinned.agent_id(), Some(agent.id.as_str()));
        assert_eq!(pinned.agent_version(), Some(1));
        assert_eq!(pinned.agent["system"], Value::Null);
        assert_eq!(pinned.agent["type"], "agent");
        assert!(pinned.agent.get("metadata").is_none());
        assert!(pinned.agent.get("created_at").is_none());
        assert_eq!(pinned.status, "idle");
        assert_eq!(pinned.kind, "session");
        assert!(pinned.vault_ids.is_empty() && pinned.resources.is_empty());

        let latest = rt
            .create_session(json!({"agent": agent.id, "environment_id": env.id}))
            .await
            .expect("latest session");
        assert_eq!(latest.agent_version(), Some(2));
        assert_eq!(latest.agent["system"], "newer");

        // Missing agent → 404, missing version → 400, archived environment → 400.
        assert_kind(
            rt.create_session(json!({"agent": "agent_01nope", "environment_id": env.id}))
                .await,
            ErrorKind::NotFound,
        );
        assert_kind(
            rt.create_session(json!({"agent": {"type": "agent", "id": agent.id, "version": 9}, "environment_id": env.id}))
                .await,
            ErrorKind::InvalidRequest,
        );
        assert_kind(
            rt.create_session(json!({"agent": agent.id, "environment_id": "env_01nope"}))
                .await,
            ErrorKind::NotFound,
        );
        rt.archive_environment(&env.id).await.expect("archive env");
        assert_kind(
            rt.create_session(json!({"agent": agent.id, "environment_id": env.id}))
                .await,
            ErrorKind::InvalidRequest,
        );

        // Update: title and metadata only.
        let updated = rt
            .update_session(
                &pinned.id,
                json!({"title": null, "metadata": {"k": null, "n": "1"}}),
            )
            .await
            .expect("update session");
        assert_eq!(updated.title, None);
        assert_eq!(updated.metadata.keys().collect::<Vec<_>>(), ["n"]);
        assert_kind(
            rt.update_session(&pinned.id, json!({"vault_ids": []}))
                .await,
            ErrorKind::InvalidRequest,
        );

        rt.archive_session(&pinned.id)
            .await
            .expect("archive session");
        assert_kind(
            rt.update_session(&pinned.id, json!({"title": "x"})).await,
            ErrorKind::InvalidRequest,
        );
        let listed = rt.list_sessions(&ListQuery::default()).await.expect("list");
        assert_eq!(listed.data.len(), 1);
        assert_eq!(listed.data[0].id, latest.id);

        let deleted = rt.delete_session(&pinned.id).await.expect("delete");
        assert_eq!(deleted.kind, "session_deleted");
        assert_kind(rt.retrieve_session(&pinned.id).await, ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn multiagent_references_are_pinned_and_expanded() {
        let f = fixture();
        let rt = &f.rt;
        let helper = rt.create_agent(agent_body("helper")).await.expect("helper");
        let lead = rt
            .create_agent(json!({
                "name": "lead",
                "model": "claude-opus-4-7",
                "multiagent": {"type": "coordinator", "agents": [helper.id, {"type": "self"}]},
            }))
            .await
            .expect("lead");
        let agents = &lead.multiagent.as_ref().expect("multiagent")["agents"];
        assert_eq!(
            agents[0],
            json!({"type": "agent", "id": helper.id, "version": 1})
        );
        assert_eq!(
            agents[1],
            json!({"type": "agent", "id": lead.id, "version": 1})
        );

        // Depth 1: a multiagent agent cannot be referenced.
        assert_kind(
            rt.create_agent(json!({
                "name": "boss", "model": "m",
                "multiagent": {"type": "coordinator", "agents": [lead.id]},
            }))
            .await,
            ErrorKind::InvalidRequest,
        );

        let env = environment(rt, "env").await;
        let session = rt
            .create_session(json!({"agent": lead.id, "environment_id": env.id}))
            .await
            .expect("session");
        let expanded = &session.agent["multiagent"]["agents"][0];
        assert_eq!(expanded["name"], "helper");
        assert_eq!(expanded["tools"], json!([]));
        assert!(expanded.get("multiagent").is_none());

        let modern = rt
            .create_agent(json!({
                "name": "modern", "model": "m",
                "multiagent": {"type": "multiagent_20261001", "subagents": {"type": "enabled", "predefined_agents": [helper.id]}},
            }))
            .await
            .expect("modern");
        let m = modern.multiagent.expect("multiagent");
        assert_eq!(m["advisor"], json!({"type": "disabled"}));
        assert_eq!(m["workflows"]["inline_agents"], json!({"type": "enabled"}));
        assert_eq!(m["subagents"]["predefined_agents"][0]["version"], 1);
    }

    #[tokio::test]
    async fn pagination_is_complete_and_ordered() {
        let f = fixture();
        let rt = &f.rt;
        let mut created = Vec::new();
        for i in 0..45 {
            created.push(
                rt.create_agent(agent_body(&format!("a{i}")))
                    .await
                    .expect("create")
                    .id,
            );
        }
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        let mut query = ListQuery::default();
        loop {
            let page = rt.list_agents(&query).await.expect("page");
            sizes.push(page.data.len());
            seen.extend(page.data.into_iter().map(|a| a.id));
            match page.next_page {
                Some(next) => query.page = Some(next),
                None => break,
            }
        }
        assert_eq!(sizes, [20, 20, 5]);
        assert_eq!(seen, created);

        for limit in [0, 101] {
            let q = ListQuery {
                limit: Some(limit),
                ..ListQuery::default()
            };
            assert_kind(rt.list_agents(&q).await, ErrorKind::InvalidRequest);
        }
        for page in ["garbage", "page_env_01xyz", "page_agent_01!!"] {
            let q = ListQuery {
                page: Some(page.into()),
                ..ListQuery::default()
            };
            assert_kind(rt.list_agents(&q).await, ErrorKind::InvalidRequest);
        }
        let q = ListQuery {
            page: Some("nope".into()),
            ..ListQuery::default()
        };
        assert_kind(
            rt.list_agent_versions(&created[0], &q).await,
            ErrorKind::InvalidRequest,
        );
    }

    #[tokio::test]
    async fn bad_bodies_are_rejected_not_panicked_on() {
        let f = fixture();
        let rt = &f.rt;
        let long_key = "k".repeat(65);
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        let bad_agents = [
            json!(null),
            json!([1, 2]),
            json!({"name": "a"}),
            json!({"model": "m"}),
            json!({"name": "", "model": "m"}),
            json!({"name": 7, "model": "m"}),
            json!({"name": "a", "model": 3}),
            json!({"name": "a", "model": {"speed": "fast"}}),
            json!({"name": "a", "model": {"id": "m", "effort": "extreme"}}),
            json!({"name": "a", "model": "m", "metadata": many}),
            json!({"name": "a", "model": "m", "metadata": {long_key: "v"}}),
            json!({"name": "a", "model": "m", "metadata": {"k": "v".repeat(513)}}),
            json!({"name": "a", "model": "m", "metadata": {"k": 1}}),
            json!({"name": "a", "model": "m", "tools": "bash"}),
            json!({"name": "a", "model": "m", "tools": vec![json!({"type": "custom", "name": "t", "description": "", "input_schema": {"type": "object"}}); 257]}),
            json!({"name": "a", "model": "m", "tools": [{"type": "agent_toolset_20260401", "configs": [{"name": "rm"}]}]}),
            json!({"name": "a", "model": "m", "tools": [{"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": "yes"}]}]}),
            json!({"name": "a", "model": "m", "tools": [{"type": "nope"}]}),
            json!({"name": "a", "model": "m", "mcp_servers": [
                {"name": "x", "type": "url", "url": "u"}, {"name": "x", "type": "url", "url": "v"}]}),
            json!({"name": "a", "model": "m", "mcp_servers": [{"name": "x", "type": "url", "url": "u"}]}),
            json!({"name": "a", "model": "m", "tools": [{"type": "mcp_toolset", "mcp_server_name": "ghost"}]}),
            json!({"name": "a", "model": "m", "skills": [{"type": "anthropic"}]}),
            json!({"name": "a", "model": "m", "execution_identity": {"type": "aws_role"}}),
            json!({"name": "a", "model": "m", "unexpected": true}),
        ];
        for body in bad_agents {
            let e = assert_kind(
                rt.create_agent(body.clone()).await,
                ErrorKind::InvalidRequest,
            );
            assert!(!e.message.is_empty(), "{body}");
        }
        let e = assert_kind(
            rt.create_agent(json!({"name": "a", "model": "m", "tools": [{"type": "custom", "name": "t", "description": 5}]}))
                .await,
            ErrorKind::InvalidRequest,
        );
        assert!(e.message.contains("tools[0].description"), "{}", e.message);

        let agent = rt.create_agent(agent_body("ok")).await.expect("create");
        for body in [
            json!({"version": "1"}),
            json!({"version": 0}),
            json!({"metadata": {"k": 5}}),
            json!("x"),
        ] {
            assert_kind(
                rt.update_agent(&agent.id, body).await,
                ErrorKind::InvalidRequest,
            );
        }
        for body in [
            json!({}),
            json!({"name": ""}),
            json!({"name": "e", "config": {"type": "moon"}}),
            json!({"name": "e", "config": {"type": "cloud", "packages": {"pip": "requests"}}}),
            json!({"name": "e", "config": {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": [1]}}}),
            json!({"name": "e", "metadata": []}),
        ] {
            assert_kind(rt.create_environment(body).await, ErrorKind::InvalidRequest);
        }
        let env = environment(rt, "env").await;
        for body in [
            json!({}),
            json!({"agent": agent.id}),
            json!({"agent": 5, "environment_id": env.id}),
            json!({"agent": {"type": "robot", "id": agent.id}, "environment_id": env.id}),
            json!({"agent": agent.id, "environment_id": env.id, "vault_ids": [3]}),
            json!({"agent": agent.id, "environment_id": env.id, "budget": {"type": "limit"}}),
        ] {
            assert_kind(rt.create_session(body).await, ErrorKind::InvalidRequest);
        }
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let (agent, env, session) = {
            let db = sled::open(&path).expect("open");
            let rt = LocalRuntime::open(&db, LocalOptions::default()).expect("runtime");
            let agent = rt.create_agent(agent_body("a")).await.expect("agent");
            let agent = rt
                .update_agent(&agent.id, json!({"system": "s"}))
                .await
                .expect("update");
            let env = environment(&rt, "env").await;
            let session = rt
                .create_session(json!({"agent": agent.id, "environment_id": env.id}))
                .await
                .expect("session");
            db.flush().expect("flush");
            (agent, env, session)
        };
        let db = reopen(&path);
        let rt = LocalRuntime::open(&db, LocalOptions::default()).expect("runtime");
        assert_eq!(
            rt.retrieve_agent(&agent.id, None).await.expect("agent"),
            agent
        );
        assert_eq!(
            rt.retrieve_agent(&agent.id, Some(1))
                .await
                .expect("v1")
                .version,
            1
        );
        assert_eq!(rt.retrieve_environment(&env.id).await.expect("env"), env);
        assert_eq!(
            rt.retrieve_session(&session.id).await.expect("session"),
            session
        );
        // Only `local.*` trees are used.
        for name in db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            assert!(
                name.starts_with("local.") || name == "__sled__default",
                "{name}"
            );
        }
        assert!(db.is_empty());
    }

    #[tokio::test]
    async fn latency_is_applied_after_the_work() {
        let f = fixture();
        let latency = Duration::from_millis(30);
        let slow = LocalRuntime::open(
            &f.db,
            LocalOptions {
                latency,
                ..Default::default()
            },
        )
        .expect("runtime");
        let start = std::time::Instant::now();
        slow.create_environment(json!({"name": "timed"}))
            .await
            .expect("create");
        assert!(start.elapsed() >= latency);

        // Stopped while waiting for its response, the call has still happened.
        let very_slow = LocalRuntime::open(
            &f.db,
            LocalOptions {
                latency: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .expect("runtime");
        let call = very_slow.create_agent(agent_body("unreported"));
        assert!(tokio::time::timeout(Duration::ZERO, call).await.is_err());
        let agents = f.rt.list_agents(&ListQuery::default()).await.expect("list");
        assert_eq!(agents.data.len(), 1);
        assert_eq!(agents.data[0].name, "unreported");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_updates_make_distinct_versions() {
        let f = fixture();
        let rt: Arc<dyn Runtime> = Arc::new(f.rt);
        let agent = rt.create_agent(agent_body("a")).await.expect("create");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let rt = Arc::clone(&rt);
                let id = agent.id.clone();
                tokio::spawn(async move {
                    rt.update_agent(&id, json!({"system": format!("s{i}")}))
                        .await
                })
            })
            .collect();
        let mut versions = BTreeSet::new();
        for task in tasks {
            versions.insert(task.await.expect("join").expect("update").version);
        }
        assert_eq!(versions, (2..=17).collect());
        // Same-named environments created concurrently: exactly one wins.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let rt = Arc::clone(&rt);
                tokio::spawn(async move { rt.create_environment(json!({"name": "race"})).await })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            if task.await.expect("join").is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1);
    }
}
