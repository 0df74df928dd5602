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
        Self::spawn(manifest, Some(key), extra, rust_log)
    }

    /// Without an API key, as `agentform serve` starts by default.
    fn start_open(manifest: &Path, extra: &[&str]) -> Server {
        Self::spawn(manifest, None, extra, None)
    }

    fn spawn(manifest: &Path, key: Option<&str>, extra: &[&str], rust_log: Option<&str>) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data.path().join("data"));
        if let Some(key) = key {
            cmd.args(["--api-key", key]);
        }
        cmd.arg("-f")
            .arg(manifest)
            .args(extra)
            .current_dir(data.path())
            .env_remove("AGENTFORM_STATE")
            .env_remove("AGENTFORM_SERVE_API_KEY")
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

// ---------------------------------------------------------------------------------------------
// Hostile clients: cross-site and DNS-rebinding requests from browsers, slow and idle
// connections. Raw sockets, so every header is exactly what a browser or an attacker sends.

/// How long a test waits for an effect it expects (a close, an answer) before failing.
const GUARD: Duration = Duration::from_secs(30);

/// `127.0.0.1:PORT` of a server.
fn address(server: &Server) -> String {
    server
        .url
        .strip_prefix("http://")
        .expect("http URL")
        .to_owned()
}

#[derive(Debug)]
struct RawReply {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {}: body is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }

    /// Asserts the status and the error envelope with `error_type`.
    #[track_caller]
    fn refused(&self, status: u16, error_type: &str, what: &str) -> String {
        assert_eq!(self.status, status, "{what}: {self:#?}");
        let body = self.json();
        assert_eq!(body["type"], "error", "{what}: {self:#?}");
        assert_eq!(body["error"]["type"], error_type, "{what}: {self:#?}");
        let rid = self.header("request-id").expect("request-id header");
        assert_eq!(body["request_id"], rid, "{what}: {self:#?}");
        body["error"]["message"]
            .as_str()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| panic!("{what}: no message: {self:#?}"))
            .to_owned()
    }
}

/// A client connection that writes exactly the bytes it is given.
struct Raw {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(address: &str) -> Raw {
        let stream = std::net::TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(GUARD)).unwrap();
        stream.set_write_timeout(Some(GUARD)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &str) {
        std::io::Write::write_all(&mut self.stream, bytes.as_bytes()).expect("write");
    }

    /// Reads more into the buffer; false at the end of the stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("no answer within {GUARD:?}: {e}"),
        }
    }

    /// One response: its head, then a body of `content-length` or chunks.
    fn response(&mut self) -> RawReply {
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            assert!(
                self.fill(),
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(length) = find("content-length") {
            let length: usize = length.parse().expect("content-length");
            while self.buf.len() < length {
                assert!(self.fill(), "connection closed inside a body");
            }
            self.buf.drain(..length).collect()
        } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.chunks()
        } else {
            Vec::new()
        };
        RawReply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn chunks(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                assert!(self.fill(), "connection closed inside a chunk size");
            };
            let size = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
            while self.buf.len() < line_end + 2 + size + 2 {
                assert!(self.fill(), "connection closed inside a chunk");
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Waits until the server closes the connection; how long that took.
    /// Bytes that arrive meanwhile are kept.
    fn closed(&mut self) -> Duration {
        let started = Instant::now();
        while self.fill() {}
        started.elapsed()
    }

    /// Reads until `needle` arrived (false: the connection closed first).
    fn until(&mut self, needle: &str) -> bool {
        loop {
            if String::from_utf8_lossy(&self.buf).contains(needle) {
                return true;
            }
            if !self.fill() {
                return false;
            }
        }
    }
}

/// One request on its own connection.
fn raw_request(address: &str, request: &str) -> RawReply {
    let mut conn = Raw::connect(address);
    conn.send(request);
    conn.response()
}

/// A request with `host`, the extra header lines `extra` (each ending in
/// `\r\n`) and `body`, closing the connection after it.
fn request(method: &str, path: &str, host: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nanthropic-version: 2023-06-01\r\n\
         anthropic-beta: managed-agents-2026-04-01\r\n{extra}content-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// How many agents, environments and sessions the server holds, archived
/// ones included.
fn objects(address: &str) -> [usize; 3] {
    ["/v1/agents", "/v1/environments", "/v1/sessions"].map(|list| {
        let path = format!("{list}?include_archived=true");
        let path = path.as_str();
        let reply = raw_request(address, &request("GET", path, address, "", ""));
        assert_eq!(reply.status, 200, "{path}: {reply:#?}");
        reply.json()["data"].as_array().expect("data").len()
    })
}

const AGENT: &str = r#"{"name":"cross-site","model":"scripted-echo"}"#;
const JSON: &str = "content-type: application/json\r\n";

const ENV: &str = r#"{"name":"cross-site-env"}"#;

/// POSTs `AGENT` and `ENV` with `extra` headers and `host`; both must be
/// refused with `status` and `error_type`. Gives the messages.
#[track_caller]
fn both_refused(addr: &str, host: &str, extra: &str, status: u16, error_type: &str) -> Vec<String> {
    [("/v1/agents", AGENT), ("/v1/environments", ENV)]
        .iter()
        .map(|(path, body)| {
            let reply = raw_request(addr, &request("POST", path, host, extra, body));
            let what = format!("POST {path} host {host:?} with {extra:?}");
            let message = reply.refused(status, error_type, &what);
            assert_eq!(
                reply.header("access-control-allow-origin"),
                None,
                "{what}: {reply:#?}"
            );
            message
        })
        .collect()
}

#[test]
fn cross_site_bodies_need_the_json_type() {
    let server = Server::start_open(&manifest(), &[]);
    let addr = address(&server);

    // What a page on another site can send without a preflight: no type, or
    // the type of a form or of plain text.
    for extra in [
        "",
        "content-type: text/plain;charset=UTF-8\r\n",
        "content-type: application/x-www-form-urlencoded\r\n",
        "content-type: multipart/form-data; boundary=x\r\n",
    ] {
        for message in both_refused(&addr, &addr, extra, 415, "invalid_request_error") {
            assert!(message.contains("application/json"), "{message}");
        }
    }
    assert_eq!(
        objects(&addr),
        [0, 0, 0],
        "a refused request created something"
    );

    // JSON, with parameters, is taken; a POST without a body needs no type
    // (`curl -X POST …/archive`).
    let agent = raw_request(&addr, &request("POST", "/v1/agents", &addr, JSON, AGENT));
    assert_eq!(agent.status, 200, "{agent:#?}");
    let charset = "content-type: application/json; charset=utf-8\r\n";
    let env = raw_request(
        &addr,
        &request("POST", "/v1/environments", &addr, charset, ENV),
    );
    assert_eq!(env.status, 200, "{env:#?}");
    let id = env.json()["id"].as_str().unwrap().to_owned();
    let archive = raw_request(
        &addr,
        &request(
            "POST",
            &format!("/v1/environments/{id}/archive"),
            &addr,
            "",
            "",
        ),
    );
    assert_eq!(archive.status, 200, "{archive:#?}");
    assert_eq!(objects(&addr), [1, 1, 0]);
    server.stop_gracefully();

    // The key changes nothing about it.
    let keyed = Server::start(&manifest(), &[]);
    let addr = address(&keyed);
    let plain = format!("x-api-key: {KEY}\r\ncontent-type: text/plain\r\n");
    both_refused(&addr, &addr, &plain, 415, "invalid_request_error");
    keyed.stop_gracefully();
}

#[test]
fn other_origins_are_refused_and_allowed_ones_get_cors() {
    let app = "http://localhost:3000";
    let server = Server::start_open(&manifest(), &["--allow-origin", app]);
    let addr = address(&server);

    for origin in [
        "http://evil.example",
        "null",
        "http://localhost:3001",
        "https://localhost:3000",
    ] {
        // With a body a preflight would have been asked for, and with one
        // that passes as a simple request.
        for extra in [
            format!("origin: {origin}\r\n{JSON}"),
            format!("origin: {origin}\r\ncontent-type: text/plain\r\n"),
        ] {
            for message in both_refused(&addr, &addr, &extra, 403, "permission_error") {
                assert!(message.contains("--allow-origin"), "{message}");
            }
        }
        // Its preflight is refused as well.
        let preflight = raw_request(
            &addr,
            &request(
                "OPTIONS",
                "/v1/agents",
                &addr,
                &format!("origin: {origin}\r\naccess-control-request-method: POST\r\n"),
                "",
            ),
        );
        preflight.refused(403, "permission_error", "preflight of a refused origin");
        assert_eq!(preflight.header("access-control-allow-origin"), None);
    }
    assert_eq!(
        objects(&addr),
        [0, 0, 0],
        "a refused request created something"
    );

    // The allowed origin: its preflight is answered, and so is its request,
    // with the CORS headers a browser needs to hand it the answer.
    let preflight = raw_request(
        &addr,
        &request(
            "OPTIONS",
            "/v1/agents",
            &addr,
            &format!(
                "origin: {app}\r\naccess-control-request-method: POST\r\n\
                 access-control-request-headers: content-type,x-api-key,anthropic-version\r\n"
            ),
            "",
        ),
    );
    assert!(matches!(preflight.status, 200 | 204), "{preflight:#?}");
    assert_eq!(preflight.header("access-control-allow-origin"), Some(app));
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{preflight:#?}"
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for h in ["content-type", "x-api-key", "anthropic-version"] {
        assert!(allowed.contains(h), "{preflight:#?}");
    }
    let from_app = raw_request(
        &addr,
        &request(
            "POST",
            "/v1/agents",
            &addr,
            &format!("origin: {app}\r\n{JSON}"),
            AGENT,
        ),
    );
    assert_eq!(from_app.status, 200, "{from_app:#?}");
    assert_eq!(from_app.header("access-control-allow-origin"), Some(app));
    assert!(from_app
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("request-id")));
    // Its errors are readable too.
    let missing = raw_request(
        &addr,
        &request(
            "GET",
            "/v1/agents/agent_nope",
            &addr,
            &format!("origin: {app}\r\n"),
            "",
        ),
    );
    missing.refused(404, "not_found_error", "a 404 to the allowed origin");
    assert_eq!(missing.header("access-control-allow-origin"), Some(app));
    assert_eq!(objects(&addr), [1, 0, 0]);
    server.stop_gracefully();

    // With a key too, an origin has to be allowed.
    let keyed = Server::start(&manifest(), &[]);
    let addr = address(&keyed);
    let key = format!("origin: http://evil.example\r\nx-api-key: {KEY}\r\n{JSON}");
    both_refused(&addr, &addr, &key, 403, "permission_error");
    keyed.stop_gracefully();
}

#[test]
fn rebound_host_names_are_refused_without_a_key() {
    let server = Server::start_open(&manifest(), &[]);
    let addr = address(&server);
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();

    // DNS rebinding: the page's own name now points at 127.0.0.1.
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        "localhost".to_owned(),
        format!("localhost:{}", port.wrapping_add(1)),
        format!("127.0.0.2:{port}"),
    ] {
        for message in both_refused(&addr, &host, JSON, 403, "permission_error") {
            assert!(message.contains("--api-key"), "{message}");
        }
        let list = raw_request(&addr, &request("GET", "/v1/agents", &host, "", ""));
        list.refused(403, "permission_error", "a list through a rebound name");
    }
    let no_host = raw_request(&addr, "GET /v1/agents HTTP/1.0\r\n\r\n");
    no_host.refused(403, "permission_error", "a request without Host");
    assert_eq!(
        objects(&addr),
        [0, 0, 0],
        "a refused request created something"
    );

    // The loopback names of the port are answered.
    for (i, host) in [
        addr.clone(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
    ]
    .iter()
    .enumerate()
    {
        let body = format!(r#"{{"name":"local-{i}","model":"scripted-echo"}}"#);
        let reply = raw_request(&addr, &request("POST", "/v1/agents", host, JSON, &body));
        assert_eq!(reply.status, 200, "{host}: {reply:#?}");
    }
    assert_eq!(objects(&addr), [3, 0, 0]);
    server.stop_gracefully();

    // With an API key the key is the defence: any name (a remote one behind
    // --allow-remote) is answered.
    let keyed = Server::start(&manifest(), &[]);
    let addr = address(&keyed);
    let key = format!("x-api-key: {KEY}\r\n{JSON}");
    let remote = raw_request(
        &addr,
        &request("POST", "/v1/agents", "agents.internal:8787", &key, AGENT),
    );
    assert_eq!(remote.status, 200, "{remote:#?}");
    keyed.stop_gracefully();
}

/// The descriptors a process holds, where `/proc` tells.
fn open_descriptors(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

#[test]
fn slow_clients_are_dropped_while_others_are_answered() {
    const SLOW: usize = 300;
    let header_timeout = Duration::from_millis(1500);
    let server = Server::start(
        &manifest(),
        &["--header-timeout", "1500ms", "--idle-timeout", "60s"],
    );
    let addr = address(&server);

    // Half a request line each, never finished.
    let mut slow: Vec<Raw> = (0..SLOW)
        .map(|_| {
            let mut conn = Raw::connect(&addr);
            conn.send("POST /v1/agents HTT");
            conn
        })
        .collect();
    // Connections that send nothing at all are slow clients too.
    slow.extend((0..20).map(|_| Raw::connect(&addr)));

    // Another client is answered while they hold their connections.
    let started = Instant::now();
    let agents = raw_request(
        &addr,
        &request(
            "GET",
            "/v1/agents",
            &addr,
            &format!("x-api-key: {KEY}\r\n"),
            "",
        ),
    );
    assert_eq!(agents.status, 200, "{agents:#?}");
    assert!(
        started.elapsed() < GUARD,
        "a normal request waited {:?} behind slow clients",
        started.elapsed()
    );

    // Every slow connection is closed by the server, none before its time.
    for (i, conn) in slow.iter_mut().enumerate() {
        conn.closed();
        assert!(
            conn.buf.is_empty() || String::from_utf8_lossy(&conn.buf).starts_with("HTTP/1.1 408"),
            "slow client {i} got {:?}",
            String::from_utf8_lossy(&conn.buf)
        );
    }
    assert!(
        started.elapsed() >= header_timeout / 2,
        "slow clients were dropped before the header timeout"
    );
    let after = raw_request(
        &addr,
        &request(
            "GET",
            "/v1/agents",
            &addr,
            &format!("x-api-key: {KEY}\r\n"),
            "",
        ),
    );
    assert_eq!(after.status, 200, "{after:#?}");
    server.stop_gracefully();
}

#[test]
fn the_connection_cap_bounds_descriptors_and_queues_the_rest() {
    const CAP: usize = 40;
    const SLOW: usize = 120;
    let server = Server::start(
        &manifest(),
        &["--header-timeout", "500ms", "--max-connections", "40"],
    );
    let addr = address(&server);
    let pid = server.child.id();
    let before = open_descriptors(pid);

    let mut slow: Vec<Raw> = (0..SLOW)
        .map(|_| {
            let mut conn = Raw::connect(&addr);
            conn.send("GET /v1/agents HTTP/1.1\r\nhost: ");
            conn
        })
        .collect();
    // Queued behind them, a normal request is answered once the slow ones
    // are dropped; meanwhile the server never holds more than the cap.
    let normal = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            raw_request(
                &addr,
                &request(
                    "GET",
                    "/v1/agents",
                    &addr,
                    &format!("x-api-key: {KEY}\r\n"),
                    "",
                ),
            )
        })
    };
    let mut most = 0;
    while !normal.is_finished() {
        most = most.max(open_descriptors(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(2));
    }
    let agents = normal.join().expect("the normal request");
    assert_eq!(agents.status, 200, "{agents:#?}");
    if let Some(before) = before {
        assert!(
            most <= before + CAP + 8,
            "the server held {most} descriptors with {SLOW} slow clients (before: {before}, cap {CAP})"
        );
    }
    for conn in &mut slow {
        conn.closed();
    }
    server.stop_gracefully();
}

#[test]
fn idle_connections_are_closed_but_event_streams_stay() {
    let idle_timeout = Duration::from_millis(800);
    let server = Server::start(
        &manifest(),
        &[
            "--idle-timeout",
            "800ms",
            "--header-timeout",
            "60s",
            "--heartbeat-ms",
            "2500",
        ],
    );
    let addr = address(&server);
    let key = format!("x-api-key: {KEY}\r\n{JSON}");
    let keep_alive = |method: &str, path: &str, body: &str| {
        request(method, path, &addr, &key, body).replace("connection: close\r\n", "")
    };

    // A keep-alive connection answers requests one after the other, then is
    // closed once it has been idle for the idle timeout (well before the
    // header timeout).
    let mut conn = Raw::connect(&addr);
    conn.send(&keep_alive("POST", "/v1/agents", AGENT));
    let agent = conn.response();
    assert_eq!(agent.status, 200, "{agent:#?}");
    conn.send(&keep_alive(
        "POST",
        "/v1/environments",
        r#"{"name":"idle"}"#,
    ));
    let env = conn.response();
    assert_eq!(env.status, 200, "{env:#?}");
    let session = format!(
        r#"{{"agent":"{}","environment_id":"{}"}}"#,
        agent.json()["id"].as_str().unwrap(),
        env.json()["id"].as_str().unwrap()
    );
    conn.send(&keep_alive("POST", "/v1/sessions", &session));
    let session = conn.response();
    assert_eq!(session.status, 200, "{session:#?}");
    let sid = session.json()["id"].as_str().unwrap().to_owned();

    // An event stream on its own connection, silent for longer than the idle
    // timeout until its first ping.
    let mut stream = Raw::connect(&addr);
    stream.send(&keep_alive(
        "GET",
        &format!("/v1/sessions/{sid}/events/stream"),
        "",
    ));
    assert!(stream.until("\r\n\r\n"), "no stream head");
    assert!(
        String::from_utf8_lossy(&stream.buf).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&stream.buf)
    );
    let opened = Instant::now();

    let waited = conn.closed();
    assert!(
        waited >= idle_timeout / 2,
        "the idle connection was closed after {waited:?}"
    );
    assert!(
        conn.buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&conn.buf)
    );

    assert!(
        stream.until("event: ping"),
        "the event stream was closed: {:?}",
        String::from_utf8_lossy(&stream.buf)
    );
    assert!(opened.elapsed() > idle_timeout, "{:?}", opened.elapsed());
    // And it still carries the session's events.
    let sent = raw_request(
        &addr,
        &request(
            "POST",
            &format!("/v1/sessions/{sid}/events"),
            &addr,
            &key,
            r#"{"events":[{"type":"user.message","content":[{"type":"text","text":"hi"}]}]}"#,
        ),
    );
    assert_eq!(sent.status, 200, "{sent:#?}");
    assert!(
        stream.until("event: session.status_idle"),
        "{:?}",
        String::from_utf8_lossy(&stream.buf)
    );

    // A client halfway through its head (with a minute left of the header
    // timeout) does not hold up the shutdown.
    let mut halfway = Raw::connect(&addr);
    halfway.send("GET /v1/agents HTTP/1.1\r\nhost: ");
    let probe = raw_request(&addr, &request("GET", "/v1/agents", &addr, &key, ""));
    assert_eq!(probe.status, 200, "{probe:#?}");
    server.stop_gracefully();
    stream.closed();
    halfway.closed();
}
