//! Session events and the agent loop, end to end through the `Runtime` trait,
//! with in-test models.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::events::{LiveEvents, EVENT_PREFIX};
use super::ids::{new_id, timestamp};
use super::*;
use crate::api::ErrorKind;
use crate::model::{Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::runtime::{event, EventStream};
use crate::sandbox::local::{Installers, LocalSandboxes};

/// Only a guard against hanging: tests wait on events, never on time.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Turn {
    Reply(ModelResponse),
    Fail(ModelError),
    /// Never answers.
    Hang,
    /// Answers once the semaphore has a permit.
    Gate(Arc<Semaphore>, ModelResponse),
}

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: 1,
        cache_read_input_tokens: 2,
    }
}

fn text(t: &str) -> Turn {
    Turn::Reply(ModelResponse {
        content: vec![json!({"type": "text", "text": t})],
        stop_reason: "end_turn".to_owned(),
        usage: usage(10, 5),
    })
}

fn tool_uses(uses: &[(&str, Value)]) -> ModelResponse {
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

fn tool(name: &str, input: Value) -> Turn {
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
struct Models {
    requests: Arc<Mutex<Vec<ModelRequest>>>,
    resolved: Arc<Mutex<Vec<String>>>,
}

impl Models {
    fn new() -> Self {
        Models {
            requests: Arc::default(),
            resolved: Arc::default(),
        }
    }

    fn resolver(&self, script: Vec<Turn>) -> Arc<dyn ModelResolver> {
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

    fn requests(&self) -> Vec<ModelRequest> {
        self.requests.lock().unwrap().clone()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    _db: sled::Db,
    rt: Arc<LocalRuntime>,
    models: Models,
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
            models,
        }
    }

    fn workspaces(&self) -> PathBuf {
        self.dir.path().join("workspaces")
    }

    async fn session(&self, tools: Value) -> Session {
        session(&self.rt, tools).await
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
            "name": format!("agent-{}", new_id("t")),
            "model": "test-model",
            "system": "Be brief.",
            "tools": tools,
        }))
        .await
        .expect("agent");
    let env = rt
        .create_environment(json!({"name": format!("env-{}", new_id("t"))}))
        .await
        .expect("environment");
    rt.create_session(json!({"agent": agent.id, "environment_id": env.id}))
        .await
        .expect("session")
}

fn toolset(configs: Value) -> Value {
    json!([{"type": "agent_toolset_20260401", "configs": configs}])
}

fn message(t: &str) -> Value {
    json!({"type": "user.message", "content": [{"type": "text", "text": t}]})
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

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(event::kind).collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| event::kind(e) == kind).collect()
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
async fn a_text_turn_streams_exactly_what_is_stored() {
    let f = Fixture::new(vec![text("Hello!"), text("Again.")]);
    let s = f.session(json!([])).await;

    let mut stream = f.rt.stream_events(&s.id).await.expect("stream");
    let accepted =
        f.rt.send_events(&s.id, vec![message("hi")])
            .await
            .expect("send");
    assert_eq!(accepted.len(), 1);
    assert!(event::id(&accepted[0]).starts_with("sevt_01"));
    assert_eq!(accepted[0]["processed_at"], Value::Null);
    assert_eq!(
        accepted[0]["content"],
        json!([{"type": "text", "text": "hi"}])
    );

    let streamed = until_idle(&mut stream).await;
    assert_eq!(
        kinds(&streamed),
        [
            "user.message",
            "session.status_running",
            "span.model_request_start",
            "span.model_request_end",
            "agent.message",
            "session.status_idle",
        ]
    );
    assert_eq!(event::id(&streamed[0]), event::id(&accepted[0]));
    for e in &streamed {
        let at = e["processed_at"].as_str().expect("processed_at");
        assert!(
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(),
            "{at}"
        );
    }
    assert_eq!(event::text(&streamed[4]), "Hello!");
    assert_eq!(event::stop_reason(&streamed[5]), Some("end_turn"));
    let end = &streamed[3];
    assert_eq!(end["model_request_start_id"], streamed[2]["id"]);
    assert_eq!(end["is_error"], false);
    assert_eq!(
        end["model_usage"],
        json!({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 1, "cache_read_input_tokens": 2})
    );
    assert_eq!(history(&f.rt, &s.id).await, streamed);

    let session = f.rt.retrieve_session(&s.id).await.expect("session");
    assert_eq!(session.status, "idle");
    let usage = serde_json::to_value(&session.usage).expect("usage");
    assert_eq!(usage["input_tokens"], 10);
    assert_eq!(usage["output_tokens"], 5);
    assert_eq!(usage["cache_read_input_tokens"], 2);
    assert_eq!(usage["cache_creation"]["ephemeral_5m_input_tokens"], 1);
    assert!(session.stats.active_seconds.is_some());
    assert!(session.stats.duration_seconds.is_some());

    // The second turn sees the first.
    let second = exchange(&f.rt, &s.id, vec![message("more")]).await;
    assert_eq!(event::text(of_kind(&second, "agent.message")[0]), "Again.");
    let requests = f.models.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].model, "test-model");
    assert_eq!(requests[0].system.as_deref(), Some("Be brief."));
    assert!(requests[0].tools.is_empty());
    assert_eq!(
        requests[1].messages,
        vec![
            json!({"role": "user", "content": [{"type": "text", "text": "hi"}]}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}),
            json!({"role": "user", "content": [{"type": "text", "text": "more"}]}),
        ]
    );
    // Resolved once for the session, not once per worker.
    assert_eq!(*f.models.resolved.lock().unwrap(), ["test-model"]);
    let session = f.rt.retrieve_session(&s.id).await.expect("session");
    assert_eq!(session.usage.input_tokens, Some(20));

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
async fn allowed_tools_run_in_the_session_workspace() {
    let f = Fixture::new(vec![
        tool(
            "write",
            json!({"file_path": "notes/a.txt", "content": "hello from the tool"}),
        ),
        tool("read", json!({"file_path": "notes/a.txt"})),
        text("done"),
    ]);
    let s = f.session(toolset(json!([]))).await;
    let events = exchange(&f.rt, &s.id, vec![message("write it")]).await;
    assert_eq!(
        kinds(&events),
        [
            "user.message",
            "session.status_running",
            "span.model_request_start",
            "span.model_request_end",
            "agent.tool_use",
            "agent.tool_result",
            "span.model_request_start",
            "span.model_request_end",
            "agent.tool_use",
            "agent.tool_result",
            "span.model_request_start",
            "span.model_request_end",
            "agent.message",
            "session.status_idle",
        ]
    );
    let uses = of_kind(&events, "agent.tool_use");
    assert_eq!(uses[0]["name"], "write");
    assert_eq!(uses[0]["evaluated_permission"], "allow");
    assert_eq!(uses[0]["evaluation"], json!({"type": "always_allow"}));
    let results = of_kind(&events, "agent.tool_result");
    for (tool_use, result) in uses.iter().zip(&results) {
        assert_eq!(result["tool_use_id"], tool_use["id"]);
        assert_eq!(result["is_error"], false, "{result}");
    }
    assert!(event::text(results[1]).contains("hello from the tool"));
    let file = f
        .workspaces()
        .join("sessions")
        .join(&s.id)
        .join("notes/a.txt");
    assert_eq!(
        std::fs::read_to_string(&file).expect("file"),
        "hello from the tool"
    );

    // The model saw the built-in tools and, later, the results.
    let requests = f.models.requests();
    let names: Vec<_> = requests[0]
        .tools
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["bash", "read", "write", "edit", "glob", "grep"]);
    let last = requests[2].messages.last().expect("messages");
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], uses[1]["id"]);
    assert_eq!(requests[2].messages.len(), 5);

    // Deleting the session ends its streams and removes its events and workspace.
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
    assert!(f.rt.store.history(&s.id).expect("history").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_packages_are_installed_once_before_the_first_tool_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path().join("db")).expect("db");
    let models = Models::new();
    // A fake pip: records each run and leaves the package as a file.
    let fake = |manager: &str| {
        vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!("echo {manager} >> \"$0/../runs\" && touch \"$0/$1\""),
        ]
    };
    let rt = LocalRuntime::open(
        &db,
        LocalOptions {
            sandboxes: Arc::new(LocalSandboxes {
                root: dir.path().join("workspaces"),
                installers: Installers {
                    pip: fake("pip"),
                    npm: fake("npm"),
                },
                ..LocalSandboxes::new(dir.path().join("workspaces"))
            }),
            ..options(
                dir.path(),
                models.resolver(vec![
                    tool("bash", json!({"command": "echo ran"})),
                    text("ok"),
                ]),
            )
        },
    )
    .expect("runtime");
    let agent = rt
        .create_agent(json!({"name": "a", "model": "m", "tools": toolset(json!([]))}))
        .await
        .expect("agent");
    let env = rt
        .create_environment(json!({
            "name": "with-packages",
            "config": {"type": "cloud", "packages": {"pip": ["fakepkg"]}},
        }))
        .await
        .expect("environment");
    let env_dir = dir.path().join("workspaces/environments").join(&env.id);
    for _ in 0..2 {
        let s = rt
            .create_session(json!({"agent": agent.id, "environment_id": env.id}))
            .await
            .expect("session");
        let events = exchange(&rt, &s.id, vec![message("go")]).await;
        let result = of_kind(&events, "agent.tool_result")[0];
        assert_eq!(result["is_error"], false, "{result}");
        assert!(env_dir.join("pip/fakepkg").exists());
    }
    let runs = std::fs::read_to_string(env_dir.join("runs")).expect("runs");
    assert_eq!(runs, "pip\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn always_ask_waits_for_a_confirmation() {
    let f = Fixture::new(vec![
        tool("bash", json!({"command": "echo allowed-run"})),
        text("ran it"),
        tool("bash", json!({"command": "echo never"})),
        text("ok, not running it"),
    ]);
    let s = f
        .session(toolset(
            json!([{"name": "bash", "permission_policy": {"type": "always_ask"}}]),
        ))
        .await;

    let events = exchange(&f.rt, &s.id, vec![message("run it")]).await;
    let tool_use = of_kind(&events, "agent.tool_use")[0].clone();
    assert_eq!(tool_use["evaluated_permission"], "ask");
    assert_eq!(tool_use["evaluation"], json!({"type": "always_ask"}));
    let idle = events.last().expect("idle");
    assert_eq!(
        idle["stop_reason"],
        json!({"type": "requires_action", "event_ids": [tool_use["id"]]})
    );
    assert!(of_kind(&events, "agent.tool_result").is_empty());
    let session = f.rt.retrieve_session(&s.id).await.expect("session");
    assert_eq!(session.status, "idle");

    // Only a tool use that waits can be confirmed.
    assert_invalid(
        f.rt.send_events(
            &s.id,
            vec![json!({"type": "user.tool_confirmation", "tool_use_id": "sevt_nope", "result": "allow"})],
        )
        .await,
        "events[0].tool_use_id",
    );
    assert_invalid(
        f.rt.send_events(
            &s.id,
            vec![json!({"type": "user.tool_confirmation", "tool_use_id": tool_use["id"], "result": "allow", "deny_message": "x"})],
        )
        .await,
        "events[0].deny_message",
    );

    let confirm =
        json!({"type": "user.tool_confirmation", "tool_use_id": tool_use["id"], "result": "allow"});
    let events = exchange(&f.rt, &s.id, vec![confirm.clone()]).await;
    assert_eq!(
        kinds(&events),
        [
            "user.tool_confirmation",
            "session.status_running",
            "agent.tool_result",
            "span.model_request_start",
            "span.model_request_end",
            "agent.message",
            "session.status_idle",
        ]
    );
    let result = of_kind(&events, "agent.tool_result")[0];
    assert_eq!(result["is_error"], false);
    assert!(event::text(result).contains("allowed-run"));
    assert_eq!(event::stop_reason(events.last().unwrap()), Some("end_turn"));
    // Confirming twice is refused.
    assert_invalid(
        f.rt.send_events(&s.id, vec![confirm]).await,
        "not a tool use awaiting confirmation",
    );

    // Denied: an error result with the user's message, and the turn goes on.
    let events = exchange(&f.rt, &s.id, vec![message("and this")]).await;
    let tool_use = of_kind(&events, "agent.tool_use")[0].clone();
    let events = exchange(
        &f.rt,
        &s.id,
        vec![json!({"type": "user.tool_confirmation", "tool_use_id": tool_use["id"], "result": "deny", "deny_message": "not today"})],
    )
    .await;
    let result = of_kind(&events, "agent.tool_result")[0];
    assert_eq!(result["is_error"], true);
    assert_eq!(result["tool_use_id"], tool_use["id"]);
    assert_eq!(event::text(result), "not today");
    assert_eq!(event::stop_reason(events.last().unwrap()), Some("end_turn"));
    let last_request = f.models.requests().pop().expect("request");
    let results = &last_request.messages.last().unwrap()["content"];
    assert_eq!(results[0]["is_error"], true);
    assert_eq!(results[0]["content"][0]["text"], "not today");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_tools_round_trip_through_the_user() {
    let f = Fixture::new(vec![
        Turn::Reply(tool_uses(&[
            ("lookup", json!({"q": "a"})),
            ("lookup", json!({"q": "b"})),
        ])),
        text("the answers are 1 and 2"),
    ]);
    let custom = json!({
        "type": "custom",
        "name": "lookup",
        "description": "Looks things up.",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    });
    let s = f.session(json!([custom])).await;
    let events = exchange(&f.rt, &s.id, vec![message("look up a and b")]).await;
    let uses = of_kind(&events, "agent.custom_tool_use");
    assert_eq!(uses.len(), 2);
    assert_eq!(uses[0]["name"], "lookup");
    assert_eq!(uses[0]["input"], json!({"q": "a"}));
    let ids: Vec<Value> = uses.iter().map(|u| u["id"].clone()).collect();
    assert_eq!(
        events.last().unwrap()["stop_reason"],
        json!({"type": "requires_action", "event_ids": ids})
    );
    let request = &f.models.requests()[0];
    assert_eq!(
        request.tools,
        vec![json!({
            "name": "lookup",
            "description": "Looks things up.",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        })]
    );

    assert_invalid(
        f.rt.send_events(
            &s.id,
            vec![json!({"type": "user.custom_tool_result", "custom_tool_use_id": "sevt_other"})],
        )
        .await,
        "events[0].custom_tool_use_id",
    );
    // Answering one of two: still waiting, for the other.
    let events = exchange(
        &f.rt,
        &s.id,
        vec![json!({"type": "user.custom_tool_result", "custom_tool_use_id": ids[0], "content": [{"type": "text", "text": "1"}]})],
    )
    .await;
    assert_eq!(
        kinds(&events),
        ["user.custom_tool_result", "session.status_idle"]
    );
    assert_eq!(
        events[1]["stop_reason"],
        json!({"type": "requires_action", "event_ids": [ids[1]]})
    );
    let events = exchange(
        &f.rt,
        &s.id,
        vec![json!({"type": "user.custom_tool_result", "custom_tool_use_id": ids[1], "content": [{"type": "text", "text": "2"}], "is_error": false})],
    )
    .await;
    assert_eq!(event::stop_reason(events.last().unwrap()), Some("end_turn"));
    assert_eq!(
        event::text(of_kind(&events, "agent.message")[0]),
        "the answers are 1 and 2"
    );
    let request = f.models.requests().pop().expect("request");
    let results = &request.messages.last().unwrap()["content"];
    assert_eq!(
        *results,
        json!([
            {"type": "tool_result", "tool_use_id": ids[0], "content": [{"type": "text", "text": "1"}], "is_error": false},
            {"type": "tool_result", "tool_use_id": ids[1], "content": [{"type": "text", "text": "2"}], "is_error": false},
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_stops_a_long_tool() {
    let f = Fixture::new(vec![
        tool("bash", json!({"command": "sleep 30"})),
        text("stopped"),
    ]);
    let s = f.session(toolset(json!([]))).await;
    let mut stream = f.rt.stream_events(&s.id).await.expect("stream");
    f.rt.send_events(&s.id, vec![message("sleep")])
        .await
        .expect("send");
    until(&mut stream, |e| event::kind(e) == "agent.tool_use").await;
    let started = Instant::now();
    f.rt.interrupt(&s.id).await.expect("interrupt");
    let events = until_idle(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(kinds(&events), ["user.interrupt", "session.status_idle"]);
    assert_eq!(event::stop_reason(&events[1]), Some("end_turn"));
    assert_eq!(
        f.rt.retrieve_session(&s.id).await.expect("session").status,
        "idle"
    );

    // The next turn's conversation closes the dropped tool use.
    exchange(&f.rt, &s.id, vec![message("what happened?")]).await;
    let request = f.models.requests().pop().expect("request");
    let last = request.messages.last().unwrap();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["is_error"], true);
    assert_eq!(last["content"][1]["text"], "what happened?");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_cancels_the_model_call() {
    let f = Fixture::new(vec![Turn::Hang]);
    let s = f.session(json!([])).await;
    let mut stream = f.rt.stream_events(&s.id).await.expect("stream");
    f.rt.send_events(&s.id, vec![message("think")])
        .await
        .expect("send");
    let start = until(&mut stream, |e| {
        event::kind(e) == "span.model_request_start"
    })
    .await;
    f.rt.interrupt(&s.id).await.expect("interrupt");
    let events = until_idle(&mut stream).await;
    assert_eq!(
        kinds(&events),
        [
            "user.interrupt",
            "span.model_request_end",
            "session.status_idle"
        ]
    );
    assert_eq!(
        events[1]["model_request_start_id"],
        start.last().unwrap()["id"]
    );
    assert_eq!(events[1]["is_error"], true);
    // An interrupt while idle changes nothing.
    f.rt.interrupt(&s.id).await.expect("interrupt");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_errors_end_the_turn() {
    let f = Fixture::new(vec![
        Turn::Fail(ModelError::Api {
            status: 529,
            message: "overloaded".to_owned(),
            retryable: true,
        }),
        Turn::Fail(ModelError::Unreachable("connection refused".to_owned())),
    ]);
    let s = f.session(json!([])).await;
    let events = exchange(&f.rt, &s.id, vec![message("hi")]).await;
    assert_eq!(
        kinds(&events),
        [
            "user.message",
            "session.status_running",
            "span.model_request_start",
            "span.model_request_end",
            "session.error",
            "session.status_idle",
        ]
    );
    assert_eq!(events[3]["is_error"], true);
    let error = &events[4]["error"];
    assert_eq!(error["type"], "model_overloaded_error");
    assert_eq!(error["retry_status"], json!({"type": "terminal"}));
    assert!(error["message"].as_str().unwrap().contains("overloaded"));
    assert_eq!(event::stop_reason(&events[5]), Some("retries_exhausted"));

    let events = exchange(&f.rt, &s.id, vec![message("again")]).await;
    assert_eq!(
        of_kind(&events, "session.error")[0]["error"]["type"],
        "model_request_failed_error"
    );

    // Without a model backend, the error says where to declare one.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path().join("db")).expect("db");
    let rt = LocalRuntime::open(&db, LocalOptions::default()).expect("runtime");
    let s = session(&rt, json!([])).await;
    let events = exchange(&rt, &s.id, vec![message("hi")]).await;
    assert_eq!(
        kinds(&events),
        [
            "user.message",
            "session.status_running",
            "session.error",
            "session.status_idle"
        ]
    );
    let message = events[2]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`test-model`") && message.contains("providers.local.models"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_without_a_workspace_root_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path().join("db")).expect("db");
    let models = Models::new();
    let rt = LocalRuntime::open(
        &db,
        LocalOptions {
            models: models.resolver(vec![tool("bash", json!({"command": "true"}))]),
            ..LocalOptions::default()
        },
    )
    .expect("runtime");
    let s = session(&rt, toolset(json!([]))).await;
    let events = exchange(&rt, &s.id, vec![message("run")]).await;
    let result = of_kind(&events, "agent.tool_result")[0];
    assert_eq!(result["is_error"], true);
    let error = &of_kind(&events, "session.error")[0]["error"];
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("no workspace directory"));
    assert_eq!(
        event::stop_reason(events.last().unwrap()),
        Some("retries_exhausted")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_running_wait_for_the_turn() {
    let gate = Arc::new(Semaphore::new(0));
    let f = Fixture::new(vec![
        Turn::Gate(Arc::clone(&gate), text("first answer").reply()),
        text("second answer"),
    ]);
    let s = f.session(json!([])).await;
    let mut stream = f.rt.stream_events(&s.id).await.expect("stream");
    f.rt.send_events(&s.id, vec![message("one")])
        .await
        .expect("send");
    until(&mut stream, |e| {
        event::kind(e) == "span.model_request_start"
    })
    .await;
    assert_eq!(
        f.rt.retrieve_session(&s.id).await.expect("session").status,
        "running"
    );
    let queued =
        f.rt.send_events(&s.id, vec![message("two")])
            .await
            .expect("send while running");
    gate.add_permits(1);
    let mut events = until_idle(&mut stream).await;
    events.extend(until_idle(&mut stream).await);
    assert_eq!(
        kinds(&events),
        [
            "span.model_request_end",
            "agent.message",
            "session.status_idle",
            "user.message",
            "session.status_running",
            "span.model_request_start",
            "span.model_request_end",
            "agent.message",
            "session.status_idle",
        ]
    );
    assert_eq!(events[3]["id"], queued[0]["id"]);
    assert_eq!(event::text(&events[7]), "second answer");
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
async fn a_message_taken_just_before_a_stop_is_still_answered() {
    let f = Fixture::new(vec![text("answer one"), text("answer two")]);
    let s = f.session(json!([])).await;
    // As if the process stopped right after moving it to the history.
    let taken = json!({
        "id": new_id(EVENT_PREFIX),
        "type": "user.message",
        "content": [{"type": "text", "text": "one"}],
        "processed_at": timestamp(),
    });
    f.rt.store.append(&s.id, &taken).expect("append");
    let mut stream = f.rt.stream_events(&s.id).await.expect("stream");
    f.rt.send_events(&s.id, vec![message("two")])
        .await
        .expect("send");
    let mut events = until_idle(&mut stream).await;
    events.extend(until_idle(&mut stream).await);
    let texts: Vec<String> = of_kind(&events, "agent.message")
        .into_iter()
        .map(event::text)
        .collect();
    assert_eq!(texts, ["answer one", "answer two"]);
    assert_eq!(events[0]["type"], "session.status_running");
    let requests = f.models.requests();
    assert_eq!(requests[0].messages.len(), 1);
    assert_eq!(requests[1].messages.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_sessions_run_at_once() {
    let f = Fixture::new(vec![text("hi")]);
    let mut sessions = Vec::new();
    for _ in 0..50 {
        sessions.push(f.session(json!([])).await.id);
    }
    let tasks: Vec<_> = sessions
        .iter()
        .map(|id| {
            let rt = Arc::clone(&f.rt);
            let id = id.clone();
            tokio::spawn(async move { exchange(&rt, &id, vec![message("hello")]).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for (task, id) in tasks.into_iter().zip(&sessions) {
        let events = task.await.expect("join");
        assert_eq!(event::stop_reason(events.last().unwrap()), Some("end_turn"));
        assert_eq!(history(&f.rt, id).await, events);
        for e in &events {
            assert!(ids.insert(event::id(e).to_owned()), "duplicate id");
        }
    }
    assert_eq!(ids.len(), 50 * 6);
    assert_eq!(f.models.resolved.lock().unwrap().len(), 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_params_are_refused_and_nothing_is_kept() {
    let f = Fixture::new(vec![]);
    let s = f.session(json!([])).await;
    let cases = [
        (json!([]), "`events`"),
        (json!([{"content": []}]), "events[0].type"),
        (json!([{"type": "user.bogus"}]), "events[0].type"),
        (json!([{"type": "user.define_outcome"}]), "not supported"),
        (json!([{"type": "user.message"}]), "events[0].content"),
        (
            json!([{"type": "user.message", "content": []}]),
            "events[0].content",
        ),
        (
            json!([{"type": "user.message", "content": "hi"}]),
            "events[0].content",
        ),
        (
            json!([{"type": "user.message", "content": [{"type": "text", "text": ""}]}]),
            "events[0].content[0].text",
        ),
        (
            json!([{"type": "user.message", "content": [{"type": "video"}]}]),
            "events[0].content[0].type",
        ),
        (
            json!([{"type": "user.message", "content": [{"type": "text", "text": "x"}], "extra": 1}]),
            "events[0].extra",
        ),
        (
            json!([message("fine"), {"type": "user.interrupt", "session_thread_id": "sthr_1"}]),
            "events[1].session_thread_id",
        ),
        (
            json!([{"type": "user.tool_confirmation", "result": "maybe", "tool_use_id": "x"}]),
            "events[0].result",
        ),
        (
            json!([{"type": "user.tool_confirmation", "result": "allow"}]),
            "events[0].tool_use_id",
        ),
        (
            json!([{"type": "user.custom_tool_result", "custom_tool_use_id": "x"}]),
            "events[0].custom_tool_use_id",
        ),
        (json!(["user.interrupt"]), "events[0]"),
    ];
    for (events, needle) in cases {
        let events = events.as_array().unwrap().clone();
        assert_invalid(f.rt.send_events(&s.id, events).await, needle);
    }
    assert!(history(&f.rt, &s.id).await.is_empty());
    assert!(f.rt.store.inbox(&s.id).expect("inbox").is_empty());

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

#[tokio::test]
async fn a_lagging_stream_says_to_reconnect() {
    let (tx, rx) = tokio::sync::broadcast::channel(2);
    let mut stream = EventStream::new(LiveEvents {
        rx,
        ended: false,
        drop_after: None,
    });
    for i in 0..5 {
        tx.send(json!({"id": i, "type": "agent.message"}))
            .expect("send");
    }
    let err = stream.next().await.expect("item").expect_err("lagged");
    assert!(err.message.contains("reconnect"), "{}", err.message);
    assert_eq!(stream.next().await.expect("item").expect("event")["id"], 3);
    drop(tx);
    assert_eq!(stream.next().await.expect("item").expect("event")["id"], 4);
    assert!(stream.next().await.is_none());
}

impl Turn {
    fn reply(self) -> ModelResponse {
        match self {
            Turn::Reply(response) => response,
            _ => unreachable!("not a reply"),
        }
    }
}
