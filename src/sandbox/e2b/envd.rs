//! envd, the agent in every sandbox, as the SDK reaches it
//! (`e2b/sandbox_sync/commands/`, `filesystem/`, `e2b/envd/`): through the
//! sandbox URL with the routing headers `E2b-Sandbox-Id`,
//! `E2b-Sandbox-Port: 49983` and `X-Access-Token`; processes over Connect
//! RPC (`process.Process/Start`, `Connect`, `SendSignal`), directory
//! listings too (`filesystem.Filesystem/ListDir`), files over plain HTTP
//! (`GET`/`POST /files?path=P`, the upload as an octet stream). Also the
//! route to any other port of the sandbox. Paths here are the sandbox's
//! own; which of them a tool may touch is `sandbox.rs`'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{Connection, E2bApi};
use super::config::ENVD_PORT;
use super::connect::{self, envelope, STREAM_CONTENT_TYPE, UNARY_CONTENT_TYPE};
use super::error::{E2bError, E2bErrorKind};
use super::request::Call;
use super::stream::ProcessStream;
use crate::http::Redactor;

/// Asked of envd for streams (`Keepalive-Ping-Interval`, in seconds): a
/// keepalive at least this often.
pub const KEEPALIVE_SECS: u64 = 30;
/// A stream without a byte for this long is broken.
pub const STREAM_IDLE: Duration = Duration::from_secs(3 * KEEPALIVE_SECS);

/// What to start: `cmd` with `args`, in `cwd`. `Debug` shows the names of
/// `envs` only: their values may be keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// A name to find the process by (`Connect`, `SendSignal`) before its
    /// pid is known.
    pub tag: Option<String>,
}

impl std::fmt::Debug for ProcessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSpec")
            .field("cmd", &self.cmd)
            .field("args", &self.args)
            .field("envs", &self.envs.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .field("tag", &self.tag)
            .finish()
    }
}

impl ProcessSpec {
    /// `/bin/bash -l -c command`, as the SDK's `commands.run` starts it.
    pub fn bash(command: &str) -> Self {
        ProcessSpec {
            cmd: "/bin/bash".into(),
            args: vec!["-l".into(), "-c".into(), command.into()],
            ..ProcessSpec::default()
        }
    }
}

/// Which process (`ProcessSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Pid(u32),
    Tag(String),
}

impl Selector {
    fn json(&self) -> Value {
        match self {
            Selector::Pid(pid) => json!({ "pid": pid }),
            Selector::Tag(tag) => json!({ "tag": tag }),
        }
    }
}

/// The signals envd sends (`process.Signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
}

/// A directory entry (`filesystem.EntryInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub name: String,
    /// `FILE_TYPE_FILE`, `FILE_TYPE_DIRECTORY` or `FILE_TYPE_SYMLINK`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Absolute, below the listed directory as envd resolved it.
    #[serde(default)]
    pub path: String,
}

pub const DIRECTORY: &str = "FILE_TYPE_DIRECTORY";

/// How to reach a port of the sandbox: a URL and the headers every request
/// to it carries.
#[derive(Clone)]
pub struct PortRoute {
    pub url: Url,
    pub headers: HeaderMap,
}

/// One sandbox's envd.
pub struct Envd {
    api: Arc<E2bApi>,
    connection: Connection,
    base: Url,
    /// The routing headers and the access token (sensitive).
    headers: HeaderMap,
    redactor: Redactor,
}

impl std::fmt::Debug for Envd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envd")
            .field("sandbox", &self.connection.sandbox_id)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn secret_header(value: &str) -> HeaderValue {
    let mut v = header(value);
    v.set_sensitive(true);
    v
}

impl Envd {
    pub(super) fn new(api: Arc<E2bApi>, connection: Connection, base: Url) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("e2b-sandbox-id"),
            header(&connection.sandbox_id),
        );
        headers.insert(
            HeaderName::from_static("e2b-sandbox-port"),
            header(&ENVD_PORT.to_string()),
        );
        if let Some(token) = &connection.envd_access_token {
            headers.insert(
                HeaderName::from_static("x-access-token"),
                secret_header(token),
            );
        }
        let mut secrets = vec![api.config.api_key.clone()];
        secrets.extend(connection.envd_access_token.clone());
        secrets.extend(connection.traffic_access_token.clone());
        Envd {
            api,
            connection,
            base,
            headers,
            redactor: Redactor::new(secrets),
        }
    }

    pub fn sandbox_id(&self) -> &str {
        &self.connection.sandbox_id
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn call(&self, method: Method, url: Url, label: String) -> Call<'_> {
        Call {
            client: &self.api.envd,
            method,
            url,
            headers: self.headers.clone(),
            body: None,
            label,
            accept: &[],
            idempotent: true,
            timeout: Some(self.api.config.request_timeout),
            key_env: &self.api.config.api_key_env,
            redactor: &self.redactor,
        }
    }

    /// A Connect RPC of `service`/`method`: unary or server-streaming.
    fn rpc(&self, service: &str, method: &str, message: &Value, stream: bool) -> Call<'_> {
        let label = format!("POST /{service}/{method}");
        let mut call = self.call(Method::POST, self.url(&[service, method], &[]), label);
        call.headers.insert(
            HeaderName::from_static(connect::PROTOCOL_VERSION_HEADER),
            HeaderValue::from_static(connect::PROTOCOL_VERSION),
        );
        let json = message.to_string().into_bytes();
        call.body = Some(if stream {
            call.headers.insert(
                HeaderName::from_static("keepalive-ping-interval"),
                header(&KEEPALIVE_SECS.to_string()),
            );
            (STREAM_CONTENT_TYPE, envelope(0, &json).into())
        } else {
            (UNARY_CONTENT_TYPE, json.into())
        });
        call
    }

    async fn open_stream(&self, call: Call<'_>) -> Result<ProcessStream, E2bError> {
        let label = call.label.clone();
        let response = call.streamed().await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !content_type.starts_with(STREAM_CONTENT_TYPE) {
            return Err(E2bError::protocol(
                &label,
                format!("content type `{content_type}`, not `{STREAM_CONTENT_TYPE}`"),
                &self.redactor,
            ));
        }
        Ok(ProcessStream::new(
            response,
            STREAM_IDLE,
            label,
            self.redactor.clone(),
        ))
    }

    /// Starts a process; the stream begins with its `start` event. Sent
    /// again only when it cannot have started (no connection, or an error
    /// answer): a start never runs a command twice.
    pub async fn start(&self, spec: &ProcessSpec) -> Result<ProcessStream, E2bError> {
        let mut process = json!({ "cmd": spec.cmd, "args": spec.args, "envs": spec.envs });
        if let Some(cwd) = &spec.cwd {
            process["cwd"] = json!(cwd);
        }
        let mut message = json!({ "process": process, "stdin": false });
        if let Some(tag) = &spec.tag {
            message["tag"] = json!(tag);
        }
        let mut call = self.rpc("process.Process", "Start", &message, true);
        call.idempotent = false;
        self.open_stream(call).await
    }

    /// Re-attaches to a running process: its events from now on.
    pub async fn connect(&self, selector: &Selector) -> Result<ProcessStream, E2bError> {
        let message = json!({ "process": selector.json() });
        let call = self.rpc("process.Process", "Connect", &message, true);
        self.open_stream(call).await
    }

    /// Sends `signal` to the process; `false` when there is no such process.
    pub async fn send_signal(&self, selector: &Selector, signal: Signal) -> Result<bool, E2bError> {
        let name = match signal {
            Signal::Kill => "SIGNAL_SIGKILL",
            Signal::Term => "SIGNAL_SIGTERM",
        };
        let message = json!({ "process": selector.json(), "signal": name });
        let call = self.rpc("process.Process", "SendSignal", &message, false);
        match call.whole().await {
            Ok(_) => Ok(true),
            Err(e) if e.is(E2bErrorKind::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every entry below `path`, `depth` levels deep, symlinks not followed.
    pub async fn list_dir(&self, path: &str, depth: u32) -> Result<Vec<Entry>, E2bError> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            entries: Vec<Entry>,
        }
        let message = json!({ "path": path, "depth": depth });
        let call = self.rpc("filesystem.Filesystem", "ListDir", &message, false);
        let label = call.label.clone();
        let answer = call.whole().await?;
        let listing: Listing = serde_json::from_slice(&answer.body)
            .map_err(|e| E2bError::protocol(&label, e, &self.redactor))?;
        Ok(listing.entries)
    }

    /// At most `limit` bytes from the start of the file.
    pub async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, E2bError> {
        let label = "GET /files".to_owned();
        let call = self.call(
            Method::GET,
            self.url(&["files"], &[("path", path)]),
            label.clone(),
        );
        let mut response = call.streamed().await?;
        let mut out = Vec::new();
        while out.len() < limit {
            let chunk = tokio::time::timeout(STREAM_IDLE, response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => out.extend_from_slice(&bytes),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(E2bError::connection(&label, e, &self.redactor)),
                Err(_) => {
                    return Err(E2bError::new(
                        E2bErrorKind::Connection,
                        format!("E2B {label}: no data for {STREAM_IDLE:?}"),
                    ))
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Writes the file whole, making its parent directories.
    pub async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), E2bError> {
        self.upload(path, Bytes::copy_from_slice(contents)).await
    }

    /// [`write_file`](Self::write_file) of shared bytes (an executable):
    /// retries send the same buffer, and each attempt may take a second
    /// more per MiB than a small request.
    pub async fn upload(&self, path: &str, contents: Bytes) -> Result<(), E2bError> {
        let url = self.url(&["files"], &[("path", path)]);
        let mut call = self.call(Method::POST, url, "POST /files".to_owned());
        let per_mib = Duration::from_secs((contents.len() >> 20) as u64);
        call.timeout = Some(self.api.config.request_timeout + per_mib);
        call.body = Some(("application/octet-stream", contents));
        call.whole().await.map(|_| ())
    }

    /// How to reach `port` of the sandbox: through the override with the
    /// routing headers, else `https://{port}-{id}.{domain}`; with the
    /// traffic token when the sandbox has one.
    pub fn port(&self, port: u16) -> PortRoute {
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.connection.traffic_access_token {
            headers.insert(
                HeaderName::from_static("e2b-traffic-access-token"),
                secret_header(token),
            );
        }
        let config = &self.api.config;
        if let Some(url) = &config.sandbox_url {
            headers.insert(
                HeaderName::from_static("e2b-sandbox-id"),
                header(&self.connection.sandbox_id),
            );
            headers.insert(
                HeaderName::from_static("e2b-sandbox-port"),
                header(&port.to_string()),
            );
            return PortRoute {
                url: url.clone(),
                headers,
            };
        }
        let domain = self.connection.domain.as_deref().unwrap_or(&config.domain);
        let raw = format!("https://{port}-{}.{domain}", self.connection.sandbox_id);
        PortRoute {
            url: Url::parse(&raw).unwrap_or_else(|_| self.base.clone()),
            headers,
        }
    }
}
