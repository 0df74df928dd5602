//! Targets: which addresses a plan covers. `--target` keeps a resource and
//! what it needs when applying, and what needs it when destroying.
//! Only selects; never decides an action.

use std::collections::{BTreeMap, BTreeSet};

use super::{PlanError, PlanOptions};
use crate::graph::Address;
use crate::manifest::Manifest;
use crate::state::ResourceRecord;

/// Fails on a target that is neither declared nor recorded.
pub(super) fn check_targets(
    manifest: Option<&Manifest>,
    records: &BTreeMap<Address, ResourceRecord>,
    targets: &[Address],
) -> Result<(), PlanError> {
    for t in targets {
        let declared = manifest.is_some_and(|m| m.resource(t).is_some());
        if !declared && !records.contains_key(t) {
            return Err(PlanError::UnknownTarget(t.clone()));
        }
    }
    Ok(())
}

/// Which addresses the plan covers.
pub(super) struct Scope {
    only: Option<BTreeSet<Address>>,
}

impl Scope {
    pub(super) fn new(
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

    pub(super) fn contains(&self, a: &Address) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(a))
    }
}
