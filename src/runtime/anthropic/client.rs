//! The send loop of the `anthropic` provider: one attempt at a time through
//! the client-side rate limiter, errors mapped and redacted, retried by the
//! shared policy ([`crate::http`]); a retry after an attempt that may have
//! taken effect first asks [`Dedup`] whether it did.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT};
use reqwest::Url;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::clock::ServerClock;
use super::dedup::Dedup;
use super::limiter::Limiter;
use super::request::{Reply, Req};
use crate::http::error::{api_error, request_id};
use crate::http::{describe_reqwest, snippet, Attempt, Client, Failure, Redactor, RetryPolicy};
use crate::runtime::{ErrorKind, Result, RuntimeError};

const USER_AGENT: &str = concat!("agentform/", env!("CARGO_PKG_VERSION"));

/// A failed attempt and what it leaves unknown.
pub(crate) struct Failed {
    pub failure: Failure<RuntimeError>,
    /// The request may have reached the server and taken effect.
    uncertain: bool,
    status: Option<u16>,
}

impl Failed {
    fn transport(error: RuntimeError, uncertain: bool) -> Self {
        Failed {
            failure: Failure::connection(error),
            uncertain,
            status: None,
        }
    }
}

/// How the provider reaches the API.
pub(crate) struct Http {
    /// Headers (credentials included), redactor, retry policy and the
    /// per-attempt timeout.
    pub client: Client,
    base: Url,
    limiter: Limiter,
    clock: ServerClock,
}

impl Http {
    pub fn new(
        base: Url,
        headers: HeaderMap,
        redactor: Redactor,
        retry: RetryPolicy,
        limiter: Limiter,
        timeout: Duration,
    ) -> Result<Self> {
        let client = Client::new(headers, redactor, retry, timeout, Some(USER_AGENT))
            .map_err(|message| RuntimeError::new(ErrorKind::Transport, message))?;
        Ok(Http {
            client,
            base,
            limiter,
            clock: ServerClock::default(),
        })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    pub fn redactor(&self) -> &Redactor {
        &self.client.redactor
    }

    /// A time on the server's clock no later than `local` was there.
    pub fn not_before(&self, local: SystemTime) -> OffsetDateTime {
        self.clock.not_before(local)
    }

    fn url(&self, req: &Req) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(&req.segments);
        }
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&req.query);
        }
        url
    }

    /// Sends `req`, retrying as the policy allows, and returns its JSON.
    pub async fn json(&self, req: &Req, dedup: &Dedup) -> Result<Reply> {
        let call = JsonCall {
            http: self,
            req,
            dedup,
            started: SystemTime::now(),
            uncertain: false,
            last_error: None,
        };
        self.client
            .retrying(&req.label(), None, call)
            .await
            .map_err(|e| self.redactor().error(e))
    }

    /// Opens a streaming response (2xx), retrying as the policy allows.
    pub async fn stream(&self, req: &Req) -> Result<reqwest::Response> {
        let open = OpenStream { http: self, req };
        self.client.retrying(&req.label(), None, open).await
    }

    /// One attempt returning JSON; its error is already redacted.
    pub async fn attempt_json(&self, req: &Req) -> Result<Reply, Failed> {
        self.attempt_json_inner(req).await.map_err(|mut f| {
            f.failure.error = self.redactor().error(f.failure.error);
            f
        })
    }

    async fn attempt_json_inner(&self, req: &Req) -> Result<Reply, Failed> {
        let label = req.label();
        let response = self.attempt(req, false).await?;
        let request_id = request_id(response.headers());
        let bytes = response.bytes().await.map_err(|e| {
            Failed::transport(
                RuntimeError::new(
                    ErrorKind::Transport,
                    format!("{label}: the answer broke off: {}", describe_reqwest(e)),
                ),
                true,
            )
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Reply {
                value: Value::Null,
                request_id,
            });
        }
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Reply { value, request_id }),
            Err(e) => {
                let mut error = RuntimeError::new(
                    ErrorKind::Api,
                    format!(
                        "{label}: the answer is not JSON ({e}): {}",
                        snippet(&String::from_utf8_lossy(&bytes))
                    ),
                );
                error.request_id = request_id;
                Err(Failed {
                    failure: Failure::fatal(error),
                    uncertain: true,
                    status: None,
                })
            }
        }
    }

    /// One attempt: the response when its status is 2xx.
    async fn attempt(&self, req: &Req, stream: bool) -> Result<reqwest::Response, Failed> {
        let label = req.label();
        let timeout = self.client.timeout;
        let _permit = self.limiter.acquire(req.class()).await;
        let mut builder = self.client.request(req.method.clone(), self.url(req));
        builder = if stream {
            builder.header(ACCEPT, HeaderValue::from_static("text/event-stream"))
        } else {
            builder
                .header(ACCEPT, HeaderValue::from_static("application/json"))
                .timeout(timeout)
        };
        if let Some(body) = &req.body {
            builder = builder.body(body.to_string());
        }
        // A stream's body has no deadline; only its start does.
        let sent = match tokio::time::timeout(timeout, builder.send()).await {
            Ok(sent) => sent,
            Err(_) => {
                let message = format!("{label}: no answer within {} s", timeout.as_secs_f64());
                return Err(Failed::transport(
                    RuntimeError::new(ErrorKind::Transport, message),
                    true,
                ));
            }
        };
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let uncertain = !e.is_connect();
                let message = self.redactor().text(format!(
                    "{label}: cannot reach the API: {}",
                    describe_reqwest(e)
                ));
                return Err(Failed::transport(
                    RuntimeError::new(ErrorKind::Transport, message),
                    uncertain,
                ));
            }
        };
        self.clock.observe(response.headers());
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = tokio::time::timeout(timeout, response.bytes())
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let error = self
            .redactor()
            .error(api_error(&label, status, &headers, &body));
        tracing::debug!(endpoint = %label, status = status.as_u16(), request_id = ?error.request_id, "the API returned an error");
        Err(Failed {
            failure: Failure::answer(error, status.as_u16(), headers),
            uncertain: status.is_server_error(),
            status: Some(status.as_u16()),
        })
    }
}

/// A JSON request and what its earlier attempts may have done.
struct JsonCall<'a> {
    http: &'a Http,
    req: &'a Req,
    dedup: &'a Dedup,
    started: SystemTime,
    /// An earlier attempt may have taken effect.
    uncertain: bool,
    /// The last attempt's error, kept when a check for its effect fails.
    last_error: Option<RuntimeError>,
}

impl Attempt for JsonCall<'_> {
    type Output = Reply;
    type Error = RuntimeError;

    async fn run(&mut self, retries_done: u32) -> Result<Reply, Failure<RuntimeError>> {
        let http = self.http;
        let label = self.req.label();
        if retries_done > 0 && self.uncertain && self.dedup.checks() {
            match self.dedup.already_done(http, self.started).await {
                Ok(Some(value)) => {
                    tracing::info!(endpoint = %label, "an earlier attempt took effect; using its result");
                    return Ok(Reply {
                        value,
                        request_id: None,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    // Check again before resending; if this was the last
                    // try, the last error says what is unknown.
                    let e = http.redactor().error(e);
                    tracing::debug!(endpoint = %label, error = %e, "checking for an earlier attempt failed");
                    let mut error = self.last_error.clone().unwrap_or_else(|| e.clone());
                    error.message = format!(
                        "{}; whether an earlier attempt took effect is unknown ({})",
                        error.message, e.message
                    );
                    return Err(Failure::connection(error));
                }
            }
        }
        let failed = match http.attempt_json(self.req).await {
            Ok(reply) => return Ok(reply),
            Err(failed) => failed,
        };
        self.uncertain |= failed.uncertain;
        if let Dedup::Delete { id, kind } = self.dedup {
            if self.uncertain && failed.status == Some(404) {
                tracing::info!(endpoint = %label, "deleted by an earlier attempt");
                return Ok(Reply {
                    value: json!({"id": id, "type": kind}),
                    request_id: None,
                });
            }
        }
        self.last_error = Some(failed.failure.error.clone());
        Err(failed.failure)
    }
}

/// The start of an event stream.
struct OpenStream<'a> {
    http: &'a Http,
    req: &'a Req,
}

impl Attempt for OpenStream<'_> {
    type Output = reqwest::Response;
    type Error = RuntimeError;

    async fn run(
        &mut self,
        _retries_done: u32,
    ) -> Result<reqwest::Response, Failure<RuntimeError>> {
        let redactor = self.http.redactor();
        self.http
            .attempt(self.req, true)
            .await
            .map_err(|f| f.failure.map(|e| redactor.error(e)))
    }
}
