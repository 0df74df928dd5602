//! Ids and timestamps in the API's formats, minted for the objects and
//! events agentform makes itself (the local runtime, the engine).
//!
//! Ids are `<prefix>_01…` in base62, sortable by creation within a process,
//! so a tree keyed by id lists oldest first. Nothing here reads a store.

use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

pub const AGENT_PREFIX: &str = "agent";
pub const ENVIRONMENT_PREFIX: &str = "env";
pub const SESSION_PREFIX: &str = "sesn";
pub const RESOURCE_PREFIX: &str = "sres";
pub const EVENT_PREFIX: &str = "sevt";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_TIME_CHARS: usize = 11;
const ID_COUNTER_CHARS: usize = 3;
const ID_RANDOM_CHARS: usize = 8;
/// The part after `<prefix>_`: "01", time, counter, random.
const ID_BODY_LEN: usize = 2 + ID_TIME_CHARS + ID_COUNTER_CHARS + ID_RANDOM_CHARS;
const COUNTER_SPAN: u32 = 62 * 62 * 62;

/// The (millisecond, counter) of the last id made in this process.
static ID_CLOCK: Mutex<(u64, u32)> = Mutex::new((0, 0));

/// `<prefix>_01…`: base62 in ASCII order, so ids made later in this process
/// sort after earlier ones, even within a millisecond or if the clock steps
/// back.
pub fn new_id(prefix: &str) -> String {
    let now_ms = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or_default();
    let (ms, counter) = {
        let mut clock = ID_CLOCK.lock().unwrap_or_else(PoisonError::into_inner);
        if now_ms > clock.0 {
            *clock = (now_ms, 0);
        } else if clock.1 + 1 < COUNTER_SPAN {
            clock.1 += 1;
        } else {
            *clock = (clock.0 + 1, 0);
        }
        *clock
    };
    let mut id = format!("{prefix}_01");
    push_base62(&mut id, ms, ID_TIME_CHARS);
    push_base62(&mut id, u64::from(counter), ID_COUNTER_CHARS);
    for _ in 0..ID_RANDOM_CHARS {
        id.push(char::from(BASE62[fastrand::usize(..BASE62.len())]));
    }
    id
}

fn push_base62(out: &mut String, mut n: u64, width: usize) {
    let mut digits = vec![b'0'; width];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.extend(digits.into_iter().map(char::from));
}

pub fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| {
            body.len() == ID_BODY_LEN
                && body.starts_with("01")
                && body.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-04-01T12:00:00.123456Z`.
pub fn timestamp() -> String {
    let now = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fixed_width_and_sorted() {
        let ids: Vec<String> = (0..500).map(|_| new_id(AGENT_PREFIX)).collect();
        for id in &ids {
            assert!(is_id(id, AGENT_PREFIX), "{id}");
            assert!(id.starts_with("agent_01"));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(!is_id("agent_01", AGENT_PREFIX));
        assert!(!is_id(&new_id(SESSION_PREFIX), AGENT_PREFIX));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = timestamp();
        assert!(ts.ends_with('Z'), "{ts}");
        let format = time::format_description::well_known::Rfc3339;
        assert!(OffsetDateTime::parse(&ts, &format).is_ok(), "{ts}");
    }
}
