//! `GET /v1/sessions/{id}/events/stream`: the session's events from now on,
//! as server-sent events (wire notes §10).
//!
//! Every frame has an `event:` line (the SDKs skip frames without one):
//!
//! * `event: <type>\ndata: <event JSON>\n\n` for each event;
//! * `event: ping\ndata: {"type":"ping"}\n\n` every heartbeat interval;
//! * `event: error\ndata: <error envelope>\n\n` when the runtime's stream
//!   breaks, after which the stream ends.
//!
//! The stream also ends when the session is deleted (after its
//! `session.deleted` event), when the runtime's stream ends (e.g. the
//! `drop_stream_after` fault) and when the server shuts down.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::FutureExt as _;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::routes::{Id, Params};
use super::{ApiError, AppState, RequestId};
use crate::runtime::{event, EventStream, Runtime};

pub(super) async fn stream(
    State(s): State<AppState>,
    Id(id): Id,
    params: Params,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    // Previews of message text are not produced; the events come whole.
    params.list_of("event_deltas", &["agent.message", "agent.thinking"])?;
    let events = s.runtime.stream_events(&id).await?;
    let feed = Feed::new(events, s.options.heartbeat, s.stop.subscribe(), request_id);
    let body = futures_util::stream::unfold(feed, |mut feed| async move {
        // A panic ends this stream only.
        let frame = AssertUnwindSafe(feed.next_frame())
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("an event stream failed; closing it");
                None
            })?;
        Some((Ok::<_, Infallible>(frame), feed))
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// What one open stream reads from.
struct Feed {
    events: EventStream,
    heartbeat: Interval,
    stop: watch::Receiver<bool>,
    request_id: String,
    done: bool,
}

impl Feed {
    fn new(
        events: EventStream,
        heartbeat: Duration,
        stop: watch::Receiver<bool>,
        request_id: String,
    ) -> Self {
        let period = heartbeat.max(Duration::from_millis(1));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Feed {
            events,
            heartbeat,
            stop,
            request_id,
            done: false,
        }
    }

    /// The next frame; `None` ends the stream.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        tokio::select! {
            biased;
            () = stopped(&mut self.stop) => {
                self.done = true;
                None
            }
            next = self.events.next() => match next {
                Some(Ok(event)) => Some(event_frame(&event)),
                Some(Err(e)) => {
                    self.done = true;
                    let envelope = ApiError::from(e).body(Some(&self.request_id));
                    Some(frame("error", &envelope.to_string()))
                }
                None => {
                    self.done = true;
                    None
                }
            },
            _ = self.heartbeat.tick() => Some(frame("ping", r#"{"type":"ping"}"#)),
        }
    }
}

/// Completes when the server stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn event_frame(event: &Value) -> Bytes {
    let kind = match event::kind(event) {
        "" => "message",
        kind => kind,
    };
    frame(kind, &event.to_string())
}

/// One SSE frame. `data` is compact JSON, so one line.
fn frame(name: &str, data: &str) -> Bytes {
    let name: String = name
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let data = data.replace(['\r', '\n'], " ");
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_have_an_event_line() {
        let f = event_frame(&json!({"type": "agent.message", "id": "sevt_1"}));
        assert_eq!(
            std::str::from_utf8(&f).unwrap(),
            "event: agent.message\ndata: {\"id\":\"sevt_1\",\"type\":\"agent.message\"}\n\n"
        );
        let f = frame("bad\nname", "a\nb");
        assert_eq!(
            std::str::from_utf8(&f).unwrap(),
            "event: bad name\ndata: a b\n\n"
        );
    }
}
