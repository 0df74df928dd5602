//! The plan: for every resource one action and the reasons for it, computed
//! from the manifest, the state and (with refresh) the live objects.
//!
//! This file holds the plan's types and runs the passes in order: scope
//! (targets), refresh (live reads), decide (one action per resource),
//! outputs (what each resource will expose), order (who waits for whom).
//! No side effects happen here: nothing is created, written or printed.

mod decide;
pub mod desired;
mod diff;
mod order;
mod outputs;
mod refresh;
pub mod render;
mod scope;
#[cfg(test)]
pub(crate) mod test_fixture;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

pub use desired::{desired, Desired, Outputs, SENSITIVE, UNKNOWN};

use crate::graph::Address;
use crate::manifest::Manifest;
use crate::runtime::{Providers, RuntimeError};
use crate::state::{ResourceRecord, StateError, StateStore};
use scope::Scope;

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

impl Summary {
    fn of(changes: &[Change]) -> Summary {
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
}

/// Compares `manifest` (none: destroy from the state alone) with `state` and,
/// with `options.refresh`, with the live objects of `providers`.
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
    scope::check_targets(manifest, &records, &options.targets)?;
    let scope = Scope::new(manifest, &records, options);
    let live = if options.refresh {
        refresh::refresh(&records, &scope, providers, options.parallelism.max(1)).await?
    } else {
        HashMap::new()
    };

    let mut drift = Vec::new();
    let mut changes = match (options.destroy, manifest) {
        (false, Some(m)) => decide::declared(
            &decide::Inputs {
                manifest: m,
                records: &records,
                intents: &intents,
                live: &live,
                scope: &scope,
            },
            &mut drift,
        )?,
        _ => Vec::new(),
    };
    let declared = manifest.filter(|_| !options.destroy);
    changes.extend(decide::removed(
        declared,
        &records,
        &scope,
        &live,
        options.destroy,
    ));
    order::order(&mut changes, declared, &records);
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    let summary = Summary::of(&changes);
    Ok(Plan {
        format_version: 1,
        destroy: options.destroy,
        refreshed: options.refresh,
        changes,
        drift,
        summary,
    })
}
