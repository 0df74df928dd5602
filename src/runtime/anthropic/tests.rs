//! The client against the shared test server ([`crate::http::test_server`]):
//! construction, the documented requests and their answers. Retries and
//! adoption are in `retry_tests.rs`, the event stream in `stream_tests.rs`.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::*;
use crate::http::test_server::{requests, serve, Reply};
use crate::runtime::{event, list_all};

#[path = "retry_tests.rs"]
mod retries;
#[path = "stream_tests.rs"]
mod streams;

const KEY: &str = "sk-ant-api03-TESTKEY-0123456789abcdef";
const TOKEN: &str = "oat-TESTTOKEN-9876543210fedcba";

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
