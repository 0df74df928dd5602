//! Turns end to end through the engine: what is streamed and stored, the
//! model's requests, usage and stats, model errors, queued messages and
//! many sessions at once.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::test_support::*;
use super::EngineOptions;
use crate::api::event;
use crate::model::ModelError;

#[tokio::test(flavor = "multi_thread")]
async fn a_text_turn_streams_exactly_what_is_stored() {
    let f = Fixture::new(vec![text("Hello!"), text("Again.")]);
    let s = f.session(vec![]);

    let mut stream = f.stream(&s.id).await;
    let accepted = f.send(&s.id, vec![message("hi")]).await.expect("send");
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
    assert_eq!(f.history(&s.id).await, streamed);

    let session = f.record(&s.id).await;
    assert_eq!(session.status, "idle");
    let usage = serde_json::to_value(&session.usage).expect("usage");
    assert_eq!(usage["input_tokens"], 10);
    assert_eq!(usage["output_tokens"], 5);
    assert_eq!(usage["cache_read_input_tokens"], 2);
    assert_eq!(usage["cache_creation"]["ephemeral_5m_input_tokens"], 1);
    assert!(session.stats.active_seconds.is_some());
    assert!(session.stats.duration_seconds.is_some());

    // The second turn sees the first.
    let second = f.exchange(&s.id, vec![message("more")]).await;
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
    let session = f.record(&s.id).await;
    assert_eq!(session.usage.input_tokens, Some(20));
    assert_eq!(f.history(&s.id).await.len(), 12);
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
    let s = f.session(vec![]);
    let events = f.exchange(&s.id, vec![message("hi")]).await;
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

    let events = f.exchange(&s.id, vec![message("again")]).await;
    assert_eq!(
        of_kind(&events, "session.error")[0]["error"]["type"],
        "model_request_failed_error"
    );

    // Without a model backend, the error says where to declare one.
    let dir = tempfile::tempdir().expect("tempdir");
    let f = Fixture::with(dir, Models::new(), EngineOptions::default());
    let s = f.session(vec![]);
    let events = f.exchange(&s.id, vec![message("hi")]).await;
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
async fn messages_sent_while_running_wait_for_the_turn() {
    let gate = Arc::new(Semaphore::new(0));
    let f = Fixture::new(vec![
        Turn::Gate(Arc::clone(&gate), text("first answer").reply()),
        text("second answer"),
    ]);
    let s = f.session(vec![]);
    let mut stream = f.stream(&s.id).await;
    f.send(&s.id, vec![message("one")]).await.expect("send");
    until(&mut stream, |e| {
        event::kind(e) == "span.model_request_start"
    })
    .await;
    assert_eq!(f.record(&s.id).await.status, "running");
    let queued = f
        .send(&s.id, vec![message("two")])
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
async fn fifty_sessions_run_at_once() {
    let f = Arc::new(Fixture::new(vec![text("hi")]));
    let sessions: Vec<String> = (0..50).map(|_| f.session(vec![]).id).collect();
    let tasks: Vec<_> = sessions
        .iter()
        .map(|id| {
            let f = Arc::clone(&f);
            let id = id.clone();
            tokio::spawn(async move { f.exchange(&id, vec![message("hello")]).await })
        })
        .collect();
    let mut ids = HashSet::new();
    for (task, id) in tasks.into_iter().zip(&sessions) {
        let events = task.await.expect("join");
        assert_eq!(event::stop_reason(events.last().unwrap()), Some("end_turn"));
        assert_eq!(f.history(id).await, events);
        for e in &events {
            assert!(ids.insert(event::id(e).to_owned()), "duplicate id");
        }
    }
    assert_eq!(ids.len(), 50 * 6);
    assert_eq!(f.models.resolved.lock().unwrap().len(), 50);
}
