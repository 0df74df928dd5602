//! Replaying a recorded event stream: the recording's frames copied until the
//! stream is long enough (event ids renumbered per copy, `ping` frames
//! interleaved), served as fast as loopback allows by a minimal HTTP
//! responder, so a benchmark measures the client alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Event ids of the local runtime start with this; per copy, the `01` becomes
/// another two base-62 digits, so ids stay unique, the same length, and
/// references between events of one copy still match.
const ID_STEM: &str = "sevt_01";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PING: &str = "event: ping\ndata: {\"type\":\"ping\"}\n\n";

/// The complete frames of a recorded stream, each with its blank line.
pub fn frames(recorded: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(recorded).context("the recorded stream is not UTF-8")?;
    let text = text.replace("\r\n", "\n");
    let mut out: Vec<String> = text
        .split_inclusive("\n\n")
        .filter(|f| f.ends_with("\n\n") && !f.trim().is_empty())
        .map(str::to_owned)
        .collect();
    out.retain(|f| !f.starts_with("event: ping\n"));
    if out.is_empty() {
        bail!("the recorded stream has no frames");
    }
    Ok(out)
}

/// A long stream made of copies of `frames`, with a ping after every
/// `ping_every` events.
pub struct Replay {
    pub body: Arc<Vec<u8>>,
    pub events: usize,
    pub pings: usize,
    pub copies: usize,
}

pub fn replay(frames: &[String], min_events: usize, ping_every: usize) -> Result<Replay> {
    let copies = min_events.div_ceil(frames.len());
    // Copy k uses the digits of k + 2: `00` and `01` (the recording's own) are never used.
    if copies + 2 > BASE62.len() * BASE62.len() {
        bail!("{copies} copies of the recording would run out of event ids");
    }
    let mut body = Vec::new();
    let (mut events, mut pings) = (0, 0);
    for k in 0..copies {
        let n = k + 2;
        let digits = [BASE62[n / BASE62.len()], BASE62[n % BASE62.len()]];
        let stem = format!("sevt_{}", String::from_utf8_lossy(&digits));
        for frame in frames {
            body.extend_from_slice(frame.replace(ID_STEM, &stem).as_bytes());
            events += 1;
            if ping_every > 0 && events % ping_every == 0 {
                body.extend_from_slice(PING.as_bytes());
                pings += 1;
            }
        }
    }
    Ok(Replay {
        body: Arc::new(body),
        events,
        pings,
        copies,
    })
}

/// Answers `GET /v1/sessions/{id}/events/stream` with the replay, on
/// 127.0.0.1, for at most `max_connections` connections; stops when dropped.
pub struct Responder {
    pub url: String,
    served: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    pub async fn start(body: Arc<Vec<u8>>, max_connections: usize) -> Result<Responder> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the replay responder to 127.0.0.1")?;
        let url = format!("http://{}", listener.local_addr()?);
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let task = tokio::spawn(async move {
            for _ in 0..max_connections {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (body, counter) = (body.clone(), counter.clone());
                tokio::spawn(async move {
                    match answer(socket, &body).await {
                        Ok(true) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => eprintln!("replay responder: {e:#}"),
                    }
                });
            }
        });
        Ok(Responder { url, served, task })
    }

    /// Streams served in full so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection, one request; `Ok(true)` when the stream was sent.
async fn answer(mut socket: TcpStream, body: &[u8]) -> Result<bool> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    // A request head is small; one that does not end within 64 KiB or 10 s is refused.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 64 << 10 {
            bail!("request head over 64 KiB");
        }
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .context("request head timed out")??;
        if n == 0 {
            return Ok(false);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let ok = line.starts_with("GET ")
        && path.starts_with("/v1/sessions/")
        && path.ends_with("/events/stream");
    if !ok {
        let msg = r#"{"type":"error","error":{"type":"not_found_error","message":"replay only"}}"#;
        let reply = format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{msg}",
            msg.len()
        );
        socket.write_all(reply.as_bytes()).await?;
        return Ok(false);
    }
    let headers = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(headers.as_bytes()).await?;
    socket.write_all(body).await?;
    socket.shutdown().await?;
    Ok(true)
}
