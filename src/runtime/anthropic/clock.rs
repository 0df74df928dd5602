//! The API server's clock relative to ours, from `date` headers: how far
//! back to look for what an earlier attempt of a request may have made.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, DATE};
use time::OffsetDateTime;

use crate::http::retry::http_date;

/// Slack on the server-clock estimate when a `date` header was seen.
pub(crate) const CLOCK_SLACK_KNOWN: Duration = Duration::from_secs(5);
/// Slack when the server's clock is unknown (the local clock is used).
pub(crate) const CLOCK_SLACK_UNKNOWN: Duration = Duration::from_secs(60);

/// The offset of the server's clock, once an answer told it.
#[derive(Debug, Default)]
pub(crate) struct ServerClock {
    offset_ms: AtomicI64,
    known: AtomicBool,
}

impl ServerClock {
    /// Learns the offset from an answer's `date` header, if it has one.
    pub fn observe(&self, headers: &HeaderMap) {
        let Some(date) = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(http_date)
        else {
            return;
        };
        let offset = date - OffsetDateTime::now_utc();
        self.offset_ms
            .store(offset.whole_milliseconds() as i64, Ordering::Relaxed);
        self.known.store(true, Ordering::Relaxed);
    }

    /// A time on the server's clock no later than `local` was there, with slack.
    pub fn not_before(&self, local: SystemTime) -> OffsetDateTime {
        let local = OffsetDateTime::from(local);
        if self.known.load(Ordering::Relaxed) {
            let offset = time::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed));
            local + offset - CLOCK_SLACK_KNOWN
        } else {
            local - CLOCK_SLACK_UNKNOWN
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::retry::tests::headers;

    #[test]
    fn server_clock_estimate() {
        let clock = ServerClock::default();
        let now = SystemTime::now();
        let unknown = clock.not_before(now);
        assert_eq!(
            (OffsetDateTime::from(now) - unknown).whole_seconds(),
            CLOCK_SLACK_UNKNOWN.as_secs() as i64
        );
        // A server an hour ahead.
        let ahead = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let date = ahead.format(&fmt).unwrap();
        clock.observe(&headers(&[("date", &date)]));
        let est = clock.not_before(now);
        let diff = (est - OffsetDateTime::from(now)).whole_seconds();
        assert!((3590..=3600).contains(&diff), "{diff}");
    }
}
