//! Updating an object in place: the body with removed fields set to null,
//! a new agent version from the version it was read at, the record after.

use serde_json::{json, Value};

use super::execute::{manifest, resolve, tagged_metadata};
use super::{Context, ExecError};
use crate::graph::Kind;
use crate::plan::{Change, Desired, Outputs};
use crate::runtime::{ErrorKind, Runtime};
use crate::state::{now, HistoryEntry, ResourceRecord};

pub(super) async fn update(
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
    let (version, updated_at) = send(change, runtime, &record, &want, metadata).await?;
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

/// The remote update; the new version (agents) and `updated_at`.
async fn send(
    change: &Change,
    runtime: &dyn Runtime,
    record: &ResourceRecord,
    want: &Desired,
    metadata: Value,
) -> Result<(Option<u64>, String), ExecError> {
    let id = &record.remote_id;
    Ok(match change.address.kind {
        Kind::Agent => {
            let mut body = update_body(&record.config, &want.config, metadata);
            if let Some(v) = change.live_version.or(record.version) {
                body["version"] = json!(v);
            }
            let a = runtime.update_agent(id, body).await.map_err(|e| match e.kind {
                ErrorKind::Conflict => ExecError::Other(format!(
                    "{e}; the agent changed outside agentform since the last refresh: run `agentform plan --refresh`"
                )),
                _ => e.into(),
            })?;
            (Some(a.version), a.updated_at)
        }
        Kind::Environment => {
            let e = runtime
                .update_environment(id, update_body(&record.config, &want.config, metadata))
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
            let s = runtime.update_session(id, body).await?;
            (None, s.updated_at)
        }
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
