//! Transcripts: one JSONL file per session and run. The first line is a
//! header, then every event as received (the same JSON, object keys
//! sorted), then a footer with the results. Every secret is masked before
//! a line leaves the sender ([`Sink`]); only strings change, so a line stays
//! the event's JSON. One writer thread per run owns the files.

use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::Usage;
use crate::redact::Redactor;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    Header(Header),
    Event { event: Value },
    Footer(Footer),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub run_id: String,
    pub manifest_digest: String,
    pub session: String,
    pub provider: String,
    pub session_id: String,
    pub agent_id: String,
    /// The pinned version, or the version the session snapshot runs.
    pub agent_version: Option<u64>,
    pub agent_pinned: bool,
    pub environment_id: String,
    pub started_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Footer {
    pub passed: bool,
    pub steps: Vec<StepResult>,
    pub usage: Usage,
    pub duration_ms: u64,
    pub events: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub index: usize,
    pub send: String,
    pub reply: String,
    pub stop_reason: Option<String>,
    pub turns: u32,
    pub tools_used: Vec<String>,
    pub latency_ms: u64,
    pub expectations: Vec<ExpectationResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StepResult {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.expectations.iter().all(|e| e.passed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationResult {
    pub expectation: String,
    pub passed: bool,
    pub message: String,
}

enum Msg {
    Open(String, PathBuf),
    /// One serialized line, secrets already replaced.
    Line(String, String),
    Close(String),
    Shutdown(oneshot::Sender<Vec<String>>),
}

/// How long the transcript writer waits for more lines before parking
/// (without it, the stream benchmark writes ~1.6× slower).
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

/// Sends lines to the run's writer thread. Lines are serialized, and their
/// secrets replaced, by the sender: a string crosses threads, not a tree of
/// allocations the writer would have to free.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::UnboundedSender<Msg>,
    redactor: Redactor,
}

/// [`Line::Event`] serialized from a borrowed event.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EventLine<'a> {
    Event { event: &'a Value },
}

impl Sink {
    /// Starts the writer thread. What `redactor` masks is never written.
    pub fn start(redactor: Redactor) -> Sink {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        // A thread of its own: it lives as long as the run. Should it fail
        // to start, every send fails and `shutdown` reports it.
        let _ = std::thread::Builder::new()
            .name("transcripts".into())
            .spawn(move || {
                let mut files: HashMap<String, BufWriter<std::fs::File>> = HashMap::new();
                let mut errors = Vec::new();
                let mut busy = false;
                loop {
                    // While lines keep coming, collect them every BATCH_WINDOW
                    // instead of parking: a parked writer costs the sender a
                    // wake-up per line.
                    let msg = match rx.try_recv() {
                        Ok(msg) => {
                            busy = true;
                            msg
                        }
                        Err(mpsc::error::TryRecvError::Empty) if busy => {
                            busy = false;
                            std::thread::sleep(BATCH_WINDOW);
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => match rx.blocking_recv() {
                            Some(msg) => msg,
                            None => break,
                        },
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    };
                    match msg {
                        Msg::Open(key, path) => {
                            let opened = path
                                .parent()
                                .map(std::fs::create_dir_all)
                                .unwrap_or(Ok(()))
                                .and_then(|_| std::fs::File::create(&path));
                            match opened {
                                Ok(f) => {
                                    files.insert(key, BufWriter::new(f));
                                }
                                Err(e) => {
                                    errors.push(format!("cannot write `{}`: {e}", path.display()))
                                }
                            }
                        }
                        Msg::Line(key, text) => {
                            if let Some(w) = files.get_mut(&key) {
                                if let Err(e) = writeln!(w, "{text}") {
                                    errors.push(format!("writing the transcript of {key}: {e}"));
                                }
                            }
                        }
                        Msg::Close(key) => {
                            // Flushed to the OS, which keeps it through a crash of
                            // this process; an fsync per file would dominate a large run.
                            if let Some(mut w) = files.remove(&key) {
                                if let Err(e) = w.flush() {
                                    errors.push(format!("writing the transcript of {key}: {e}"));
                                }
                            }
                        }
                        Msg::Shutdown(done) => {
                            for (_, mut w) in files.drain() {
                                let _ = w.flush();
                            }
                            let _ = done.send(std::mem::take(&mut errors));
                            return;
                        }
                    }
                }
            });
        Sink { tx, redactor }
    }

    fn send(&self, key: &str, text: String) {
        let _ = self.tx.send(Msg::Line(key.to_string(), text));
    }

    pub fn open(&self, key: &str, path: PathBuf) {
        let _ = self.tx.send(Msg::Open(key.to_string(), path));
    }

    pub fn line(&self, key: &str, line: Line) {
        self.send(key, self.redactor.json_line(&line));
    }

    /// The same as `line(key, Line::Event { event })`, without a copy of the event.
    pub fn event(&self, key: &str, event: &Value) {
        self.send(key, self.redactor.json_line(&EventLine::Event { event }));
    }

    pub fn close(&self, key: &str) {
        let _ = self.tx.send(Msg::Close(key.to_string()));
    }

    /// Waits until everything is on disk; returns write errors.
    pub async fn shutdown(self) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).is_err() {
            return vec!["the transcript writer stopped early".into()];
        }
        rx.await
            .unwrap_or_else(|_| vec!["the transcript writer stopped early".into()])
    }
}

/// A transcript read back from disk.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub header: Option<Header>,
    pub events: Vec<Value>,
    pub footer: Option<Footer>,
}

pub fn read(path: &Path) -> Result<Transcript, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    parse(&bytes, &format!("`{}`", path.display()))
}

/// A transcript from its JSONL bytes (a file's, or what a PostgreSQL state
/// keeps); `name` says where they came from in errors.
pub fn parse(bytes: &[u8], name: &str) -> Result<Transcript, String> {
    let mut t = Transcript::default();
    for (i, line) in bytes.lines().enumerate() {
        let line = line.map_err(|e| format!("{name}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(&line).map_err(|e| format!("{name} line {}: {e}", i + 1))?;
        match parsed {
            Line::Header(h) => t.header = Some(h),
            Line::Event { event } => t.events.push(event),
            Line::Footer(f) => t.footer = Some(f),
        }
    }
    Ok(t)
}
