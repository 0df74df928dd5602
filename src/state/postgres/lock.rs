//! The state's lock in PostgreSQL: a session-level advisory lock, which the
//! server releases when the holder's connection ends (a killed process
//! never leaves it stuck), and who holds it in `lock_holder`, so that a
//! refusal names the process, its host and its command as a directory's
//! lock does.
//!
//! Each schema has its own lock: projects sharing a database do not wait
//! for each other.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::connect::{classify, Target};
use crate::state::StateError;

/// The first half of every agentform lock's key ("agfm").
const LOCK_CLASS: i32 = 0x6167_666d;
/// How often a waiting process tries the lock again.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Who takes the lock.
pub(crate) struct Holder {
    pid: i32,
    host: String,
    command: String,
    since: String,
}

impl Holder {
    pub(crate) fn of_this_process(command: &str) -> Holder {
        Holder {
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
            host: host_name(),
            command: format!("agentform {command}"),
            since: crate::state::now(),
        }
    }
}

/// This machine's name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".to_string())
}

/// The second half of the key: the schema's name, hashed (FNV-1a).
fn schema_key(schema: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in schema.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

/// The lock's two keys for the state in `schema`.
pub(super) fn key_of(schema: &str) -> (i32, i32) {
    (LOCK_CLASS, schema_key(schema))
}

/// Lets go of the lock (the server would on disconnect, but only once it
/// has noticed: the next command may come sooner).
pub(super) async fn release(client: &Client, (class, key): (i32, i32)) {
    let _ = client
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&class, &key])
        .await;
}

/// Takes the lock, waiting up to `timeout`; refused, with who holds it.
pub(super) async fn acquire(
    client: &Client,
    target: &Target,
    timeout: Duration,
) -> Result<(), StateError> {
    let started = Instant::now();
    let key = schema_key(&target.url.schema);
    loop {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_CLASS, &key])
            .await
            .map_err(|e| classify(target, &e, "taking the state's lock"))?
            .get(0);
        if got {
            return Ok(());
        }
        if started.elapsed() + RETRY_EVERY > timeout {
            break;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
    let (pid, host, holder_text) = match read_holder(client).await {
        Some((pid, host, command, since)) => (
            pid.to_string(),
            Some(host),
            format!("`{command}`, since {since}"),
        ),
        None => ("unknown".to_string(), None, "`agentform`".to_string()),
    };
    Err(StateError::Locked {
        location: target.url.to_string(),
        pid,
        host,
        holder: holder_text,
        waited: (!timeout.is_zero()).then_some(timeout),
    })
}

/// The holder recorded, if the table exists and has one.
async fn read_holder(client: &Client) -> Option<(i32, String, String, String)> {
    let exists: bool = client
        .query_one("SELECT to_regclass('lock_holder') IS NOT NULL", &[])
        .await
        .ok()?
        .get(0);
    if !exists {
        return None;
    }
    let row = client
        .query_opt(
            "SELECT pid, host, command, since FROM lock_holder WHERE id = 1",
            &[],
        )
        .await
        .ok()??;
    Some((row.get(0), row.get(1), row.get(2), row.get(3)))
}

/// Records this process as the holder (the lock is held).
pub(super) async fn record(client: &Client, holder: &Holder) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO lock_holder (id, pid, host, command, since) VALUES (1, $1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, \
             command = EXCLUDED.command, since = EXCLUDED.since",
            &[&holder.pid, &holder.host, &holder.command, &holder.since],
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_have_different_keys() {
        assert_ne!(schema_key("agentform"), schema_key("project_b"));
        assert_eq!(schema_key("agentform"), schema_key("agentform"));
    }
}
