//! The client against a tiny HTTP/1.1 server on 127.0.0.1 (one request per
//! connection, answers written by hand).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::runtime::{event, list_all};

const KEY: &str = "sk-ant-api03-TESTKEY-0123456789abcdef";
const TOKEN: &str = "oat-TESTTOKEN-9876543210fedcba";

// ----- the server -------------------------------------------------------------

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: HashMap<String, String>,
    body: Value,
}

impl Request {
    fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

enum Reply {
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Written as is, one write per part.
    Raw(Vec<Vec<u8>>),
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply::Json {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    fn error(status: u16, kind: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Reply::Json { headers, .. } = &mut self {
            headers.push((name, value.to_owned()));
        }
        self
    }

    /// A `text/event-stream` answer in chunked encoding, one chunk per part;
    /// `finish` writes the last chunk, else the connection just closes
    /// mid-body.
    fn sse(parts: &[&[u8]], finish: bool) -> Self {
        let mut out = vec![b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec()];
        for part in parts {
            let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
            chunk.extend_from_slice(part);
            chunk.extend_from_slice(b"\r\n");
            out.push(chunk);
        }
        if finish {
            out.push(b"0\r\n\r\n".to_vec());
        } else {
            out.push(b"40\r\nevent: agent.mess".to_vec());
        }
        Reply::Raw(out)
    }
}

type Log = Arc<Mutex<Vec<Request>>>;
type Handler = Arc<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

/// Serves every connection with `handler(request, index)`; each request is
/// logged before its answer is written.
async fn serve(
    handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let handler: Handler = Arc::new(handler);
    let task_log = log.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = task_log.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Some(request) = read_request(&mut stream).await else {
                    return;
                };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    log.len() - 1
                };
                match handler(&request, index) {
                    Reply::Json {
                        status,
                        headers,
                        body,
                    } => {
                        let mut head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                            body.len()
                        );
                        for (name, value) in headers {
                            head.push_str(&format!("{name}: {value}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(body.as_bytes()).await;
                    }
                    Reply::Raw(parts) => {
                        for part in parts {
                            if stream.write_all(&part).await.is_err() {
                                break;
                            }
                            let _ = stream.flush().await;
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    (base, log)
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + length];
    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
    let url = Url::parse(&format!("http://x{target}")).ok()?;
    Some(Request {
        method,
        path: url.path().to_owned(),
        query: url.query_pairs().into_owned().collect(),
        headers,
        body,
    })
}

fn requests(log: &Log) -> Vec<Request> {
    log.lock().unwrap().clone()
}

// ----- objects ------------------------------------------------------------------

fn now() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap()
}

fn agent(id: &str, metadata: Value, created_at: &str) -> Value {
    json!({
        "id": id, "type": "agent", "name": "writer", "version": 1,
        "archived_at": null, "created_at": created_at, "updated_at": created_at,
        "description": null, "system": "Be terse.",
        "execution_identity": {"type": "service_account"},
        "mcp_servers": [], "metadata": metadata,
        "model": {"id": "claude-sonnet-4-6", "effort": {"type": "medium"}, "speed": "standard"},
        "multiagent": null, "skills": [],
        "tools": [{"type": "agent_toolset_20260401", "configs": [], "default_config": {"enabled": true, "permission_policy": {"type": "always_allow"}}}],
        "future_field": {"kept": "by the API, ignored here"}
    })
}

fn environment(id: &str, metadata: Value) -> Value {
    json!({
        "id": id, "type": "environment", "name": "sandbox",
        "archived_at": null, "created_at": "2026-04-01T12:00:00Z", "updated_at": "2026-04-01T12:00:00Z",
        "description": null, "metadata": metadata,
        "config": {"type": "cloud", "networking": {"type": "unrestricted"},
                   "packages": {"apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []}},
        "scope": "organization"
    })
}

fn session(id: &str) -> Value {
    json!({
        "id": id, "type": "session", "status": "idle", "title": null,
        "agent": {"id": "agent_01", "version": 1, "type": "agent"},
        "archived_at": null, "created_at": "2026-04-01T12:00:00Z", "updated_at": "2026-04-01T12:00:00Z",
        "environment_id": "env_01", "metadata": {},
        "outcome_evaluations": [], "resources": [], "stats": {}, "usage": {}, "vault_ids": []
    })
}

fn managed() -> Value {
    json!({"agentform.address": "agent.writer", "agentform.manifest": "demo"})
}

fn options(base: &str) -> AnthropicOptions {
    AnthropicOptions {
        base_url: Some(base.to_owned()),
        api_key: Some(Secret::new(KEY)),
        limits: RateLimits::unlimited(),
        ..AnthropicOptions::default()
    }
}

fn fast(mut rt: AnthropicRuntime) -> AnthropicRuntime {
    rt.set_retry_policy(RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        ..rt.retry_policy()
    });
    rt
}

fn runtime(base: &str) -> AnthropicRuntime {
    fast(AnthropicRuntime::new(options(base)).unwrap())
}

/// Every error text a test produced, for the leak check.
fn shown(e: &RuntimeError) -> String {
    format!("{e} {e:?}")
}

// ----- construction -------------------------------------------------------------

#[test]
fn credentials_and_base_url_come_from_the_environment() {
    const DEFAULT_ENVS: (&str, &str) = (API_KEY_ENV, AUTH_TOKEN_ENV);
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let none = options_from(None, RateLimits::default(), DEFAULT_ENVS, vars(&[]));
    let e = AnthropicRuntime::new(none).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Authentication);
    assert!(e.message.contains("ANTHROPIC_API_KEY"), "{e}");
    assert!(e.message.contains("ANTHROPIC_AUTH_TOKEN"), "{e}");
    // Blank values count as unset.
    let blank = options_from(
        None,
        RateLimits::default(),
        DEFAULT_ENVS,
        vars(&[(API_KEY_ENV, "  ")]),
    );
    assert!(AnthropicRuntime::new(blank).is_err());

    let o = options_from(
        None,
        RateLimits::unlimited(),
        DEFAULT_ENVS,
        vars(&[
            (API_KEY_ENV, KEY),
            (BASE_URL_ENV, "http://env.example/prefix/"),
        ]),
    );
    assert_eq!(o.base_url.as_deref(), Some("http://env.example/prefix/"));
    assert_eq!(o.limits, RateLimits::unlimited());
    assert_eq!(o.max_retries, 4);
    let rt = AnthropicRuntime::new(o).unwrap();
    assert_eq!(rt.name(), "anthropic");
    assert_eq!(rt.base_url(), "http://env.example/prefix/");

    let o = options_from(
        Some("http://override.example".into()),
        RateLimits::default(),
        DEFAULT_ENVS,
        vars(&[
            (AUTH_TOKEN_ENV, TOKEN),
            (BASE_URL_ENV, "http://env.example"),
        ]),
    );
    assert_eq!(o.base_url.as_deref(), Some("http://override.example"));
    assert!(o.api_key.is_none());
    let rt = AnthropicRuntime::new(o).unwrap();
    assert_eq!(rt.base_url(), "http://override.example/");

    let o = options_from(
        None,
        RateLimits::default(),
        DEFAULT_ENVS,
        vars(&[(API_KEY_ENV, KEY)]),
    );
    assert_eq!(
        AnthropicRuntime::new(o).unwrap().base_url(),
        "https://api.anthropic.com/"
    );
}

#[test]
fn bad_base_urls_and_keys_are_rejected_without_showing_the_key() {
    for url in ["ftp://x", "not a url", "mailto:a@b", "http://x/?q=1"] {
        let o = AnthropicOptions {
            base_url: Some(url.into()),
            ..options("http://unused")
        };
        let e = AnthropicRuntime::new(o).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidRequest, "{url}");
    }
    let bad = format!("{KEY}\n");
    let o = AnthropicOptions {
        api_key: Some(Secret::new(format!("{bad}x"))),
        ..options("http://127.0.0.1:1")
    };
    let e = AnthropicRuntime::new(o).unwrap_err();
    assert!(e.message.contains("ANTHROPIC_API_KEY"), "{e}");
    assert!(!shown(&e).contains(KEY));
}

#[test]
fn secrets_never_print() {
    let s = Secret::new(KEY);
    assert_eq!(format!("{s}"), "(sensitive)");
    assert_eq!(format!("{s:?}"), "(sensitive)");
    let o = AnthropicOptions {
        auth_token: Some(Secret::new(TOKEN)),
        ..options("http://127.0.0.1:1")
    };
    let debug = format!("{o:?}");
    assert!(!debug.contains(KEY) && !debug.contains(TOKEN), "{debug}");
    let rt = AnthropicRuntime::new(o).unwrap();
    let debug = format!("{rt:?}");
    assert!(!debug.contains(KEY) && !debug.contains(TOKEN), "{debug}");
}

// ----- objects ------------------------------------------------------------------

#[tokio::test]
async fn crud_sends_the_documented_requests_and_parses_the_answers() {
    let (base, log) = serve(|r, _| {
        let id = r.path.rsplit('/').next().unwrap_or_default().to_owned();
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/v1/agents") => Reply::ok(agent("agent_01", managed(), "2026-04-01T12:00:00Z")),
            ("GET", "/v1/agents") => Reply::ok(json!({"data": [agent("agent_01", json!({}), "2026-04-01T12:00:00Z")], "next_page": null})),
            ("GET", "/v1/agents/agent_01/versions") => Reply::ok(json!({"data": []})),
            ("POST", "/v1/agents/agent_01/archive") => {
                let mut a = agent("agent_01", json!({}), "2026-04-01T12:00:00Z");
                a["archived_at"] = json!("2026-04-02T00:00:00Z");
                Reply::ok(a)
            }
            (_, p) if p.starts_with("/v1/agents/") => {
                let mut a = agent(&id, json!({}), "2026-04-01T12:00:00Z");
                a["version"] = json!(if r.method == "POST" { 2 } else { 1 });
                Reply::ok(a)
            }
            ("POST", "/v1/environments") => Reply::ok(environment("env_01", managed())),
            ("GET", "/v1/environments") => Reply::ok(json!({"data": [environment("env_01", json!({}))]})),
            ("DELETE", p) if p.starts_with("/v1/environments/") => {
                Reply::ok(json!({"id": id, "type": "environment_deleted"}))
            }
            (_, p) if p.starts_with("/v1/environments/") => {
                let env_id = p.split('/').nth(3).unwrap();
                Reply::ok(environment(env_id, json!({})))
            }
            ("POST", "/v1/sessions") => Reply::ok(session("sesn_01")),
            ("GET", "/v1/sessions") => Reply::ok(json!({"data": [session("sesn_01")], "next_page": "", "prev_page": null})),
            ("DELETE", p) if p.starts_with("/v1/sessions/") => {
                Reply::ok(json!({"id": id, "type": "session_deleted"}))
            }
            ("POST", "/v1/sessions/sesn_01/events") => {
                let events: Vec<Value> = r.body["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let mut e = e.clone();
                        e["id"] = json!(format!("sevt_{i}"));
                        e["processed_at"] = Value::Null;
                        e
                    })
                    .collect();
                Reply::ok(json!({ "data": events }))
            }
            ("GET", "/v1/sessions/sesn_01/events") => Reply::ok(json!({"data": [
                {"id": "sevt_1", "type": "user.message", "content": [{"type": "text", "text": "hi"}]},
                {"id": "sevt_2", "type": "some.future_event", "payload": {"x": 1}}
            ], "next_page": "page_2"})),
            (_, p) if p.starts_with("/v1/sessions/") => {
                let sid = p.split('/').nth(3).unwrap();
                Reply::ok(session(sid))
            }
            _ => Reply::error(404, "not_found_error", "no route"),
        }
    })
    .await;
    let rt = runtime(&base);

    let body = json!({"name": "writer", "model": "claude-sonnet-4-6", "metadata": managed()});
    let a = rt.create_agent(body.clone()).await.unwrap();
    assert_eq!(a.id, "agent_01");
    assert_eq!(a.metadata["agentform.manifest"], "demo");
    assert_eq!(a.model.id, "claude-sonnet-4-6");
    let a = rt.retrieve_agent("agent_01", Some(1)).await.unwrap();
    assert_eq!(a.version, 1);
    let a = rt
        .update_agent("agent_01", json!({"version": 1, "system": "x"}))
        .await
        .unwrap();
    assert_eq!(a.version, 2);
    let page = rt.list_agents(&ListQuery::all()).await.unwrap();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.next_page, None);
    let page = rt
        .list_agent_versions(
            "agent_01",
            &ListQuery {
                limit: Some(5),
                page: Some("p".into()),
                include_archived: true,
            },
        )
        .await
        .unwrap();
    assert!(page.data.is_empty());
    let a = rt.archive_agent("agent_01").await.unwrap();
    assert!(a.archived_at.is_some());

    let e = rt
        .create_environment(json!({"name": "sandbox"}))
        .await
        .unwrap();
    assert_eq!(e.id, "env_01");
    assert_eq!(e.scope.as_deref(), Some("organization"));
    rt.retrieve_environment("env_01").await.unwrap();
    rt.update_environment("env_01", json!({"description": "d"}))
        .await
        .unwrap();
    rt.archive_environment("env_01").await.unwrap();
    assert_eq!(
        rt.list_environments(&ListQuery::default())
            .await
            .unwrap()
            .data
            .len(),
        1
    );
    let d = rt.delete_environment("env_01").await.unwrap();
    assert_eq!(d.kind, "environment_deleted");

    let s = rt
        .create_session(json!({"agent": "agent_01", "environment_id": "env_01"}))
        .await
        .unwrap();
    assert_eq!(s.agent_id(), Some("agent_01"));
    rt.retrieve_session("sesn_01").await.unwrap();
    rt.update_session("sesn_01", json!({"title": "t"}))
        .await
        .unwrap();
    rt.archive_session("sesn_01").await.unwrap();
    let page = rt.list_sessions(&ListQuery::default()).await.unwrap();
    assert_eq!(page.next_page.as_deref(), Some(""));
    let d = rt.delete_session("sesn_01").await.unwrap();
    assert_eq!(
        d,
        Deleted {
            id: "sesn_01".into(),
            kind: "session_deleted".into()
        }
    );

    let message = json!({"type": "user.message", "content": [{"type": "text", "text": "hi"}]});
    let sent = rt
        .send_events("sesn_01", vec![message.clone()])
        .await
        .unwrap();
    assert_eq!(event::id(&sent[0]), "sevt_0");
    rt.interrupt("sesn_01").await.unwrap();
    let page = rt
        .list_events(
            "sesn_01",
            &ListQuery {
                limit: Some(2),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.data[1]["payload"],
        json!({"x": 1}),
        "unknown events pass through"
    );
    assert_eq!(page.next_page.as_deref(), Some("page_2"));

    let log = requests(&log);
    let seen: Vec<String> = log
        .iter()
        .map(|r| {
            let mut q: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            q.sort();
            format!("{} {}?{}", r.method, r.path, q.join("&"))
        })
        .collect();
    assert_eq!(
        seen,
        [
            "POST /v1/agents?",
            "GET /v1/agents/agent_01?version=1",
            "POST /v1/agents/agent_01?",
            "GET /v1/agents?include_archived=true&limit=100",
            "GET /v1/agents/agent_01/versions?limit=5&page=p",
            "POST /v1/agents/agent_01/archive?",
            "POST /v1/environments?",
            "GET /v1/environments/env_01?",
            "POST /v1/environments/env_01?",
            "POST /v1/environments/env_01/archive?",
            "GET /v1/environments?",
            "DELETE /v1/environments/env_01?",
            "POST /v1/sessions?",
            "GET /v1/sessions/sesn_01?",
            "POST /v1/sessions/sesn_01?",
            "POST /v1/sessions/sesn_01/archive?",
            "GET /v1/sessions?",
            "DELETE /v1/sessions/sesn_01?",
            "POST /v1/sessions/sesn_01/events?",
            "POST /v1/sessions/sesn_01/events?",
            "GET /v1/sessions/sesn_01/events?limit=2",
        ]
    );
    for r in &log {
        assert_eq!(r.headers["x-api-key"], KEY);
        assert!(!r.headers.contains_key("authorization"));
        assert_eq!(r.headers["anthropic-version"], "2023-06-01");
        assert_eq!(r.headers["anthropic-beta"], "managed-agents-2026-04-01");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["accept"], "application/json");
    }
    assert_eq!(log[0].body, body);
    assert_eq!(log[5].body, Value::Null, "archive sends no body");
    assert_eq!(log[18].body, json!({"events": [message]}));
    assert_eq!(
        log[19].body,
        json!({"events": [{"type": "user.interrupt"}]})
    );
}

#[tokio::test]
async fn ids_are_escaped_in_paths() {
    let (base, log) = serve(|_, _| Reply::ok(session("x"))).await;
    let rt = runtime(&format!("{base}/proxy/"));
    rt.retrieve_session("a/b c?d").await.unwrap();
    let r = &requests(&log)[0];
    assert_eq!(r.path, "/proxy/v1/sessions/a%2Fb%20c%3Fd");
    assert!(r.query.is_empty());
}

#[tokio::test]
async fn auth_tokens_go_in_the_authorization_header() {
    let (base, log) = serve(|_, _| Reply::ok(json!({"data": []}))).await;
    let o = AnthropicOptions {
        api_key: None,
        auth_token: Some(Secret::new(TOKEN)),
        ..options(&base)
    };
    let rt = AnthropicRuntime::new(o).unwrap();
    rt.list_agents(&ListQuery::default()).await.unwrap();
    let r = &requests(&log)[0];
    assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
    assert!(!r.headers.contains_key("x-api-key"));
}

#[tokio::test]
async fn lists_follow_next_page() {
    let (base, log) = serve(|r, _| {
        let page = r.param("page").unwrap_or("");
        let (ids, next): (&[&str], Value) = match page {
            "" => (&["agent_1", "agent_2"], json!("cur_2")),
            "cur_2" => (&["agent_3"], json!("cur_3")),
            _ => (&["agent_4"], Value::Null),
        };
        let data: Vec<Value> = ids
            .iter()
            .map(|id| agent(id, json!({}), "2026-04-01T12:00:00Z"))
            .collect();
        Reply::ok(json!({"data": data, "next_page": next}))
    })
    .await;
    let rt = runtime(&base);
    let all = list_all(|q| {
        let rt = &rt;
        async move { rt.list_agents(&q).await }
    })
    .await
    .unwrap();
    let ids: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["agent_1", "agent_2", "agent_3", "agent_4"]);
    let pages: Vec<Option<String>> = requests(&log)
        .iter()
        .map(|r| r.param("page").map(str::to_owned))
        .collect();
    assert_eq!(pages, [None, Some("cur_2".into()), Some("cur_3".into())]);
}

// ----- errors and retries -------------------------------------------------------

#[tokio::test]
async fn overloaded_then_success_is_retried() {
    let (base, log) = serve(|_, i| match i {
        0 => Reply::error(529, "overloaded_error", "Overloaded").header("retry-after-ms", "1"),
        1 => Reply::error(503, "api_error", "unavailable").header("retry-after", "0"),
        _ => Reply::ok(session("sesn_9")),
    })
    .await;
    let rt = runtime(&base);
    let s = rt.retrieve_session("sesn_9").await.unwrap();
    assert_eq!(s.id, "sesn_9");
    assert_eq!(requests(&log).len(), 3);
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_error_is_kept() {
    let (base, log) = serve(|_, _| {
        Reply::error(529, "overloaded_error", "Overloaded").header("request-id", "req_529")
    })
    .await;
    let o = AnthropicOptions {
        max_retries: 2,
        ..options(&base)
    };
    let rt = fast(AnthropicRuntime::new(o).unwrap());
    let e = rt.retrieve_agent("agent_01", None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Overloaded);
    assert_eq!(e.request_id.as_deref(), Some("req_529"));
    assert_eq!(requests(&log).len(), 3);
}

#[tokio::test]
async fn x_should_retry_decides() {
    let (base, log) = serve(|_, i| match i {
        0 => {
            Reply::error(400, "invalid_request_error", "try again").header("x-should-retry", "true")
        }
        1 => Reply::error(500, "api_error", "do not").header("x-should-retry", "false"),
        _ => Reply::ok(session("never")),
    })
    .await;
    let rt = runtime(&base);
    let e = rt.retrieve_session("s").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Api);
    assert!(e.message.contains("do not"), "{e}");
    assert_eq!(requests(&log).len(), 2);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_carry_hints() {
    let (base, log) = serve(|r, _| {
        if r.path.starts_with("/v1/agents/") {
            Reply::json(404, json!({"type": "error", "error": {"type": "not_found_error", "message": "agent not found"}, "request_id": "req_body"}))
        } else {
            Reply::error(401, "authentication_error", "invalid x-api-key").header("request-id", "req_401")
        }
    })
    .await;
    let rt = runtime(&base);
    let e = rt.retrieve_agent("agent_gone", None).await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(e.request_id.as_deref(), Some("req_body"));
    assert!(e.message.contains("GET /v1/agents/agent_gone"), "{e}");
    assert!(e.message.contains("agentform state rm ADDR"), "{e}");
    let e = rt.list_sessions(&ListQuery::default()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Authentication);
    assert_eq!(e.request_id.as_deref(), Some("req_401"));
    assert!(e.message.contains("check ANTHROPIC_API_KEY"), "{e}");
    assert_eq!(requests(&log).len(), 2);
}

#[tokio::test]
async fn answers_that_do_not_parse_are_api_errors() {
    let (base, _log) = serve(|r, _| match r.path.as_str() {
        "/v1/agents/a" => Reply::ok(json!({"id": 5})).header("request-id", "req_bad"),
        "/v1/environments/e" => Reply::Json {
            status: 200,
            headers: vec![],
            body: "<html>".into(),
        },
        "/v1/sessions" => Reply::ok(json!({"data": [{"id": "s"}]})),
        _ => Reply::ok(json!({"id": "x", "type": "session_deleted", "extra": true})),
    })
    .await;
    let rt = runtime(&base);
    let e = rt.retrieve_agent("a", None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Api);
    assert!(
        e.message
            .starts_with("GET /v1/agents/a: the answer is not an agent"),
        "{e}"
    );
    assert_eq!(e.request_id.as_deref(), Some("req_bad"));
    let e = rt.retrieve_environment("e").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Api);
    assert!(
        e.message
            .contains("GET /v1/environments/e: the answer is not JSON"),
        "{e}"
    );
    let e = rt.list_sessions(&ListQuery::default()).await.unwrap_err();
    assert!(e.message.contains("a page of sessions at `data[0]"), "{e}");
    // Extra fields are fine.
    rt.delete_session("x").await.unwrap();
}

#[tokio::test]
async fn missing_collections_are_filled_in() {
    let (base, _log) = serve(|_, _| {
        let mut a = agent("agent_1", json!({}), "2026-04-01T12:00:00Z");
        let map = a.as_object_mut().unwrap();
        for key in [
            "mcp_servers",
            "skills",
            "metadata",
            "execution_identity",
            "multiagent",
            "system",
        ] {
            map.remove(key);
        }
        Reply::ok(a)
    })
    .await;
    let a = runtime(&base)
        .retrieve_agent("agent_1", None)
        .await
        .unwrap();
    assert!(a.mcp_servers.is_empty() && a.skills.is_empty() && a.metadata.is_empty());
    assert_eq!(a.execution_identity, None);
}

#[tokio::test]
async fn unreachable_servers_are_transport_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let o = AnthropicOptions {
        max_retries: 1,
        ..options(&base)
    };
    let rt = fast(AnthropicRuntime::new(o).unwrap());
    let e = rt.retrieve_agent("a", None).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport);
    assert!(
        e.message.contains("GET /v1/agents/a: cannot reach the API"),
        "{e}"
    );
    // A create that never connected is not looked for afterwards.
    let e = rt
        .create_agent(json!({"metadata": managed()}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport);
}

// ----- retried writes do not take effect twice ----------------------------------

#[tokio::test]
async fn a_create_retried_after_a_500_adopts_what_the_first_attempt_made() {
    let (base, log) = serve(|r, _| {
        if r.is("POST", "/v1/agents") {
            // The agent was stored, then the answer failed.
            Reply::error(500, "api_error", "Internal server error")
        } else {
            Reply::ok(json!({"data": [
                agent("agent_other", json!({"agentform.address": "agent.other", "agentform.manifest": "demo"}), &now()),
                agent("agent_old", managed(), "2020-01-01T00:00:00Z"),
                agent("agent_made", managed(), &now()),
            ]}))
        }
    })
    .await;
    let rt = runtime(&base);
    let a = rt
        .create_agent(
            json!({"name": "writer", "model": "claude-sonnet-4-6", "metadata": managed()}),
        )
        .await
        .unwrap();
    assert_eq!(a.id, "agent_made");
    let log = requests(&log);
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[1].is("GET", "/v1/agents"));
    assert_eq!(log[1].param("limit"), Some("100"));
    let since = log[1].param("created_at[gte]").expect("a time filter");
    assert!(OffsetDateTime::parse(since, &Rfc3339).is_ok(), "{since}");
}

#[tokio::test]
async fn older_objects_with_the_same_address_are_not_adopted() {
    let (base, log) = serve(|r, i| {
        if r.is("POST", "/v1/environments") {
            if i == 0 {
                Reply::error(502, "api_error", "bad gateway")
            } else {
                Reply::ok(environment("env_new", managed()))
            }
        } else {
            // The object this one replaces: same metadata, years old.
            let mut old = environment("env_old", managed());
            old["created_at"] = json!("2020-01-01T00:00:00Z");
            Reply::ok(json!({"data": [old], "next_page": null}))
        }
    })
    .await;
    let rt = runtime(&base);
    let e = rt
        .create_environment(json!({"name": "sandbox", "metadata": managed()}))
        .await
        .unwrap();
    assert_eq!(e.id, "env_new");
    let log = requests(&log);
    let seen: Vec<String> = log
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        seen,
        [
            "POST /v1/environments",
            "GET /v1/environments",
            "POST /v1/environments"
        ]
    );
    // Environments have no time filter.
    assert_eq!(log[1].param("created_at[gte]"), None);
}

#[tokio::test]
async fn session_adoption_filters_by_agent_and_follows_pages() {
    let (base, log) = serve(|r, _| {
        if r.is("POST", "/v1/sessions") {
            return Reply::error(529, "overloaded_error", "Overloaded");
        }
        match r.param("page") {
            None => Reply::ok(json!({"data": [session("sesn_a")], "next_page": "p2"})),
            _ => {
                let mut s = session("sesn_made");
                s["metadata"] = managed();
                s["created_at"] = json!(now());
                Reply::ok(json!({"data": [s]}))
            }
        }
    })
    .await;
    let rt = runtime(&base);
    let s = rt
        .create_session(json!({"agent": {"type": "agent", "id": "agent_01", "version": 1}, "environment_id": "env_01", "metadata": managed()}))
        .await
        .unwrap();
    assert_eq!(s.id, "sesn_made");
    let log = requests(&log);
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].param("agent_id"), Some("agent_01"));
    assert_eq!(log[2].param("page"), Some("p2"));
}

#[tokio::test]
async fn creates_without_agentform_metadata_are_just_retried() {
    let (base, log) = serve(|_, i| {
        if i == 0 {
            Reply::error(500, "api_error", "oops")
        } else {
            Reply::ok(agent("agent_2", json!({}), "2026-04-01T12:00:00Z"))
        }
    })
    .await;
    let rt = runtime(&base);
    let a = rt
        .create_agent(json!({"name": "x", "model": "m"}))
        .await
        .unwrap();
    assert_eq!(a.id, "agent_2");
    let methods: Vec<String> = requests(&log).iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["POST", "POST"]);
}

#[tokio::test]
async fn a_failed_check_is_retried_before_creating_again() {
    let (base, log) = serve(|r, i| {
        if r.method == "POST" {
            Reply::error(500, "api_error", "oops")
        } else if i == 1 {
            Reply::error(503, "api_error", "list unavailable")
        } else {
            Reply::ok(json!({"data": [agent("agent_made", managed(), &now())]}))
        }
    })
    .await;
    let rt = runtime(&base);
    let a = rt
        .create_agent(json!({"metadata": managed()}))
        .await
        .unwrap();
    assert_eq!(a.id, "agent_made");
    let seen: Vec<String> = requests(&log).iter().map(|r| r.method.clone()).collect();
    assert_eq!(seen, ["POST", "GET", "GET"]);
}

#[tokio::test]
async fn a_delete_whose_answer_was_lost_is_done() {
    let (base, log) = serve(|_, i| match i {
        0 => Reply::error(500, "api_error", "oops"),
        _ => Reply::error(404, "not_found_error", "session not found"),
    })
    .await;
    let rt = runtime(&base);
    let d = rt.delete_session("sesn_1").await.unwrap();
    assert_eq!(
        d,
        Deleted {
            id: "sesn_1".into(),
            kind: "session_deleted".into()
        }
    );
    assert_eq!(requests(&log).len(), 2);
    // A plain 404 stays an error.
    let (base, _log) = serve(|_, _| Reply::error(404, "not_found_error", "gone")).await;
    let e = runtime(&base)
        .delete_environment("env_1")
        .await
        .unwrap_err();
    assert!(e.is_not_found());
}

#[tokio::test]
async fn events_whose_answer_was_lost_are_not_sent_twice() {
    let message = json!({"type": "user.message", "content": [{"type": "text", "text": "go"}]});
    let stored = {
        let mut m = message.clone();
        m["id"] = json!("sevt_9");
        m["processed_at"] = json!(now());
        m
    };
    let (base, log) = serve(move |r, _| {
        if r.method == "POST" {
            Reply::error(500, "api_error", "oops")
        } else {
            // Newest first: an older identical message, then ours.
            let mut older = stored.clone();
            older["id"] = json!("sevt_1");
            older["processed_at"] = json!("2020-01-01T00:00:00Z");
            Reply::ok(
                json!({"data": [stored.clone(), {"id": "sevt_5", "type": "agent.message"}, older]}),
            )
        }
    })
    .await;
    let rt = runtime(&base);
    let sent = rt.send_events("sesn_1", vec![message]).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(event::id(&sent[0]), "sevt_9");
    let log = requests(&log);
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].path, "/v1/sessions/sesn_1/events");
    assert_eq!(log[1].param("order"), Some("desc"));
}

// ----- the event stream ---------------------------------------------------------

const STREAM: &str = concat!(
    ": hello\r\n",
    "event: session.status_running\r\n",
    "data: {\"id\":\"sevt_1\",\"type\":\"session.status_running\"}\r\n",
    "\r\n",
    "event: ping\r\n",
    "data: {\"type\":\"ping\"}\r\n",
    "\r\n",
    "event: agent.message\r\n",
    "data: {\"id\":\"sevt_2\",\"type\":\"agent.message\",\r\n",
    "data: \"content\":[{\"type\":\"text\",\"text\":\"naïve 🦀\"}]}\r\n",
    "\r\n",
    "event: session.status_idle\r\n",
    "data: {\"id\":\"sevt_3\",\"type\":\"session.status_idle\",\"stop_reason\":{\"type\":\"end_turn\"}}\r\n",
    "\r\n",
);

/// `STREAM` cut inside the crab emoji, between a `\r` and its `\n`, and
/// inside a field name.
fn awkward_parts() -> Vec<Vec<u8>> {
    let bytes = STREAM.as_bytes();
    let crab = STREAM.find('🦀').unwrap() + 2;
    let cr = STREAM.find("\r\n").unwrap() + 1;
    let field = STREAM.find("event: agent").unwrap() + 3;
    let mut cuts = vec![cr, field, crab];
    cuts.sort();
    let mut parts = Vec::new();
    let mut start = 0;
    for cut in cuts {
        parts.push(bytes[start..cut].to_vec());
        start = cut;
    }
    parts.push(bytes[start..].to_vec());
    parts
}

#[tokio::test]
async fn streams_yield_events_split_across_chunks() {
    let parts = awkward_parts();
    let (base, log) = serve(move |_, _| {
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Reply::sse(&refs, true)
    })
    .await;
    let rt = runtime(&base);
    let mut stream = rt.stream_events("sesn_1").await.unwrap();
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        events.push(item.unwrap());
    }
    let ids: Vec<&str> = events.iter().map(event::id).collect();
    assert_eq!(ids, ["sevt_1", "sevt_2", "sevt_3"]);
    assert_eq!(event::text(&events[1]), "naïve 🦀");
    let r = &requests(&log)[0];
    assert!(r.is("GET", "/v1/sessions/sesn_1/events/stream"));
    assert_eq!(r.headers["accept"], "text/event-stream");
    assert_eq!(r.headers["anthropic-beta"], "managed-agents-2026-04-01");
}

#[tokio::test]
async fn a_dropped_stream_ends_with_an_error() {
    let (base, _log) = serve(|_, _| Reply::sse(&[STREAM.as_bytes()], false)).await;
    let rt = runtime(&base);
    let mut stream = rt.stream_events("sesn_1").await.unwrap();
    for id in ["sevt_1", "sevt_2", "sevt_3"] {
        assert_eq!(event::id(&stream.next().await.unwrap().unwrap()), id);
    }
    let e = stream.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport);
    assert!(e.message.contains("the event stream broke"), "{e}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn an_error_event_ends_the_stream() {
    let body = concat!(
        "event: agent.message\n",
        "data: {\"id\":\"sevt_1\",\"type\":\"agent.message\",\"content\":[]}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"stream failed\"},\"request_id\":\"req_s\"}\n\n",
        "event: agent.message\n",
        "data: {\"id\":\"sevt_2\",\"type\":\"agent.message\",\"content\":[]}\n\n",
    );
    let (base, _log) = serve(move |_, _| Reply::sse(&[body.as_bytes()], true)).await;
    let rt = runtime(&base);
    let mut stream = rt.stream_events("sesn_1").await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    let e = stream.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Api);
    assert_eq!(e.request_id.as_deref(), Some("req_s"));
    assert!(e.message.contains("stream failed"), "{e}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn opening_a_stream_maps_errors_and_retries() {
    let (base, log) = serve(|_, i| match i {
        0 => Reply::error(429, "rate_limit_error", "slow down").header("retry-after-ms", "1"),
        _ => Reply::error(404, "not_found_error", "session not found"),
    })
    .await;
    let rt = runtime(&base);
    let e = match rt.stream_events("sesn_gone").await {
        Ok(_) => panic!("the stream opened"),
        Err(e) => e,
    };
    assert!(e.is_not_found());
    assert_eq!(requests(&log).len(), 2);
}

// ----- the key never leaks ------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_key_never_appears_in_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A server that echoes the credentials back in every error.
    let echo = |r: &Request, _: usize| {
        let creds = format!(
            "x-api-key={} authorization={}",
            r.headers.get("x-api-key").cloned().unwrap_or_default(),
            r.headers.get("authorization").cloned().unwrap_or_default()
        );
        let reply = match r.path.as_str() {
            "/v1/agents" if r.method == "POST" => Reply::error(500, "api_error", &creds),
            "/v1/agents" => Reply::error(401, "authentication_error", &creds),
            "/v1/sessions/s/events/stream" => {
                let frame = format!(
                    "event: error\ndata: {}\n\n",
                    json!({"type": "error", "error": {"type": "api_error", "message": creds}, "request_id": KEY})
                );
                return Reply::sse(&[frame.as_bytes()], true);
            }
            "/v1/environments/e" => Reply::Json {
                status: 200,
                headers: vec![],
                body: format!("not json {creds}"),
            },
            _ => Reply::error(429, "rate_limit_error", &creds).header("request-id", KEY),
        };
        reply.header("retry-after-ms", "1")
    };
    let mut errors = Vec::new();
    for auth in [true, false] {
        let (base, _log) = serve(echo).await;
        let o = if auth {
            AnthropicOptions {
                auth_token: Some(Secret::new(TOKEN)),
                ..options(&base)
            }
        } else {
            options(&base)
        };
        let rt = fast(
            AnthropicRuntime::new(AnthropicOptions {
                max_retries: 2,
                ..o
            })
            .unwrap(),
        );
        errors.push(
            rt.create_agent(json!({"metadata": managed()}))
                .await
                .unwrap_err(),
        );
        errors.push(rt.create_agent(json!({})).await.unwrap_err());
        errors.push(rt.retrieve_session("s").await.unwrap_err());
        errors.push(rt.retrieve_environment("e").await.unwrap_err());
        let mut stream = rt.stream_events("s").await.unwrap();
        errors.push(stream.next().await.unwrap().unwrap_err());
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // Whether events reach a thread's scoped subscriber depends on callsite
    // caches other test threads race to fill, so the logs may be empty here;
    // tests/anthropic.rs checks the logs of the real binary at -vvv.
    let errors: Vec<String> = errors.iter().map(shown).collect();
    assert!(
        errors.iter().any(|e| e.contains("(sensitive)")),
        "{errors:?}"
    );
    for text in errors.iter().chain([&logs]) {
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
}
