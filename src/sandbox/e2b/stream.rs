//! A process's event stream from envd (`process.Process/Start` and
//! `Connect`): Connect envelopes whose messages are
//! `{"event": {"start"|"data"|"end"|"keepalive": …}}` in protobuf's JSON
//! mapping (`process_pb.py`): `start.pid`; `data.stdout`/`data.stderr` as
//! base64; `end.exitCode` (absent when 0), `exited`, `status`, `error`.
//! The stream either ends with Connect's end envelope or breaks; telling
//! the two apart is what lets the caller re-attach. Reading only: when to
//! reconnect or kill is `exec.rs`'s.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::connect::{end_error, FrameDecoder};
use super::error::E2bError;
use crate::http::Redactor;

/// One event of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Start {
        pid: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Sent while nothing else happens, so that idle streams stay open.
    Keepalive,
    End(Exit),
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Absent on the wire when 0; -1 when killed by a signal.
    pub exit_code: i32,
    pub exited: bool,
    /// envd's words, e.g. `exit status 1` or `signal: killed`.
    pub status: String,
    pub error: Option<String>,
}

/// Why a stream stopped before its end envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The connection broke, stalled or closed early: re-attaching may
    /// find the process still running.
    Broken(String),
    /// The stream ended with an error (or spoke nonsense).
    Failed(E2bError),
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    event: Option<WireEvent>,
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(default)]
    start: Option<WireStart>,
    #[serde(default)]
    data: Option<WireData>,
    #[serde(default)]
    end: Option<WireEnd>,
    #[serde(default)]
    keepalive: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireStart {
    #[serde(default)]
    pid: u32,
}

#[derive(Deserialize)]
struct WireData {
    #[serde(default)]
    stdout: Option<String>,
    #[serde(default)]
    stderr: Option<String>,
    #[serde(default)]
    pty: Option<String>,
}

#[derive(Deserialize)]
struct WireEnd {
    #[serde(default, alias = "exit_code", rename = "exitCode")]
    exit_code: i32,
    #[serde(default)]
    exited: bool,
    #[serde(default)]
    status: String,
    #[serde(default)]
    error: Option<String>,
}

/// The events of one process, read from a streaming answer.
pub struct ProcessStream {
    response: reqwest::Response,
    decoder: FrameDecoder,
    /// Without a byte for this long the stream counts as broken.
    idle: Duration,
    label: String,
    redactor: Redactor,
    ended: bool,
}

impl ProcessStream {
    pub(super) fn new(
        response: reqwest::Response,
        idle: Duration,
        label: String,
        redactor: Redactor,
    ) -> Self {
        ProcessStream {
            response,
            decoder: FrameDecoder::default(),
            idle,
            label,
            redactor,
            ended: false,
        }
    }

    /// The next event; `Ok(None)` once the end envelope arrived. Cancelling
    /// the future loses nothing: bytes are taken only when it completes.
    pub async fn next(&mut self) -> Result<Option<ProcessEvent>, StreamError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let frame = self.decoder.next_frame().map_err(|why| self.failed(why))?;
            if let Some(frame) = frame {
                if frame.ends_stream() {
                    self.ended = true;
                    return match end_error(&frame.payload).map_err(|why| self.failed(why))? {
                        None => Ok(None),
                        Some(e) => Err(StreamError::Failed(E2bError::rpc(
                            &self.label,
                            &e.code,
                            &e.message,
                            &self.redactor,
                        ))),
                    };
                }
                if let Some(event) = self.event(&frame.payload)? {
                    return Ok(Some(event));
                }
                continue;
            }
            let chunk = tokio::time::timeout(self.idle, self.response.chunk()).await;
            match chunk {
                Err(_) => return Err(StreamError::Broken(format!("no data for {:?}", self.idle))),
                Ok(Err(e)) => {
                    let e = E2bError::connection(&self.label, e, &self.redactor);
                    return Err(StreamError::Broken(e.message));
                }
                Ok(Ok(None)) => {
                    let why = match self.decoder.pending() {
                        0 => "the stream closed before its end",
                        _ => "the stream closed in the middle of a message",
                    };
                    return Err(StreamError::Broken(why.into()));
                }
                Ok(Ok(Some(bytes))) => self.decoder.push(&bytes),
            }
        }
    }

    fn failed(&self, why: impl std::fmt::Display) -> StreamError {
        StreamError::Failed(E2bError::protocol(&self.label, why, &self.redactor))
    }

    /// The event of a message; `None` for one this client does not know.
    fn event(&self, payload: &[u8]) -> Result<Option<ProcessEvent>, StreamError> {
        let message: Message = serde_json::from_slice(payload).map_err(|e| self.failed(e))?;
        let Some(event) = message.event else {
            return Ok(None);
        };
        let bytes = |b64: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| self.failed(format!("output that is not base64: {e}")))
        };
        if let Some(start) = event.start {
            return Ok(Some(ProcessEvent::Start { pid: start.pid }));
        }
        if let Some(data) = event.data {
            if let Some(out) = data.stdout.as_deref().or(data.pty.as_deref()) {
                return Ok(Some(ProcessEvent::Stdout(bytes(out)?)));
            }
            if let Some(err) = data.stderr.as_deref() {
                return Ok(Some(ProcessEvent::Stderr(bytes(err)?)));
            }
            return Ok(None);
        }
        if let Some(end) = event.end {
            return Ok(Some(ProcessEvent::End(Exit {
                exit_code: end.exit_code,
                exited: end.exited,
                status: end.status,
                error: end.error,
            })));
        }
        Ok(event.keepalive.map(|_| ProcessEvent::Keepalive))
    }
}
