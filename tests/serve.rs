//! `agentform serve`: the official Python SDK against the server (wire
//! conformance, strict validation of every body and SSE frame) and raw HTTP
//! checks of auth, errors, SSE framing and graceful shutdown.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::BIN;

pub(crate) const KEY: &str = "test-key";

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running `agentform serve`; killed on drop if the test did not stop it.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

fn drain(mut from: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

impl Server {
    /// Starts the server on a free loopback port and waits for its
    /// `listening on http://ADDR` line (no sleeps).
    pub(crate) fn start(manifest: &Path, extra: &[&str]) -> Server {
        Self::start_with(manifest, KEY, extra, None)
    }

    /// With `RUST_LOG` set for the server, e.g. to count the requests it logs.
    pub(crate) fn start_with(
        manifest: &Path,
        key: &str,
        extra: &[&str],
        rust_log: Option<&str>,
    ) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data.path().join("data"))
            .args(["--api-key", key, "-f"])
            .arg(manifest)
            .args(extra)
            .current_dir(data.path())
            .env_remove("AGENTFORM_STATE")
            .env_remove("RUST_LOG")
            .env_remove("AGENTFORM_LOCAL_LATENCY_MS")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd.spawn().expect("spawn agentform serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().unwrap(), stderr.clone());

        let stdout_pipe = child.stdout.take().unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let stdout = stdout.clone();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout_pipe);
                let mut sent = false;
                let mut line = String::new();
                loop {
                    line.clear();
                    match lines.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    stdout.lock().unwrap().push_str(&line);
                    if !sent {
                        if let Some(at) = line.find("listening on ") {
                            let url = line[at + "listening on ".len()..].trim().to_owned();
                            let _ = tx.send(url);
                            sent = true;
                        }
                    }
                }
            });
        }
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "`agentform serve` printed no `listening on` line ({status:?})\n--- stdout\n{}\n--- stderr\n{}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
        };
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "unexpected listen URL {url:?}"
        );
        Server {
            child,
            url,
            stdout,
            stderr,
            _data: data,
        }
    }

    pub(crate) fn logs(&self) -> String {
        format!(
            "--- server stdout\n{}\n--- server stderr\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// SIGTERM (through `kill`), then wait up to `within`.
    fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the server did not exit within {within:?} of SIGTERM\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[track_caller]
    pub(crate) fn stop_gracefully(mut self) {
        let status = self.terminate(Duration::from_secs(20));
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM should shut the server down gracefully (exit 0), got {status:?}\n{}",
            self.logs()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn manifest() -> PathBuf {
    repo().join("tests/sdk/agentform.yaml")
}

#[test]
fn official_python_sdk_conformance() {
    if std::env::var("AGENTFORM_SDK_TEST").as_deref() == Ok("skip") {
        eprintln!(
            "\n!!!!!!!! SKIPPED: official SDK conformance (AGENTFORM_SDK_TEST=skip) !!!!!!!!\n"
        );
        return;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let setup = Command::new("bash")
        .arg(repo().join("scripts/sdk-venv.sh"))
        .arg(&venv)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/sdk-venv.sh");
    if setup.status.code() == Some(3) {
        eprintln!(
            "\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPED: official Python SDK conformance of `agentform serve`:          !!\n\
             !! python3 is not available. Install python3 (with venv) to run it.        !!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n{}",
            String::from_utf8_lossy(&setup.stderr)
        );
        return;
    }
    assert!(
        setup.status.success(),
        "scripts/sdk-venv.sh {} failed ({}); set AGENTFORM_SDK_TEST=skip to skip this test offline\n--- stdout\n{}\n--- stderr\n{}",
        venv.display(),
        setup.status,
        String::from_utf8_lossy(&setup.stdout),
        String::from_utf8_lossy(&setup.stderr)
    );

    let server = Server::start(&manifest(), &[]);
    let out = Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/sdk/conformance.py"))
        .arg(&server.url)
        .arg(KEY)
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run conformance.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "the official SDK rejects `agentform serve` ({})\n--- conformance.py stdout\n{stdout}\n--- conformance.py stderr\n{stderr}\n{}",
        out.status,
        server.logs()
    );
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
    server.stop_gracefully();
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP

struct Api {
    http: reqwest::Client,
    base: String,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    request_id: Option<String>,
    content_type: String,
    body: Value,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("anthropic-beta", "managed-agents-2026-04-01")
            .header("anthropic-version", "2023-06-01")
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let resp = rb.send().await.expect("request");
        let status = resp.status().as_u16();
        let header = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("request-id");
        let content_type = header("content-type").unwrap_or_default();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("HTTP {status}: body is not JSON ({e}): {text:?}"));
        Reply {
            status,
            request_id,
            content_type,
            body,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            self.req(reqwest::Method::POST, path)
                .header("x-api-key", KEY)
                .json(&body),
        )
        .await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(
            self.req(reqwest::Method::GET, path)
                .header("x-api-key", KEY),
        )
        .await
    }
}

#[track_caller]
fn ok(r: &Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {r:#?}");
    assert!(
        r.content_type.starts_with("application/json"),
        "{what}: content-type {:?}",
        r.content_type
    );
    assert!(r.request_id.is_some(), "{what}: no request-id header");
}

#[track_caller]
fn error_envelope(r: &Reply, status: u16, error_type: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:#?}");
    assert!(
        r.content_type.starts_with("application/json"),
        "{what}: content-type {:?}",
        r.content_type
    );
    assert_eq!(r.body["type"], "error", "{what}: {r:#?}");
    assert_eq!(r.body["error"]["type"], error_type, "{what}: {r:#?}");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: error.message missing: {r:#?}"
    );
    let rid = r.request_id.as_deref();
    assert!(rid.is_some(), "{what}: no request-id header on an error");
    if let Some(body_rid) = r.body.get("request_id").filter(|v| !v.is_null()) {
        assert_eq!(body_rid.as_str(), rid, "{what}: body request_id != header");
    }
}

/// One SSE frame: its `event:` name (if any) and its `data:` lines joined.
#[derive(Debug)]
struct Frame {
    event: Option<String>,
    data: String,
    raw: String,
}

/// Reads SSE frames incrementally from a streaming response.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn next(&mut self) -> Option<Frame> {
        loop {
            let normalized = self.buf.replace("\r\n", "\n");
            if let Some(at) = normalized.find("\n\n") {
                let raw = normalized[..at].to_owned();
                self.buf = normalized[at + 2..].to_owned();
                let mut event = None;
                let mut data = Vec::new();
                let mut only_comments = true;
                for line in raw.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    only_comments = false;
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = Some(value.to_owned()),
                        "data" => data.push(value.to_owned()),
                        _ => {}
                    }
                }
                if only_comments {
                    continue;
                }
                return Some(Frame {
                    event,
                    data: data.join("\n"),
                    raw,
                });
            }
            self.buf = normalized;
            match self.resp.chunk().await {
                Ok(Some(bytes)) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Frames until `session.status_idle`, each checked: an `event:` line
    /// naming the JSON `type`, and JSON data.
    async fn until_idle(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        for _ in 0..500 {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.next())
                .await
                .expect("no SSE frame within 30 s")
                .unwrap_or_else(|| panic!("stream ended before session.status_idle: {events:#?}"));
            let name = frame
                .event
                .clone()
                .unwrap_or_else(|| panic!("SSE frame without an `event:` line: {:?}", frame.raw));
            if name == "ping" {
                continue;
            }
            let data: Value = serde_json::from_str(&frame.data)
                .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", frame.raw));
            assert_eq!(
                data["type"].as_str(),
                Some(name.as_str()),
                "`event:` name differs from the JSON type: {:?}",
                frame.raw
            );
            assert!(
                data["id"].as_str().is_some_and(|s| !s.is_empty()),
                "event without id: {data}"
            );
            let idle = name == "session.status_idle";
            events.push(data);
            if idle {
                return events;
            }
        }
        panic!("no session.status_idle within 500 frames");
    }
}

async fn open_stream(api: &Api, session: &str) -> Sse {
    let resp = api
        .req(
            reqwest::Method::GET,
            &format!("/v1/sessions/{session}/events/stream"),
        )
        .header("authorization", format!("Bearer {KEY}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("open stream");
    assert_eq!(resp.status().as_u16(), 200, "stream status");
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        ctype.starts_with("text/event-stream"),
        "stream content-type {ctype:?}"
    );
    Sse {
        resp,
        buf: String::new(),
    }
}

#[test]
fn raw_http_auth_errors_sse_and_graceful_shutdown() {
    let server = Server::start(&manifest(), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut open = rt.block_on(async {
        let api = Api::new(&server.url);

        // Auth: x-api-key and Bearer both accepted.
        let agent = api
            .post(
                "/v1/agents",
                json!({"name": "raw", "model": "scripted-echo"}),
            )
            .await;
        ok(&agent, "create agent with x-api-key");
        assert_eq!(agent.body["type"], "agent");
        assert_eq!(agent.body["version"], 1);
        let agent_id = agent.body["id"].as_str().unwrap().to_owned();

        let bearer = api
            .send(
                api.req(reqwest::Method::GET, &format!("/v1/agents/{agent_id}"))
                    .header("authorization", format!("Bearer {KEY}")),
            )
            .await;
        ok(&bearer, "retrieve agent with Authorization: Bearer");
        assert_eq!(bearer.body["id"], agent_id.as_str());

        // Wrong / missing key: 401 envelope.
        let wrong = api
            .send(
                api.req(reqwest::Method::GET, "/v1/agents")
                    .header("x-api-key", "wrong-key"),
            )
            .await;
        error_envelope(&wrong, 401, "authentication_error", "wrong x-api-key");
        let wrong_bearer = api
            .send(
                api.req(reqwest::Method::GET, "/v1/agents")
                    .header("authorization", "Bearer wrong-key"),
            )
            .await;
        error_envelope(&wrong_bearer, 401, "authentication_error", "wrong Bearer");
        let missing = api
            .send(api.req(reqwest::Method::GET, "/v1/agents"))
            .await;
        error_envelope(&missing, 401, "authentication_error", "no key");
        let wrong_stream = api
            .send(
                api.req(
                    reqwest::Method::GET,
                    "/v1/sessions/sesn_x/events/stream",
                )
                .header("x-api-key", "wrong-key"),
            )
            .await;
        error_envelope(&wrong_stream, 401, "authentication_error", "stream with a wrong key");

        // 404s.
        let missing_agent = api.get("/v1/agents/agent_doesnotexist").await;
        error_envelope(&missing_agent, 404, "not_found_error", "missing agent");
        let missing_session_stream = api.get("/v1/sessions/sesn_doesnotexist/events/stream").await;
        error_envelope(&missing_session_stream, 404, "not_found_error", "stream of a missing session");

        // Bad body: 400 invalid_request_error.
        let bad = api.post("/v1/agents", json!({"name": "no model"})).await;
        error_envelope(&bad, 400, "invalid_request_error", "agent without model");

        // A turn over SSE.
        let env = api
            .post(
                "/v1/environments",
                json!({"name": "raw-env", "config": {"type": "cloud", "networking": {"type": "unrestricted"}}}),
            )
            .await;
        ok(&env, "create environment");
        let dup = api
            .post("/v1/environments", json!({"name": "raw-env"}))
            .await;
        assert_eq!(dup.status, 409, "duplicate environment name: {dup:#?}");
        assert_eq!(dup.body["type"], "error", "{dup:#?}");
        let session = api
            .post(
                "/v1/sessions",
                json!({"agent": agent_id, "environment_id": env.body["id"]}),
            )
            .await;
        ok(&session, "create session");
        let sid = session.body["id"].as_str().unwrap().to_owned();

        let mut stream = open_stream(&api, &sid).await;
        let sent = api
            .post(
                &format!("/v1/sessions/{sid}/events"),
                json!({"events": [{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}]}),
            )
            .await;
        ok(&sent, "send user.message");
        assert_eq!(sent.body["data"][0]["type"], "user.message", "{sent:#?}");
        let events = stream.until_idle().await;
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert!(kinds.contains(&"session.status_running"), "{kinds:?}");
        assert!(kinds.contains(&"agent.message"), "{kinds:?}");
        assert_eq!(
            events.last().unwrap()["stop_reason"]["type"],
            "end_turn",
            "{events:#?}"
        );

        // The history matches, in order.
        let history = api.get(&format!("/v1/sessions/{sid}/events")).await;
        ok(&history, "list events");
        let ids: Vec<&str> = history.body["data"]
            .as_array()
            .expect("data[]")
            .iter()
            .filter_map(|e| e["id"].as_str())
            .collect();
        let mut at = 0;
        for e in &events {
            let id = e["id"].as_str().unwrap();
            let pos = ids[at..]
                .iter()
                .position(|x| *x == id)
                .unwrap_or_else(|| panic!("streamed event {id} not in history (in order): {ids:?}"));
            at += pos + 1;
        }

        // Leave one stream open across the shutdown.
        open_stream(&api, &sid).await
    });
    // SIGTERM with a stream open: the server must still exit 0, promptly.
    server.stop_gracefully();
    rt.block_on(async {
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while open.next().await.is_some() {}
        })
        .await;
        assert!(
            end.is_ok(),
            "the open stream was not closed by the shutdown"
        );
    });
}
