//! The worker's life through the engine: interrupts of tools and model
//! calls, what a stopped process left in the history, and live streams that
//! fall behind.

use std::time::{Duration, Instant};

use serde_json::json;

use super::hub::Subscription;
use super::test_support::*;
use super::SessionStore;
use crate::api::event::{self, ContentBlock, Event, UserMessage};
use crate::api::ids::{new_id, timestamp, EVENT_PREFIX};

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_stops_a_long_tool() {
    let f = Fixture::new(vec![
        tool("bash", json!({"command": "sleep 30"})),
        text("stopped"),
    ]);
    let s = f.session(toolset(&[]));
    let mut stream = f.stream(&s.id).await;
    f.send(&s.id, vec![message("sleep")]).await.expect("send");
    until(&mut stream, |e| event::kind(e) == "agent.tool_use").await;
    let started = Instant::now();
    f.interrupt(&s.id).await;
    let events = until_idle(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(kinds(&events), ["user.interrupt", "session.status_idle"]);
    assert_eq!(event::stop_reason(&events[1]), Some("end_turn"));
    assert_eq!(f.record(&s.id).await.status, "idle");

    // The next turn's conversation closes the dropped tool use.
    f.exchange(&s.id, vec![message("what happened?")]).await;
    let request = f.models.requests().pop().expect("request");
    let last = request.messages.last().unwrap();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["is_error"], true);
    assert_eq!(last["content"][1]["text"], "what happened?");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_cancels_the_model_call() {
    let f = Fixture::new(vec![Turn::Hang]);
    let s = f.session(vec![]);
    let mut stream = f.stream(&s.id).await;
    f.send(&s.id, vec![message("think")]).await.expect("send");
    let start = until(&mut stream, |e| {
        event::kind(e) == "span.model_request_start"
    })
    .await;
    f.interrupt(&s.id).await;
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
    f.interrupt(&s.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_taken_just_before_a_stop_is_still_answered() {
    let f = Fixture::new(vec![text("answer one"), text("answer two")]);
    let s = f.session(vec![]);
    // As if the process stopped right after moving it to the history.
    let taken = Event::UserMessage(UserMessage {
        id: new_id(EVENT_PREFIX),
        content: vec![ContentBlock::text("one")],
        processed_at: Some(timestamp()),
    });
    f.store.append(&s.id, &taken).await.expect("append");
    let mut stream = f.stream(&s.id).await;
    f.send(&s.id, vec![message("two")]).await.expect("send");
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

#[tokio::test]
async fn a_lagging_stream_says_to_reconnect() {
    let (tx, rx) = tokio::sync::broadcast::channel(2);
    let mut stream = Subscription::new(rx);
    for i in 0..5 {
        tx.send(std::sync::Arc::new(Event::Other(
            json!({"id": i, "type": "agent.message"}),
        )))
        .expect("send");
    }
    let err = stream.next().await.expect("item").expect_err("lagged");
    assert!(err.message.contains("reconnect"), "{}", err.message);
    let event = stream.next().await.expect("item").expect("event");
    assert_eq!(event.to_value()["id"], 3);
    drop(tx);
    let event = stream.next().await.expect("item").expect("event");
    assert_eq!(event.to_value()["id"], 4);
    assert!(stream.next().await.is_none());
}
