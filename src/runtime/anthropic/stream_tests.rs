//! The event stream, and the key that never leaks.

use std::sync::{Arc, Mutex};

use super::*;
use crate::http::test_server::Request;

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
