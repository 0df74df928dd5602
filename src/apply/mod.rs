//! Walks a plan: every pending change in dependency order with bounded
//! parallelism, the state written after every single remote action.
//!
//! A failed change stops its dependents; independent changes still finish.
//! Creates are preceded by an intent record, so an object created just before a
//! crash is found by its metadata and adopted instead of created twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::graph::{Address, Kind};
use crate::manifest::Manifest;
use crate::plan::desired::{session_create_body, Desired};
use crate::plan::{desired, Action, Change, Outputs, Plan};
use crate::runtime::{list_all, ErrorKind, Providers, Runtime, RuntimeError};
use crate::state::{now, HistoryEntry, Intent, ResourceRecord, StateError, StateStore};

/// Test hook: abort the process right after the remote create of this address
/// returns and before its record is written, to exercise adoption.
pub const CRASH_AFTER_CREATE_ENV: &str = "AGENTFORM_TEST_CRASH_AFTER_CREATE";

/// Progress of an apply, reported as it happens. Implemented by the CLI.
pub trait Reporter: Send + Sync {
    fn started(&self, _change: &Change) {}
    fn finished(&self, _change: &Change, _outcome: &Outcome, _elapsed: Duration) {}
}

/// Reports nothing.
pub struct Silent;
impl Reporter for Silent {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the text says what happened (e.g. "created agent_… (version 1)").
    Done(String),
    Failed(String),
    /// Not attempted because a change it waits for failed.
    Skipped {
        because: Address,
    },
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub results: Vec<(Address, Action, Outcome)>,
}

impl ApplyReport {
    pub fn failed(&self) -> impl Iterator<Item = &(Address, Action, Outcome)> {
        self.results
            .iter()
            .filter(|(_, _, o)| !matches!(o, Outcome::Done(_)))
    }

    pub fn ok(&self) -> bool {
        self.failed().next().is_none()
    }

    pub fn count(&self, action: Action) -> usize {
        self.results
            .iter()
            .filter(|(_, a, o)| *a == action && matches!(o, Outcome::Done(_)))
            .count()
    }
}

#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error("{0}")]
    Remote(#[from] RuntimeError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Other(String),
}

pub struct Context {
    pub manifest: Option<Arc<Manifest>>,
    pub state: Arc<StateStore>,
    pub providers: Providers,
    pub parallelism: usize,
    pub reporter: Arc<dyn Reporter>,
}

pub async fn apply(plan: &Plan, ctx: Context) -> ApplyReport {
    let ctx = Arc::new(ctx);
    let changes: Vec<Change> = plan.pending().cloned().collect();
    let index: HashMap<Address, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.address.clone(), i))
        .collect();
    let mut waiting: Vec<usize> = vec![0; changes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    for (i, c) in changes.iter().enumerate() {
        for a in &c.after {
            if let Some(&j) = index.get(a) {
                waiting[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..changes.len()).filter(|i| waiting[*i] == 0).collect();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; changes.len()];
    let mut running = tokio::task::JoinSet::new();
    let parallelism = ctx.parallelism.max(1);

    loop {
        while running.len() < parallelism {
            let Some(i) = ready.pop_front() else { break };
            let change = changes[i].clone();
            let ctx = ctx.clone();
            running.spawn(async move {
                ctx.reporter.started(&change);
                let start = Instant::now();
                let outcome = match execute(&change, &ctx).await {
                    Ok(done) => Outcome::Done(done),
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                ctx.reporter.finished(&change, &outcome, start.elapsed());
                (i, outcome)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, outcome) = match joined {
            Ok(r) => r,
            Err(e) => {
                // A panicking task is a bug; nothing else can be attributed.
                tracing::error!("apply task failed: {e}");
                continue;
            }
        };
        let ok = matches!(outcome, Outcome::Done(_));
        outcomes[i] = Some(outcome);
        if ok {
            for &d in &dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 && outcomes[d].is_none() {
                    ready.push_back(d);
                }
            }
        } else {
            let mut stack = dependents[i].clone();
            let mut seen = HashSet::new();
            while let Some(d) = stack.pop() {
                if !seen.insert(d) || outcomes[d].is_some() {
                    continue;
                }
                let o = Outcome::Skipped {
                    because: changes[i].address.clone(),
                };
                ctx.reporter.finished(&changes[d], &o, Duration::ZERO);
                outcomes[d] = Some(o);
                stack.extend(dependents[d].iter().copied());
            }
        }
    }
    let results = changes
        .iter()
        .zip(outcomes)
        .map(|(c, o)| {
            let o = o.unwrap_or_else(|| Outcome::Failed("not attempted".into()));
            (c.address.clone(), c.action, o)
        })
        .collect();
    ApplyReport { results }
}

async fn execute(change: &Change, ctx: &Context) -> Result<String, ExecError> {
    let runtime = ctx.providers.get(&change.provider)?;
    let record = ctx.state.get(&change.address)?;
    match change.action {
        Action::NoOp => Ok("unchanged".into()),
        Action::Archive | Action::Delete => {
            let record = record.ok_or_else(|| ExecError::Other("not in the state".into()))?;
            let runtime = ctx.providers.get(&record.provider)?;
            let gone = destroy_remote(runtime.as_ref(), &record).await?;
            ctx.state.remove(&change.address)?;
            Ok(match (change.action, gone) {
                (_, true) => format!(
                    "{} was already gone; removed from the state",
                    record.remote_id
                ),
                (Action::Archive, _) => format!("archived {}", record.remote_id),
                _ => format!("deleted {}", record.remote_id),
            })
        }
        Action::Create => create(change, ctx, runtime.as_ref(), record).await,
        Action::Replace => {
            if let Some(old) = &record {
                let old_runtime = ctx.providers.get(&old.provider)?;
                destroy_remote(old_runtime.as_ref(), old).await?;
                ctx.state.remove(&change.address)?;
            }
            let done = create(change, ctx, runtime.as_ref(), None).await?;
            Ok(format!("replaced: {done}"))
        }
        Action::Update => {
            let record = record.ok_or_else(|| ExecError::Other("not in the state".into()))?;
            update(change, ctx, runtime.as_ref(), record).await
        }
    }
}

fn manifest(ctx: &Context) -> Result<&Manifest, ExecError> {
    ctx.manifest
        .as_deref()
        .ok_or_else(|| ExecError::Other("no manifest loaded".into()))
}

/// The desired configuration now that every dependency has been applied.
fn resolve(change: &Change, ctx: &Context) -> Result<Desired, ExecError> {
    let m = manifest(ctx)?;
    let resource = m
        .resource(&change.address)
        .ok_or_else(|| ExecError::Other("not in the manifest".into()))?;
    let lookup = |a: &Address| -> Option<Outputs> {
        ctx.state
            .get(a)
            .ok()
            .flatten()
            .map(|r| Outputs::from_record(&r))
    };
    let want = desired(resource, &m.templater, &lookup).map_err(|e| ExecError::Other(e.message))?;
    if !want.is_known() {
        return Err(ExecError::Other(format!(
            "values still unknown after their dependencies were applied: {}",
            want.unknown.join(", ")
        )));
    }
    Ok(want)
}

fn tagged_metadata(config: &Value, address: &Address, project: &str) -> Value {
    let mut meta = config
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    meta.insert(META_ADDRESS.into(), Value::String(address.to_string()));
    meta.insert(META_MANIFEST.into(), Value::String(project.to_string()));
    Value::Object(meta)
}

async fn create(
    change: &Change,
    ctx: &Context,
    runtime: &dyn Runtime,
    _record: Option<ResourceRecord>,
) -> Result<String, ExecError> {
    let m = manifest(ctx)?;
    let want = resolve(change, ctx)?;
    let addr = &change.address;
    let metadata = tagged_metadata(&want.config, addr, &m.project);

    if change.adopt || ctx.state.intent(addr)?.is_some() {
        if let Some(found) = find_tagged(runtime, addr, &m.project).await? {
            let mut record = new_record(change, &want, m, found, runtime);
            let id = record.remote_id.clone();
            record.history.push(HistoryEntry {
                at: now(),
                action: "adopt".into(),
                version: record.version,
                digest: record.digest.clone(),
            });
            ctx.state.put(&record)?;
            // The adopted object may predate an edit of the manifest.
            let again = update(change, ctx, runtime, record).await?;
            return Ok(format!("adopted {id} after an interrupted create; {again}"));
        }
    }

    ctx.state.put_intent(&Intent {
        address: addr.clone(),
        provider: runtime.name().to_string(),
        started_at: now(),
        pid: std::process::id(),
    })?;
    let created = match addr.kind {
        Kind::Agent => {
            let mut body = want.config.clone();
            body["metadata"] = metadata;
            let a = runtime.create_agent(body).await?;
            Created {
                id: a.id,
                version: Some(a.version),
                updated_at: a.updated_at,
            }
        }
        Kind::Environment => {
            let mut body = want.config.clone();
            body["metadata"] = metadata;
            let e = runtime.create_environment(body).await?;
            Created {
                id: e.id,
                version: None,
                updated_at: e.updated_at,
            }
        }
        Kind::Session => {
            let mut body = session_create_body(&want.config);
            body["metadata"] = metadata;
            let s = runtime.create_session(body).await?;
            Created {
                id: s.id,
                version: None,
                updated_at: s.updated_at,
            }
        }
    };
    if std::env::var(CRASH_AFTER_CREATE_ENV).is_ok_and(|v| v == addr.to_string()) {
        std::process::abort();
    }
    let mut record = new_record(change, &want, m, created, runtime);
    record.history.push(HistoryEntry {
        at: record.created_at.clone(),
        action: "create".into(),
        version: record.version,
        digest: record.digest.clone(),
    });
    ctx.state.put(&record)?;
    Ok(match record.version {
        Some(v) => format!("created {} (version {v})", record.remote_id),
        None => format!("created {}", record.remote_id),
    })
}

struct Created {
    id: String,
    version: Option<u64>,
    updated_at: String,
}

fn new_record(
    change: &Change,
    want: &Desired,
    m: &Manifest,
    created: Created,
    runtime: &dyn Runtime,
) -> ResourceRecord {
    let resource = m.resource(&change.address);
    let mut record = ResourceRecord {
        address: change.address.clone(),
        provider: change.provider.clone(),
        remote_id: created.id,
        version: created.version,
        digest: want.digest().unwrap_or_default(),
        config: want.stored_config(),
        sensitive: want.sensitive.clone(),
        outputs: BTreeMap::new(),
        depends_on: resource.map(|r| r.depends_on.clone()).unwrap_or_default(),
        remote_updated_at: Some(created.updated_at),
        endpoint: runtime.endpoint(),
        created_at: now(),
        updated_at: now(),
        history: Vec::new(),
    };
    record.outputs = Outputs::from_record(&record).to_map();
    record
}

/// Finds a live object this project created for `addr`, by its metadata.
async fn find_tagged(
    runtime: &dyn Runtime,
    addr: &Address,
    project: &str,
) -> Result<Option<Created>, ExecError> {
    let tagged = |meta: &BTreeMap<String, String>| {
        meta.get(META_ADDRESS).map(String::as_str) == Some(addr.to_string().as_str())
            && meta.get(META_MANIFEST).map(String::as_str) == Some(project)
    };
    Ok(match addr.kind {
        Kind::Agent => list_all(|q| async move { runtime.list_agents(&q).await })
            .await?
            .into_iter()
            .find(|a| a.archived_at.is_none() && tagged(&a.metadata))
            .map(|a| Created {
                id: a.id,
                version: Some(a.version),
                updated_at: a.updated_at,
            }),
        Kind::Environment => list_all(|q| async move { runtime.list_environments(&q).await })
            .await?
            .into_iter()
            .find(|e| e.archived_at.is_none() && tagged(&e.metadata))
            .map(|e| Created {
                id: e.id,
                version: None,
                updated_at: e.updated_at,
            }),
        Kind::Session => list_all(|q| async move { runtime.list_sessions(&q).await })
            .await?
            .into_iter()
            .find(|s| s.archived_at.is_none() && tagged(&s.metadata))
            .map(|s| Created {
                id: s.id,
                version: None,
                updated_at: s.updated_at,
            }),
    })
}

/// The update body: the desired configuration, with `null` for every field
/// that was set before and is gone now (the API keeps omitted fields).
fn update_body(old: &Value, new: &Value, metadata: Value) -> Value {
    let mut body = new.clone();
    if let (Some(old), Some(obj)) = (old.as_object(), body.as_object_mut()) {
        for key in old.keys() {
            if !obj.contains_key(key) && key != "metadata" {
                obj.insert(key.clone(), Value::Null);
            }
        }
    }
    let mut meta = metadata;
    if let (Some(old_meta), Some(m)) = (
        old.get("metadata").and_then(Value::as_object),
        meta.as_object_mut(),
    ) {
        for key in old_meta.keys() {
            if !m.contains_key(key) {
                m.insert(key.clone(), Value::Null);
            }
        }
    }
    body["metadata"] = meta;
    body
}

async fn update(
    change: &Change,
    ctx: &Context,
    runtime: &dyn Runtime,
    mut record: ResourceRecord,
) -> Result<String, ExecError> {
    let m = manifest(ctx)?;
    let want = resolve(change, ctx)?;
    let digest = want.digest().unwrap_or_default();
    if digest == record.digest
        && change.live_version.is_none()
        && record.history.last().is_some_and(|h| h.action != "adopt")
    {
        return Ok(format!("{} unchanged after all", record.remote_id));
    }
    let metadata = tagged_metadata(&want.config, &change.address, &m.project);
    let id = record.remote_id.clone();
    let (version, updated_at) = match change.address.kind {
        Kind::Agent => {
            let mut body = update_body(&record.config, &want.config, metadata);
            if let Some(v) = change.live_version.or(record.version) {
                body["version"] = json!(v);
            }
            let a = runtime.update_agent(&id, body).await.map_err(|e| match e.kind {
                ErrorKind::Conflict => ExecError::Other(format!(
                    "{e}; the agent changed outside agentform since the last refresh: run `agentform plan --refresh`"
                )),
                _ => e.into(),
            })?;
            (Some(a.version), a.updated_at)
        }
        Kind::Environment => {
            let e = runtime
                .update_environment(&id, update_body(&record.config, &want.config, metadata))
                .await?;
            (None, e.updated_at)
        }
        Kind::Session => {
            // Only title and metadata change in place; the rest forces a replace.
            let view = |c: &Value| {
                let mut v = json!({});
                for key in ["title", "metadata"] {
                    if let Some(x) = c.get(key) {
                        v[key] = x.clone();
                    }
                }
                v
            };
            let body = update_body(&view(&record.config), &view(&want.config), metadata);
            let s = runtime.update_session(&id, body).await?;
            (None, s.updated_at)
        }
    };
    let previous = record.version;
    record.version = version.or(record.version);
    record.digest = digest;
    record.config = want.stored_config();
    record.sensitive = want.sensitive.clone();
    record.remote_updated_at = Some(updated_at);
    record.endpoint = runtime.endpoint();
    record.updated_at = now();
    if let Some(r) = m.resource(&change.address) {
        record.depends_on = r.depends_on.clone();
    }
    record.outputs = Outputs::from_record(&record).to_map();
    record.history.push(HistoryEntry {
        at: record.updated_at.clone(),
        action: "update".into(),
        version: record.version,
        digest: record.digest.clone(),
    });
    ctx.state.put(&record)?;
    Ok(match (previous, record.version) {
        (Some(a), Some(b)) if a != b => format!("updated {id}: version {a} → {b}"),
        _ => format!("updated {id}"),
    })
}

/// Archives or deletes the remote object; `true` when it was already gone.
async fn destroy_remote(runtime: &dyn Runtime, record: &ResourceRecord) -> Result<bool, ExecError> {
    let id = &record.remote_id;
    let result = match record.address.kind {
        Kind::Agent => runtime.archive_agent(id).await.map(|_| ()),
        Kind::Environment => runtime.delete_environment(id).await.map(|_| ()),
        Kind::Session => runtime.delete_session(id).await.map(|_| ()),
    };
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        // Archiving an agent that is already archived is the desired end state.
        Err(e)
            if record.address.kind == Kind::Agent
                && e.kind == ErrorKind::InvalidRequest
                && e.message.contains("archived") =>
        {
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}
