//! The driver against a scripted provider: unknown events, dropped streams
//! and streams that keep breaking.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::session::Driver;
use super::transcript::{Line, Sink};
use crate::manifest::spec::SessionSpec;
use crate::manifest::Templater;
use crate::runtime::{
    Agent, Deleted, Environment, ErrorKind, EventSource, EventStream, ListQuery, Page, Result,
    Runtime, RuntimeError, Session,
};

/// How the provider's streams behave.
#[derive(Clone, Copy)]
enum Streams {
    Whole,
    /// Each stream ends after this many events.
    DropAfter(usize),
    /// Each stream breaks before its first event.
    Dead,
}

/// A session whose agent answers every `user.message` with `replies`.
struct Scripted {
    replies: Vec<Value>,
    streams: Streams,
    history: Mutex<Vec<Value>>,
    live: Mutex<Vec<mpsc::UnboundedSender<Value>>>,
    opened: Mutex<usize>,
}

impl Scripted {
    fn new(replies: Vec<Value>, streams: Streams) -> Self {
        Scripted {
            replies,
            streams,
            history: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
            opened: Mutex::new(0),
        }
    }

    fn publish(&self, mut event: Value) -> Value {
        let mut history = self.history.lock().unwrap();
        event["id"] = json!(format!("sevt_{:03}", history.len()));
        history.push(event.clone());
        self.live
            .lock()
            .unwrap()
            .retain(|tx| tx.send(event.clone()).is_ok());
        event
    }
}

struct Source {
    rx: mpsc::UnboundedReceiver<Value>,
    left: Option<usize>,
    dead: bool,
}

#[async_trait]
impl EventSource for Source {
    async fn next(&mut self) -> Option<Result<Value>> {
        if self.dead {
            return Some(Err(RuntimeError::new(ErrorKind::Transport, "reset")));
        }
        match &mut self.left {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None => {}
        }
        self.rx.recv().await.map(Ok)
    }
}

fn unused<T>() -> Result<T> {
    Err(RuntimeError::invalid("not used by the driver"))
}

#[async_trait]
impl Runtime for Scripted {
    fn name(&self) -> &str {
        "scripted-test"
    }
    async fn create_agent(&self, _: Value) -> Result<Agent> {
        unused()
    }
    async fn retrieve_agent(&self, _: &str, _: Option<u64>) -> Result<Agent> {
        unused()
    }
    async fn list_agents(&self, _: &ListQuery) -> Result<Page<Agent>> {
        unused()
    }
    async fn update_agent(&self, _: &str, _: Value) -> Result<Agent> {
        unused()
    }
    async fn list_agent_versions(&self, _: &str, _: &ListQuery) -> Result<Page<Agent>> {
        unused()
    }
    async fn archive_agent(&self, _: &str) -> Result<Agent> {
        unused()
    }
    async fn create_environment(&self, _: Value) -> Result<Environment> {
        unused()
    }
    async fn retrieve_environment(&self, _: &str) -> Result<Environment> {
        unused()
    }
    async fn list_environments(&self, _: &ListQuery) -> Result<Page<Environment>> {
        unused()
    }
    async fn update_environment(&self, _: &str, _: Value) -> Result<Environment> {
        unused()
    }
    async fn archive_environment(&self, _: &str) -> Result<Environment> {
        unused()
    }
    async fn delete_environment(&self, _: &str) -> Result<Deleted> {
        unused()
    }
    async fn create_session(&self, _: Value) -> Result<Session> {
        unused()
    }
    async fn retrieve_session(&self, _: &str) -> Result<Session> {
        unused()
    }
    async fn list_sessions(&self, _: &ListQuery) -> Result<Page<Session>> {
        unused()
    }
    async fn update_session(&self, _: &str, _: Value) -> Result<Session> {
        unused()
    }
    async fn archive_session(&self, _: &str) -> Result<Session> {
        unused()
    }
    async fn delete_session(&self, _: &str) -> Result<Deleted> {
        unused()
    }

    async fn send_events(&self, _: &str, events: Vec<Value>) -> Result<Vec<Value>> {
        let mut sent = Vec::new();
        for e in events {
            let message = e["type"] == "user.message";
            sent.push(self.publish(e));
            if message {
                for r in &self.replies {
                    self.publish(r.clone());
                }
            }
        }
        Ok(sent)
    }

    async fn list_events(&self, _: &str, _: &ListQuery) -> Result<Page<Value>> {
        Ok(Page {
            data: self.history.lock().unwrap().clone(),
            next_page: None,
        })
    }

    async fn stream_events(&self, _: &str) -> Result<EventStream> {
        *self.opened.lock().unwrap() += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        self.live.lock().unwrap().push(tx);
        Ok(EventStream::new(Source {
            rx,
            left: match self.streams {
                Streams::DropAfter(n) => Some(n),
                _ => None,
            },
            dead: matches!(self.streams, Streams::Dead),
        }))
    }
}

/// A turn with event types and fields the runner does not know.
fn replies() -> Vec<Value> {
    vec![
        json!({"type": "session.status_running"}),
        json!({"type": "span.model_request_start"}),
        json!({"type": "agent.thinking", "thinking": "hmm", "signature_v9": {"x": [1, 2]}}),
        json!({"type": "agent.brand_new_kind", "payload": {"nested": true}}),
        json!({"type": "agent.message", "content": [{"type": "text", "text": "hello there"},
            {"type": "future_block", "blob": "AAAA"}]}),
        json!({"type": "span.model_request_end", "model_usage": {"input_tokens": 7, "output_tokens": 3}}),
        json!({"type": "session.status_idle", "stop_reason": {"type": "end_turn"}}),
    ]
}

struct Outcome {
    driven: super::session::Driven,
    transcript: Vec<Value>,
    history: Vec<Value>,
    opened: usize,
}

async fn drive(replies: Vec<Value>, streams: Streams) -> Outcome {
    let api = Arc::new(Scripted::new(replies, streams));
    let script: SessionSpec = serde_json::from_value(json!({
        "agent": "a",
        "environment": "e",
        "steps": [{"send": "hi", "expect": [{"contains": "hello"}]}, {"send": "again"}],
    }))
    .unwrap();
    let templater = Templater::new(json!({}));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let sink = Sink::start(Default::default());
    sink.open("s", path.clone());
    let driven = Driver {
        runtime: api.clone(),
        session_id: "sesn_1".into(),
        script: &script,
        templater: &templater,
        sink: &sink,
        key: "s".into(),
        workdir: dir.path(),
        run_deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(600),
    }
    .drive()
    .await;
    sink.close("s");
    assert!(sink.shutdown().await.is_empty());
    let transcript = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| match serde_json::from_str::<Line>(l).unwrap() {
            Line::Event { event } => event,
            other => panic!("unexpected line {other:?}"),
        })
        .collect();
    let history = api.history.lock().unwrap().clone();
    let opened = *api.opened.lock().unwrap();
    Outcome {
        driven,
        transcript,
        history,
        opened,
    }
}

#[tokio::test]
async fn unknown_event_types_and_fields_pass_through_without_failing_the_run() {
    let out = drive(replies(), Streams::Whole).await;
    assert_eq!(out.driven.error, None);
    assert_eq!(out.driven.steps.len(), 2);
    assert!(
        out.driven.steps.iter().all(|s| s.passed()),
        "{:?}",
        out.driven.steps
    );
    assert_eq!(out.driven.steps[0].reply, "hello there");
    assert_eq!(out.driven.steps[0].turns, 1);
    assert_eq!(out.driven.usage.input_tokens, 14);
    // Every event as the provider sent it, unknown ones included.
    assert_eq!(out.transcript, out.history);
    assert_eq!(out.history.len(), 16);
    assert!(out
        .transcript
        .iter()
        .any(|e| e["type"] == "agent.brand_new_kind" && e["payload"]["nested"] == true));
    assert_eq!(out.opened, 1);
}

#[tokio::test]
async fn streams_that_end_early_are_reopened_and_merged() {
    let out = drive(replies(), Streams::DropAfter(2)).await;
    assert_eq!(out.driven.error, None);
    assert!(out.driven.steps.iter().all(|s| s.passed()));
    assert_eq!(out.transcript, out.history, "no event missed or repeated");
    assert!(out.opened >= 3, "{} streams", out.opened);
}

#[tokio::test]
async fn streams_that_deliver_nothing_still_complete_through_the_history() {
    let out = drive(replies(), Streams::Dead).await;
    assert_eq!(out.driven.error, None);
    assert!(out.driven.steps.iter().all(|s| s.passed()));
    assert_eq!(out.transcript, out.history);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_keeps_breaking_with_nothing_new_ends_the_run_with_a_reason() {
    let started = tokio::time::Instant::now();
    // The agent never answers, so neither the stream nor the history has news.
    let out = drive(Vec::new(), Streams::Dead).await;
    let error = out.driven.error.expect("the run fails");
    assert!(
        error.contains("broke 30 times in a row without a new event"),
        "{error}"
    );
    // Backed off between attempts (about 47 s in all): no busy loop against the API.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    // The first reopen found the sent message in the history; 30 found nothing.
    assert_eq!(out.opened, 32);
    assert_eq!(out.transcript, out.history);
}
