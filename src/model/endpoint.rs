//! The transport of the HTTP model backends: one JSON endpoint with fixed
//! headers (the key included), one wall-clock deadline per call, retries of
//! retryable answers by the shared policy ([`crate::http`]), and the key
//! scrubbed from every error.
//!
//! Knows nothing of the Messages API or chat completions: the backends
//! translate bodies, this moves them.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::ModelError;
use crate::http::error::model_error_message;
use crate::http::{describe_reqwest, snippet, Attempt, Client, Failure, Redactor, RetryPolicy};

/// Wall-clock limit for one call, retries included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries of a retryable answer after the first attempt.
pub const MAX_RETRIES: u32 = 2;
/// Longest wait between attempts that `retry-after` can ask for.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
/// How the key reads in messages.
const REDACTED: &str = "[redacted]";

/// One JSON endpoint with fixed headers and a per-call deadline.
pub(crate) struct HttpEndpoint {
    client: Client,
    pub(crate) url: String,
}

impl HttpEndpoint {
    /// `secret` (the key) is scrubbed from every error.
    pub(crate) fn new(
        url: String,
        mut headers: HeaderMap,
        timeout: Duration,
        secret: Option<String>,
    ) -> Result<Self, ModelError> {
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| ModelError::Config(format!("invalid model endpoint URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ModelError::Config(format!(
                "invalid model endpoint URL {url:?}: the scheme must be http or https"
            )));
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let redactor = Redactor::new(secret).with_mark(REDACTED);
        let retry = RetryPolicy {
            max_retries: MAX_RETRIES,
            max_retry_after: MAX_RETRY_WAIT,
            ..RetryPolicy::default()
        };
        let client =
            Client::new(headers, redactor, retry, timeout, None).map_err(ModelError::Config)?;
        Ok(HttpEndpoint { client, url })
    }

    /// Wall-clock limit for one call, retries included.
    pub(crate) fn timeout(&self) -> Duration {
        self.client.timeout
    }

    /// POSTs `body` and returns the status and JSON of a 2xx answer;
    /// retries retryable answers (at most [`MAX_RETRIES`] times) while the
    /// deadline allows. An endpoint that cannot be reached fails at once.
    pub(crate) async fn post_json(&self, body: &Value) -> Result<(u16, Value), ModelError> {
        let deadline = Instant::now() + self.client.timeout;
        let payload = serde_json::to_vec(body)
            .map_err(|e| ModelError::Config(format!("cannot encode the request: {e}")))?;
        let post = Post {
            endpoint: self,
            payload: &payload,
            deadline,
        };
        self.client.retrying(&self.url, Some(deadline), post).await
    }

    async fn attempt(
        &self,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<(u16, Value), Failure<ModelError>> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let exchange = async {
            let response = self
                .client
                .request(Method::POST, &self.url)
                .body(payload.to_vec())
                .send()
                .await?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        };
        let unreachable = |why: String| {
            Failure::fatal(ModelError::Unreachable(format!(
                "cannot reach {}: {why}",
                self.url
            )))
        };
        let (status, headers, bytes) = match tokio::time::timeout(remaining, exchange).await {
            Err(_) => {
                let why = format!("no answer within {}", seconds(self.client.timeout));
                return Err(unreachable(why));
            }
            Ok(Err(e)) => return Err(unreachable(describe_reqwest(e))),
            Ok(Ok(parts)) => parts,
        };
        let code = status.as_u16();
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(|json| (code, json))
                .map_err(|e| {
                    Failure::fatal(ModelError::Api {
                        status: code,
                        message: format!(
                            "the answer is not JSON ({e}): {}",
                            snippet(&String::from_utf8_lossy(&bytes))
                        ),
                        retryable: false,
                    })
                });
        }
        tracing::debug!(url = %self.url, status = code, "model endpoint returned an error");
        let message = model_error_message(status, &bytes);
        let failure = Failure::answer(message, code, headers);
        let retryable = failure.retryable;
        Err(failure.map(|message| ModelError::Api {
            status: code,
            message,
            retryable,
        }))
    }

    /// Replaces the key in an error's message.
    pub(crate) fn redact(&self, error: ModelError) -> ModelError {
        let scrub = |m: String| self.client.redactor.text(m);
        match error {
            ModelError::Config(m) => ModelError::Config(scrub(m)),
            ModelError::Unreachable(m) => ModelError::Unreachable(scrub(m)),
            ModelError::ScriptExhausted(m) => ModelError::ScriptExhausted(scrub(m)),
            ModelError::Api {
                status,
                message,
                retryable,
            } => ModelError::Api {
                status,
                message: scrub(message),
                retryable,
            },
        }
    }
}

/// One POST of a call, its error redacted.
struct Post<'a> {
    endpoint: &'a HttpEndpoint,
    payload: &'a [u8],
    deadline: Instant,
}

impl Attempt for Post<'_> {
    type Output = (u16, Value);
    type Error = ModelError;

    async fn run(&mut self, _retries_done: u32) -> Result<(u16, Value), Failure<ModelError>> {
        let endpoint = self.endpoint;
        endpoint
            .attempt(self.payload, self.deadline)
            .await
            .map_err(|f| f.map(|e| endpoint.redact(e)))
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
