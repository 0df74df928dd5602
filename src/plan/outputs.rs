//! Planned outputs: what each resource will expose (id, version, name) once
//! this plan is applied, as far as known now, so that later resources'
//! templates and session targets can be resolved or marked unknown.

use std::collections::HashMap;

use serde_json::Value;

use super::{Action, Change, Desired, Outputs, PlanError, UNKNOWN};
use crate::graph::{Address, Kind};
use crate::manifest::SessionTarget;
use crate::state::ResourceRecord;

/// The outputs known so far, filled in dependency order.
#[derive(Default)]
pub(super) struct Planned {
    outputs: HashMap<Address, Outputs>,
    /// The newest version each agent will have after this apply.
    latest: HashMap<Address, u64>,
}

impl Planned {
    pub(super) fn get(&self, a: &Address) -> Option<Outputs> {
        self.outputs.get(a).cloned()
    }

    /// A resource outside the plan's scope keeps what the state records.
    pub(super) fn keep(&mut self, record: &ResourceRecord) {
        self.outputs
            .insert(record.address.clone(), Outputs::from_record(record));
    }

    /// Records what `change` leaves behind.
    pub(super) fn insert(
        &mut self,
        change: &Change,
        record: Option<&ResourceRecord>,
        want: &Desired,
    ) {
        if change.address.kind == Kind::Agent {
            self.latest
                .insert(change.address.clone(), next_version(change));
        }
        self.outputs.insert(
            change.address.clone(),
            planned_outputs(change, record, want),
        );
    }

    /// Fails when `session` pins a version its agent will not have.
    pub(super) fn check_pinned(
        &self,
        session: &Address,
        target: &SessionTarget,
    ) -> Result<(), PlanError> {
        if let (Some(pinned), Some(&newest)) = (target.version, self.latest.get(&target.agent)) {
            if pinned > newest {
                return Err(PlanError::PinnedVersionMissing {
                    session: session.clone(),
                    agent: target.agent.clone(),
                    pinned,
                    latest: newest,
                });
            }
        }
        Ok(())
    }
}

/// The version an agent will be at after `change`.
fn next_version(change: &Change) -> u64 {
    let now = if change.remote_id.is_some() {
        change.live_version.or(change.version)
    } else {
        None
    };
    match (change.action, now) {
        (Action::Update, Some(v)) => v + 1,
        (Action::NoOp, Some(v)) => v,
        _ => 1,
    }
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
        // An agent's update makes a version known only after apply.
        Action::Update => Outputs {
            id: record.map(|r| r.remote_id.clone()),
            version: if change.address.kind == Kind::Agent {
                None
            } else {
                record.and_then(|r| r.version)
            },
            name,
        },
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
