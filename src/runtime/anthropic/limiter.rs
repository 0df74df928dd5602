//! Client-side rate limiting, so a big plan stays under the API's limits
//! instead of living on 429s: a token bucket per request class, plus a cap
//! on concurrent environment requests.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Request budgets. `None` means unlimited; a rate of 0 counts as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute to `/v1/environments…`.
    pub environments_per_minute: Option<u32>,
    /// Environment requests in flight at once.
    pub environments_concurrency: Option<usize>,
    /// Creating `POST`s (`/v1/agents`, `/v1/environments`, `/v1/sessions`) per minute.
    pub creates_per_minute: Option<u32>,
    /// Every other request, per minute.
    pub other_per_minute: Option<u32>,
}

impl Default for RateLimits {
    /// The documented Managed Agents limits.
    fn default() -> Self {
        RateLimits {
            environments_per_minute: Some(60),
            environments_concurrency: Some(5),
            creates_per_minute: Some(300),
            other_per_minute: Some(600),
        }
    }
}

impl RateLimits {
    /// No client-side limits at all (tests, benchmarks, local servers).
    pub const fn unlimited() -> Self {
        RateLimits {
            environments_per_minute: None,
            environments_concurrency: None,
            creates_per_minute: None,
            other_per_minute: None,
        }
    }
}

/// What a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestClass {
    /// Under `/v1/environments`.
    pub environment: bool,
    /// A `POST` that creates an object.
    pub create: bool,
}

/// A token bucket holding up to a minute's budget, refilled continuously.
/// Tokens may be taken ahead of time (the level goes negative); the taker
/// then waits until its token has been refilled, so waiters are served in
/// order without polling.
#[derive(Debug)]
pub(crate) struct Bucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(per_minute: u32, now: Instant) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Bucket {
            per_second: capacity / 60.0,
            capacity,
            tokens: capacity,
            updated: now,
        }
    }

    /// Takes one token; returns how long to wait before using it.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        if now > self.updated {
            let elapsed = (now - self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
            self.updated = now;
        }
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

/// The buckets and the environment slots of one client.
#[derive(Debug)]
pub(crate) struct Limiter {
    environments: Option<Mutex<Bucket>>,
    creates: Option<Mutex<Bucket>>,
    other: Option<Mutex<Bucket>>,
    environment_slots: Option<Arc<Semaphore>>,
}

/// Held while a request is in flight.
#[derive(Debug)]
pub(crate) struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        let now = Instant::now();
        let bucket = |rate: Option<u32>| rate.map(|r| Mutex::new(Bucket::new(r, now)));
        Limiter {
            environments: bucket(limits.environments_per_minute),
            creates: bucket(limits.creates_per_minute),
            other: bucket(limits.other_per_minute),
            environment_slots: limits
                .environments_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
        }
    }

    /// Takes a token from every bucket the request counts against; returns
    /// the longest wait among them.
    pub fn reserve(&self, class: RequestClass, now: Instant) -> Duration {
        let mut buckets = Vec::with_capacity(2);
        if class.environment {
            buckets.push(&self.environments);
        }
        if class.create {
            buckets.push(&self.creates);
        }
        if buckets.is_empty() {
            buckets.push(&self.other);
        }
        buckets
            .into_iter()
            .flatten()
            .map(|b| {
                b.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .reserve(now)
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Waits for the budget, then for an environment slot when needed.
    pub async fn acquire(&self, class: RequestClass) -> Permit {
        let wait = self.reserve(class, Instant::now());
        if !wait.is_zero() {
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "client-side rate limit: waiting"
            );
            tokio::time::sleep(wait).await;
        }
        let slot = match (&self.environment_slots, class.environment) {
            // The semaphore is never closed.
            (Some(slots), true) => slots.clone().acquire_owned().await.ok(),
            _ => None,
        };
        Permit { _slot: slot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    const ENV: RequestClass = RequestClass {
        environment: true,
        create: false,
    };
    const ENV_CREATE: RequestClass = RequestClass {
        environment: true,
        create: true,
    };
    const CREATE: RequestClass = RequestClass {
        environment: false,
        create: true,
    };
    const OTHER: RequestClass = RequestClass {
        environment: false,
        create: false,
    };

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn close(a: Duration, b: Duration) -> bool {
        (a.as_secs_f64() - b.as_secs_f64()).abs() < 1e-6
    }

    #[test]
    fn a_burst_beyond_the_budget_waits_in_order() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(60, t0);
        for _ in 0..60 {
            assert_eq!(bucket.reserve(t0), Duration::ZERO);
        }
        // 60/min refills one token a second; each extra caller gets the next one.
        assert!(close(bucket.reserve(t0), secs(1.0)));
        assert!(close(bucket.reserve(t0), secs(2.0)));
        assert!(close(bucket.reserve(t0), secs(3.0)));
        // Ten seconds later seven tokens are back (three were promised).
        let t1 = t0 + secs(10.0);
        for _ in 0..7 {
            assert_eq!(bucket.reserve(t1), Duration::ZERO);
        }
        assert!(close(bucket.reserve(t1), secs(1.0)));
    }

    #[test]
    fn refill_stops_at_a_minute_of_budget() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(300, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..300 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert!(close(bucket.reserve(later), secs(0.2)));
    }

    #[test]
    fn an_earlier_instant_does_not_refill() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut bucket = Bucket::new(1, t1);
        assert_eq!(bucket.reserve(t1), Duration::ZERO);
        assert!(close(bucket.reserve(t0), secs(60.0)));
    }

    #[test]
    fn classes_count_against_their_buckets() {
        let limits = RateLimits {
            environments_per_minute: Some(2),
            environments_concurrency: Some(5),
            creates_per_minute: Some(3),
            other_per_minute: Some(4),
        };
        let limiter = Limiter::new(limits);
        let now = Instant::now();
        // An environment create spends an environment and a create token.
        assert_eq!(limiter.reserve(ENV_CREATE, now), Duration::ZERO);
        assert_eq!(limiter.reserve(ENV, now), Duration::ZERO);
        assert!(limiter.reserve(ENV, now) > Duration::ZERO);
        assert_eq!(limiter.reserve(CREATE, now), Duration::ZERO);
        assert_eq!(limiter.reserve(CREATE, now), Duration::ZERO);
        // 3/min: the next create waits 20 s.
        assert!(close(limiter.reserve(CREATE, now), secs(20.0)));
        // Everything else is untouched by all that.
        for _ in 0..4 {
            assert_eq!(limiter.reserve(OTHER, now), Duration::ZERO);
        }
        assert!(close(limiter.reserve(OTHER, now), secs(15.0)));
    }

    #[test]
    fn unlimited_never_waits() {
        let limiter = Limiter::new(RateLimits::unlimited());
        let now = Instant::now();
        for class in [ENV, ENV_CREATE, CREATE, OTHER] {
            for _ in 0..10_000 {
                assert_eq!(limiter.reserve(class, now), Duration::ZERO);
            }
        }
    }

    #[test]
    fn defaults_are_the_documented_limits() {
        let d = RateLimits::default();
        assert_eq!(d.environments_per_minute, Some(60));
        assert_eq!(d.environments_concurrency, Some(5));
        assert_eq!(d.creates_per_minute, Some(300));
        assert_eq!(d.other_per_minute, Some(600));
    }

    #[tokio::test]
    async fn environment_requests_are_capped_in_flight() {
        let limits = RateLimits {
            environments_concurrency: Some(2),
            ..RateLimits::unlimited()
        };
        let limiter = Limiter::new(limits);
        let a = limiter.acquire(ENV).await;
        let b = limiter.acquire(ENV).await;
        let slots = limiter.environment_slots.clone().unwrap();
        assert_eq!(slots.available_permits(), 0);
        // Other requests do not need a slot.
        let _other = limiter.acquire(OTHER).await;
        let third = limiter.acquire(ENV);
        tokio::pin!(third);
        assert!(third.as_mut().now_or_never().is_none());
        drop(a);
        let _c = third.await;
        drop(b);
        assert_eq!(slots.available_permits(), 1);
    }
}
