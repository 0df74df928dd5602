//! What the engine's tests share: a store in memory, scripted models that
//! record their requests, session and environment records as the local
//! runtime would resolve them, and helpers that stream, send and collect.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::*;
use crate::api::event::{self, Event};
use crate::api::ids::{new_id, timestamp, ENVIRONMENT_PREFIX, SESSION_PREFIX};
use crate::api::tool::{AgentToolConfig, AgentToolset, PermissionPolicy, ToolsetDefaultConfig};
use crate::api::{Environment, ErrorKind, Session, Tool};
use crate::model::{Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::sandbox::local::LocalSandboxes;
use crate::sandbox::tools::BUILTIN;

/// Only a guard against hanging: tests wait on events, never on time.
const PATIENCE: Duration = Duration::from_secs(60);

// ----- a store in memory --------------------------------------------------------------

#[derive(Default)]
pub(crate) struct MemoryStore {
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    seq: u64,
    sessions: HashMap<String, Session>,
    environments: HashMap<String, Environment>,
    inbox: HashMap<String, Vec<Queued>>,
    history: HashMap<String, Vec<Event>>,
}

impl MemoryStore {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner.lock().unwrap()
    }

    pub(crate) fn put_session(&self, session: Session) {
        self.memory().sessions.insert(session.id.clone(), session);
    }

    pub(crate) fn remove_session(&self, id: &str) {
        self.memory().sessions.remove(id);
    }

    pub(crate) fn put_environment(&self, environment: Environment) {
        self.memory()
            .environments
            .insert(environment.id.clone(), environment);
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn session(&self, id: &str) -> Result<Session> {
        let session = self.memory().sessions.get(id).cloned();
        session.ok_or_else(|| RuntimeError::not_found("session", id))
    }

    async fn update_session(&self, id: &str, change: SessionChange) -> Result<()> {
        if let Some(session) = self.memory().sessions.get_mut(id) {
            change(session);
            session.updated_at = timestamp();
        }
        Ok(())
    }

    async fn environment(&self, id: &str) -> Result<Option<Environment>> {
        Ok(self.memory().environments.get(id).cloned())
    }

    async fn push_inbox(&self, session_id: &str, events: &[Event]) -> Result<()> {
        let mut memory = self.memory();
        for event in events {
            memory.seq += 1;
            let queued = Queued {
                seq: memory.seq,
                event: event.clone(),
            };
            memory
                .inbox
                .entry(session_id.to_owned())
                .or_default()
                .push(queued);
        }
        Ok(())
    }

    async fn inbox(&self, session_id: &str) -> Result<Vec<Queued>> {
        Ok(self
            .memory()
            .inbox
            .get(session_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn first_in_inbox(&self, session_id: &str) -> Result<Option<Queued>> {
        let memory = self.memory();
        Ok(memory
            .inbox
            .get(session_id)
            .and_then(|q| q.first().cloned()))
    }

    async fn discard(&self, session_id: &str, seq: u64) -> Result<()> {
        if let Some(inbox) = self.memory().inbox.get_mut(session_id) {
            inbox.retain(|q| q.seq != seq);
        }
        Ok(())
    }

    async fn append(&self, session_id: &str, event: &Event) -> Result<()> {
        let mut memory = self.memory();
        memory.seq += 1;
        memory
            .history
            .entry(session_id.to_owned())
            .or_default()
            .push(event.clone());
        Ok(())
    }

    async fn take(&self, session_id: &str, seq: u64, event: &Event) -> Result<()> {
        self.append(session_id, event).await?;
        self.discard(session_id, seq).await
    }

    async fn history(&self, session_id: &str) -> Result<Vec<Event>> {
        Ok(self
            .memory()
            .history
            .get(session_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn clear(&self, session_id: &str) -> Result<()> {
        let mut memory = self.memory();
        memory.inbox.remove(session_id);
        memory.history.remove(session_id);
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

// ----- models ---------------------------------------------------------------------------

#[derive(Clone)]
pub(crate) enum Turn {
    Reply(ModelResponse),
    Fail(ModelError),
    /// Never answers.
    Hang,
    /// Answers once the semaphore has a permit.
    Gate(Arc<Semaphore>, ModelResponse),
}

impl Turn {
    pub(crate) fn reply(self) -> ModelResponse {
        match self {
            Turn::Reply(response) => response,
            _ => unreachable!("not a reply"),
        }
    }
}

pub(crate) fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: 1,
        cache_read_input_tokens: 2,
    }
}

pub(crate) fn text(t: &str) -> Turn {
    Turn::Reply(ModelResponse {
        content: vec![json!({"type": "text", "text": t})],
        stop_reason: "end_turn".to_owned(),
        usage: usage(10, 5),
    })
}

pub(crate) fn tool_uses(uses: &[(&str, Value)]) -> ModelResponse {
    let content = uses
        .iter()
        .enumerate()
        .map(|(i, (name, input))| {
            json!({"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": input})
        })
        .collect();
    ModelResponse {
        content,
        stop_reason: "tool_use".to_owned(),
        usage: usage(20, 7),
    }
}

pub(crate) fn tool(name: &str, input: Value) -> Turn {
    Turn::Reply(tool_uses(&[(name, input)]))
}

/// One session's model: the script, and every request it got.
struct TestModel {
    turns: Mutex<VecDeque<Turn>>,
    requests: Arc<Mutex<Vec<ModelRequest>>>,
}

#[async_trait]
impl Model for TestModel {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        self.requests.lock().unwrap().push(request.clone());
        let turn = self.turns.lock().unwrap().pop_front();
        match turn {
            None => Err(ModelError::ScriptExhausted("no turn left".to_owned())),
            Some(Turn::Reply(response)) => Ok(response),
            Some(Turn::Fail(e)) => Err(e),
            Some(Turn::Hang) => std::future::pending().await,
            Some(Turn::Gate(gate, response)) => {
                let _permit = gate.acquire().await;
                Ok(response)
            }
        }
    }
}

/// Gives every session a fresh model with `script`; records the requests.
#[derive(Clone)]
pub(crate) struct Models {
    requests: Arc<Mutex<Vec<ModelRequest>>>,
    pub(crate) resolved: Arc<Mutex<Vec<String>>>,
}

impl Models {
    pub(crate) fn new() -> Self {
        Models {
            requests: Arc::default(),
            resolved: Arc::default(),
        }
    }

    pub(crate) fn resolver(&self, script: Vec<Turn>) -> Arc<dyn ModelResolver> {
        let requests = Arc::clone(&self.requests);
        let resolved = Arc::clone(&self.resolved);
        Arc::new(move |id: &str| -> Result<Arc<dyn Model>, ModelError> {
            resolved.lock().unwrap().push(id.to_owned());
            Ok(Arc::new(TestModel {
                turns: Mutex::new(script.clone().into()),
                requests: Arc::clone(&requests),
            }))
        })
    }

    pub(crate) fn requests(&self) -> Vec<ModelRequest> {
        self.requests.lock().unwrap().clone()
    }
}

// ----- an engine over the memory store ------------------------------------------------

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) models: Models,
}

impl Fixture {
    /// Models that follow `script`, tools in a workspace in a temp dir.
    pub(crate) fn new(script: Vec<Turn>) -> Self {
        crate::sandbox::local::test_support::ensure_bubblewrap();
        let dir = tempfile::tempdir().expect("tempdir");
        let models = Models::new();
        let options = EngineOptions {
            sandboxes: Arc::new(LocalSandboxes::new(dir.path().join("workspaces"))),
            models: models.resolver(script),
            ..EngineOptions::default()
        };
        Fixture::with(dir, models, options)
    }

    pub(crate) fn with(dir: tempfile::TempDir, models: Models, options: EngineOptions) -> Self {
        let store = Arc::new(MemoryStore::default());
        let engine = Engine::new(Arc::clone(&store) as Arc<dyn SessionStore>, options);
        Fixture {
            dir,
            store,
            engine: Arc::new(engine),
            models,
        }
    }

    pub(crate) fn workspaces(&self) -> PathBuf {
        self.dir.path().join("workspaces")
    }

    /// A session of an agent with `tools`, model `test-model` and system
    /// prompt "Be brief.", in a new environment with no packages.
    pub(crate) fn session(&self, tools: Vec<Tool>) -> Session {
        let environment = environment(json!({}));
        let session = session_record(&environment.id, tools);
        self.store.put_environment(environment);
        self.store.put_session(session.clone());
        session
    }

    /// The session's record now.
    pub(crate) async fn record(&self, id: &str) -> Session {
        self.store.session(id).await.expect("session")
    }

    pub(crate) async fn history(&self, id: &str) -> Vec<Value> {
        let history = self.store.history(id).await.expect("history");
        history.iter().map(Event::to_value).collect()
    }

    pub(crate) async fn send(&self, id: &str, events: Vec<Value>) -> Result<Vec<Value>> {
        let accepted = self.engine.send(id, &events).await?;
        Ok(accepted.iter().map(Event::to_value).collect())
    }

    pub(crate) async fn interrupt(&self, id: &str) {
        self.send(id, vec![json!({"type": "user.interrupt"})])
            .await
            .expect("interrupt");
    }

    pub(crate) async fn stream(&self, id: &str) -> Subscription {
        self.engine.subscribe(id).await.expect("subscribe")
    }

    /// Streams, sends, and collects until the session is idle again.
    pub(crate) async fn exchange(&self, id: &str, events: Vec<Value>) -> Vec<Value> {
        exchange(&self.engine, id, events).await
    }
}

pub(crate) async fn exchange(engine: &Engine, id: &str, events: Vec<Value>) -> Vec<Value> {
    let mut stream = engine.subscribe(id).await.expect("subscribe");
    engine.send(id, &events).await.expect("send");
    until_idle(&mut stream).await
}

/// An environment record; `config` is its cloud config's non-default parts.
pub(crate) fn environment(config: Value) -> Environment {
    let mut packages = json!({"type": "packages", "apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []});
    if let Some(pip) = config.get("pip") {
        packages["pip"] = pip.clone();
    }
    serde_json::from_value(json!({
        "id": new_id(ENVIRONMENT_PREFIX),
        "archived_at": null,
        "config": {"type": "cloud", "networking": {"type": "unrestricted"}, "packages": packages},
        "created_at": timestamp(),
        "description": null,
        "metadata": {},
        "name": format!("env-{}", new_id("t")),
        "type": "environment",
        "updated_at": timestamp(),
    }))
    .expect("environment")
}

/// A new idle session's record, its agent snapshot as the runtime resolves it.
pub(crate) fn session_record(environment_id: &str, tools: Vec<Tool>) -> Session {
    serde_json::from_value(json!({
        "id": new_id(SESSION_PREFIX),
        "agent": {
            "id": "agent_test",
            "version": 1,
            "name": "test",
            "model": {"id": "test-model"},
            "system": "Be brief.",
            "tools": tools,
            "type": "agent",
        },
        "archived_at": null,
        "created_at": timestamp(),
        "environment_id": environment_id,
        "metadata": {},
        "outcome_evaluations": [],
        "resources": [],
        "stats": {},
        "status": "idle",
        "title": null,
        "type": "session",
        "updated_at": timestamp(),
        "usage": {},
        "vault_ids": [],
    }))
    .expect("session")
}

/// The built-in toolset, every tool enabled and allowed unless `policies`
/// says otherwise (`[("bash", "always_ask")]`).
pub(crate) fn toolset(policies: &[(&str, &str)]) -> Vec<Tool> {
    let configs = BUILTIN
        .iter()
        .map(|name| {
            let policy = policies
                .iter()
                .find(|(n, _)| n == name)
                .map_or("always_allow", |(_, p)| p);
            AgentToolConfig {
                name: (*name).to_owned(),
                kind: (*name).to_owned(),
                enabled: true,
                permission_policy: PermissionPolicy::from_name(policy).expect("policy"),
                allowed_domains: None,
                blocked_domains: None,
                max_content_tokens: None,
                url_sources: None,
                user_location: None,
            }
        })
        .collect();
    vec![Tool::AgentToolset(AgentToolset {
        configs,
        default_config: ToolsetDefaultConfig {
            enabled: true,
            permission_policy: PermissionPolicy::AlwaysAllow,
        },
    })]
}

pub(crate) fn message(t: &str) -> Value {
    json!({"type": "user.message", "content": [{"type": "text", "text": t}]})
}

// ----- streams --------------------------------------------------------------------------

pub(crate) async fn next(stream: &mut Subscription) -> Value {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("timed out waiting for an event")
        .expect("the stream ended")
        .expect("the stream broke")
        .to_value()
}

/// Events up to and including the first that `stop` accepts.
pub(crate) async fn until(stream: &mut Subscription, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let e = next(stream).await;
        let done = stop(&e);
        events.push(e);
        if done {
            return events;
        }
    }
}

pub(crate) async fn until_idle(stream: &mut Subscription) -> Vec<Value> {
    until(stream, |e| event::kind(e) == "session.status_idle").await
}

pub(crate) fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(event::kind).collect()
}

pub(crate) fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| event::kind(e) == kind).collect()
}

pub(crate) fn assert_invalid<T: std::fmt::Debug>(result: Result<T>, needle: &str) {
    match result {
        Err(e) if e.kind == ErrorKind::InvalidRequest && e.message.contains(needle) => {}
        other => panic!("expected a 400 mentioning {needle:?}, got {other:?}"),
    }
}
