//! `GET /v1/sessions/{id}/events/stream`: the session's events from now on,
//! as server-sent events (wire notes §10).
//!
//! axum's [`Sse`] writes the frames and its [`KeepAlive`] the heartbeat.
//! Every frame has an `event:` line (the SDKs skip frames without one):
//!
//! * `event: <type>\ndata: <event JSON>\n\n` for each event;
//! * `event: ping\ndata: {"type":"ping"}\n\n` after every heartbeat
//!   interval without a frame;
//! * `event: error\ndata: <error envelope>\n\n` when the runtime's stream
//!   breaks, after which the stream ends.
//!
//! The stream also ends when the session is deleted (after its
//! `session.deleted` event), when the runtime's stream ends (e.g. the
//! `drop_stream_after` fault) and when the server shuts down. This module
//! only frames what the runtime streams.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt as _, Stream};
use serde_json::Value;
use tokio::sync::watch;

use super::routes::{Id, Params};
use super::{ApiError, AppState, RequestId};
use crate::runtime::{event, EventStream, Runtime};

/// The data of every heartbeat frame.
const PING: &str = r#"{"type":"ping"}"#;

pub(super) async fn stream(
    State(s): State<AppState>,
    Id(id): Id,
    params: Params,
    Extension(RequestId(request_id)): Extension<RequestId>,
) -> Result<Response, ApiError> {
    // Previews of message text are not produced; the events come whole.
    params.list_of("event_deltas", &["agent.message", "agent.thinking"])?;
    let events = s.runtime.stream_events(&id).await?;
    let feed = Feed {
        events,
        stop: s.stop.subscribe(),
        request_id,
        done: false,
    };
    let mut response = Sse::new(frames(feed))
        .keep_alive(heartbeat(s.options.heartbeat))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `event: ping` after every `period` without a frame.
fn heartbeat(period: Duration) -> KeepAlive {
    KeepAlive::new()
        .interval(period.max(Duration::from_millis(1)))
        .event(frame("ping", PING))
}

/// The frames of one open stream; a panic ends this stream only.
fn frames(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(feed, |mut feed| async move {
        let frame = AssertUnwindSafe(feed.next_frame())
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("an event stream failed; closing it");
                None
            })?;
        Some((Ok(frame), feed))
    })
}

/// What one open stream reads from.
struct Feed {
    events: EventStream,
    stop: watch::Receiver<bool>,
    request_id: String,
    done: bool,
}

impl Feed {
    /// The next frame; `None` ends the stream.
    async fn next_frame(&mut self) -> Option<Event> {
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
        }
    }
}

/// Completes when the server stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn event_frame(event: &Value) -> Event {
    let kind = match event::kind(event) {
        "" => "message",
        kind => kind,
    };
    frame(kind, &event.to_string())
}

/// One SSE frame, `event: <name>` and one `data:` line (`data` is compact
/// JSON); line breaks become spaces, as `Event` would refuse or split them.
fn frame(name: &str, data: &str) -> Event {
    let name = name.replace(['\r', '\n'], " ");
    let data = data.replace(['\r', '\n'], " ");
    Event::default().event(name).data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use serde_json::json;

    /// The bytes a response body with `frames` puts on the wire.
    async fn wire(frames: Vec<Event>) -> String {
        let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
        let body = Sse::new(stream).into_response().into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn frames_have_an_event_line() {
        let f = event_frame(&json!({"type": "agent.message", "id": "sevt_1"}));
        assert_eq!(
            wire(vec![f]).await,
            "event: agent.message\ndata: {\"id\":\"sevt_1\",\"type\":\"agent.message\"}\n\n"
        );
        let f = frame("bad\nname", "a\nb");
        assert_eq!(wire(vec![f]).await, "event: bad name\ndata: a b\n\n");
        let f = event_frame(&json!({"id": "sevt_2"}));
        assert!(wire(vec![f]).await.starts_with("event: message\ndata: "));
    }

    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_is_a_ping_frame() {
        let never = futures_util::stream::pending::<Result<Event, Infallible>>();
        let response = Sse::new(never)
            .keep_alive(heartbeat(Duration::from_secs(15)))
            .into_response();
        let mut body = response.into_body().into_data_stream();
        let started = tokio::time::Instant::now();
        let ping = body.next().await.unwrap().unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert_eq!(&ping[..], b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }
}
