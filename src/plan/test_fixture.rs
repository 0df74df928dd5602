//! Test support for the plan and the stages above it: a temporary state with
//! the real local runtime over its database, manifests written to disk and
//! loaded, and a state recorded as if an apply had run.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::desired::session_create_body;
use super::{desired, Change, Outputs, Plan, PlanOptions};
use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::graph::{Address, Kind};
use crate::manifest::{self, LoadOptions, Manifest};
use crate::runtime::local::{LocalOptions, LocalRuntime};
use crate::runtime::{Providers, Runtime};
use crate::state::{now, ResourceRecord, StateStore};

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub state: Arc<StateStore>,
    pub local: Arc<LocalRuntime>,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateStore::open(&dir.path().join("state"), "test").expect("state");
        let local = LocalRuntime::open(state.db(), LocalOptions::default()).expect("runtime");
        Fixture {
            dir,
            state: Arc::new(state),
            local: Arc::new(local),
        }
    }

    /// The local runtime alone.
    pub fn providers(&self) -> Providers {
        let mut p = Providers::default();
        p.insert(self.local.clone());
        p
    }

    /// Writes `yaml` as the manifest and loads it.
    pub fn manifest(&self, yaml: &str) -> Manifest {
        let path = self.dir.path().join("agentform.yaml");
        std::fs::write(&path, yaml).expect("write the manifest");
        manifest::load(&LoadOptions {
            files: vec![path],
            vars: Vec::new(),
            allow_empty: false,
        })
        .unwrap_or_else(|d| panic!("{}", d.render(false)))
    }

    pub async fn plan(&self, m: Option<&Manifest>, options: PlanOptions) -> Plan {
        super::plan(m, &self.state, &self.providers(), &options)
            .await
            .expect("plan")
    }

    /// Creates every resource of `m` on the local runtime and records it,
    /// as a successful apply would.
    pub async fn deploy(&self, m: &Manifest) {
        for addr in m.graph.topological() {
            let Some(resource) = m.resource(&addr) else {
                continue;
            };
            let lookup = |a: &Address| {
                self.state
                    .get(a)
                    .expect("state")
                    .map(|r| Outputs::from_record(&r))
            };
            let want = desired(resource, &m.templater, &lookup).expect("desired");
            assert!(want.is_known(), "{addr}: {:?}", want.unknown);
            let (id, version, updated_at) = self.create(m, &addr, &want.config).await;
            let mut record = ResourceRecord {
                address: addr.clone(),
                provider: resource.provider.clone(),
                remote_id: id,
                version,
                digest: want.digest().expect("digest"),
                config: want.stored_config(),
                sensitive: want.sensitive.clone(),
                outputs: BTreeMap::new(),
                depends_on: resource.depends_on.clone(),
                remote_updated_at: Some(updated_at),
                endpoint: None,
                created_at: now(),
                updated_at: now(),
                history: Vec::new(),
            };
            record.outputs = Outputs::from_record(&record).to_map();
            self.state.put(&record).expect("record");
        }
    }

    async fn create(
        &self,
        m: &Manifest,
        addr: &Address,
        config: &Value,
    ) -> (String, Option<u64>, String) {
        let mut body = match addr.kind {
            Kind::Session => session_create_body(config),
            _ => config.clone(),
        };
        let mut meta = config
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        meta.insert(META_ADDRESS.into(), json!(addr.to_string()));
        meta.insert(META_MANIFEST.into(), json!(m.project));
        body["metadata"] = Value::Object(meta);
        match addr.kind {
            Kind::Agent => {
                let a = self.local.create_agent(body).await.expect("agent");
                (a.id, Some(a.version), a.updated_at)
            }
            Kind::Environment => {
                let e = self.local.create_environment(body).await.expect("env");
                (e.id, None, e.updated_at)
            }
            Kind::Session => {
                let s = self.local.create_session(body).await.expect("session");
                (s.id, None, s.updated_at)
            }
        }
    }

    /// The recorded remote id of `address`.
    pub fn id(&self, address: &str) -> String {
        self.record(address).remote_id
    }

    pub fn record(&self, address: &str) -> ResourceRecord {
        self.state
            .get(&addr(address))
            .expect("state")
            .unwrap_or_else(|| panic!("{address} is not recorded"))
    }
}

pub(crate) fn addr(s: &str) -> Address {
    s.parse().expect("address")
}

/// The change of `address` in `plan`.
pub(crate) fn change<'a>(plan: &'a Plan, address: &str) -> &'a Change {
    plan.changes
        .iter()
        .find(|c| c.address.to_string() == address)
        .unwrap_or_else(|| panic!("no change of {address} in {:#?}", plan.changes))
}
