//! The request loop every client shares: a reqwest client with fixed
//! headers and a connect timeout, and [`Client::retrying`], which runs an
//! [`Attempt`] again while the [`RetryPolicy`] allows.
//!
//! What one attempt sends and how its failure reads is the caller's (the
//! model backends and the `anthropic` provider word their errors
//! differently); whether it may be retried and how long to wait is here.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{IntoUrl, Method, RequestBuilder};
use tokio::time::Instant;

use super::retry::{should_retry, RetryPolicy};
use crate::redact::Redactor;

/// Longest wait for a connection, whatever the call's own timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed attempt, as the loop sees it.
#[derive(Debug)]
pub struct Failure<E> {
    /// Already redacted: the loop logs it.
    pub error: E,
    pub retryable: bool,
    /// The answer's headers (`retry-after`), when there was an answer.
    pub headers: Option<HeaderMap>,
}

impl<E> Failure<E> {
    /// Not worth trying again.
    pub fn fatal(error: E) -> Self {
        Failure {
            error,
            retryable: false,
            headers: None,
        }
    }

    /// No answer: the connection failed, broke or timed out.
    pub fn connection(error: E) -> Self {
        Failure {
            error,
            retryable: true,
            headers: None,
        }
    }

    /// An error answer: retried as [`should_retry`] says.
    pub fn answer(error: E, status: u16, headers: HeaderMap) -> Self {
        Failure {
            error,
            retryable: should_retry(status, &headers),
            headers: Some(headers),
        }
    }

    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> Failure<F> {
        Failure {
            error: f(self.error),
            retryable: self.retryable,
            headers: self.headers,
        }
    }
}

/// One try at a request; it may keep state across tries (what an earlier
/// try may have done).
pub trait Attempt {
    type Output;
    type Error: fmt::Display;

    /// Try number `retries_done + 1`.
    fn run(
        &mut self,
        retries_done: u32,
    ) -> impl Future<Output = Result<Self::Output, Failure<Self::Error>>> + Send;
}

/// A reqwest client with the headers every request carries, the redactor of
/// its secrets, its retry policy and its timeout.
pub struct Client {
    inner: reqwest::Client,
    headers: HeaderMap,
    pub redactor: Redactor,
    pub retry: RetryPolicy,
    /// The caller's time limit (per attempt or per call, as it uses it).
    pub timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The connect timeout is [`CONNECT_TIMEOUT`] or `timeout`, whichever
    /// is shorter. The error is a message.
    pub fn new(
        headers: HeaderMap,
        redactor: Redactor,
        retry: RetryPolicy,
        timeout: Duration,
        user_agent: Option<&str>,
    ) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT.min(timeout));
        if let Some(agent) = user_agent {
            builder = builder.user_agent(agent);
        }
        let inner = builder
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Client {
            inner,
            headers,
            redactor,
            retry,
            timeout,
        })
    }

    /// A request with the fixed headers.
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        self.inner
            .request(method, url)
            .headers(self.headers.clone())
    }

    /// Runs `attempt` until it succeeds, fails for good, has used up the
    /// retries, or would have to wait past `deadline`; the last error then.
    pub async fn retrying<A: Attempt>(
        &self,
        label: &str,
        deadline: Option<Instant>,
        mut attempt: A,
    ) -> Result<A::Output, A::Error> {
        let mut retries = 0;
        loop {
            let failure = match attempt.run(retries).await {
                Ok(output) => return Ok(output),
                Err(failure) => failure,
            };
            if !failure.retryable || retries >= self.retry.max_retries {
                return Err(failure.error);
            }
            let wait = self.retry.delay(retries, failure.headers.as_ref());
            if deadline.is_some_and(|deadline| Instant::now() + wait >= deadline) {
                return Err(failure.error);
            }
            retries += 1;
            tracing::debug!(
                endpoint = %label,
                error = %failure.error,
                retry = retries,
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::retry::tests::headers;

    /// Fails with `failures` in order, then succeeds; records when it ran.
    struct Script {
        failures: Vec<Failure<String>>,
        runs: Vec<(u32, Instant)>,
    }

    impl Attempt for &mut Script {
        type Output = u32;
        type Error = String;

        async fn run(&mut self, retries_done: u32) -> Result<u32, Failure<String>> {
            self.runs.push((retries_done, Instant::now()));
            match self.failures.is_empty() {
                true => Ok(retries_done),
                false => Err(self.failures.remove(0)),
            }
        }
    }

    fn script(failures: Vec<Failure<String>>) -> Script {
        Script {
            failures,
            runs: Vec::new(),
        }
    }

    fn client(max_retries: u32) -> Client {
        let retry = RetryPolicy {
            max_retries,
            ..RetryPolicy::default()
        };
        Client::new(
            HeaderMap::new(),
            Redactor::default(),
            retry,
            Duration::from_secs(5),
            None,
        )
        .unwrap()
    }

    fn busy(after: &str) -> Failure<String> {
        Failure::answer("busy".into(), 529, headers(&[("retry-after", after)]))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_waiting_as_asked() {
        let mut s = script(vec![busy("2"), Failure::connection("reset".into())]);
        let started = Instant::now();
        assert_eq!(client(4).retrying("t", None, &mut s).await, Ok(2));
        let waits: Vec<Duration> = s.runs.iter().map(|(_, at)| *at - started).collect();
        assert_eq!(waits[1], Duration::from_secs(2));
        // The second retry's backoff with jitter: 1 s less up to a quarter.
        let backoff = waits[2] - waits[1];
        assert!(backoff <= Duration::from_secs(1), "{backoff:?}");
        assert!(backoff >= Duration::from_millis(750), "{backoff:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_limit_at_a_fatal_error_and_at_the_deadline() {
        let mut s = script(vec![busy("0"), busy("0"), busy("0")]);
        assert_eq!(
            client(2).retrying("t", None, &mut s).await,
            Err("busy".into())
        );
        assert_eq!(s.runs.len(), 3);

        let mut s = script(vec![Failure::fatal("bad".into())]);
        assert_eq!(
            client(2).retrying("t", None, &mut s).await,
            Err("bad".into())
        );
        assert_eq!(s.runs.len(), 1);

        let refused = Failure::answer("no".into(), 503, headers(&[("x-should-retry", "false")]));
        let mut s = script(vec![refused]);
        assert_eq!(
            client(2).retrying("t", None, &mut s).await,
            Err("no".into())
        );
        assert_eq!(s.runs.len(), 1);

        let deadline = Some(Instant::now() + Duration::from_secs(1));
        let mut s = script(vec![busy("3")]);
        assert_eq!(
            client(2).retrying("t", deadline, &mut s).await,
            Err("busy".into())
        );
        assert_eq!(s.runs.len(), 1);
    }
}
