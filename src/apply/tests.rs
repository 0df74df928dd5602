//! The walk over a plan against the real local runtime, wrapped where a
//! failure must be injected or the calls in flight counted. One temporary
//! state per test; no sleeps: the gate is opened by the test itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{watch, Semaphore};

use super::*;
use crate::api::META_ADDRESS;
use crate::plan::test_fixture::{addr, change, Fixture};
use crate::plan::{Plan, PlanOptions};
use crate::runtime::local::LocalRuntime;
use crate::runtime::{
    list_all, Agent, Deleted, Environment, ErrorKind, EventStream, ListQuery, Page, Result,
    Runtime, Session,
};

const MANIFEST: &str = r#"version: 1
name: unit
environments:
  data:
    config: { type: cloud }
agents:
  analyst:
    model: claude-sonnet-4-6
    system: You are an analyst.
  helper:
    model: claude-haiku-4-5
    system: "Ask {{ agent.analyst.id }} for numbers."
sessions:
  smoke:
    agent: analyst
    environment: data
"#;

/// Holds every create until the test opens it, counting those in flight.
struct Gate {
    open: Semaphore,
    entered: watch::Sender<usize>,
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

/// The local runtime, with failures injected into the creates of chosen
/// addresses and a record of what each create saw.
struct Fake {
    inner: Arc<LocalRuntime>,
    state: Arc<StateStore>,
    /// Address → whether the failure comes after the object was made.
    failing: Mutex<HashMap<String, bool>>,
    /// The addresses created, in order.
    created: Mutex<Vec<String>>,
    /// Address → whether its intent was recorded when the create began.
    intents: Mutex<Vec<(String, bool)>>,
    gate: Option<Gate>,
}

impl Fake {
    fn new(fx: &Fixture) -> Self {
        Fake {
            inner: fx.local.clone(),
            state: fx.state.clone(),
            failing: Mutex::default(),
            created: Mutex::default(),
            intents: Mutex::default(),
            gate: None,
        }
    }

    fn fail(self, address: &str, after_effect: bool) -> Self {
        self.failing
            .lock()
            .unwrap()
            .insert(address.into(), after_effect);
        self
    }

    fn gated(mut self) -> Self {
        self.gate = Some(Gate {
            open: Semaphore::new(0),
            entered: watch::Sender::new(0),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        self
    }

    fn providers(self: &Arc<Self>) -> Providers {
        let mut p = Providers::default();
        p.insert(self.clone());
        p
    }

    fn created(&self) -> Vec<String> {
        self.created.lock().unwrap().clone()
    }

    /// Runs `create` for the object `body` describes, with the injected behaviour.
    async fn create<T, F>(&self, body: Value, create: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let address = body["metadata"][META_ADDRESS]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let intent = self.state.intent(&addr(&address)).unwrap().is_some();
        self.intents.lock().unwrap().push((address.clone(), intent));
        let failing = self.failing.lock().unwrap().get(&address).copied();
        if failing == Some(false) {
            return Err(RuntimeError::new(ErrorKind::Api, "injected failure"));
        }
        if let Some(gate) = &self.gate {
            let now = gate.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            gate.most.fetch_max(now, Ordering::SeqCst);
            gate.entered.send_modify(|n| *n += 1);
            drop(gate.open.acquire().await.unwrap());
        }
        let made = create.await;
        if let Some(gate) = &self.gate {
            gate.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.created.lock().unwrap().push(address);
        if failing == Some(true) {
            return Err(RuntimeError::new(
                ErrorKind::Api,
                "injected failure after the create",
            ));
        }
        made
    }
}

#[async_trait]
impl Runtime for Fake {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn create_agent(&self, body: Value) -> Result<Agent> {
        self.create(body.clone(), self.inner.create_agent(body))
            .await
    }
    async fn retrieve_agent(&self, id: &str, version: Option<u64>) -> Result<Agent> {
        self.inner.retrieve_agent(id, version).await
    }
    async fn list_agents(&self, query: &ListQuery) -> Result<Page<Agent>> {
        self.inner.list_agents(query).await
    }
    async fn update_agent(&self, id: &str, body: Value) -> Result<Agent> {
        self.inner.update_agent(id, body).await
    }
    async fn list_agent_versions(&self, id: &str, query: &ListQuery) -> Result<Page<Agent>> {
        self.inner.list_agent_versions(id, query).await
    }
    async fn archive_agent(&self, id: &str) -> Result<Agent> {
        self.inner.archive_agent(id).await
    }
    async fn create_environment(&self, body: Value) -> Result<Environment> {
        self.create(body.clone(), self.inner.create_environment(body))
            .await
    }
    async fn retrieve_environment(&self, id: &str) -> Result<Environment> {
        self.inner.retrieve_environment(id).await
    }
    async fn list_environments(&self, query: &ListQuery) -> Result<Page<Environment>> {
        self.inner.list_environments(query).await
    }
    async fn update_environment(&self, id: &str, body: Value) -> Result<Environment> {
        self.inner.update_environment(id, body).await
    }
    async fn archive_environment(&self, id: &str) -> Result<Environment> {
        self.inner.archive_environment(id).await
    }
    async fn delete_environment(&self, id: &str) -> Result<Deleted> {
        self.inner.delete_environment(id).await
    }
    async fn create_session(&self, body: Value) -> Result<Session> {
        self.create(body.clone(), self.inner.create_session(body))
            .await
    }
    async fn retrieve_session(&self, id: &str) -> Result<Session> {
        self.inner.retrieve_session(id).await
    }
    async fn list_sessions(&self, query: &ListQuery) -> Result<Page<Session>> {
        self.inner.list_sessions(query).await
    }
    async fn update_session(&self, id: &str, body: Value) -> Result<Session> {
        self.inner.update_session(id, body).await
    }
    async fn archive_session(&self, id: &str) -> Result<Session> {
        self.inner.archive_session(id).await
    }
    async fn delete_session(&self, id: &str) -> Result<Deleted> {
        self.inner.delete_session(id).await
    }
    async fn send_events(&self, session_id: &str, events: Vec<Value>) -> Result<Vec<Value>> {
        self.inner.send_events(session_id, events).await
    }
    async fn list_events(&self, session_id: &str, query: &ListQuery) -> Result<Page<Value>> {
        self.inner.list_events(session_id, query).await
    }
    async fn stream_events(&self, session_id: &str) -> Result<EventStream> {
        self.inner.stream_events(session_id).await
    }
}

/// Records what the walk reports.
#[derive(Default)]
struct Recorder {
    finished: Mutex<Vec<(String, Outcome)>>,
}

impl Reporter for Recorder {
    fn finished(&self, change: &Change, outcome: &Outcome, _elapsed: Duration) {
        self.finished
            .lock()
            .unwrap()
            .push((change.address.to_string(), outcome.clone()));
    }
}

async fn plan_of(fx: &Fixture, m: &Manifest, providers: &Providers) -> Plan {
    crate::plan::plan(Some(m), &fx.state, providers, &PlanOptions::default())
        .await
        .expect("plan")
}

fn context(fx: &Fixture, m: Manifest, providers: Providers, parallelism: usize) -> Context {
    Context {
        manifest: Some(Arc::new(m)),
        state: fx.state.clone(),
        providers,
        parallelism,
        reporter: Arc::new(Silent),
    }
}

fn outcome<'a>(report: &'a ApplyReport, address: &str) -> &'a Outcome {
    report
        .results
        .iter()
        .find(|(a, _, _)| a.to_string() == address)
        .map(|(_, _, o)| o)
        .unwrap_or_else(|| panic!("no outcome of {address}: {report:#?}"))
}

#[tokio::test]
async fn changes_run_after_what_they_wait_for_and_are_recorded() {
    let fx = Fixture::new();
    let fake = Arc::new(Fake::new(&fx));
    let m = fx.manifest(MANIFEST);
    let plan = plan_of(&fx, &m, &fake.providers()).await;
    let report = apply(&plan, context(&fx, m, fake.providers(), 10)).await;
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.count(Action::Create), 4);
    let created = fake.created();
    let at = |a: &str| created.iter().position(|c| c == a).unwrap();
    assert!(at("agent.analyst") < at("agent.helper"), "{created:?}");
    assert!(at("agent.analyst") < at("session.smoke"), "{created:?}");
    assert!(at("environment.data") < at("session.smoke"), "{created:?}");
    // The helper's prompt names the analyst's id, known once it was created.
    let helper = fx.record("agent.helper");
    let system = helper.config["system"].as_str().unwrap();
    assert_eq!(
        system,
        format!("Ask {} for numbers.", fx.id("agent.analyst"))
    );
    assert_eq!(fx.state.list().unwrap().len(), 4);
    assert!(fx.state.intents().unwrap().is_empty());
}

#[tokio::test]
async fn no_more_changes_than_the_parallelism_are_in_flight() {
    let fx = Fixture::new();
    let mut yaml = String::from("version: 1\nagents:\n");
    for i in 0..6 {
        yaml.push_str(&format!("  a{i}:\n    model: claude-sonnet-4-6\n"));
    }
    let m = fx.manifest(&yaml);
    let fake = Arc::new(Fake::new(&fx).gated());
    let plan = plan_of(&fx, &m, &fake.providers()).await;
    let ctx = context(&fx, m, fake.providers(), 2);
    let walk = tokio::spawn(async move { apply(&plan, ctx).await });
    let gate = fake.gate.as_ref().unwrap();
    let mut entered = gate.entered.subscribe();
    entered.wait_for(|n| *n >= 2).await.unwrap();
    // Everything runnable runs now on this single-threaded runtime; a third
    // create would enter here if the walk did not hold it back.
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    assert_eq!(*gate.entered.borrow(), 2);
    gate.open.add_permits(6);
    let report = walk.await.unwrap();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(*gate.entered.borrow(), 6);
    assert_eq!(gate.most.load(Ordering::SeqCst), 2);
    assert_eq!(fx.state.list().unwrap().len(), 6);
}

#[tokio::test]
async fn a_failure_skips_its_dependents_and_independent_changes_finish() {
    let fx = Fixture::new();
    let fake = Arc::new(Fake::new(&fx).fail("environment.data", false));
    let m = fx.manifest(MANIFEST);
    let plan = plan_of(&fx, &m, &fake.providers()).await;
    let recorder = Arc::new(Recorder::default());
    let mut ctx = context(&fx, m, fake.providers(), 10);
    ctx.reporter = recorder.clone();
    let report = apply(&plan, ctx).await;
    assert!(!report.ok());
    assert!(
        matches!(outcome(&report, "environment.data"), Outcome::Failed(e) if e.contains("injected failure")),
        "{report:#?}"
    );
    assert_eq!(
        outcome(&report, "session.smoke"),
        &Outcome::Skipped {
            because: addr("environment.data")
        }
    );
    assert!(matches!(
        outcome(&report, "agent.analyst"),
        Outcome::Done(_)
    ));
    assert!(matches!(outcome(&report, "agent.helper"), Outcome::Done(_)));
    assert_eq!(report.count(Action::Create), 2);
    let recorded: Vec<String> = fx
        .state
        .list()
        .unwrap()
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(recorded, ["agent.analyst", "agent.helper"]);
    // The skip is reported too, so a progress display counts every change.
    let finished = recorder.finished.lock().unwrap();
    assert_eq!(finished.len(), 4);
    assert!(finished.iter().any(|(a, o)| a == "session.smoke"
        && matches!(o, Outcome::Skipped { because } if *because == addr("environment.data"))));
}

#[tokio::test]
async fn an_intent_precedes_each_create_and_an_interrupted_create_is_adopted() {
    let fx = Fixture::new();
    const ONE: &str = "version: 1\nname: unit\nagents:\n  a: { model: claude-sonnet-4-6 }\n";
    let m = fx.manifest(ONE);
    // The create takes effect but its answer is lost, as in a crash.
    let fake = Arc::new(Fake::new(&fx).fail("agent.a", true));
    let plan = plan_of(&fx, &m, &fake.providers()).await;
    let report = apply(&plan, context(&fx, fx.manifest(ONE), fake.providers(), 1)).await;
    assert!(!report.ok());
    assert_eq!(
        fake.intents.lock().unwrap().as_slice(),
        [("agent.a".to_string(), true)]
    );
    assert!(fx.state.get(&addr("agent.a")).unwrap().is_none());
    let intents = fx.state.intents().unwrap();
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0].address, addr("agent.a"));

    // The next plan adopts the object it finds by its metadata.
    let providers = fx.providers();
    let plan = plan_of(&fx, &m, &providers).await;
    assert!(change(&plan, "agent.a").adopt);
    let report = apply(&plan, context(&fx, m, providers, 1)).await;
    let local = &*fx.local;
    let live = list_all(|q| async move { local.list_agents(&q).await })
        .await
        .unwrap();
    assert_eq!(live.len(), 1, "adopted, not created twice");
    let id = &live[0].id;
    assert!(
        matches!(outcome(&report, "agent.a"), Outcome::Done(d) if d.starts_with(&format!("adopted {id} after an interrupted create"))),
        "{report:#?}"
    );
    let record = fx.record("agent.a");
    assert_eq!(&record.remote_id, id);
    assert_eq!(record.history[0].action, "adopt");
    assert!(fx.state.intents().unwrap().is_empty());
}

#[tokio::test]
async fn updates_make_new_versions_and_removals_archive_and_delete() {
    let fx = Fixture::new();
    let providers = fx.providers();
    let m = fx.manifest(MANIFEST);
    let plan = plan_of(&fx, &m, &providers).await;
    assert!(apply(&plan, context(&fx, m, providers.clone(), 4))
        .await
        .ok());
    let helper_id = fx.id("agent.helper");
    let env_id = fx.id("environment.data");

    let edited = MANIFEST
        .replace("You are an analyst.", "You are careful.")
        .replace(
            "  helper:\n    model: claude-haiku-4-5\n    system: \"Ask {{ agent.analyst.id }} for numbers.\"\n",
            "",
        );
    let m = fx.manifest(&edited);
    let plan = plan_of(&fx, &m, &providers).await;
    let report = apply(&plan, context(&fx, m, providers.clone(), 4)).await;
    assert!(report.ok(), "{report:#?}");
    assert_eq!(
        outcome(&report, "agent.analyst"),
        &Outcome::Done(format!("updated {}: version 1 → 2", fx.id("agent.analyst")))
    );
    assert_eq!(
        outcome(&report, "agent.helper"),
        &Outcome::Done(format!("archived {helper_id}"))
    );
    assert!(
        matches!(outcome(&report, "session.smoke"), Outcome::Done(d) if d.starts_with("replaced: created sesn_"))
    );
    assert_eq!(fx.record("agent.analyst").version, Some(2));
    assert!(fx.state.get(&addr("agent.helper")).unwrap().is_none());
    let helper = fx.local.retrieve_agent(&helper_id, None).await.unwrap();
    assert!(helper.archived_at.is_some());
    assert_eq!(fx.id("environment.data"), env_id);
    let session = fx
        .local
        .retrieve_session(&fx.id("session.smoke"))
        .await
        .unwrap();
    assert_eq!(session.agent_version(), Some(2));
}
