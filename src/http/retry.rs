//! When to retry a failed request and how long to wait first, the way the
//! official SDKs do it (`_base_client.py`: `_should_retry`,
//! `_calculate_retry_timeout`). Only the policy: the loop that applies it is
//! [`super::client`]'s; callers choose the number of retries and the waits.

use std::time::Duration;

use reqwest::header::HeaderMap;
use time::{OffsetDateTime, PrimitiveDateTime};

/// Retries after the first attempt, unless configured otherwise (the
/// `anthropic` provider's number; the model backends make 2).
pub const DEFAULT_MAX_RETRIES: u32 = 4;
/// First backoff step (doubled for every retry).
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest computed backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Longest wait a `retry-after` header can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How many times to retry and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Cap of the computed backoff.
    pub max_backoff: Duration,
    /// Cap of a server-requested wait (`retry-after-ms`, `retry-after`).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            initial_backoff: INITIAL_BACKOFF,
            max_backoff: MAX_BACKOFF,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retries_done + 1`: what the server asked
    /// for (capped), else the jittered exponential backoff.
    pub fn delay(&self, retries_done: u32, headers: Option<&HeaderMap>) -> Duration {
        if let Some(wait) = headers.and_then(retry_after) {
            return wait.min(self.max_retry_after);
        }
        self.backoff(retries_done, fastrand::f64())
    }

    /// `min(initial × 2^n, max) × (1 − 0.25 × random)`, `random` in `[0, 1)`.
    pub fn backoff(&self, retries_done: u32, random: f64) -> Duration {
        let factor = 2f64.powi(retries_done.min(62) as i32);
        let base =
            (self.initial_backoff.as_secs_f64() * factor).min(self.max_backoff.as_secs_f64());
        let jitter = 1.0 - 0.25 * random.clamp(0.0, 1.0);
        Duration::from_secs_f64((base * jitter).max(0.0))
    }
}

/// Whether an error answer with `status` may be retried: `x-should-retry`
/// decides when present, else [`retryable_status`].
pub fn should_retry(status: u16, headers: &HeaderMap) -> bool {
    match header(headers, "x-should-retry") {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    retryable_status(status)
}

/// 408, 409, 429 and every 5xx (529 included).
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429 | 500..=599)
}

/// The wait a response asks for: `retry-after-ms` (milliseconds), else
/// `retry-after` in seconds or as an HTTP date. Negative or unreadable
/// values are ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        header(headers, name)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms.min(1e9) / 1000.0));
    }
    if let Some(seconds) = number("retry-after") {
        return Some(Duration::from_secs_f64(seconds.min(1e9)));
    }
    let date = http_date(header(headers, "retry-after")?)?;
    let wait = date - OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as in `date` and
/// `retry-after` headers.
pub fn http_date(value: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    PrimitiveDateTime::parse(value.trim(), &format)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn retryable_statuses() {
        let none = HeaderMap::new();
        for status in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(should_retry(status, &none), "{status}");
        }
        for status in [200, 400, 401, 403, 404, 413, 422] {
            assert!(!should_retry(status, &none), "{status}");
        }
    }

    #[test]
    fn x_should_retry_overrides_the_status() {
        assert!(!should_retry(500, &headers(&[("x-should-retry", "false")])));
        assert!(!should_retry(529, &headers(&[("x-should-retry", "false")])));
        assert!(should_retry(400, &headers(&[("x-should-retry", "true")])));
        // Anything else: the status decides.
        assert!(should_retry(503, &headers(&[("x-should-retry", "maybe")])));
        assert!(!should_retry(404, &headers(&[("x-should-retry", "")])));
    }

    #[test]
    fn retry_after_headers() {
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.25")])),
            Some(Duration::from_millis(250))
        );
        // `retry-after-ms` wins.
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "20"), ("retry-after", "9")])),
            Some(Duration::from_millis(20))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
        // A date in the past: retry now.
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Sun, 06 Nov 1994 08:49:37 GMT"
            )])),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn server_waits_are_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(0, Some(&headers(&[("retry-after", "3600")]))),
            MAX_RETRY_AFTER
        );
        assert_eq!(
            policy.delay(3, Some(&headers(&[("retry-after-ms", "120")]))),
            Duration::from_millis(120)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        // No jitter at random = 0; 25% off at random → 1.
        assert_eq!(policy.backoff(0, 0.0), Duration::from_millis(500));
        assert_eq!(policy.backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(policy.backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(policy.backoff(3, 0.0), Duration::from_secs(4));
        assert_eq!(policy.backoff(4, 0.0), Duration::from_secs(8));
        assert_eq!(policy.backoff(5, 0.0), Duration::from_secs(8));
        assert_eq!(policy.backoff(1000, 0.0), Duration::from_secs(8));
        assert_eq!(policy.backoff(0, 1.0), Duration::from_millis(375));
        for n in 0..20 {
            for _ in 0..50 {
                let d = policy.delay(n, None);
                let cap = (0.5 * 2f64.powi(n as i32)).min(8.0);
                assert!(d.as_secs_f64() <= cap + 1e-9, "{n}: {d:?}");
                assert!(d.as_secs_f64() >= cap * 0.75 - 1e-9, "{n}: {d:?}");
            }
        }
    }

    #[test]
    fn http_dates() {
        let d = http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(d.unix_timestamp(), 784111777);
        assert!(http_date("yesterday").is_none());
    }
}
