//! Refresh: reads the live objects behind the recorded resources, so the
//! plan can tell drift (changed, archived or deleted outside agentform).
//! Reads only; never writes to a provider or the state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::scope::Scope;
use super::PlanError;
use crate::graph::{Address, Kind};
use crate::runtime::{list_all, Providers, Runtime, RuntimeError};
use crate::state::ResourceRecord;

/// What the live object looks like, for the fields that tell drift.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Live {
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

/// The live state of every recorded resource in scope, by address.
pub(super) async fn refresh(
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
            let live = read(runtime.as_ref(), addr.kind, &id).await;
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

/// Reads one object; not found means deleted.
async fn read(runtime: &dyn Runtime, kind: Kind, id: &str) -> Result<Live, RuntimeError> {
    let live = match kind {
        Kind::Agent => runtime
            .retrieve_agent(id, None)
            .await
            .map(|a| Live::of(&a.archived_at, Some(a.version), a.updated_at)),
        Kind::Environment => runtime
            .retrieve_environment(id)
            .await
            .map(|e| Live::of(&e.archived_at, None, e.updated_at)),
        Kind::Session => runtime
            .retrieve_session(id)
            .await
            .map(|s| Live::of(&s.archived_at, None, s.updated_at)),
    };
    match live {
        Err(e) if e.is_not_found() => Ok(Live::Gone {
            detail: "deleted".into(),
        }),
        other => other,
    }
}

/// From this many records of one kind on one provider, refresh lists them
/// (100 a page) instead of reading each: a plan of hundreds of resources
/// stays a few calls under the API's rate limits.
pub(super) const LIST_REFRESH_MIN: usize = 16;

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
        let found = list(runtime.as_ref(), kind).await.map_err(failed)?;
        for (id, live) in found {
            if let Some(address) = by_id.get(id.as_str()) {
                out.insert((*address).clone(), live);
            }
        }
    }
    Ok(out)
}

/// Every object of one kind, as id and live state.
async fn list(rt: &dyn Runtime, kind: Kind) -> Result<Vec<(String, Live)>, RuntimeError> {
    Ok(match kind {
        Kind::Agent => list_all(|q| async move { rt.list_agents(&q).await })
            .await?
            .into_iter()
            .map(|a| {
                (
                    a.id,
                    Live::of(&a.archived_at, Some(a.version), a.updated_at),
                )
            })
            .collect(),
        Kind::Environment => list_all(|q| async move { rt.list_environments(&q).await })
            .await?
            .into_iter()
            .map(|e| (e.id, Live::of(&e.archived_at, None, e.updated_at)))
            .collect(),
        Kind::Session => list_all(|q| async move { rt.list_sessions(&q).await })
            .await?
            .into_iter()
            .map(|s| (s.id, Live::of(&s.archived_at, None, s.updated_at)))
            .collect(),
    })
}
