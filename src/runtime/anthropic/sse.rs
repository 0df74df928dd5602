//! Server-sent events: an incremental decoder (WHATWG event-stream rules, as
//! the SDK's `SSEDecoder` applies them) and the [`EventSource`] reading
//! `GET /v1/sessions/{id}/events/stream` (wire notes §10).
//!
//! The decoder takes bytes in chunks split anywhere — inside a line, inside
//! a UTF-8 character, between `\r` and `\n` — because lines are only decoded
//! once complete.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::http::{describe_reqwest, snippet, Envelope, Redactor};
use crate::runtime::{ErrorKind, EventSource, Result, RuntimeError};

/// One dispatched event of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// The `event:` field; `None` when absent or empty.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream (it persists across events).
    pub id: Option<String>,
    /// The last `retry:` (milliseconds) seen on the stream.
    pub retry: Option<u64>,
}

/// Turns bytes into [`SseFrame`]s.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The bytes of the line being read.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting this one belongs to it.
    after_cr: bool,
    /// At least one line was decoded (a BOM can only start the first one).
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    retry: Option<u64>,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Vec<SseFrame> {
        let mut out = Vec::new();
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = chunk.iter().position(|b| *b == b'\r' || *b == b'\n') {
            self.line.extend_from_slice(&chunk[..end]);
            let crlf = chunk[end] == b'\r';
            let mut rest = &chunk[end + 1..];
            if crlf {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.end_line(&mut out);
            chunk = rest;
        }
        self.line.extend_from_slice(chunk);
        out
    }

    /// The stream ended: an event without its terminating blank line is
    /// discarded, as the standard says.
    pub fn finish(&mut self) {
        self.line.clear();
        self.after_cr = false;
        self.event = None;
        self.data.clear();
        self.has_data = false;
    }

    fn end_line(&mut self, out: &mut Vec<SseFrame>) {
        // Taken out and put back, so the line buffer keeps its capacity.
        let mut bytes = std::mem::take(&mut self.line);
        self.decode_line(&bytes, out);
        bytes.clear();
        self.line = bytes;
    }

    fn decode_line(&mut self, bytes: &[u8], out: &mut Vec<SseFrame>) {
        let text = String::from_utf8_lossy(bytes);
        let mut line: &str = &text;
        if !self.started {
            self.started = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseFrame>) {
        let event = self.event.take();
        let has_data = std::mem::replace(&mut self.has_data, false);
        let data = std::mem::take(&mut self.data);
        if event.is_none() && !has_data {
            return;
        }
        out.push(SseFrame {
            event,
            data,
            id: self.last_id.clone(),
            retry: self.retry,
        });
    }
}

/// What a frame means to the session: `None` to skip it (pings, empty
/// data), an event, or the error the stream ended with.
///
/// Frames without an `event:` line are passed through too (the SDK drops
/// them; the API always sends one), so nothing is lost to a lenient server.
pub(crate) fn frame_item(frame: &SseFrame) -> Option<Result<Value>> {
    match frame.event.as_deref() {
        Some("ping") => None,
        Some("error") => Some(Err(stream_error(&frame.data))),
        _ if frame.data.trim().is_empty() => None,
        _ => Some(match serde_json::from_str::<Value>(&frame.data) {
            Ok(event @ Value::Object(_)) => Ok(event),
            Ok(_) | Err(_) => Err(RuntimeError::new(
                ErrorKind::Api,
                format!(
                    "the event stream sent an event that is not a JSON object: {}",
                    snippet(&frame.data)
                ),
            )),
        }),
    }
}

/// An `event: error` frame: the API's error envelope, or plain text.
fn stream_error(data: &str) -> RuntimeError {
    let Ok(json) = serde_json::from_str::<Value>(data) else {
        return RuntimeError::new(
            ErrorKind::Api,
            format!("the event stream failed: {}", snippet(data)),
        );
    };
    // The envelope's error, or a bare error object.
    let envelope = Envelope::from_error(json.get("error").unwrap_or(&json));
    let kind = envelope.error_kind().unwrap_or(ErrorKind::Api);
    let message = envelope.message.unwrap_or_else(|| snippet(data));
    let mut e = RuntimeError::new(kind, format!("the event stream failed: {message}"));
    e.request_id = Envelope::from_json(&json).request_id;
    e
}

/// The body of an open event stream response.
pub(crate) struct SseSource {
    response: reqwest::Response,
    decoder: SseDecoder,
    queue: VecDeque<SseFrame>,
    /// Longest silence (not even a ping) before the stream counts as dropped.
    idle: Duration,
    done: bool,
    label: String,
    redactor: Redactor,
}

impl SseSource {
    pub fn new(
        response: reqwest::Response,
        idle: Duration,
        label: String,
        redactor: Redactor,
    ) -> Self {
        SseSource {
            response,
            decoder: SseDecoder::new(),
            queue: VecDeque::new(),
            idle,
            done: false,
            label,
            redactor,
        }
    }

    fn fail(&mut self, error: RuntimeError) -> Option<Result<Value>> {
        self.done = true;
        self.queue.clear();
        let error = self.redactor.error(error);
        tracing::debug!(endpoint = %self.label, error = %error, "event stream ended with an error");
        Some(Err(error))
    }
}

#[async_trait]
impl EventSource for SseSource {
    async fn next(&mut self) -> Option<Result<Value>> {
        loop {
            while let Some(frame) = self.queue.pop_front() {
                match frame_item(&frame) {
                    None => continue,
                    Some(Ok(event)) => return Some(Ok(event)),
                    Some(Err(e)) => return self.fail(e),
                }
            }
            if self.done {
                return None;
            }
            match tokio::time::timeout(self.idle, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.queue.extend(self.decoder.feed(&bytes)),
                Ok(Ok(None)) => {
                    self.decoder.finish();
                    self.done = true;
                    return None;
                }
                Ok(Err(e)) => {
                    let message = format!(
                        "{}: the event stream broke: {}",
                        self.label,
                        describe_reqwest(e)
                    );
                    return self.fail(RuntimeError::new(ErrorKind::Transport, message));
                }
                Err(_) => {
                    let message = format!(
                        "{}: nothing received for {} s; the event stream is presumed dropped",
                        self.label,
                        self.idle.as_secs()
                    );
                    return self.fail(RuntimeError::new(ErrorKind::Transport, message));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(event: Option<&str>, data: &str, id: Option<&str>, retry: Option<u64>) -> SseFrame {
        SseFrame {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
            retry,
        }
    }

    fn decode_whole(payload: &[u8]) -> Vec<SseFrame> {
        let mut d = SseDecoder::new();
        let mut out = d.feed(payload);
        d.finish();
        out.extend(d.feed(b""));
        out
    }

    fn decode_parts(parts: &[&[u8]]) -> Vec<SseFrame> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for p in parts {
            out.extend(d.feed(p));
        }
        out
    }

    /// Every split into two chunks, nearby three-way splits and byte-by-byte
    /// feeding all decode the same.
    fn assert_split_invariant(payload: &[u8], expected: &[SseFrame]) {
        assert_eq!(decode_whole(payload), expected, "whole payload");
        for i in 0..=payload.len() {
            let got = decode_parts(&[&payload[..i], &payload[i..]]);
            assert_eq!(got, expected, "split at {i}");
        }
        // Three chunks with the second one short (up to 8 bytes), so every
        // pair of nearby boundaries (CR|LF, inside a character) is covered.
        for i in 0..=payload.len() {
            for j in i..=payload.len().min(i + 8) {
                let got = decode_parts(&[&payload[..i], &payload[i..j], &payload[j..]]);
                assert_eq!(got, expected, "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = payload.chunks(1).collect();
        assert_eq!(decode_parts(&bytes), expected, "byte by byte");
    }

    /// Shaped like the documented stream: an event line per frame, JSON data.
    const SESSION_STREAM: &str = concat!(
        ": stream opened\n",
        "event: session.status_running\n",
        "data: {\"id\":\"sevt_01\",\"type\":\"session.status_running\",\"processed_at\":\"2026-04-01T12:00:00Z\"}\n",
        "\n",
        "event: ping\n",
        "data: {\"type\":\"ping\"}\n",
        "\n",
        "event: agent.message\n",
        "data: {\"id\":\"sevt_02\",\"type\":\"agent.message\",\n",
        "data: \"content\":[{\"type\":\"text\",\"text\":\"héllo 🦀 wörld\"}]}\n",
        "\n",
        "event: agent.future_kind\n",
        "data: {\"id\":\"sevt_03\",\"type\":\"agent.future_kind\",\"new_field\":[1,2]}\n",
        "\n",
        "event: session.status_idle\n",
        "data: {\"id\":\"sevt_04\",\"type\":\"session.status_idle\",\"stop_reason\":{\"type\":\"end_turn\"}}\n",
        "\n",
    );

    #[test]
    fn documented_stream_in_every_split() {
        let expected = vec![
            frame(
                Some("session.status_running"),
                r#"{"id":"sevt_01","type":"session.status_running","processed_at":"2026-04-01T12:00:00Z"}"#,
                None,
                None,
            ),
            frame(Some("ping"), r#"{"type":"ping"}"#, None, None),
            frame(
                Some("agent.message"),
                "{\"id\":\"sevt_02\",\"type\":\"agent.message\",\n\"content\":[{\"type\":\"text\",\"text\":\"héllo 🦀 wörld\"}]}",
                None,
                None,
            ),
            frame(
                Some("agent.future_kind"),
                r#"{"id":"sevt_03","type":"agent.future_kind","new_field":[1,2]}"#,
                None,
                None,
            ),
            frame(
                Some("session.status_idle"),
                r#"{"id":"sevt_04","type":"session.status_idle","stop_reason":{"type":"end_turn"}}"#,
                None,
                None,
            ),
        ];
        assert_split_invariant(SESSION_STREAM.as_bytes(), &expected);
        // The same with CRLF and with lone CR line endings.
        let crlf = SESSION_STREAM.replace('\n', "\r\n");
        assert_split_invariant(crlf.as_bytes(), &expected);
        let cr = SESSION_STREAM.replace('\n', "\r");
        assert_split_invariant(cr.as_bytes(), &expected);
    }

    #[test]
    fn items_skip_pings_and_pass_unknown_events_through() {
        let frames = decode_whole(SESSION_STREAM.as_bytes());
        let items: Vec<Value> = frames
            .iter()
            .filter_map(frame_item)
            .map(|i| i.unwrap())
            .collect();
        let ids: Vec<&str> = items.iter().map(crate::runtime::event::id).collect();
        assert_eq!(ids, ["sevt_01", "sevt_02", "sevt_03", "sevt_04"]);
        assert_eq!(crate::runtime::event::text(&items[1]), "héllo 🦀 wörld");
        assert_eq!(items[2]["new_field"], serde_json::json!([1, 2]));
        assert_eq!(
            crate::runtime::event::stop_reason(&items[3]),
            Some("end_turn")
        );
    }

    #[test]
    fn fields_ids_retry_and_mixed_line_endings() {
        let payload = concat!(
            "\u{feff}id: 1\r\n",
            "retry: 2500\r",
            "event:agent.message\n", // no space after the colon
            "data\n",                // a field without a colon: empty data
            "data:  two spaces keep one\r\n",
            "unknown: ignored\n",
            ":comment\r\n",
            "\r\n",
            "id: 2\n",
            "retry: soon\n", // not a number: ignored
            "event: x\n",
            "data: {}\n",
            "\n",
            "id: bad\0id\n", // NUL: ignored
            "data: third\n",
            "\n",
            "event: y\n", // no blank line before the end: discarded
            "data: lost\n",
        );
        let expected = vec![
            frame(
                Some("agent.message"),
                "\n two spaces keep one",
                Some("1"),
                Some(2500),
            ),
            frame(Some("x"), "{}", Some("2"), Some(2500)),
            frame(None, "third", Some("2"), Some(2500)),
        ];
        assert_split_invariant(payload.as_bytes(), &expected);
    }

    #[test]
    fn blank_lines_and_comments_alone_dispatch_nothing() {
        let payload = b"\n\n: keep-alive\n\r\n:\n\nid: 5\n\nretry: 10\n\n";
        assert_split_invariant(payload, &[]);
    }

    #[test]
    fn empty_event_name_is_no_name() {
        let got = decode_whole(b"event:\ndata: {\"type\":\"a\"}\n\n");
        assert_eq!(got, [frame(None, r#"{"type":"a"}"#, None, None)]);
    }

    #[test]
    fn error_events_become_errors() {
        let payload = concat!(
            "event: agent.message\n",
            "data: {\"id\":\"sevt_1\",\"type\":\"agent.message\",\"content\":[]}\n",
            "\n",
            "event: error\n",
            "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\n",
            "data: \"message\":\"Overloaded\"},\"request_id\":\"req_011\"}\n",
            "\n",
        );
        for crlf in [false, true] {
            let payload = if crlf {
                payload.replace('\n', "\r\n")
            } else {
                payload.to_owned()
            };
            let frames = decode_whole(payload.as_bytes());
            assert_eq!(frames.len(), 2);
            for i in 0..=payload.len() {
                let parts = [&payload.as_bytes()[..i], &payload.as_bytes()[i..]];
                assert_eq!(decode_parts(&parts), frames, "split at {i}");
            }
            assert!(frame_item(&frames[0]).unwrap().is_ok());
            let e = frame_item(&frames[1]).unwrap().unwrap_err();
            assert_eq!(e.kind, ErrorKind::Overloaded);
            assert_eq!(e.request_id.as_deref(), Some("req_011"));
            assert!(e.message.contains("Overloaded"), "{e}");
        }
        // Plain-text error data.
        let e = frame_item(&frame(Some("error"), "upstream reset", None, None))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api);
        assert!(e.message.contains("upstream reset"));
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        for data in ["{not json", "[1,2]", "42"] {
            let item = frame_item(&frame(Some("agent.message"), data, None, None)).unwrap();
            assert_eq!(item.unwrap_err().kind, ErrorKind::Api, "{data}");
        }
        assert!(frame_item(&frame(Some("agent.message"), "  ", None, None)).is_none());
        assert!(frame_item(&frame(Some("ping"), "", None, None)).is_none());
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let payload = "data: {\"t\":\"🦀é\"}\n\n".as_bytes();
        let crab = payload.iter().position(|b| *b == 0xF0).unwrap();
        for cut in crab..crab + 6 {
            let got = decode_parts(&[&payload[..cut], &payload[cut..]]);
            assert_eq!(got, [frame(None, "{\"t\":\"🦀é\"}", None, None)]);
        }
    }

    #[test]
    fn cr_at_a_chunk_end_then_lf() {
        let got = decode_parts(&[b"data: a\r", b"\n\r", b"\n"]);
        assert_eq!(got, [frame(None, "a", None, None)]);
        // A lone CR then a new line's content.
        let got = decode_parts(&[b"data: a\r", b"data: b\r", b"\r"]);
        assert_eq!(got, [frame(None, "a\nb", None, None)]);
    }
}
