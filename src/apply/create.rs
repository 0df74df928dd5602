//! Creating an object: the intent recorded first, then the remote create,
//! then the record; or, after an interrupted create, adopting the object
//! found by its metadata instead of creating a second one.

use std::collections::BTreeMap;

use super::execute::{manifest, resolve, tagged_metadata};
use super::update::update;
use super::{Context, ExecError, CRASH_AFTER_CREATE_ENV};
use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::graph::{Address, Kind};
use crate::manifest::Manifest;
use crate::plan::desired::session_create_body;
use crate::plan::{Change, Desired, Outputs};
use crate::runtime::{list_all, Runtime};
use crate::state::{now, HistoryEntry, Intent, ResourceRecord};

/// What a create (or a found object) tells the record.
struct Created {
    id: String,
    version: Option<u64>,
    updated_at: String,
}

pub(super) async fn create(
    change: &Change,
    ctx: &Context,
    runtime: &dyn Runtime,
) -> Result<String, ExecError> {
    let m = manifest(ctx)?;
    let want = resolve(change, ctx)?;
    let addr = &change.address;
    if change.adopt || ctx.state.intent(addr)?.is_some() {
        if let Some(found) = find_tagged(runtime, addr, &m.project).await? {
            return adopt(change, ctx, runtime, &want, found).await;
        }
    }
    let intent = Intent {
        address: addr.clone(),
        provider: runtime.name().to_string(),
        started_at: now(),
        pid: std::process::id(),
    };
    let own_writes = runtime.writes_only_to(ctx.state.db());
    if own_writes {
        ctx.state.put_intent_before_own_writes(&intent)?;
    } else {
        ctx.state.put_intent(&intent)?;
    }
    let created = create_remote(runtime, addr, &want, &m.project).await?;
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
    if own_writes {
        ctx.state.put_after_own_writes(&record)?;
    } else {
        ctx.state.put(&record)?;
    }
    Ok(match record.version {
        Some(v) => format!("created {} (version {v})", record.remote_id),
        None => format!("created {}", record.remote_id),
    })
}

/// Records an object an interrupted create left behind, then updates it:
/// it may predate an edit of the manifest.
async fn adopt(
    change: &Change,
    ctx: &Context,
    runtime: &dyn Runtime,
    want: &Desired,
    found: Created,
) -> Result<String, ExecError> {
    let m = manifest(ctx)?;
    let mut record = new_record(change, want, m, found, runtime);
    let id = record.remote_id.clone();
    record.history.push(HistoryEntry {
        at: now(),
        action: "adopt".into(),
        version: record.version,
        digest: record.digest.clone(),
    });
    ctx.state.put(&record)?;
    let again = update(change, ctx, runtime, record).await?;
    Ok(format!("adopted {id} after an interrupted create; {again}"))
}

/// The remote create, the body tagged with the address and the project.
async fn create_remote(
    runtime: &dyn Runtime,
    addr: &Address,
    want: &Desired,
    project: &str,
) -> Result<Created, ExecError> {
    let metadata = tagged_metadata(&want.config, addr, project);
    Ok(match addr.kind {
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
    })
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
