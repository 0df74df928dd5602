//! The plan: for every resource one action and the reasons for it, computed
//! from the manifest, the state and (with refresh) the live objects. No side
//! effects happen here.

pub mod desired;
pub mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

pub use desired::{desired, Desired, Outputs, SENSITIVE, UNKNOWN};

use crate::graph::{Address, Kind};
use crate::manifest::Manifest;
use crate::runtime::{list_all, Providers, RuntimeError};
use crate::state::{ResourceRecord, StateError, StateStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Archive,
    Delete,
    NoOp,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Archive | Action::Delete => "-",
            Action::NoOp => " ",
        }
    }
}

/// Why a resource gets its action; each reason carries what it compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Declared but not in the state.
    NotInState,
    /// A create was interrupted; an object tagged with this address is adopted if found.
    InterruptedCreate {
        started_at: String,
    },
    /// These attributes of the desired configuration changed.
    ConfigChanged {
        attributes: Vec<String>,
    },
    /// A value depends on an output that changes in this apply.
    DependsOnPending {
        references: Vec<String>,
    },
    /// The session's agent version or environment changes.
    TargetChanged {
        attributes: Vec<String>,
    },
    ProviderChanged {
        from: String,
        to: String,
    },
    /// The object was deleted or archived outside agentform.
    Vanished {
        detail: String,
    },
    /// The object was modified outside agentform.
    Drifted {
        detail: String,
    },
    /// In the state but no longer in the manifest.
    RemovedFromManifest,
    DestroyRequested,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NotInState => f.write_str("not in the state yet"),
            Reason::InterruptedCreate { started_at } => write!(
                f,
                "an apply was interrupted while creating it ({started_at}); an object tagged with its address is adopted if it exists"
            ),
            Reason::ConfigChanged { attributes } => write!(f, "configuration changed: {}", attributes.join(", ")),
            Reason::DependsOnPending { references } => {
                write!(f, "uses {}, known after apply", references.join(", "))
            }
            Reason::TargetChanged { attributes } => write!(f, "{} changed, which forces a new session", attributes.join(", ")),
            Reason::ProviderChanged { from, to } => write!(f, "provider changed from `{from}` to `{to}`"),
            Reason::Vanished { detail } => write!(f, "{detail} outside agentform"),
            Reason::Drifted { detail } => write!(f, "changed outside agentform: {detail}"),
            Reason::RemovedFromManifest => f.write_str("no longer in the manifest"),
            Reason::DestroyRequested => f.write_str("destroy requested"),
        }
    }
}

/// One attribute's change, by dotted path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub address: Address,
    pub provider: String,
    pub action: Action,
    pub reasons: Vec<Reason>,
    pub attributes: Vec<AttributeChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// Agents: the version now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Changes that must finish first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Address>,
    /// Agents updated because of drift: the live version to update from.
    #[serde(skip)]
    pub live_version: Option<u64>,
    #[serde(skip)]
    pub adopt: bool,
}

/// What refresh found out about a recorded object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub address: Address,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub format_version: u32,
    pub destroy: bool,
    pub refreshed: bool,
    pub changes: Vec<Change>,
    pub drift: Vec<Drift>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    pub archive: usize,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    pub fn pending(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.action != Action::NoOp)
    }
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub refresh: bool,
    pub destroy: bool,
    /// Limit the plan to these addresses: with their dependencies when applying,
    /// with their dependents when destroying.
    pub targets: Vec<Address>,
    pub parallelism: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Desired(#[from] desired::DesiredError),
    #[error("refreshing `{address}` failed: {source}")]
    Refresh {
        address: Address,
        #[source]
        source: RuntimeError,
    },
    #[error("target `{0}` is neither in the manifest nor in the state")]
    UnknownTarget(Address),
    #[error("{session} pins {agent} version {pinned}, but {agent} will be at version {latest}\nhint: pin a version from 1 to {latest}, or name the agent alone for its latest version")]
    PinnedVersionMissing {
        session: Address,
        agent: Address,
        pinned: u64,
        latest: u64,
    },
}

/// What the live object looks like, for the fields that tell drift.
#[derive(Debug, Clone, PartialEq)]
enum Live {
    Present {
        version: Option<u64>,
        updated_at: String,
    },
    Gone {
        detail: String,
    },
}

impl Live {
    fn of(archived_at: &Option<String>, version: Option<u64>, updated_at: String) -> Live {
        match archived_at {
            Some(_) => Live::Gone {
                detail: "archived".into(),
            },
            None => Live::Present {
                version,
                updated_at,
            },
        }
    }
}

pub async fn plan(
    manifest: Option<&Manifest>,
    state: &StateStore,
    providers: &Providers,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let records: BTreeMap<Address, ResourceRecord> = state
        .list()?
        .into_iter()
        .map(|r| (r.address.clone(), r))
        .collect();
    let intents: HashMap<Address, String> = state
        .intents()?
        .into_iter()
        .map(|i| (i.address, i.started_at))
        .collect();

    for t in &options.targets {
        let declared = manifest.is_some_and(|m| m.resource(t).is_some());
        if !declared && !records.contains_key(t) {
            return Err(PlanError::UnknownTarget(t.clone()));
        }
    }
    let scope = Scope::new(manifest, &records, options);

    let live = if options.refresh {
        refresh(&records, &scope, providers, options.parallelism.max(1)).await?
    } else {
        HashMap::new()
    };
    let mut drift = Vec::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut planned: HashMap<Address, Outputs> = HashMap::new();
    // The newest version each agent will have after this apply.
    let mut latest: HashMap<Address, u64> = HashMap::new();

    if let (false, Some(m)) = (options.destroy, manifest) {
        for addr in m.graph.topological() {
            let Some(resource) = m.resource(&addr) else {
                continue;
            };
            let record = records.get(&addr);
            if !scope.contains(&addr) {
                if let Some(r) = record {
                    planned.insert(addr.clone(), Outputs::from_record(r));
                }
                continue;
            }
            if let Some(t) = &resource.session {
                if let (Some(pinned), Some(&newest)) = (t.version, latest.get(&t.agent)) {
                    if pinned > newest {
                        return Err(PlanError::PinnedVersionMissing {
                            session: addr.clone(),
                            agent: t.agent.clone(),
                            pinned,
                            latest: newest,
                        });
                    }
                }
            }
            let lookup = |a: &Address| planned.get(a).cloned();
            let want = desired(resource, &m.templater, &lookup)?;
            let live_state = live.get(&addr);
            if let Some(Live::Gone { detail }) = live_state {
                drift.push(Drift {
                    address: addr.clone(),
                    detail: format!("{detail} outside agentform"),
                });
            }
            let change = decide(
                resource.provider.as_str(),
                &addr,
                record,
                &want,
                live_state,
                intents.get(&addr),
                &mut drift,
                m,
            );
            if addr.kind == Kind::Agent {
                let now = if change.remote_id.is_some() {
                    change.live_version.or(change.version)
                } else {
                    None
                };
                let next = match (change.action, now) {
                    (Action::Update, Some(v)) => v + 1,
                    (Action::NoOp, Some(v)) => v,
                    _ => 1,
                };
                latest.insert(addr.clone(), next);
            }
            planned.insert(addr.clone(), planned_outputs(&change, record, &want));
            changes.push(change);
        }
    }

    for (addr, record) in &records {
        let declared = !options.destroy && manifest.is_some_and(|m| m.resource(addr).is_some());
        if declared || !scope.contains(addr) {
            continue;
        }
        let action = if addr.kind == Kind::Agent {
            Action::Archive
        } else {
            Action::Delete
        };
        let mut reasons = vec![if options.destroy {
            Reason::DestroyRequested
        } else {
            Reason::RemovedFromManifest
        }];
        if let Some(Live::Gone { detail }) = live.get(addr) {
            reasons.push(Reason::Vanished {
                detail: detail.clone(),
            });
        }
        changes.push(Change {
            address: addr.clone(),
            provider: record.provider.clone(),
            action,
            reasons,
            attributes: Vec::new(),
            remote_id: Some(record.remote_id.clone()),
            version: record.version,
            after: Vec::new(),
            live_version: None,
            adopt: false,
        });
    }

    order(
        &mut changes,
        manifest.filter(|_| !options.destroy),
        &records,
    );
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    let summary = summarize(&changes);
    Ok(Plan {
        format_version: 1,
        destroy: options.destroy,
        refreshed: options.refresh,
        changes,
        drift,
        summary,
    })
}

#[allow(clippy::too_many_arguments)]
fn decide(
    provider: &str,
    addr: &Address,
    record: Option<&ResourceRecord>,
    want: &Desired,
    live: Option<&Live>,
    intent: Option<&String>,
    drift: &mut Vec<Drift>,
    manifest: &Manifest,
) -> Change {
    let mut change = Change {
        address: addr.clone(),
        provider: provider.to_string(),
        action: Action::NoOp,
        reasons: Vec::new(),
        attributes: Vec::new(),
        remote_id: record.map(|r| r.remote_id.clone()),
        version: record.and_then(|r| r.version),
        after: Vec::new(),
        live_version: None,
        adopt: false,
    };
    let Some(record) = record else {
        change.action = Action::Create;
        if let Some(started_at) = intent {
            change.adopt = true;
            change.reasons.push(Reason::InterruptedCreate {
                started_at: started_at.clone(),
            });
        } else {
            change.reasons.push(Reason::NotInState);
        }
        change.attributes = diff(None, want, &BTreeMap::new());
        return change;
    };
    let create_again = |change: &mut Change, reason: Reason| {
        change.action = if addr.kind == Kind::Agent || addr.kind == Kind::Environment {
            Action::Create
        } else {
            Action::Replace
        };
        change.reasons.push(reason);
        change.attributes = diff(None, want, &BTreeMap::new());
    };
    if record.provider != provider {
        create_again(
            &mut change,
            Reason::ProviderChanged {
                from: record.provider.clone(),
                to: provider.to_string(),
            },
        );
        change.action = Action::Replace;
        return change;
    }
    if let Some(Live::Gone { detail }) = live {
        create_again(
            &mut change,
            Reason::Vanished {
                detail: detail.clone(),
            },
        );
        if addr.kind != Kind::Session {
            change.remote_id = None;
        }
        return change;
    }

    change.attributes = diff(Some(record), want, &record.sensitive);
    let changed: Vec<String> = change.attributes.iter().map(|a| a.path.clone()).collect();
    let digest_differs = want.digest().as_deref() != Some(record.digest.as_str());

    if let Some(Live::Present {
        version,
        updated_at,
    }) = live
    {
        let moved = match addr.kind {
            Kind::Agent => *version != record.version,
            // A session's `updated_at` moves with every event it runs.
            Kind::Session => false,
            Kind::Environment => record
                .remote_updated_at
                .as_deref()
                .is_some_and(|u| u != updated_at),
        };
        if moved {
            let detail = match (addr.kind, version, record.version) {
                (Kind::Agent, Some(now), Some(was)) => format!("version moved from {was} to {now}"),
                _ => format!("updated at {updated_at}"),
            };
            drift.push(Drift {
                address: addr.clone(),
                detail: detail.clone(),
            });
            change.reasons.push(Reason::Drifted { detail });
            change.live_version = *version;
            change.action = Action::Update;
        }
    }

    if digest_differs {
        if !want.is_known() {
            let refs = pending_references(addr, want, manifest);
            change
                .reasons
                .push(Reason::DependsOnPending { references: refs });
        } else if !changed.is_empty() {
            change.reasons.push(Reason::ConfigChanged {
                attributes: changed.clone(),
            });
        } else {
            change.reasons.push(Reason::ConfigChanged {
                attributes: vec!["(unrecorded fields)".into()],
            });
        }
        change.action = Action::Update;
        if addr.kind == Kind::Session {
            let target_attrs: Vec<String> = changed
                .iter()
                .filter(|p| {
                    p.starts_with("agent.")
                        || p.as_str() == "environment_id"
                        || desired::SESSION_REPLACE_FIELDS.iter().any(|k| {
                            p.strip_prefix(k)
                                .is_some_and(|r| r.is_empty() || r.starts_with(['.', '[']))
                        })
                })
                .cloned()
                .collect();
            if !target_attrs.is_empty()
                || want
                    .unknown
                    .iter()
                    .any(|p| p.starts_with("/agent") || p == "/environment_id")
            {
                change.action = Action::Replace;
                let attrs = if target_attrs.is_empty() {
                    vec!["agent".to_string()]
                } else {
                    target_attrs
                };
                change
                    .reasons
                    .retain(|r| !matches!(r, Reason::ConfigChanged { .. }));
                change
                    .reasons
                    .insert(0, Reason::TargetChanged { attributes: attrs });
            }
        }
    }
    change
}

fn pending_references(addr: &Address, want: &Desired, manifest: &Manifest) -> Vec<String> {
    let mut refs: BTreeSet<String> = BTreeSet::new();
    if let Some(r) = manifest.resource(addr) {
        for d in &r.deferred {
            if want.unknown.contains(&d.pointer) {
                refs.extend(d.references.iter().map(|x| x.to_string()));
            }
        }
        if let Some(t) = &r.session {
            for p in &want.unknown {
                match p.as_str() {
                    "/agent/id" => {
                        refs.insert(format!("{}.id", t.agent));
                    }
                    "/agent/version" => {
                        refs.insert(format!("{}.version", t.agent));
                    }
                    "/environment_id" => {
                        refs.insert(format!("{}.id", t.environment));
                    }
                    _ => {}
                }
            }
        }
    }
    refs.into_iter().collect()
}

/// The outputs a resource will have after its change, as far as known now.
fn planned_outputs(change: &Change, record: Option<&ResourceRecord>, want: &Desired) -> Outputs {
    let name = want
        .config
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| *n != UNKNOWN)
        .map(String::from);
    match change.action {
        Action::NoOp => record.map(Outputs::from_record).unwrap_or_default(),
        Action::Update => Outputs {
            id: record.map(|r| r.remote_id.clone()),
            version: None,
            name,
        }
        .with_version_if(change.address.kind != Kind::Agent, record),
        _ => Outputs {
            id: None,
            version: if change.address.kind == Kind::Agent && !change.adopt {
                Some(1)
            } else {
                None
            },
            name,
        },
    }
}

impl Outputs {
    fn with_version_if(mut self, keep: bool, record: Option<&ResourceRecord>) -> Self {
        if keep {
            self.version = record.and_then(|r| r.version);
        }
        self
    }
}

/// Attribute-level differences between the recorded and the desired configuration.
fn diff(
    record: Option<&ResourceRecord>,
    want: &Desired,
    old_sensitive: &BTreeMap<String, String>,
) -> Vec<AttributeChange> {
    let mut old_leaves = BTreeMap::new();
    if let Some(r) = record {
        flatten(&r.config, String::new(), &mut old_leaves);
    }
    let mut new_leaves = BTreeMap::new();
    flatten(&want.config, String::new(), &mut new_leaves);
    let unknown: BTreeSet<String> = want.unknown.iter().map(|p| pointer_to_path(p)).collect();
    let sensitive_new: BTreeMap<String, &String> = want
        .sensitive
        .iter()
        .map(|(p, h)| (pointer_to_path(p), h))
        .collect();
    let sensitive_old: BTreeMap<String, &String> = old_sensitive
        .iter()
        .map(|(p, h)| (pointer_to_path(p), h))
        .collect();

    let keys: BTreeSet<&String> = old_leaves.keys().chain(new_leaves.keys()).collect();
    let mut out = Vec::new();
    for key in keys {
        let old = old_leaves.get(key).cloned();
        let new = new_leaves.get(key).cloned();
        let is_unknown = unknown.contains(key);
        let is_sensitive = sensitive_new.contains_key(key) || sensitive_old.contains_key(key);
        let same = if is_unknown {
            false
        } else if is_sensitive {
            record.is_some()
                && sensitive_new.get(key) == sensitive_old.get(key)
                && old.is_some() == new.is_some()
        } else {
            old == new
        };
        if same {
            continue;
        }
        out.push(AttributeChange {
            path: key.clone(),
            old: if is_sensitive {
                old.map(|_| Value::String(SENSITIVE.into()))
            } else {
                old
            },
            new: if is_unknown {
                None
            } else if is_sensitive {
                new.map(|_| Value::String(SENSITIVE.into()))
            } else {
                new
            },
            sensitive: is_sensitive,
            unknown: is_unknown,
        });
    }
    out
}

fn flatten(v: &Value, prefix: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, p, out);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().any(|i| i.is_object()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(v, format!("{prefix}[{i}]"), out);
            }
        }
        _ => {
            out.insert(prefix, v.clone());
        }
    }
}

fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() && !out.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// Which addresses the plan covers.
struct Scope {
    only: Option<BTreeSet<Address>>,
}

impl Scope {
    fn new(
        manifest: Option<&Manifest>,
        records: &BTreeMap<Address, ResourceRecord>,
        options: &PlanOptions,
    ) -> Self {
        if options.targets.is_empty() {
            return Scope { only: None };
        }
        let mut set: BTreeSet<Address> = BTreeSet::new();
        let mut stack: Vec<Address> = options.targets.clone();
        while let Some(a) = stack.pop() {
            if !set.insert(a.clone()) {
                continue;
            }
            if options.destroy {
                // Everything that depends on a destroyed resource goes first.
                for r in records.values() {
                    if r.depends_on.contains(&a) {
                        stack.push(r.address.clone());
                    }
                }
                if let Some(m) = manifest {
                    stack.extend(m.graph.dependents(&a));
                }
            } else if let Some(m) = manifest {
                stack.extend(m.graph.dependencies(&a));
            }
        }
        if options.destroy {
            set.retain(|a| records.contains_key(a));
        }
        Scope { only: Some(set) }
    }

    fn contains(&self, a: &Address) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(a))
    }
}

/// Fills in `after`: creates and updates wait for their dependencies' changes;
/// deletions wait for every change of whatever depended on what they delete.
fn order(
    changes: &mut [Change],
    manifest: Option<&Manifest>,
    records: &BTreeMap<Address, ResourceRecord>,
) {
    let pending: HashMap<Address, Action> = changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| (c.address.clone(), c.action))
        .collect();
    let removed_env_names: Vec<(Address, String)> = changes
        .iter()
        .filter(|c| c.action == Action::Delete && c.address.kind == Kind::Environment)
        .filter_map(|c| {
            let name = records
                .get(&c.address)?
                .config
                .get("name")?
                .as_str()?
                .to_string();
            Some((c.address.clone(), name))
        })
        .collect();
    for change in changes.iter_mut() {
        if change.action == Action::NoOp {
            continue;
        }
        let mut after: BTreeSet<Address> = BTreeSet::new();
        match change.action {
            Action::Archive | Action::Delete => {
                for r in records.values() {
                    if r.depends_on.contains(&change.address) && pending.contains_key(&r.address) {
                        after.insert(r.address.clone());
                    }
                }
            }
            _ => {
                if let Some(m) = manifest {
                    if let Some(res) = m.resource(&change.address) {
                        for d in &res.depends_on {
                            if matches!(
                                pending.get(d),
                                Some(Action::Create | Action::Update | Action::Replace)
                            ) {
                                after.insert(d.clone());
                            }
                        }
                        if change.action == Action::Create
                            && change.address.kind == Kind::Environment
                        {
                            let name = res.body.get("name").and_then(Value::as_str);
                            for (a, n) in &removed_env_names {
                                if Some(n.as_str()) == name {
                                    after.insert(a.clone());
                                }
                            }
                        }
                    }
                }
                // A replaced session's old self must go before a dependency it
                // used is deleted; that edge is added from the other side above.
            }
        }
        after.remove(&change.address);
        change.after = after.into_iter().collect();
    }
}

fn summarize(changes: &[Change]) -> Summary {
    let mut s = Summary::default();
    for c in changes {
        match c.action {
            Action::Create => s.add += 1,
            Action::Update => s.change += 1,
            Action::Replace => {
                s.add += 1;
                s.destroy += 1
            }
            Action::Delete => s.destroy += 1,
            Action::Archive => s.archive += 1,
            Action::NoOp => {}
        }
    }
    s
}

async fn refresh(
    records: &BTreeMap<Address, ResourceRecord>,
    scope: &Scope,
    providers: &Providers,
    parallelism: usize,
) -> Result<HashMap<Address, Live>, PlanError> {
    let in_scope: Vec<&ResourceRecord> = records
        .values()
        .filter(|r| scope.contains(&r.address))
        .collect();
    let listed = list_live(&in_scope, providers).await?;
    let mut out = HashMap::new();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(parallelism));
    let mut tasks = tokio::task::JoinSet::new();
    for r in in_scope {
        // Listed: done. Missing from a list: read it, to tell deleted from not yet listed.
        if let Some(live) = listed.get(&r.address) {
            out.insert(r.address.clone(), live.clone());
            continue;
        }
        let runtime = providers
            .get(&r.provider)
            .map_err(|source| PlanError::Refresh {
                address: r.address.clone(),
                source,
            })?;
        let sem = semaphore.clone();
        let addr = r.address.clone();
        let id = r.remote_id.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let live = match addr.kind {
                Kind::Agent => runtime
                    .retrieve_agent(&id, None)
                    .await
                    .map(|a| Live::of(&a.archived_at, Some(a.version), a.updated_at)),
                Kind::Environment => runtime
                    .retrieve_environment(&id)
                    .await
                    .map(|e| Live::of(&e.archived_at, None, e.updated_at)),
                Kind::Session => runtime
                    .retrieve_session(&id)
                    .await
                    .map(|s| Live::of(&s.archived_at, None, s.updated_at)),
            };
            let live = match live {
                Err(e) if e.is_not_found() => Ok(Live::Gone {
                    detail: "deleted".into(),
                }),
                other => other,
            };
            (addr, live)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((addr, live)) = joined else { continue };
        match live {
            Ok(l) => {
                out.insert(addr, l);
            }
            Err(source) => {
                return Err(PlanError::Refresh {
                    address: addr,
                    source,
                })
            }
        }
    }
    Ok(out)
}

/// From this many records of one kind on one provider, refresh lists them
/// (100 a page) instead of reading each: a plan of hundreds of resources
/// stays a few calls under the API's rate limits.
const LIST_REFRESH_MIN: usize = 16;

/// The live objects of the kinds with many records, by address.
async fn list_live(
    records: &[&ResourceRecord],
    providers: &Providers,
) -> Result<HashMap<Address, Live>, PlanError> {
    let mut groups: BTreeMap<(&str, Kind), HashMap<&str, &Address>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.provider.as_str(), r.address.kind))
            .or_default()
            .insert(r.remote_id.as_str(), &r.address);
    }
    let mut out = HashMap::new();
    for ((provider, kind), by_id) in groups {
        let Some(&first) = by_id.values().next() else {
            continue;
        };
        if by_id.len() < LIST_REFRESH_MIN {
            continue;
        }
        let failed = |source| PlanError::Refresh {
            address: first.clone(),
            source,
        };
        let runtime = providers.get(provider).map_err(failed)?;
        let rt = runtime.as_ref();
        let found: Vec<(String, Live)> = match kind {
            Kind::Agent => list_all(|q| async move { rt.list_agents(&q).await })
                .await
                .map_err(failed)?
                .into_iter()
                .map(|a| {
                    (
                        a.id,
                        Live::of(&a.archived_at, Some(a.version), a.updated_at),
                    )
                })
                .collect(),
            Kind::Environment => list_all(|q| async move { rt.list_environments(&q).await })
                .await
                .map_err(failed)?
                .into_iter()
                .map(|e| (e.id, Live::of(&e.archived_at, None, e.updated_at)))
                .collect(),
            Kind::Session => list_all(|q| async move { rt.list_sessions(&q).await })
                .await
                .map_err(failed)?
                .into_iter()
                .map(|s| (s.id, Live::of(&s.archived_at, None, s.updated_at)))
                .collect(),
        };
        for (id, live) in found {
            if let Some(address) = by_id.get(id.as_str()) {
                out.insert((*address).clone(), live);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(pointer_to_path("/metadata/team"), "metadata.team");
        assert_eq!(pointer_to_path("/tools/0/name"), "tools[0].name");
    }
}
