//! A tiny HTTP/1.1 server on 127.0.0.1 for the unit tests of the clients
//! (the model backends and the `anthropic` provider): one request per
//! connection, answers written by hand, every request logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::Url;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    /// `null` when empty or not JSON.
    pub body: Value,
}

impl Request {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

#[derive(Debug, Clone)]
pub enum Reply {
    /// `content-type: application/json` whatever the body is.
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Written as is, one write per part; no parts closes the connection
    /// without an answer.
    Raw(Vec<Vec<u8>>),
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Reply::Json {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(200, body)
    }

    /// The API's error envelope.
    pub fn error(status: u16, kind: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Reply::Json { headers, .. } = &mut self {
            headers.push((name, value.to_owned()));
        }
        self
    }

    /// A `text/event-stream` answer in chunked encoding, one chunk per part;
    /// `finish` writes the last chunk, else the connection just closes
    /// mid-body.
    pub fn sse(parts: &[&[u8]], finish: bool) -> Self {
        let mut out = vec![b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec()];
        for part in parts {
            let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
            chunk.extend_from_slice(part);
            chunk.extend_from_slice(b"\r\n");
            out.push(chunk);
        }
        if finish {
            out.push(b"0\r\n\r\n".to_vec());
        } else {
            out.push(b"40\r\nevent: agent.mess".to_vec());
        }
        Reply::Raw(out)
    }
}

pub type Log = Arc<Mutex<Vec<Request>>>;
type Handler = Arc<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

/// Serves every connection with `handler(request, index)`; returns the base
/// URL (`http://127.0.0.1:PORT`) and the log (each request is logged before
/// its answer is written).
pub async fn serve(
    handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let handler: Handler = Arc::new(handler);
    let task_log = log.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = task_log.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Some(request) = read_request(&mut stream).await else {
                    return;
                };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(request.clone());
                    log.len() - 1
                };
                write_reply(&mut stream, handler(&request, index)).await;
            });
        }
    });
    (base, log)
}

/// Answers the requests with `replies` in order; a request past the last
/// one is logged and its connection closed without an answer.
pub async fn serve_replies(replies: Vec<Reply>) -> (String, Log) {
    serve(move |_, index| {
        replies
            .get(index)
            .cloned()
            .unwrap_or(Reply::Raw(Vec::new()))
    })
    .await
}

/// Accepts connections, reads their requests and never answers.
pub async fn serve_silent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = read_request(&mut stream).await;
                // Hold the connection until the client gives up.
                let mut sink = [0u8; 64];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    base
}

/// A base URL nothing listens on.
pub async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// The requests so far.
pub fn requests(log: &Log) -> Vec<Request> {
    log.lock().unwrap().clone()
}

async fn write_reply(stream: &mut TcpStream, reply: Reply) {
    match reply {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        }
        Reply::Raw(parts) => {
            for part in parts {
                if stream.write_all(&part).await.is_err() {
                    break;
                }
                let _ = stream.flush().await;
            }
        }
    }
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + length];
    let body = serde_json::from_slice(body).unwrap_or(Value::Null);
    let url = Url::parse(&format!("http://x{target}")).ok()?;
    Some(Request {
        method,
        path: url.path().to_owned(),
        query: url.query_pairs().into_owned().collect(),
        headers,
        body,
    })
}
