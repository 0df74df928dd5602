//! The decision per resource: create, update, replace, archive, delete or
//! nothing, with the reasons, from the desired configuration, the record and
//! (after refresh) the live object. Decides only; performs nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::diff::diff;
use super::outputs::Planned;
use super::refresh::Live;
use super::scope::Scope;
use super::{desired, Action, Change, Desired, Drift, PlanError, Reason};
use crate::graph::{Address, Kind};
use crate::manifest::{Manifest, Resource};
use crate::state::ResourceRecord;

/// What the decisions are made from.
pub(super) struct Inputs<'a> {
    pub manifest: &'a Manifest,
    pub records: &'a BTreeMap<Address, ResourceRecord>,
    /// Creates that were started and not recorded, with their start time.
    pub intents: &'a HashMap<Address, String>,
    pub live: &'a HashMap<Address, Live>,
    pub scope: &'a Scope,
}

/// One change per declared resource in scope, in dependency order, so that
/// each sees what its dependencies will output.
pub(super) fn declared(inputs: &Inputs, drift: &mut Vec<Drift>) -> Result<Vec<Change>, PlanError> {
    let m = inputs.manifest;
    let mut changes = Vec::new();
    let mut planned = Planned::default();
    for addr in m.graph.topological() {
        let Some(resource) = m.resource(&addr) else {
            continue;
        };
        let record = inputs.records.get(&addr);
        if !inputs.scope.contains(&addr) {
            if let Some(r) = record {
                planned.keep(r);
            }
            continue;
        }
        if let Some(t) = &resource.session {
            planned.check_pinned(&addr, t)?;
        }
        let lookup = |a: &Address| planned.get(a);
        let want = desired(resource, &m.templater, &lookup)?;
        let live = inputs.live.get(&addr);
        if let Some(Live::Gone { detail }) = live {
            drift.push(Drift {
                address: addr.clone(),
                detail: format!("{detail} outside agentform"),
            });
        }
        let change = Decision {
            resource,
            record,
            want: &want,
            live,
            intent: inputs.intents.get(&addr),
        }
        .decide(drift);
        planned.insert(&change, record, &want);
        changes.push(change);
    }
    Ok(changes)
}

/// Archives (agents) and deletions (the rest) of what the state records and
/// `declared` no longer declares, or of everything in scope on destroy.
pub(super) fn removed(
    declared: Option<&Manifest>,
    records: &BTreeMap<Address, ResourceRecord>,
    scope: &Scope,
    live: &HashMap<Address, Live>,
    destroy: bool,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (addr, record) in records {
        if declared.is_some_and(|m| m.resource(addr).is_some()) || !scope.contains(addr) {
            continue;
        }
        let action = if addr.kind == Kind::Agent {
            Action::Archive
        } else {
            Action::Delete
        };
        let mut reasons = vec![if destroy {
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
    changes
}

/// One declared resource and what is known about it.
struct Decision<'a> {
    resource: &'a Resource,
    record: Option<&'a ResourceRecord>,
    want: &'a Desired,
    live: Option<&'a Live>,
    intent: Option<&'a String>,
}

impl Decision<'_> {
    fn decide(&self, drift: &mut Vec<Drift>) -> Change {
        let mut change = self.unchanged();
        let Some(record) = self.record else {
            self.create(&mut change);
            return change;
        };
        if record.provider != self.resource.provider {
            self.create_again(
                &mut change,
                Reason::ProviderChanged {
                    from: record.provider.clone(),
                    to: self.resource.provider.clone(),
                },
            );
            change.action = Action::Replace;
            return change;
        }
        if let Some(Live::Gone { detail }) = self.live {
            self.create_again(
                &mut change,
                Reason::Vanished {
                    detail: detail.clone(),
                },
            );
            if self.resource.address.kind != Kind::Session {
                change.remote_id = None;
            }
            return change;
        }
        change.attributes = diff(Some(record), self.want, &record.sensitive);
        self.live_drift(&mut change, record, drift);
        if self.want.digest().as_deref() != Some(record.digest.as_str()) {
            self.config_changed(&mut change);
        }
        change
    }

    /// The change when nothing differs.
    fn unchanged(&self) -> Change {
        Change {
            address: self.resource.address.clone(),
            provider: self.resource.provider.clone(),
            action: Action::NoOp,
            reasons: Vec::new(),
            attributes: Vec::new(),
            remote_id: self.record.map(|r| r.remote_id.clone()),
            version: self.record.and_then(|r| r.version),
            after: Vec::new(),
            live_version: None,
            adopt: false,
        }
    }

    /// Not in the state: create, adopting what an interrupted create left.
    fn create(&self, change: &mut Change) {
        change.action = Action::Create;
        if let Some(started_at) = self.intent {
            change.adopt = true;
            change.reasons.push(Reason::InterruptedCreate {
                started_at: started_at.clone(),
            });
        } else {
            change.reasons.push(Reason::NotInState);
        }
        change.attributes = diff(None, self.want, &BTreeMap::new());
    }

    /// In the state, but the object must be made anew.
    fn create_again(&self, change: &mut Change, reason: Reason) {
        change.action = match self.resource.address.kind {
            Kind::Agent | Kind::Environment => Action::Create,
            Kind::Session => Action::Replace,
        };
        change.reasons.push(reason);
        change.attributes = diff(None, self.want, &BTreeMap::new());
    }

    /// An update when the live object moved since agentform wrote it.
    fn live_drift(&self, change: &mut Change, record: &ResourceRecord, drift: &mut Vec<Drift>) {
        let Some(Live::Present {
            version,
            updated_at,
        }) = self.live
        else {
            return;
        };
        let moved = match record.address.kind {
            Kind::Agent => *version != record.version,
            // A session's `updated_at` moves with every event it runs.
            Kind::Session => false,
            Kind::Environment => record
                .remote_updated_at
                .as_deref()
                .is_some_and(|u| u != updated_at),
        };
        if !moved {
            return;
        }
        let detail = match (record.address.kind, version, record.version) {
            (Kind::Agent, Some(now), Some(was)) => format!("version moved from {was} to {now}"),
            _ => format!("updated at {updated_at}"),
        };
        drift.push(Drift {
            address: record.address.clone(),
            detail: detail.clone(),
        });
        change.reasons.push(Reason::Drifted { detail });
        change.live_version = *version;
        change.action = Action::Update;
    }

    /// The desired configuration differs from the recorded one: an update,
    /// or for a session whose target or creation fields change, a replace.
    fn config_changed(&self, change: &mut Change) {
        let changed: Vec<String> = change.attributes.iter().map(|a| a.path.clone()).collect();
        if !self.want.is_known() {
            let references = pending_references(self.resource, self.want);
            change.reasons.push(Reason::DependsOnPending { references });
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
        if self.resource.address.kind == Kind::Session {
            self.session_replace(change, &changed);
        }
    }

    /// Only a session's title and metadata change in place.
    fn session_replace(&self, change: &mut Change, changed: &[String]) {
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
        let target_unknown = self
            .want
            .unknown
            .iter()
            .any(|p| p.starts_with("/agent") || p == "/environment_id");
        if target_attrs.is_empty() && !target_unknown {
            return;
        }
        change.action = Action::Replace;
        let attributes = if target_attrs.is_empty() {
            vec!["agent".to_string()]
        } else {
            target_attrs
        };
        change
            .reasons
            .retain(|r| !matches!(r, Reason::ConfigChanged { .. }));
        change
            .reasons
            .insert(0, Reason::TargetChanged { attributes });
    }
}

/// The outputs, known only after apply, that `want` is waiting for.
fn pending_references(resource: &Resource, want: &Desired) -> Vec<String> {
    let mut refs: BTreeSet<String> = BTreeSet::new();
    for d in &resource.deferred {
        if want.unknown.contains(&d.pointer) {
            refs.extend(d.references.iter().map(|x| x.to_string()));
        }
    }
    if let Some(t) = &resource.session {
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
    refs.into_iter().collect()
}
