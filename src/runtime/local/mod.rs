//! The embedded local runtime: the Managed Agents API's objects and rules,
//! persisted in a caller-provided database (a state's: sled or PostgreSQL,
//! [`crate::db`]), for offline use and tests.
//!
//! Request bodies are validated and resolved the way the API does it (see
//! `rules/`: toolsets get every tool's config, models the object form, …),
//! so plans computed against this runtime match the real one. Records are
//! the typed records of [`crate::api`], stored as their JSON (`store.rs`),
//! with every secret the process knows replaced by a placeholder that names
//! it (`vault.rs`): the state holds no secret.
//!
//! Sessions run for real: the runtime hands them to the [`Engine`] (the
//! agent loop, `crate::engine`), which calls the model the options resolve
//! and runs tools in the sandbox they provide; `events.rs` keeps their
//! events for the engine in the database, `live.rs` is the glue;
//! `images.rs` has the sandbox provider build what an environment's
//! sessions start from when the environment is created or updated.
//!
//! This file holds the runtime, its options and the [`Runtime`] impl, which
//! only hands each call to the rule or the engine that serves it.

mod events;
mod images;
pub use images::image_of;
mod live;
#[cfg(test)]
mod live_tests;
mod paging;
mod rules;
mod store;
mod vault;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

// The rules read request bodies and mint ids with these.
use crate::api::{body, ids};

use super::{Agent, Deleted, Environment, EventStream, ListQuery, Page, Result, Runtime, Session};
use crate::db::{AsDb, Db};
use crate::engine::{Engine, EngineOptions};
use crate::redact::Secrets;
use crate::sandbox::{NoSandboxes, SandboxProvider};
use events::SessionTrees;
use paging::{page_by_id, page_where};
use rules::{agent, environment, session};
use store::Records;
use vault::Vault;

pub use crate::engine::{ModelResolver, NoModels, DEFAULT_TOOL_DEADLINE};
pub use events::HISTORY_TREES;
pub use paging::{ListFilter, TimeRange};

#[derive(Clone)]
pub struct LocalOptions {
    /// Slept after each call's work is done, like a remote API's response time.
    pub latency: Duration,
    /// Where tools run: one sandbox per session. Without one, tool calls
    /// fail with a `session.error`.
    pub sandboxes: Arc<dyn SandboxProvider>,
    /// The model backend of an agent's model id; asked once per session.
    pub models: Arc<dyn ModelResolver>,
    /// How long one tool call may run.
    pub tool_deadline: Duration,
    /// Fault injection for tests and demos: every event stream ends after this
    /// many events, as if the connection dropped.
    pub drop_stream_after: Option<usize>,
    /// The secrets of the manifest this process loaded (none: `serve`
    /// without one stores what clients send). Stored records and events
    /// hold a placeholder in their place (`vault.rs`).
    pub secrets: Secrets,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            latency: Duration::ZERO,
            sandboxes: Arc::new(NoSandboxes),
            models: Arc::new(NoModels),
            tool_deadline: DEFAULT_TOOL_DEADLINE,
            drop_stream_after: None,
            secrets: Secrets::default(),
        }
    }
}

impl std::fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOptions")
            .field("latency", &self.latency)
            .field("sandboxes", &self.sandboxes)
            .field("models", &format_args!("<dyn ModelResolver>"))
            .field("tool_deadline", &self.tool_deadline)
            .field("secrets", &self.secrets)
            .finish()
    }
}

impl LocalOptions {
    fn engine(&self) -> EngineOptions {
        EngineOptions {
            sandboxes: Arc::clone(&self.sandboxes),
            models: Arc::clone(&self.models),
            tool_deadline: self.tool_deadline,
        }
    }
}

/// The `local` provider: the Managed Agents API emulated over a database's
/// trees named `local.*`.
pub struct LocalRuntime {
    /// The database its objects live in.
    db: Arc<dyn Db>,
    records: Records,
    options: LocalOptions,
    /// Session events, for listing; the engine has them too.
    events: SessionTrees,
    /// Runs the sessions; its workers stop when it is dropped.
    engine: Engine,
}

impl LocalRuntime {
    /// Over `db`: a state's database, or a `sled::Db` of the caller's.
    pub fn open(db: &impl AsDb, options: LocalOptions) -> Result<Self> {
        let db = db.as_db();
        let vault = Vault::new(options.secrets.clone());
        let events = SessionTrees::open(&db, vault.clone())?;
        let engine = Engine::new(Arc::new(events.clone()), options.engine());
        Ok(LocalRuntime {
            records: Records::open(&*db, vault)?,
            db: Arc::clone(&db),
            options,
            events,
            engine,
        })
    }

    /// Stops every session worker of this runtime and waits until they are
    /// gone (so nothing holds the Db any more). A turn that was running is
    /// carried on when its session is next sent to or streamed.
    pub async fn shutdown(&self) {
        self.engine.shutdown().await;
    }

    /// `GET /v1/agents` with its filters (`created_at` bounds).
    pub async fn list_agents_where(
        &self,
        query: &ListQuery,
        filter: &ListFilter,
    ) -> Result<Page<Agent>> {
        let result = page_where(
            &self.records.vault,
            &self.records.agents,
            query,
            filter.descending,
            |a: &Agent| filter.time.contains(&a.created_at),
        );
        self.respond(result).await
    }

    /// `GET /v1/sessions` with its filters and order.
    pub async fn list_sessions_where(
        &self,
        query: &ListQuery,
        filter: &ListFilter,
    ) -> Result<Page<Session>> {
        let result = page_where(
            &self.records.vault,
            &self.records.sessions,
            query,
            filter.descending,
            |s: &Session| filter.keeps_session(s),
        );
        self.respond(result).await
    }

    /// `GET /v1/sessions/{id}/events` with its filters and order.
    pub async fn list_events_where(
        &self,
        session_id: &str,
        query: &ListQuery,
        filter: &ListFilter,
    ) -> Result<Page<Value>> {
        let result = self.records.session(session_id).and_then(|_| {
            self.events.page(session_id, query, filter.descending, |e| {
                filter.keeps_event(e)
            })
        });
        self.respond(result).await
    }

    /// Applies the configured latency after the work is done, so a caller
    /// that dies while waiting leaves the effect in place but unreported.
    async fn respond<T>(&self, result: Result<T>) -> Result<T> {
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
        result
    }

    /// Like [`respond`](Self::respond) for calls that change something: the
    /// change is on disk before the caller hears of it, as with a remote API.
    async fn respond_durable<T>(&self, result: Result<T>) -> Result<T> {
        let result = match result {
            Ok(v) => self.events.flush_now().await.map(|()| v),
            Err(e) => Err(e),
        };
        self.respond(result).await
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &str {
        "local"
    }

    /// Its objects are in its database, flushed before each answer; its
    /// sandboxes may reach further.
    fn writes_only_to(&self, db: &Arc<dyn Db>) -> bool {
        Arc::ptr_eq(&self.db, db) && !self.options.sandboxes.remote()
    }

    async fn create_agent(&self, body: Value) -> Result<Agent> {
        let result = agent::create(&self.records, &body);
        self.respond_durable(result).await
    }

    async fn retrieve_agent(&self, id: &str, version: Option<u64>) -> Result<Agent> {
        let result = agent::retrieve(&self.records, id, version);
        self.respond(result).await
    }

    async fn list_agents(&self, query: &ListQuery) -> Result<Page<Agent>> {
        let result = page_by_id(&self.records.vault, &self.records.agents, query);
        self.respond(result).await
    }

    async fn update_agent(&self, id: &str, body: Value) -> Result<Agent> {
        let result = agent::update(&self.records, id, &body);
        self.respond_durable(result).await
    }

    async fn list_agent_versions(&self, id: &str, query: &ListQuery) -> Result<Page<Agent>> {
        let result = agent::list_versions(&self.records, id, query);
        self.respond(result).await
    }

    async fn archive_agent(&self, id: &str) -> Result<Agent> {
        let result = agent::archive(&self.records, id);
        self.respond_durable(result).await
    }

    async fn create_environment(&self, body: Value) -> Result<Environment> {
        let result = match environment::create(&self.records, &body) {
            Ok(created) => self.provision_created(created).await,
            Err(e) => Err(e),
        };
        self.respond_durable(result).await
    }

    async fn retrieve_environment(&self, id: &str) -> Result<Environment> {
        let result = self.records.environment(id);
        self.respond(result).await
    }

    async fn list_environments(&self, query: &ListQuery) -> Result<Page<Environment>> {
        let result = page_by_id(&self.records.vault, &self.records.environments, query);
        self.respond(result).await
    }

    async fn update_environment(&self, id: &str, body: Value) -> Result<Environment> {
        let previous = self.records.environment(id);
        let result = match (previous, environment::update(&self.records, id, &body)) {
            (Ok(previous), Ok(updated)) => self.provision_updated(&previous, updated).await,
            (_, result) => result,
        };
        self.respond_durable(result).await
    }

    async fn archive_environment(&self, id: &str) -> Result<Environment> {
        let result = environment::archive(&self.records, id);
        self.respond_durable(result).await
    }

    async fn delete_environment(&self, id: &str) -> Result<Deleted> {
        let result = environment::delete(&self.records, id);
        if result.is_ok() {
            self.retire(id).await;
        }
        self.respond_durable(result).await
    }

    async fn create_session(&self, body: Value) -> Result<Session> {
        let result = session::create(&self.records, &body);
        self.respond_durable(result).await
    }

    async fn retrieve_session(&self, id: &str) -> Result<Session> {
        let result = self.records.session(id);
        self.respond(result).await
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Page<Session>> {
        let result = page_by_id(&self.records.vault, &self.records.sessions, query);
        self.respond(result).await
    }

    async fn update_session(&self, id: &str, body: Value) -> Result<Session> {
        let result = session::update(&self.records, id, &body);
        self.respond_durable(result).await
    }

    async fn archive_session(&self, id: &str) -> Result<Session> {
        let result = session::archive(&self.records, id);
        if result.is_ok() {
            self.engine.archived(id).await;
        }
        self.respond_durable(result).await
    }

    async fn delete_session(&self, id: &str) -> Result<Deleted> {
        let result = match session::delete(&self.records, id) {
            Ok(deleted) => self.forget_session(id).await.map(|()| deleted),
            Err(e) => Err(e),
        };
        self.respond_durable(result).await
    }

    async fn send_events(&self, session_id: &str, events: Vec<Value>) -> Result<Vec<Value>> {
        let result = self.send_events_now(session_id, &events).await;
        self.respond_durable(result).await
    }

    async fn list_events(&self, session_id: &str, query: &ListQuery) -> Result<Page<Value>> {
        let result = self
            .records
            .session(session_id)
            .and_then(|_| self.events.page(session_id, query, false, |_| true));
        self.respond(result).await
    }

    async fn stream_events(&self, session_id: &str) -> Result<EventStream> {
        let result = self.stream_events_now(session_id).await;
        self.respond(result).await
    }
}

#[cfg(test)]
mod tests {
    //! What every test of this runtime shares, and the tests of the runtime
    //! as a whole; the rules' tests sit beside each rule.

    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::api::{ErrorKind, RuntimeError};

    pub(super) struct Fixture {
        pub(super) _dir: tempfile::TempDir,
        pub(super) db: sled::Db,
        pub(super) rt: LocalRuntime,
    }

    /// Opens a Db that was just closed. sled's own I/O threads may still
    /// hold the closed one's file (and its lock) for a moment after the last
    /// handle is dropped, and say nothing when they let go, so this retries.
    pub(super) fn reopen(path: &std::path::Path) -> sled::Db {
        let mut attempts = 0;
        loop {
            match sled::open(path) {
                Ok(db) => return db,
                Err(e) if attempts < 500 && e.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("reopen {}: {e}", path.display()),
            }
        }
    }

    pub(super) fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path().join("db")).expect("open sled");
        let rt = LocalRuntime::open(&db, LocalOptions::default()).expect("open runtime");
        Fixture { _dir: dir, db, rt }
    }

    pub(super) fn agent_body(name: &str) -> Value {
        json!({"name": name, "model": "claude-sonnet-4-6"})
    }

    pub(super) async fn environment(rt: &LocalRuntime, name: &str) -> Environment {
        rt.create_environment(json!({"name": name}))
            .await
            .expect("create environment")
    }

    pub(super) fn assert_kind<T: std::fmt::Debug>(
        result: Result<T>,
        kind: ErrorKind,
    ) -> RuntimeError {
        match result {
            Err(e) if e.kind == kind => e,
            other => panic!("expected {kind:?}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn latency_is_applied_after_the_work() {
        let f = fixture();
        let latency = Duration::from_millis(30);
        let slow = LocalRuntime::open(
            &f.db,
            LocalOptions {
                latency,
                ..Default::default()
            },
        )
        .expect("runtime");
        let start = std::time::Instant::now();
        slow.create_environment(json!({"name": "timed"}))
            .await
            .expect("create");
        assert!(start.elapsed() >= latency);

        // Stopped while waiting for its response, the call has still happened.
        let very_slow = LocalRuntime::open(
            &f.db,
            LocalOptions {
                latency: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .expect("runtime");
        let call = very_slow.create_agent(agent_body("unreported"));
        assert!(tokio::time::timeout(Duration::ZERO, call).await.is_err());
        let agents = f.rt.list_agents(&ListQuery::default()).await.expect("list");
        assert_eq!(agents.data.len(), 1);
        assert_eq!(agents.data[0].name, "unreported");
    }

    /// A sandbox provider that reaches outside the machine.
    #[derive(Debug)]
    struct Elsewhere;

    #[async_trait]
    impl SandboxProvider for Elsewhere {
        async fn open(
            &self,
            _spec: &crate::sandbox::SandboxSpec,
        ) -> std::result::Result<Arc<dyn crate::sandbox::Sandbox>, crate::sandbox::SandboxError>
        {
            Err(crate::sandbox::SandboxError::Other("elsewhere".into()))
        }

        async fn remove(
            &self,
            _session_id: &str,
        ) -> std::result::Result<(), crate::sandbox::SandboxError> {
            Ok(())
        }
    }

    #[test]
    fn only_its_own_database_with_local_sandboxes_holds_every_effect() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path().join("db"))
            .expect("open sled")
            .as_db();
        let other = sled::open(dir.path().join("other"))
            .expect("open sled")
            .as_db();
        let local = |sandboxes: Arc<dyn SandboxProvider>| {
            let options = LocalOptions {
                sandboxes,
                ..Default::default()
            };
            LocalRuntime::open(&db, options).expect("runtime")
        };
        let workspaces = crate::sandbox::local::LocalSandboxes::new(dir.path().join("ws"));
        let rt = local(Arc::new(workspaces));
        assert!(rt.writes_only_to(&db));
        assert!(!rt.writes_only_to(&other), "another database");
        assert!(local(Arc::new(NoSandboxes)).writes_only_to(&db));
        assert!(
            !local(Arc::new(Elsewhere)).writes_only_to(&db),
            "a remote sandbox provider's effects are outside the database"
        );
    }
}
