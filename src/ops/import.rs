//! `state import`: record an existing remote object as a declared resource,
//! as it is now, so that the next plan shows how it differs from the manifest.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::graph::{Address, Kind};
use crate::manifest::Manifest;
use crate::plan::desired::{desired, digest, Outputs};
use crate::runtime::{Providers, Runtime, RuntimeError};
use crate::state::{now, HistoryEntry, ResourceRecord, StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("`{0}` is not declared in the manifest\nhint: declare it first, so agentform knows what it should look like")]
    NotDeclared(Address),
    #[error("`{address}` is already in the state as {remote_id}\nhint: `agentform state rm {address}` first to replace it")]
    AlreadyRecorded { address: Address, remote_id: String },
    #[error("`{0}` is archived and cannot be managed")]
    Archived(String),
    #[error("reading `{id}` failed: {source}")]
    Remote {
        id: String,
        #[source]
        source: RuntimeError,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Desired(String),
}

/// Reads the live object and records what it is now, so the next plan shows
/// how it differs from the manifest.
pub async fn import(
    manifest: &Manifest,
    state: &StateStore,
    providers: &Providers,
    address: &Address,
    remote_id: &str,
) -> Result<ResourceRecord, ImportError> {
    let resource = manifest
        .resource(address)
        .ok_or_else(|| ImportError::NotDeclared(address.clone()))?;
    if let Some(existing) = state.get(address)? {
        return Err(ImportError::AlreadyRecorded {
            address: address.clone(),
            remote_id: existing.remote_id,
        });
    }
    let remote = |source| ImportError::Remote {
        id: remote_id.to_string(),
        source,
    };
    let runtime = providers.get(&resource.provider).map_err(remote)?;
    let lookup = |a: &Address| {
        state
            .get(a)
            .ok()
            .flatten()
            .map(|r| Outputs::from_record(&r))
    };
    let want = desired(resource, &manifest.templater, &lookup)
        .map_err(|e| ImportError::Desired(e.to_string()))?;
    let mut config = want.config.clone();
    let (version, updated_at) = read_live(runtime.as_ref(), address.kind, remote_id, &mut config)
        .await
        .map_err(|e| match e {
            Live::Remote(source) => remote(source),
            Live::Archived => ImportError::Archived(remote_id.into()),
        })?;
    let d = digest(&config);
    // Values that come from env() in the manifest are secrets: keep only their hash.
    let mut sensitive = BTreeMap::new();
    for pointer in want.sensitive.keys() {
        if let Some(slot) = config.pointer_mut(pointer) {
            sensitive.insert(pointer.clone(), digest(slot));
            *slot = Value::String(crate::plan::SENSITIVE.into());
        }
    }
    let mut record = ResourceRecord {
        address: address.clone(),
        provider: resource.provider.clone(),
        remote_id: remote_id.to_string(),
        version,
        digest: d.clone(),
        config,
        sensitive,
        outputs: BTreeMap::new(),
        depends_on: resource.depends_on.clone(),
        remote_updated_at: Some(updated_at),
        endpoint: runtime.endpoint(),
        created_at: now(),
        updated_at: now(),
        history: vec![HistoryEntry {
            at: now(),
            action: "import".into(),
            version,
            digest: d,
        }],
    };
    record.outputs = Outputs::from_record(&record).to_map();
    state.put(&record)?;
    Ok(record)
}

/// Why a live object cannot be imported.
enum Live {
    Remote(RuntimeError),
    Archived,
}

impl From<RuntimeError> for Live {
    fn from(e: RuntimeError) -> Self {
        Live::Remote(e)
    }
}

/// Reads the live object into `config` (its name, text fields, user
/// metadata; a session's agent and environment); its version and `updated_at`.
async fn read_live(
    runtime: &dyn Runtime,
    kind: Kind,
    remote_id: &str,
    config: &mut Value,
) -> Result<(Option<u64>, String), Live> {
    let user_metadata = |m: &BTreeMap<String, String>| -> Value {
        let kept: BTreeMap<&String, &String> = m
            .iter()
            .filter(|(k, _)| k.as_str() != META_ADDRESS && k.as_str() != META_MANIFEST)
            .collect();
        json!(kept)
    };
    let set = |config: &mut Value, key: &str, v: Option<Value>| match v {
        Some(v) if !v.is_null() && v != json!({}) => config[key] = v,
        _ => {
            if let Some(o) = config.as_object_mut() {
                o.remove(key);
            }
        }
    };
    Ok(match kind {
        Kind::Agent => {
            let a = runtime.retrieve_agent(remote_id, None).await?;
            if a.archived_at.is_some() {
                return Err(Live::Archived);
            }
            set(config, "name", Some(json!(a.name)));
            set(config, "system", a.system.map(Value::String));
            set(config, "description", a.description.map(Value::String));
            set(config, "metadata", Some(user_metadata(&a.metadata)));
            if config.get("model").is_some_and(Value::is_string) {
                set(config, "model", Some(Value::String(a.model.id)));
            }
            (Some(a.version), a.updated_at)
        }
        Kind::Environment => {
            let e = runtime.retrieve_environment(remote_id).await?;
            if e.archived_at.is_some() {
                return Err(Live::Archived);
            }
            set(config, "name", Some(json!(e.name)));
            set(config, "description", e.description.map(Value::String));
            set(config, "metadata", Some(user_metadata(&e.metadata)));
            (None, e.updated_at)
        }
        Kind::Session => {
            let s = runtime.retrieve_session(remote_id).await?;
            if s.archived_at.is_some() {
                return Err(Live::Archived);
            }
            let pinned = config["agent"]["pinned"].clone();
            config["agent"] =
                json!({"id": s.agent_id(), "version": s.agent_version(), "pinned": pinned});
            config["environment_id"] = json!(s.environment_id);
            set(config, "title", s.title.map(Value::String));
            set(config, "metadata", Some(user_metadata(&s.metadata)));
            (None, s.updated_at)
        }
    })
}
