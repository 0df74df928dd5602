//! The server in-process on `127.0.0.1:0`, driven over HTTP with reqwest.
//! Tests wait on responses and events, never on time; timeouts only guard
//! against hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::model::scripted::{ScriptTurn, ScriptedModel};
use crate::model::{Model, ModelError};
use crate::runtime::local::LocalOptions;
use crate::runtime::Runtime;

const PATIENCE: Duration = Duration::from_secs(30);

struct TestServer {
    base: String,
    client: reqwest::Client,
    runtime: Arc<LocalRuntime>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    db: sled::Db,
    _dir: tempfile::TempDir,
}

/// Every session's model says "hi" once.
fn scripted_hi() -> LocalOptions {
    let resolver = |_: &str| -> Result<Arc<dyn Model>, ModelError> {
        Ok(Arc::new(ScriptedModel::new(vec![ScriptTurn {
            text: Some("hi".into()),
            tool_use: Vec::new(),
            stop_reason: None,
        }])))
    };
    LocalOptions {
        models: Arc::new(resolver),
        ..LocalOptions::default()
    }
}

async fn start(options: Options, local: LocalOptions) -> TestServer {
    crate::sandbox::local::test_support::ensure_bubblewrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let local = LocalOptions {
        sandboxes: Arc::new(crate::sandbox::local::LocalSandboxes::new(
            dir.path().join("workspaces"),
        )),
        ..local
    };
    let runtime = Arc::new(LocalRuntime::open(&db, local).expect("open runtime"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let server = Server::new(Arc::clone(&runtime), options);
    let task = tokio::spawn(server.run(listener, async {
        let _ = rx.await;
    }));
    TestServer {
        base,
        client: reqwest::Client::new(),
        runtime,
        shutdown: Some(tx),
        task: Some(task),
        db,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn request_id(&self) -> &str {
        self.headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts the error envelope and gives `error.type`.
    fn error_type(&self) -> &str {
        assert_eq!(self.body["type"], "error", "{}", self.body);
        assert!(self.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(self.body["request_id"], self.request_id(), "{}", self.body);
        self.body["error"]["type"].as_str().unwrap_or_default()
    }
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = tokio::time::timeout(PATIENCE, req.send())
            .await
            .expect("timely response")
            .expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        let reply = Reply {
            status,
            headers,
            body,
        };
        assert!(
            reply.request_id().starts_with("req_"),
            "request-id header missing: {:?}",
            reply.headers
        );
        reply
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(&body))
            .await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.send(self.client.delete(self.url(path))).await
    }

    /// POSTs and expects 200.
    async fn ok(&self, path: &str, body: Value) -> Value {
        let reply = self.post(path, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        reply.body
    }

    async fn ok_get(&self, path: &str) -> Value {
        let reply = self.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        reply.body
    }

    async fn agent(&self, name: &str) -> Value {
        self.ok(
            "/v1/agents",
            json!({"name": name, "model": "claude-sonnet-4-6"}),
        )
        .await
    }

    async fn environment(&self, name: &str) -> Value {
        self.ok("/v1/environments", json!({"name": name})).await
    }

    async fn session(&self, agent: Value, environment_id: &Value) -> Value {
        self.ok(
            "/v1/sessions",
            json!({"agent": agent, "environment_id": environment_id}),
        )
        .await
    }

    /// Every item of a list, following `next_page`.
    async fn all(&self, path: &str) -> (Vec<Value>, usize) {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut pages = 0;
        let mut url = path.to_owned();
        loop {
            let page = self.ok_get(&url).await;
            pages += 1;
            items.extend(page["data"].as_array().expect("data").iter().cloned());
            match page.get("next_page").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => url = format!("{path}{sep}page={next}"),
                _ => return (items, pages),
            }
        }
    }

    async fn open_stream(&self, session_id: &str) -> SseReader {
        let resp = tokio::time::timeout(
            PATIENCE,
            self.client
                .get(self.url(&format!("/v1/sessions/{session_id}/events/stream")))
                .header("accept", "application/json")
                .send(),
        )
        .await
        .expect("timely stream")
        .expect("stream");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert!(resp.headers().contains_key(REQUEST_ID_HEADER));
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// Stops the server as a signal would and waits for it to return.
    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("timely shutdown")
                .expect("server task")
                .expect("server result");
        }
    }
}

struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

/// One frame: its `event:` name and its data.
#[derive(Debug)]
struct Frame {
    event: String,
    data: String,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("frame data is JSON")
    }
}

impl SseReader {
    /// The next frame; `None` when the server closed the stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut event = None;
                let mut data = Vec::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v);
                    }
                }
                let event = event.unwrap_or_else(|| panic!("frame without an event line: {raw:?}"));
                return Some(Frame {
                    event,
                    data: data.join("\n"),
                });
            }
            let chunk = tokio::time::timeout(PATIENCE, self.resp.chunk())
                .await
                .expect("timely frame")
                .expect("stream chunk")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// Frames up to and including the first for which `stop` holds.
    async fn until(&mut self, stop: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await.expect("stream ended early");
            let done = stop(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    async fn rest(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            frames.push(frame);
        }
        frames
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect()
}

// ----- agents, environments, pagination -------------------------------------------------

#[tokio::test]
async fn agents_create_update_versions_and_pages() {
    let s = start(Options::default(), LocalOptions::default()).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            s.agent(&format!("a{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (all, pages) = s.all("/v1/agents?limit=2").await;
    assert_eq!(ids(&all), created);
    assert_eq!(pages, 3);
    let first = s.ok_get("/v1/agents?limit=5").await;
    assert!(first.get("next_page").is_none_or(Value::is_null), "{first}");

    let id = &created[0];
    let v2 = s
        .ok(
            &format!("/v1/agents/{id}"),
            json!({"version": 1, "system": "be brief", "metadata": {"team": "x"}}),
        )
        .await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["system"], "be brief");
    let stale = s
        .post(
            &format!("/v1/agents/{id}"),
            json!({"version": 1, "name": "z"}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.error_type(), "conflict_error");

    let v1 = s.ok_get(&format!("/v1/agents/{id}?version=1")).await;
    assert_eq!(v1["version"], 1);
    assert!(v1["system"].is_null());
    let (versions, _) = s.all(&format!("/v1/agents/{id}/versions?limit=1")).await;
    let numbers: Vec<_> = versions.iter().map(|v| v["version"].clone()).collect();
    assert_eq!(numbers, [json!(2), json!(1)]);
    let bad_version = s.get(&format!("/v1/agents/{id}?version=abc")).await;
    assert_eq!(bad_version.status, StatusCode::BAD_REQUEST);

    let archived = s.ok(&format!("/v1/agents/{id}/archive"), json!(null)).await;
    assert!(archived["archived_at"].is_string());
    let (listed, _) = s.all("/v1/agents").await;
    assert_eq!(listed.len(), 4);
    let (listed, _) = s.all("/v1/agents?include_archived=true").await;
    assert_eq!(listed.len(), 5);
    let future = s
        .ok_get("/v1/agents?created_at[gte]=2999-01-01T00:00:00%2B00:00")
        .await;
    assert_eq!(future["data"], json!([]));
}

#[tokio::test]
async fn environments_update_archive_delete_and_unique_names() {
    let s = start(Options::default(), LocalOptions::default()).await;
    let env = s.environment("data").await;
    let id = env["id"].as_str().unwrap();
    let dup = s.post("/v1/environments", json!({"name": "data"})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error_type(), "conflict_error");

    let updated = s
        .ok(
            &format!("/v1/environments/{id}"),
            json!({"description": "d"}),
        )
        .await;
    assert_eq!(updated["description"], "d");
    assert_eq!(s.ok_get(&format!("/v1/environments/{id}")).await, updated);
    let archived = s
        .ok(&format!("/v1/environments/{id}/archive"), json!(null))
        .await;
    assert!(archived["archived_at"].is_string());
    let deleted = s.delete(&format!("/v1/environments/{id}")).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        deleted.body,
        json!({"id": id, "type": "environment_deleted"})
    );
    let gone = s.get(&format!("/v1/environments/{id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_type(), "not_found_error");
}

// ----- errors -----------------------------------------------------------------------------

#[tokio::test]
async fn client_mistakes_get_the_error_envelope() {
    let s = start(Options::default(), LocalOptions::default()).await;

    let r = s.get("/v1/nothing/here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_type(), "not_found_error");
    let r = s.get("/v1/agents/agent_missing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_type(), "not_found_error");

    let r = s.send(s.client.put(s.url("/v1/agents"))).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error_type(), "invalid_request_error");
    let r = s.send(s.client.delete(s.url("/v1/agents/x"))).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    let bad_json = s
        .send(
            s.client
                .post(s.url("/v1/agents"))
                .header("content-type", "application/json")
                .body("{\"name\": "),
        )
        .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_json.error_type(), "invalid_request_error");
    let form = s
        .send(
            s.client
                .post(s.url("/v1/agents"))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(form.error_type(), "invalid_request_error");
    let not_object = s.post("/v1/agents", json!([1])).await;
    assert_eq!(not_object.status, StatusCode::BAD_REQUEST);
    let missing = s.post("/v1/agents", json!({"name": "a"})).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model"));

    let big = "x".repeat(MAX_BODY_BYTES + 10);
    let r = s.post("/v1/agents", json!({ "name": big })).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_type(), "invalid_request_error");

    for query in ["limit=0", "limit=101", "limit=abc", "limit=-1", "page=nope"] {
        let r = s.get(&format!("/v1/agents?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.error_type(), "invalid_request_error");
    }
    for query in ["order=up", "statuses[]=sleeping", "agent_version=2"] {
        let r = s.get(&format!("/v1/sessions?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
    }
    let r = s.get("/v1/sessions?created_at[gt]=yesterday").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let many_tools: Vec<Value> = (0..257)
        .map(|i| {
            json!({"type": "custom", "name": format!("t{i}"), "description": "d",
                   "input_schema": {"type": "object"}})
        })
        .collect();
    let r = s
        .post(
            "/v1/agents",
            json!({"name": "a", "model": "m", "tools": many_tools}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let metadata: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = s
        .post(
            "/v1/agents",
            json!({"name": "a", "model": "m", "metadata": metadata}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The server still answers after all that.
    s.agent("still-fine").await;
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let open = start(Options::default(), LocalOptions::default()).await;
    assert_eq!(open.get("/v1/agents").await.status, StatusCode::OK);

    let s = start(
        Options {
            api_key: Some("sekrit".into()),
            ..Options::default()
        },
        LocalOptions::default(),
    )
    .await;
    let none = s.get("/v1/agents").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error_type(), "authentication_error");
    let wrong = s
        .send(
            s.client
                .get(s.url("/v1/agents"))
                .header("x-api-key", "nope"),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!wrong.body.to_string().contains("sekrit"));
    let unknown_path = s.get("/v1/unknown").await;
    assert_eq!(unknown_path.status, StatusCode::UNAUTHORIZED);

    let with_header = s
        .send(
            s.client
                .get(s.url("/v1/agents"))
                .header("x-api-key", "sekrit")
                .header("anthropic-version", "2026-10-21")
                .header("anthropic-beta", "managed-agents-2026-04-01,other"),
        )
        .await;
    assert_eq!(with_header.status, StatusCode::OK);
    let bearer = s
        .send(s.client.get(s.url("/v1/agents")).bearer_auth("sekrit"))
        .await;
    assert_eq!(bearer.status, StatusCode::OK);
}

fn explode() -> &'static str {
    panic!("boom")
}

#[tokio::test]
async fn a_panicking_handler_answers_500_with_the_envelope() {
    let s = start(Options::default(), LocalOptions::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = AppState {
        runtime: Arc::clone(&s.runtime),
        options: Arc::new(Options::default()),
        stop: Arc::new(watch::channel(false).0),
        guard: Arc::new(Guard::new(addr, false, &[])),
    };
    let router = Router::new()
        .route("/boom", get(|| async { explode() }))
        .layer(axum::middleware::from_fn_with_state(state, middleware));
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    let url = format!("http://{addr}/boom");
    for _ in 0..2 {
        let r = s.send(s.client.get(&url)).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.error_type(), "api_error");
    }
    task.abort();
}

// ----- sessions and events -----------------------------------------------------------------

#[tokio::test]
async fn sessions_take_both_agent_forms_and_filter() {
    let s = start(Options::default(), LocalOptions::default()).await;
    let a = s.agent("a").await;
    let b = s.agent("b").await;
    let a_id = a["id"].as_str().unwrap();
    s.ok(&format!("/v1/agents/{a_id}"), json!({"system": "v2"}))
        .await;
    let env = s.environment("e").await;
    let env_id = &env["id"];

    let by_id = s.session(json!(a_id), env_id).await;
    assert_eq!(by_id["agent"]["version"], 2);
    assert_eq!(by_id["status"], "idle");
    let pinned = s
        .session(json!({"type": "agent", "id": a_id, "version": 1}), env_id)
        .await;
    assert_eq!(pinned["agent"]["version"], 1);
    let other = s.session(b["id"].clone(), env_id).await;
    let overridden = s
        .session(
            json!({"type": "agent_with_overrides", "id": a_id, "system": "custom"}),
            env_id,
        )
        .await;
    assert_eq!(overridden["agent"]["system"], "custom");
    let bad = s
        .post(
            "/v1/sessions",
            json!({"agent": {"type": "agent", "id": "agent_nope"}, "environment_id": env_id}),
        )
        .await;
    assert!(bad.status.is_client_error(), "{}", bad.body);

    let newest_first = vec![
        overridden["id"].clone(),
        other["id"].clone(),
        pinned["id"].clone(),
        by_id["id"].clone(),
    ];
    let (listed, pages) = s.all("/v1/sessions?limit=3").await;
    assert_eq!(pages, 2);
    let listed_ids: Vec<Value> = listed.iter().map(|v| v["id"].clone()).collect();
    assert_eq!(listed_ids, newest_first);
    let (asc, _) = s.all("/v1/sessions?order=asc&limit=1").await;
    let mut oldest_first = newest_first.clone();
    oldest_first.reverse();
    assert_eq!(
        asc.iter().map(|v| v["id"].clone()).collect::<Vec<_>>(),
        oldest_first
    );

    let (of_a, _) = s.all(&format!("/v1/sessions?agent_id={a_id}")).await;
    assert_eq!(of_a.len(), 3);
    let (of_a_paged, pages) = s
        .all(&format!("/v1/sessions?agent_id={a_id}&limit=1"))
        .await;
    assert_eq!(of_a_paged, of_a);
    assert_eq!(pages, 3);
    let (of_a_v1, _) = s
        .all(&format!("/v1/sessions?agent_id={a_id}&agent_version=1"))
        .await;
    assert_eq!(ids(&of_a_v1), [pinned["id"].as_str().unwrap()]);
    for q in [
        "statuses[]=idle",
        "statuses=idle",
        "statuses[]=running&statuses[]=idle",
    ] {
        let (idle, _) = s.all(&format!("/v1/sessions?{q}")).await;
        assert_eq!(idle.len(), 4, "{q}");
    }
    let (running, _) = s.all("/v1/sessions?statuses[]=running").await;
    assert!(running.is_empty());

    let sid = other["id"].as_str().unwrap();
    let updated = s
        .ok(
            &format!("/v1/sessions/{sid}"),
            json!({"title": "t", "metadata": {"k": "v"}}),
        )
        .await;
    assert_eq!(updated["title"], "t");
    s.ok(&format!("/v1/sessions/{sid}/archive"), json!(null))
        .await;
    let (listed, _) = s.all("/v1/sessions").await;
    assert_eq!(listed.len(), 3);
    let (listed, _) = s.all("/v1/sessions?include_archived=true").await;
    assert_eq!(listed.len(), 4);
    let deleted = s.delete(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(deleted.body, json!({"id": sid, "type": "session_deleted"}));
    assert_eq!(
        s.get(&format!("/v1/sessions/{sid}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn send_and_stream_until_idle_then_list() {
    let s = start(Options::default(), scripted_hi()).await;
    let agent = s.agent("a").await;
    let env = s.environment("e").await;
    let session = s.session(agent["id"].clone(), &env["id"]).await;
    let sid = session["id"].as_str().unwrap();

    let mut stream = s.open_stream(sid).await;
    let sent = s
        .ok(
            &format!("/v1/sessions/{sid}/events"),
            json!({"events": [{"type": "user.message", "content": [{"type": "text", "text": "hello"}]}]}),
        )
        .await;
    let sent = sent["data"].as_array().expect("data").clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["type"], "user.message");
    assert!(sent[0]["id"].is_string());

    let frames = stream.until(|f| f.event == "session.status_idle").await;
    for f in &frames {
        assert_eq!(f.event, f.json()["type"], "{f:?}");
    }
    let message = frames
        .iter()
        .find(|f| f.event == "agent.message")
        .expect("agent.message");
    assert_eq!(message.json()["content"][0]["text"], "hi");
    assert_eq!(
        frames.last().unwrap().json()["stop_reason"]["type"],
        "end_turn"
    );

    let history = s.ok_get(&format!("/v1/sessions/{sid}/events")).await;
    let kinds: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"user.message"));
    assert_eq!(kinds.last(), Some(&"session.status_idle"));
    let (paged, pages) = s.all(&format!("/v1/sessions/{sid}/events?limit=2")).await;
    assert_eq!(paged, history["data"].as_array().unwrap().clone());
    assert!(pages >= 2);
    let (desc, _) = s
        .all(&format!("/v1/sessions/{sid}/events?order=desc&limit=2"))
        .await;
    let mut reversed = paged.clone();
    reversed.reverse();
    assert_eq!(desc, reversed);
    let (messages, _) = s
        .all(&format!(
            "/v1/sessions/{sid}/events?types[]=agent.message&types[]=user.message"
        ))
        .await;
    let kinds: Vec<&str> = messages
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["user.message", "agent.message"]);
    let r = s
        .get(&format!("/v1/sessions/{sid}/events?types[]=nope"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let bad = s
        .post(&format!("/v1/sessions/{sid}/events"), json!({"events": []}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = s
        .post(&format!("/v1/sessions/{sid}/events"), json!({"event": []}))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let missing = s
        .post(
            "/v1/sessions/sesn_missing/events",
            json!({"events": [{"type": "user.interrupt"}]}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn streams_ping_end_on_delete_and_404_when_missing() {
    let s = start(
        Options {
            heartbeat: Duration::from_millis(20),
            ..Options::default()
        },
        LocalOptions::default(),
    )
    .await;
    let missing = s.get("/v1/sessions/sesn_missing/events/stream").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_type(), "not_found_error");

    let agent = s.agent("a").await;
    let env = s.environment("e").await;
    let session = s.session(agent["id"].clone(), &env["id"]).await;
    let sid = session["id"].as_str().unwrap();
    let mut stream = s.open_stream(sid).await;
    let ping = stream.next().await.expect("a ping");
    assert_eq!(ping.event, "ping");
    assert_eq!(ping.json(), json!({"type": "ping"}));

    let deleted = s.delete(&format!("/v1/sessions/{sid}")).await;
    assert_eq!(deleted.status, StatusCode::OK);
    let rest = stream.rest().await;
    let last = rest.last().expect("session.deleted");
    assert_eq!(last.event, "session.deleted");
    assert!(rest
        .iter()
        .all(|f| f.event == "ping" || f.event == "session.deleted"));
}

#[tokio::test]
async fn many_sessions_run_without_a_client() {
    let s = start(Options::default(), scripted_hi()).await;
    let agent = s.agent("a").await;
    let env = s.environment("e").await;
    let mut sessions = Vec::new();
    for _ in 0..12 {
        let session = s.session(agent["id"].clone(), &env["id"]).await;
        let sid = session["id"].as_str().unwrap().to_owned();
        s.ok(
            &format!("/v1/sessions/{sid}/events"),
            json!({"events": [{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]}),
        )
        .await;
        sessions.push(sid);
    }
    // Nobody streams; the turns still finish and their events are listable.
    let deadline = Instant::now() + PATIENCE;
    for sid in &sessions {
        loop {
            let page = s
                .ok_get(&format!(
                    "/v1/sessions/{sid}/events?types[]=session.status_idle"
                ))
                .await;
            if !page["data"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "session {sid} never went idle");
            tokio::task::yield_now().await;
        }
    }
}

// ----- faults and shutdown -----------------------------------------------------------------

#[tokio::test]
async fn injected_failures_use_the_envelope() {
    let s = start(
        Options {
            fail_rate: 1.0,
            fail_statuses: vec![FailStatus::Overloaded],
            ..Options::default()
        },
        LocalOptions::default(),
    )
    .await;
    for (method, path) in [
        (Method::GET, "/v1/agents"),
        (Method::POST, "/v1/environments"),
        (Method::GET, "/v1/sessions/sesn_x/events/stream"),
    ] {
        let r = s
            .send(
                s.client
                    .request(method, s.url(path))
                    .json(&json!({"name": "e"})),
            )
            .await;
        assert_eq!(r.status.as_u16(), 529);
        assert_eq!(r.error_type(), "overloaded_error");
    }
    // Nothing reached the runtime.
    let envs = s
        .runtime
        .list_environments(&crate::runtime::ListQuery::all())
        .await
        .unwrap();
    assert!(envs.data.is_empty());

    let limited = start(
        Options {
            fail_rate: 1.0,
            fail_statuses: vec![FailStatus::RateLimited],
            ..Options::default()
        },
        LocalOptions::default(),
    )
    .await;
    let r = limited.get("/v1/agents").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error_type(), "rate_limit_error");
    assert_eq!(r.headers["retry-after"], "1");
}

#[tokio::test]
async fn latency_and_dropped_streams_are_injected() {
    let latency = Duration::from_millis(150);
    let s = start(
        Options::default(),
        LocalOptions {
            latency,
            drop_stream_after: Some(2),
            ..scripted_hi()
        },
    )
    .await;
    let started = Instant::now();
    let agent = s.agent("a").await;
    assert!(started.elapsed() >= latency);
    let env = s.environment("e").await;
    let session = s.session(agent["id"].clone(), &env["id"]).await;
    let sid = session["id"].as_str().unwrap();
    let mut stream = s.open_stream(sid).await;
    s.ok(
        &format!("/v1/sessions/{sid}/events"),
        json!({"events": [{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]}),
    )
    .await;
    let frames = stream.rest().await;
    let events: Vec<_> = frames.iter().filter(|f| f.event != "ping").collect();
    assert_eq!(events.len(), 2, "{frames:?}");
}

#[tokio::test]
async fn shutdown_finishes_requests_ends_streams_and_keeps_data() {
    let mut s = start(
        Options::default(),
        LocalOptions {
            latency: Duration::from_millis(300),
            ..LocalOptions::default()
        },
    )
    .await;
    let agent = s.agent("a").await;
    let env = s.environment("e").await;
    let session = s.session(agent["id"].clone(), &env["id"]).await;
    let sid = session["id"].as_str().unwrap();
    let mut stream = s.open_stream(sid).await;

    // A create in flight when the shutdown starts still gets its answer.
    let client = s.client.clone();
    let url = s.url("/v1/environments");
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"name": "late"}))
            .send()
            .await
            .map(|r| r.status())
    });
    let deadline = Instant::now() + PATIENCE;
    let environments = s.db.open_tree("local.environments").unwrap();
    // The create is done and sleeping its latency before it answers.
    while environments.len() < 2 {
        assert!(Instant::now() < deadline, "the create never arrived");
        tokio::task::yield_now().await;
    }
    let stop = s.stop();
    let (status, ()) = tokio::join!(in_flight, stop);
    assert_eq!(status.unwrap().unwrap(), StatusCode::OK);
    assert!(stream.rest().await.is_empty());

    s.runtime.shutdown().await;
    crate::state::flush(&s.db).unwrap();
    assert_eq!(environments.len(), 2);
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let s = start(
        Options {
            header_timeout: Duration::from_millis(300),
            ..Options::default()
        },
        LocalOptions::default(),
    )
    .await;
    let address = s.base.strip_prefix("http://").unwrap();
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/environments HTTP/1.1\r\nhost: {address}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The server answers, then closes; the client never sends the rest.
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let body: Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).expect("an envelope");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));

    let envs = s
        .runtime
        .list_environments(&crate::runtime::ListQuery::all())
        .await
        .unwrap();
    assert!(envs.data.is_empty());
}
