//! Errors, retries, and retried writes that must not take effect twice.

use super::*;
use crate::http::test_server::closed_port;

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
    let base = closed_port().await;
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
