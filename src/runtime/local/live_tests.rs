//! Sessions end to end through the `Runtime` trait over sled: what only the
//! runtime adds to the engine (listing events in pages, deleting and
//! archiving sessions, 404s) and what must survive closing the Db. The
//! agent loop's own tests sit beside the engine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::api::event;
use crate::api::ErrorKind;
use crate::engine::test_support::{kinds, message, of_kind, text, tool, Models, Turn};
use crate::engine::SessionStore;
use crate::runtime::EventStream;
use crate::sandbox::local::LocalSandboxes;

/// Only a guard against hanging: tests wait on events, never on time.
const PATIENCE: Duration = Duration::from_secs(60);

struct Fixture {
    dir: tempfile::TempDir,
    _db: sled::Db,
    rt: Arc<LocalRuntime>,
}

impl Fixture {
    fn new(script: Vec<Turn>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path().join("db")).expect("open sled");
        let models = Models::new();
        let rt =
            LocalRuntime::open(&db, options(dir.path(), models.resolver(script))).expect("runtime");
        Fixture {
            dir,
            _db: db,
            rt: Arc::new(rt),
        }
    }

    fn workspaces(&self) -> std::path::PathBuf {
        self.dir.path().join("workspaces")
    }
}

fn options(dir: &Path, models: Arc<dyn ModelResolver>) -> LocalOptions {
    crate::sandbox::local::test_support::ensure_bubblewrap();
    LocalOptions {
        sandboxes: Arc::new(LocalSandboxes::new(dir.join("workspaces"))),
        models,
        ..LocalOptions::default()
    }
}

async fn session(rt: &LocalRuntime, tools: Value) -> Session {
    let agent = rt
        .create_agent(json!({
            "name": format!("agent-{}", ids::new_id("t")),
            "model": "test-model",
            "system": "Be brief.",
            "tools": tools,
        }))
        .await
        .expect("agent");
    let env = rt
        .create_environment(json!({"name": format!("env-{}", ids::new_id("t"))}))
        .await
        .expect("environment");
    rt.create_session(json!({"agent": agent.id, "environment_id": env.id}))
        .await
        .expect("session")
}

async fn next(stream: &mut EventStream) -> Value {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("timed out waiting for an event")
        .expect("the stream ended")
        .expect("the stream broke")
}

/// Events up to and including the first that `stop` accepts.
async fn until(stream: &mut EventStream, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
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

async fn until_idle(stream: &mut EventStream) -> Vec<Value> {
    until(stream, |e| event::kind(e) == "session.status_idle").await
}

/// Streams, sends, and collects until the session is idle again.
async fn exchange(rt: &LocalRuntime, session_id: &str, events: Vec<Value>) -> Vec<Value> {
    let mut stream = rt.stream_events(session_id).await.expect("stream");
    rt.send_events(session_id, events).await.expect("send");
    until_idle(&mut stream).await
}

async fn history(rt: &LocalRuntime, session_id: &str) -> Vec<Value> {
    crate::runtime::list_all(|q| async move { rt.list_events(session_id, &q).await })
        .await
        .expect("list events")
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T>, needle: &str) {
    match result {
        Err(e) if e.kind == ErrorKind::InvalidRequest && e.message.contains(needle) => {}
        other => panic!("expected a 400 mentioning {needle:?}, got {other:?}"),
    }
}

// ----- tests ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn what_is_streamed_is_listed_in_pages() {
    let f = Fixture::new(vec![text("Hello!"), text("Again.")]);
    let s = session(&f.rt, json!([])).await;

    let mut stream = f.rt.stream_events(&s.id).await.expect("stream");
    let accepted =
        f.rt.send_events(&s.id, vec![message("hi")])
            .await
            .expect("send");
    assert_eq!(accepted.len(), 1);
    assert!(event::id(&accepted[0]).starts_with("sevt_01"));
    assert_eq!(accepted[0]["processed_at"], Value::Null);
    let streamed = until_idle(&mut stream).await;
    assert_eq!(event::id(&streamed[0]), event::id(&accepted[0]));
    assert_eq!(history(&f.rt, &s.id).await, streamed);
    let session = f.rt.retrieve_session(&s.id).await.expect("session");
    assert_eq!(session.status, "idle");
    assert_eq!(session.usage.input_tokens, Some(10));

    exchange(&f.rt, &s.id, vec![message("more")]).await;
    // Pages walk the same history.
    let all = history(&f.rt, &s.id).await;
    assert_eq!(all.len(), 12);
    let mut paged = Vec::new();
    let mut query = ListQuery {
        limit: Some(5),
        ..ListQuery::default()
    };
    loop {
        let page = f.rt.list_events(&s.id, &query).await.expect("page");
        paged.extend(page.data);
        match page.next_page {
            Some(next) => query.page = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let first =
        f.rt.list_events(&s.id, &ListQuery::default())
            .await
            .expect("default page");
    assert_eq!(first.data.len(), 12);
    assert!(first.next_page.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_session_ends_its_streams_and_removes_everything() {
    let f = Fixture::new(vec![
        tool("write", json!({"file_path": "a.txt", "content": "x"})),
        text("done"),
    ]);
    let s = session(
        &f.rt,
        json!([{"type": "agent_toolset_20260401", "configs": []}]),
    )
    .await;
    let events = exchange(&f.rt, &s.id, vec![message("write it")]).await;
    assert_eq!(of_kind(&events, "agent.tool_result")[0]["is_error"], false);
    assert!(f.workspaces().join("sessions").join(&s.id).exists());

    let mut stream = f.rt.stream_events(&s.id).await.expect("stream");
    f.rt.delete_session(&s.id).await.expect("delete");
    assert_eq!(event::kind(&next(&mut stream).await), "session.deleted");
    assert!(stream.next().await.is_none());
    assert!(!f.workspaces().join("sessions").join(&s.id).exists());
    assert!(f
        .rt
        .list_events(&s.id, &ListQuery::default())
        .await
        .unwrap_err()
        .is_not_found());
    assert!(f
        .rt
        .send_events(&s.id, vec![message("hi")])
        .await
        .unwrap_err()
        .is_not_found());
    assert!(f
        .rt
        .events
        .history(&s.id)
        .await
        .expect("history")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn history_survives_reopening_and_the_conversation_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let models = Models::new();
    let (s, first) = {
        let db = sled::open(&path).expect("open");
        let rt = LocalRuntime::open(&db, options(dir.path(), models.resolver(vec![text("one")])))
            .expect("runtime");
        let s = session(&rt, json!([])).await;
        let events = exchange(&rt, &s.id, vec![message("first")]).await;
        rt.shutdown().await;
        (s, events)
    };
    let db = super::tests::reopen(&path);
    let rt = LocalRuntime::open(&db, options(dir.path(), models.resolver(vec![text("two")])))
        .expect("runtime");
    assert_eq!(history(&rt, &s.id).await, first);
    exchange(&rt, &s.id, vec![message("second")]).await;
    let request = models.requests().pop().expect("request");
    assert_eq!(request.messages.len(), 3);
    assert_eq!(request.messages[1]["content"][0]["text"], "one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_cut_off_by_a_restart_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let models = Models::new();
    let s = {
        let db = sled::open(&path).expect("open");
        let rt = LocalRuntime::open(&db, options(dir.path(), models.resolver(vec![Turn::Hang])))
            .expect("runtime");
        let s = session(&rt, json!([])).await;
        let mut stream = rt.stream_events(&s.id).await.expect("stream");
        rt.send_events(&s.id, vec![message("first")])
            .await
            .expect("send");
        until(&mut stream, |e| {
            event::kind(e) == "span.model_request_start"
        })
        .await;
        rt.shutdown().await;
        db.flush().expect("flush");
        s
    };
    let db = super::tests::reopen(&path);
    let rt = LocalRuntime::open(
        &db,
        options(dir.path(), models.resolver(vec![text("recovered")])),
    )
    .expect("runtime");
    assert_eq!(
        rt.retrieve_session(&s.id).await.expect("session").status,
        "running"
    );
    // Streaming a session left running picks its turn up again.
    let mut stream = rt.stream_events(&s.id).await.expect("stream");
    let events = until_idle(&mut stream).await;
    assert_eq!(
        kinds(&events),
        [
            "span.model_request_end",
            "span.model_request_start",
            "span.model_request_end",
            "agent.message",
            "session.status_idle",
        ]
    );
    assert_eq!(events[0]["is_error"], true);
    assert_eq!(event::text(&events[3]), "recovered");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sends_and_lists_are_refused_and_nothing_is_kept() {
    let f = Fixture::new(vec![]);
    let s = session(&f.rt, json!([])).await;
    assert_invalid(
        f.rt.send_events(&s.id, vec![json!({"type": "user.bogus"})])
            .await,
        "events[0].type",
    );
    assert_invalid(
        f.rt.send_events(
            &s.id,
            vec![message("fine"), json!({"type": "user.message"})],
        )
        .await,
        "events[1].content",
    );
    assert!(history(&f.rt, &s.id).await.is_empty());
    assert!(f.rt.events.inbox(&s.id).await.expect("inbox").is_empty());

    assert!(f
        .rt
        .send_events("sesn_missing", vec![message("hi")])
        .await
        .unwrap_err()
        .is_not_found());
    assert!(f
        .rt
        .stream_events("sesn_missing")
        .await
        .err()
        .expect("404")
        .is_not_found());
    assert_invalid(
        f.rt.list_events(
            &s.id,
            &ListQuery {
                limit: Some(0),
                ..ListQuery::default()
            },
        )
        .await,
        "`limit`",
    );
    assert_invalid(
        f.rt.list_events(
            &s.id,
            &ListQuery {
                page: Some("bogus".to_owned()),
                ..ListQuery::default()
            },
        )
        .await,
        "`page`",
    );
    f.rt.archive_session(&s.id).await.expect("archive");
    assert_invalid(
        f.rt.send_events(&s.id, vec![message("hi")]).await,
        "archived",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_model_and_readers_but_never_the_disk() {
    const KEY: &str = "live-secret-7f3a9c";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let models = Models::new();
    let script = vec![
        tool("bash", json!({"command": format!("echo out-{KEY}")})),
        text(&format!("I hold {KEY}, as told")),
    ];
    let secrets = crate::redact::Secrets::default();
    secrets.add_env("AGENTFORM_LIVE_TEST_KEY", KEY);
    let (agent, session_id, seen) = {
        let db = sled::open(&path).expect("open sled");
        let rt = LocalRuntime::open(
            &db,
            LocalOptions {
                secrets,
                ..options(dir.path(), models.resolver(script))
            },
        )
        .expect("runtime");
        let agent = rt
            .create_agent(json!({
                "name": "keeper",
                "model": "test-model",
                "system": format!("key={KEY};"),
                "metadata": {"owner": format!("team {KEY}")},
                "tools": [{"type": "agent_toolset_20260401"}],
            }))
            .await
            .expect("agent");
        let env = rt
            .create_environment(json!({"name": "e", "metadata": {"k": format!("{KEY}!")}}))
            .await
            .expect("environment");
        let s = rt
            .create_session(json!({"agent": agent.id, "environment_id": env.id}))
            .await
            .expect("session");
        exchange(&rt, &s.id, vec![message(&format!("use {KEY} now"))]).await;
        // Readers that know the secret get what was sent and said.
        let read = rt.retrieve_agent(&agent.id, None).await.expect("agent");
        assert_eq!(read.system.as_deref(), Some("key=live-secret-7f3a9c;"));
        assert_eq!(read, agent);
        let seen = history(&rt, &s.id).await;
        rt.shutdown().await;
        db.flush().expect("flush");
        (agent, s.id, seen)
    };
    let said = serde_json::to_string(&seen).unwrap();
    assert!(said.contains("out-live-secret-7f3a9c") && said.contains("I hold live-secret"));
    // The model got the secret: in the system prompt and the user's message.
    let requests = models.requests();
    assert_eq!(
        requests[0].system.as_deref(),
        Some("key=live-secret-7f3a9c;")
    );
    assert!(serde_json::to_string(&requests[0].messages)
        .unwrap()
        .contains("use live-secret-7f3a9c now"));
    // No file holds it.
    for file in walk(dir.path()) {
        let bytes = std::fs::read(&file).expect("read");
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "{} holds the secret",
            file.display()
        );
    }
    // A process without the secret (its variable unset) reads `(sensitive)`.
    let db = super::tests::reopen(&path);
    let stranger = LocalRuntime::open(&db, LocalOptions::default()).expect("runtime");
    let read = stranger
        .retrieve_agent(&agent.id, None)
        .await
        .expect("agent");
    assert_eq!(read.system.as_deref(), Some("key=(sensitive);"));
    assert_eq!(read.metadata["owner"], "team (sensitive)");
    let events = serde_json::to_string(&history(&stranger, &session_id).await).unwrap();
    assert!(events.contains("I hold (sensitive), as told"), "{events}");
    assert!(!events.contains(KEY));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Local sandboxes that note which sessions were archived.
#[derive(Debug)]
struct Noting {
    inner: LocalSandboxes,
    archived: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl crate::sandbox::SandboxProvider for Noting {
    async fn open(
        &self,
        spec: &crate::sandbox::SandboxSpec,
    ) -> std::result::Result<Arc<dyn crate::sandbox::Sandbox>, crate::sandbox::SandboxError> {
        self.inner.open(spec).await
    }

    async fn remove(&self, id: &str) -> std::result::Result<(), crate::sandbox::SandboxError> {
        self.inner.remove(id).await
    }

    async fn archive(&self, id: &str) -> std::result::Result<(), crate::sandbox::SandboxError> {
        self.archived.lock().unwrap().push(id.to_owned());
        self.inner.archive(id).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_a_session_tells_its_sandbox_provider_and_keeps_the_local_workspace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path().join("db")).expect("open sled");
    let models = Models::new();
    let noting = Arc::new(Noting {
        inner: LocalSandboxes::new(dir.path().join("workspaces")),
        archived: Default::default(),
    });
    let mut options = options(
        dir.path(),
        models.resolver(vec![
            tool("write", json!({"file_path": "a.txt", "content": "x"})),
            text("done"),
        ]),
    );
    options.sandboxes = noting.clone();
    let rt = LocalRuntime::open(&db, options).expect("runtime");
    let s = session(
        &rt,
        json!([{"type": "agent_toolset_20260401", "configs": []}]),
    )
    .await;
    exchange(&rt, &s.id, vec![message("write it")]).await;
    let archived = rt.archive_session(&s.id).await.expect("archive");
    assert!(archived.archived_at.is_some());
    assert_eq!(*noting.archived.lock().unwrap(), vec![s.id.clone()]);
    let workspace = dir.path().join("workspaces/sessions").join(&s.id);
    assert!(workspace.join("a.txt").is_file(), "the workspace is kept");
}
