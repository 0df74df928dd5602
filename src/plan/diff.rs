//! Attribute diff: the recorded configuration against the desired one, leaf
//! by leaf, as dotted paths; sensitive values are compared by hash and never
//! shown, unknown ones are marked. Compares only; decides nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{AttributeChange, Desired, SENSITIVE};
use crate::state::ResourceRecord;

/// Attribute-level differences between the recorded and the desired configuration.
pub(super) fn diff(
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

pub(super) fn pointer_to_path(pointer: &str) -> String {
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
