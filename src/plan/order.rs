//! Ordering: fills in each change's `after`, the changes that must finish
//! before it starts. Reads the plan's changes; never alters an action.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::{Action, Change};
use crate::graph::{Address, Kind};
use crate::manifest::Manifest;
use crate::state::ResourceRecord;

/// Fills in `after`: creates and updates wait for their dependencies' changes;
/// deletions wait for every change of whatever depended on what they delete.
pub(super) fn order(
    changes: &mut [Change],
    manifest: Option<&Manifest>,
    records: &BTreeMap<Address, ResourceRecord>,
) {
    let pending: HashMap<Address, Action> = changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| (c.address.clone(), c.action))
        .collect();
    let removed_env_names = removed_environment_names(changes, records);
    for change in changes.iter_mut() {
        if change.action == Action::NoOp {
            continue;
        }
        let mut after = match change.action {
            Action::Archive | Action::Delete => records
                .values()
                .filter(|r| r.depends_on.contains(&change.address))
                .filter(|r| pending.contains_key(&r.address))
                .map(|r| r.address.clone())
                .collect(),
            // A replaced session's old self must go before a dependency it
            // used is deleted; that edge is added from the other side above.
            _ => manifest
                .map(|m| dependencies_first(change, m, &pending, &removed_env_names))
                .unwrap_or_default(),
        };
        after.remove(&change.address);
        change.after = after.into_iter().collect();
    }
}

/// Environments this plan deletes, with their names: a new environment of
/// the same name must wait for the old one to go (names are unique).
fn removed_environment_names(
    changes: &[Change],
    records: &BTreeMap<Address, ResourceRecord>,
) -> Vec<(Address, String)> {
    changes
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
        .collect()
}

/// What a create, update or replace waits for: its dependencies' changes
/// and, for a new environment, the deletion of one that had its name.
fn dependencies_first(
    change: &Change,
    manifest: &Manifest,
    pending: &HashMap<Address, Action>,
    removed_env_names: &[(Address, String)],
) -> BTreeSet<Address> {
    let mut after = BTreeSet::new();
    let Some(res) = manifest.resource(&change.address) else {
        return after;
    };
    for d in &res.depends_on {
        if matches!(
            pending.get(d),
            Some(Action::Create | Action::Update | Action::Replace)
        ) {
            after.insert(d.clone());
        }
    }
    if change.action == Action::Create && change.address.kind == Kind::Environment {
        let name = res.body.get("name").and_then(Value::as_str);
        for (a, n) in removed_env_names {
            if Some(n.as_str()) == name {
                after.insert(a.clone());
            }
        }
    }
    after
}
