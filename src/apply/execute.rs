//! One change carried out: dispatch by action, the desired configuration
//! resolved from the dependencies just applied, and archive or delete.

use serde_json::Value;

use super::create::create;
use super::update::update;
use super::{Context, ExecError};
use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::graph::{Address, Kind};
use crate::manifest::Manifest;
use crate::plan::{desired, Action, Change, Desired, Outputs};
use crate::runtime::{ErrorKind, Runtime};
use crate::state::ResourceRecord;

/// Carries out `change`; the text says what happened.
pub(super) async fn execute(change: &Change, ctx: &Context) -> Result<String, ExecError> {
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
        Action::Create => create(change, ctx, runtime.as_ref()).await,
        Action::Replace => {
            if let Some(old) = &record {
                let old_runtime = ctx.providers.get(&old.provider)?;
                destroy_remote(old_runtime.as_ref(), old).await?;
                ctx.state.remove(&change.address)?;
            }
            let done = create(change, ctx, runtime.as_ref()).await?;
            Ok(format!("replaced: {done}"))
        }
        Action::Update => {
            let record = record.ok_or_else(|| ExecError::Other("not in the state".into()))?;
            update(change, ctx, runtime.as_ref(), record).await
        }
    }
}

pub(super) fn manifest(ctx: &Context) -> Result<&Manifest, ExecError> {
    ctx.manifest
        .as_deref()
        .ok_or_else(|| ExecError::Other("no manifest loaded".into()))
}

/// The desired configuration now that every dependency has been applied.
pub(super) fn resolve(change: &Change, ctx: &Context) -> Result<Desired, ExecError> {
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

/// The object's metadata with the tags that let agentform find it again.
pub(super) fn tagged_metadata(config: &Value, address: &Address, project: &str) -> Value {
    let mut meta = config
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    meta.insert(META_ADDRESS.into(), Value::String(address.to_string()));
    meta.insert(META_MANIFEST.into(), Value::String(project.to_string()));
    Value::Object(meta)
}

/// Archives or deletes the remote object; `true` when it was already gone.
pub(super) async fn destroy_remote(
    runtime: &dyn Runtime,
    record: &ResourceRecord,
) -> Result<bool, ExecError> {
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
