//! `agentform serve`: the local runtime over HTTP, with the paths, bodies,
//! events, SSE stream, errors and pagination of Anthropic's Managed Agents
//! API (as the `anthropic` Python SDK 2.10.0 speaks it), so the official SDKs
//! and curl work against it with only their base URL changed.
//!
//! * `routes`: the endpoints and their query parameters;
//! * `sse`: `GET /v1/sessions/{id}/events/stream`;
//! * `guard`: what a request must look like (`Host`, `Origin`, the body's
//!   type) against cross-site and DNS-rebinding requests from browsers;
//! * `conn`: accepting and holding connections, with the header and idle
//!   timeouts and the connection cap;
//! * [`error`]: the error envelope.
//!
//! Every response carries a `request-id: req_…` header. A middleware in front
//! of the routes assigns it, applies the guard, answers CORS preflights,
//! checks the API key, injects faults when asked, turns a panicking handler
//! into a 500 and writes every error body.
//!
//! It must not contain runtime logic of its own: every object and event
//! comes from the local runtime.

mod conn;
pub mod error;
mod guard;
mod routes;
mod sse;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::runtime::local::LocalRuntime;
pub use error::ApiError;
pub use guard::parse_origin;
use guard::Guard;

/// Request bodies past this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How often an idle event stream sends `event: ping`.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// The header every response carries.
pub const REQUEST_ID_HEADER: &str = "request-id";
/// A client has this long to send a request's head (from connecting, or
/// from its first byte), and then as long for its body.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections beyond this many wait to be accepted.
pub const MAX_CONNECTIONS: usize = 512;

/// How the server behaves; the runtime's own options (latency, dropped
/// streams, models) are in its [`LocalOptions`](crate::runtime::local::LocalOptions).
#[derive(Clone)]
pub struct Options {
    /// When set, every request must carry it as `x-api-key` or
    /// `Authorization: Bearer`.
    pub api_key: Option<String>,
    /// Fault injection: this fraction of requests (0 to 1) fails with one of
    /// `fail_statuses`, picked at random.
    pub fail_rate: f64,
    pub fail_statuses: Vec<FailStatus>,
    /// The fraction of injected 500s and 529s that fail after the request
    /// took effect (the answer is lost), as a broken connection or a proxy
    /// error would; the others, and every 429, fail before.
    pub fail_after: f64,
    /// An event stream sends `event: ping` after this long without a frame.
    pub heartbeat: Duration,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// Web origins (`http://localhost:3000`) whose pages may call the
    /// server; a request from any other origin is refused.
    pub allowed_origins: Vec<String>,
    /// See [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_key: None,
            fail_rate: 0.0,
            fail_statuses: vec![FailStatus::Overloaded],
            fail_after: 0.0,
            heartbeat: HEARTBEAT,
            max_body_bytes: MAX_BODY_BYTES,
            allowed_origins: Vec::new(),
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Never shows the key.
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("fail_rate", &self.fail_rate)
            .field("fail_statuses", &self.fail_statuses)
            .field("fail_after", &self.fail_after)
            .field("heartbeat", &self.heartbeat)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("allowed_origins", &self.allowed_origins)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The status injected faults fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailStatus {
    /// 429 `rate_limit_error`, with `retry-after: 1`.
    RateLimited,
    /// 500 `api_error`.
    Internal,
    /// 529 `overloaded_error`.
    Overloaded,
}

impl FailStatus {
    pub fn from_status(status: u16) -> Option<Self> {
        match status {
            429 => Some(FailStatus::RateLimited),
            500 => Some(FailStatus::Internal),
            529 => Some(FailStatus::Overloaded),
            _ => None,
        }
    }

    /// Whether a fault of this kind may happen after the request took effect.
    fn may_come_after(self) -> bool {
        !matches!(self, FailStatus::RateLimited)
    }

    fn error(self) -> ApiError {
        match self {
            FailStatus::RateLimited => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate limited (injected fault)",
                )
            },
            FailStatus::Internal => ApiError::internal("internal error (injected fault)"),
            FailStatus::Overloaded => ApiError::new(
                overloaded(),
                "overloaded_error",
                "overloaded (injected fault)",
            ),
        }
    }
}

fn overloaded() -> StatusCode {
    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) runtime: Arc<LocalRuntime>,
    pub(crate) options: Arc<Options>,
    /// Turns true when the server shuts down; event streams end then.
    pub(crate) stop: Arc<watch::Sender<bool>>,
    /// The request policy for the address served.
    pub(crate) guard: Arc<Guard>,
}

/// The request id, in the request's extensions for handlers that put it in
/// a body (the event stream's error frame).
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// The HTTP server over one runtime.
pub struct Server {
    runtime: Arc<LocalRuntime>,
    options: Arc<Options>,
    stop: Arc<watch::Sender<bool>>,
}

impl Server {
    pub fn new(runtime: Arc<LocalRuntime>, options: Options) -> Self {
        Server {
            runtime,
            options: Arc::new(options),
            stop: Arc::new(watch::channel(false).0),
        }
    }

    /// The routes with the middleware, as served on `local` (the `Host`
    /// answered without an API key depends on it).
    pub fn router(&self, local: SocketAddr) -> Router {
        let state = AppState {
            runtime: Arc::clone(&self.runtime),
            options: Arc::clone(&self.options),
            stop: Arc::clone(&self.stop),
            guard: Arc::new(Guard::new(
                local,
                self.options.api_key.is_some(),
                &self.options.allowed_origins,
            )),
        };
        routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(state, middleware))
    }

    /// Serves on `listener` until `shutdown` completes; then ends the event
    /// streams, lets requests in flight finish and returns. The runtime is
    /// the caller's to shut down and flush afterwards.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router(listener.local_addr()?);
        let limits = conn::Limits {
            header_timeout: self.options.header_timeout,
            idle_timeout: self.options.idle_timeout,
            max_connections: self.options.max_connections,
        };
        conn::serve(listener, router, limits, self.stop, shutdown).await;
        Ok(())
    }
}

/// `req_` and 24 base62 characters.
fn new_request_id() -> String {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    for _ in 0..24 {
        id.push(char::from(BASE62[fastrand::usize(..BASE62.len())]));
    }
    id
}

/// Compares without stopping at the first difference.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key a request presents, if any.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(key) = headers.get("x-api-key") {
        return Some(key.as_bytes());
    }
    let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = auth.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| auth[7..].trim_ascii())
}

fn check_key(expected: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    match presented_key(headers) {
        None => Err(ApiError::unauthorized(
            "missing API key: send it as `x-api-key: <key>` or `Authorization: Bearer <key>`",
        )),
        Some(key) if same_secret(key, expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("invalid API key")),
    }
}

/// The checks before a request reaches its route, in order: the guard
/// (`Host`, `Origin`), a CORS preflight's answer, the API key, the body's
/// type. Gives the allowed origin the request came from — none when its
/// `Host` or `Origin` was refused, so that answer carries no CORS headers
/// and a refused page cannot read it — and the request's fate: answered
/// already (a preflight), refused, or let through.
fn gate(
    state: &AppState,
    req: &Request,
) -> (Option<HeaderValue>, Result<Option<Response>, ApiError>) {
    let headers = req.headers();
    let origin = match state.guard.admit(headers) {
        Ok(origin) => origin,
        Err(e) => return (None, Err(e)),
    };
    if let Some(allowed) = &origin {
        if let Some(answer) = Guard::preflight(req.method(), headers, allowed) {
            return (origin, Ok(Some(answer)));
        }
    }
    let checked = match &state.options.api_key {
        Some(key) => check_key(key, headers),
        None => Ok(()),
    }
    .and_then(|()| guard::check_content_type(headers));
    (origin, checked.map(|()| None))
}

/// In front of every route: request id, the gate, fault injection, panics,
/// error bodies, CORS headers.
async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = new_request_id();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();

    let options = &state.options;
    let fault = (options.fail_rate > 0.0 && fastrand::f64() < options.fail_rate)
        .then(|| fastrand::choice(&options.fail_statuses).copied())
        .flatten();
    let (before, after) = match fault {
        Some(f) if f.may_come_after() && fastrand::f64() < options.fail_after => (None, Some(f)),
        f => (f, None),
    };
    let (origin, gate) = gate(&state, &req);
    let gate = gate.and_then(|answer| match (answer, before) {
        (Some(answer), _) => Ok(Some(answer)),
        (None, Some(f)) => Err(f.error()),
        (None, None) => Ok(None),
    });
    let response = match gate {
        Err(e) => e.into_response(),
        Ok(Some(answer)) => answer,
        Ok(None) => match AssertUnwindSafe(next.run(req)).catch_unwind().await {
            Ok(response) => match after {
                // The request took effect; its answer is lost.
                Some(f) => {
                    drop(response);
                    f.error().into_response()
                }
                None => response,
            },
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%method, %path, %request_id, "handler panicked: {what}");
                ApiError::internal("internal error: the request handler failed").into_response()
            }
        },
    };
    let mut response = finish(response, &request_id);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    if let Some(origin) = origin {
        Guard::allow(&mut response, origin);
    }
    let status = response.status();
    if status == StatusCode::REQUEST_TIMEOUT {
        // The rest of a stalled body may still come; the connection ends.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let elapsed_ms = started.elapsed().as_millis();
    if status.is_server_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), %request_id, elapsed_ms, "request failed");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), %request_id, elapsed_ms, "request");
    }
    response
}

/// Gives every error response the envelope with the request id.
fn finish(response: Response, request_id: &str) -> Response {
    if let Some(error) = response.extensions().get::<ApiError>() {
        return error.response(Some(request_id));
    }
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        return ApiError::from_status(status).response(Some(request_id));
    }
    response
}

#[cfg(test)]
mod tests;
