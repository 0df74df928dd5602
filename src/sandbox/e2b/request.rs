//! One E2B request under the shared HTTP policy (`crate::http`): sent again
//! on 429, 5xx and broken connections as [`RetryPolicy`] says, honouring
//! `retry-after` and E2B's `Should-Retry` header; answered errors read as
//! [`E2bError`] with secrets redacted. A request that is not idempotent is
//! sent again only when it never left (the connection failed).
//!
//! [`RetryPolicy`]: crate::http::RetryPolicy

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};

use reqwest::{Method, StatusCode, Url};

use super::error::E2bError;
use crate::http::{Attempt, Client, Failure, Redactor};

/// E2B's own retry marker (the SDK's `e2b/retry.py`): `true` or `false`
/// decides whether an error answer may be retried.
const SHOULD_RETRY: &str = "should-retry";

/// An answer with its body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A request to send, possibly several times.
pub struct Call<'a> {
    pub client: &'a Client,
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    /// Shared between attempts: an upload is never copied.
    pub body: Option<(&'static str, Bytes)>,
    /// `GET /v2/sandboxes`: starts every message.
    pub label: String,
    /// Error statuses that are answers to the caller (a 404 of a get).
    pub accept: &'a [u16],
    /// Whether it may be sent again after it may have arrived.
    pub idempotent: bool,
    /// Limit of one attempt, until its whole answer (a streamed answer:
    /// until it starts).
    pub timeout: Option<Duration>,
    pub key_env: &'a str,
    pub redactor: &'a Redactor,
}

impl Call<'_> {
    /// Sends once: the response of a success or an accepted status, else a
    /// failure classified for the retry loop.
    async fn send(&self, whole: bool) -> Result<reqwest::Response, Failure<E2bError>> {
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone());
        if let (true, Some(limit)) = (whole, self.timeout) {
            request = request.timeout(limit);
        }
        if let Some((content_type, body)) = &self.body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static(content_type))
                .body(body.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                // A failed connect never sent the request.
                let unsent = e.is_connect();
                let error = E2bError::connection(&self.label, e, self.redactor);
                return Err(if self.idempotent || unsent {
                    Failure::connection(error)
                } else {
                    Failure::fatal(error)
                });
            }
        };
        let status = response.status();
        if status.is_success() || self.accept.contains(&status.as_u16()) {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        let error = E2bError::answer(&self.label, status, &body, self.key_env, self.redactor);
        let mut failure = Failure::answer(error, status.as_u16(), headers);
        let marker = failure
            .headers
            .as_ref()
            .and_then(|h| h.get(SHOULD_RETRY))
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().eq_ignore_ascii_case("true"));
        if let Some(retry) = marker {
            failure.retryable = retry;
        }
        Err(failure)
    }

    /// Sends until an answer arrives whole, or the policy gives up.
    pub async fn whole(self) -> Result<Answer, E2bError> {
        let client = self.client;
        let label = self.label.clone();
        client.retrying(&label, None, Whole(self)).await
    }

    /// Sends until an answer starts (its body is the caller's to read).
    pub async fn streamed(self) -> Result<reqwest::Response, E2bError> {
        let client = self.client;
        let label = self.label.clone();
        client.retrying(&label, None, Streamed(self)).await
    }
}

struct Whole<'a>(Call<'a>);

impl Attempt for Whole<'_> {
    type Output = Answer;
    type Error = E2bError;

    async fn run(&mut self, _retries_done: u32) -> Result<Answer, Failure<E2bError>> {
        let call = &self.0;
        let response = call.send(true).await?;
        let status = response.status();
        let headers = response.headers().clone();
        match response.bytes().await {
            Ok(body) => Ok(Answer {
                status,
                headers,
                body: body.to_vec(),
            }),
            Err(e) => {
                let error = E2bError::connection(&call.label, e, call.redactor);
                Err(match call.idempotent {
                    true => Failure::connection(error),
                    false => Failure::fatal(error),
                })
            }
        }
    }
}

struct Streamed<'a>(Call<'a>);

impl Attempt for Streamed<'_> {
    type Output = reqwest::Response;
    type Error = E2bError;

    async fn run(&mut self, _retries_done: u32) -> Result<reqwest::Response, Failure<E2bError>> {
        let call = &self.0;
        let Some(limit) = call.timeout else {
            return call.send(false).await;
        };
        match tokio::time::timeout(limit, call.send(false)).await {
            Ok(sent) => sent,
            Err(_) => {
                let error = E2bError::new(
                    super::error::E2bErrorKind::Connection,
                    format!("E2B {}: no answer within {limit:?}", call.label),
                );
                Err(match call.idempotent {
                    true => Failure::connection(error),
                    false => Failure::fatal(error),
                })
            }
        }
    }
}
