//! Session events of the local runtime in the state's trees (sled's or
//! PostgreSQL's): the engine's [`SessionStore`] over the runtime's trees,
//! and the pages of a session's history that `GET /v1/sessions/{id}/events`
//! lists.
//!
//! Two trees hold a session's events, both keyed by session id + big-endian
//! sequence (the database's `generate_id`, monotonic across restarts):
//!
//! * `local.inbox`: events users sent that the session's worker has not
//!   processed yet, as accepted (`processed_at: null`);
//! * `local.events`: the history, in the order the worker processed or
//!   emitted them. A user event moves from the inbox to the history (with its
//!   `processed_at`) when the worker processes it.
//!
//! Events pass through the [`Vault`] like records: a reply that quotes a
//! secret is stored with a placeholder in its place.
//!
//! Storage only: what goes in and when is the engine's to decide.

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::body::invalid;
use super::ids::timestamp;
use super::paging::{non_empty_cursor, page_limit, PAGE_PREFIX};
use super::store::{
    get_sealed, put_sealed, store_err, version_key, write_lock, ENVIRONMENTS_TREE, SESSIONS_TREE,
};
use super::vault::Vault;
use crate::api::event::Event;
use crate::api::{Environment, ListQuery, Page, Result, RuntimeError, Session};
use crate::db::{Db, Entries, Tree};
use crate::engine::{Queued, SessionChange, SessionStore};

pub(super) const EVENTS_TREE: &str = "local.events";
pub(super) const INBOX_TREE: &str = "local.inbox";
/// The trees of sessions' events: history, not records, so a backup of the
/// state leaves them out.
pub const HISTORY_TREES: [&str; 2] = [EVENTS_TREE, INBOX_TREE];

/// The trees the engine and the runtime share.
#[derive(Clone)]
pub(super) struct SessionTrees {
    db: Arc<dyn Db>,
    vault: Vault,
    flushes: Arc<Flushes>,
    events: Tree,
    inbox: Tree,
    sessions: Tree,
    environments: Tree,
}

impl SessionTrees {
    pub(super) fn open(db: &Arc<dyn Db>, vault: Vault) -> Result<Self> {
        Ok(SessionTrees {
            db: Arc::clone(db),
            vault,
            flushes: Arc::default(),
            events: db.open_tree(EVENTS_TREE).map_err(store_err)?,
            inbox: db.open_tree(INBOX_TREE).map_err(store_err)?,
            sessions: db.open_tree(SESSIONS_TREE).map_err(store_err)?,
            environments: db.open_tree(ENVIRONMENTS_TREE).map_err(store_err)?,
        })
    }

    fn key(&self, session_id: &str) -> Result<Vec<u8>> {
        let seq = self.db.generate_id().map_err(store_err)?;
        Ok(version_key(session_id, seq))
    }

    fn append_now(&self, session_id: &str, event: &Event) -> Result<()> {
        let key = self.key(session_id)?;
        self.events
            .insert(&key, &self.vault.encode(event)?)
            .map_err(store_err)?;
        Ok(())
    }

    /// A page of the history events `keep` accepts, oldest first (newest
    /// first when `descending`); the cursor is the last sequence returned.
    pub(super) fn page(
        &self,
        session_id: &str,
        query: &ListQuery,
        descending: bool,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Page<Value>> {
        let limit = page_limit(query)?;
        let cursor = match non_empty_cursor(query) {
            None => None,
            Some(cursor) => Some(
                cursor
                    .strip_prefix(PAGE_PREFIX)
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| invalid("`page`: invalid page cursor"))?,
            ),
        };
        let first = Bound::Included(version_key(session_id, 0));
        let last = Bound::Included(version_key(session_id, u64::MAX));
        let items: Entries<'_> = match (cursor, descending) {
            (None, descending) => self.events.range(first, last, descending),
            (Some(after), false) => {
                self.events
                    .range(Bound::Excluded(version_key(session_id, after)), last, false)
            }
            (Some(before), true) => self.events.range(
                first,
                Bound::Excluded(version_key(session_id, before)),
                true,
            ),
        };
        let mut data = Vec::new();
        let mut last_seq = None;
        let mut more = false;
        for item in items {
            let (key, bytes) = item.map_err(store_err)?;
            let event: Value = self.vault.decode(&bytes)?;
            if !keep(&event) {
                continue;
            }
            if data.len() == limit {
                more = true;
                break;
            }
            data.push(event);
            last_seq = Some(sequence(&key));
        }
        let next_page = match last_seq {
            Some(seq) if more => Some(format!("{PAGE_PREFIX}{seq}")),
            _ => None,
        };
        Ok(Page { data, next_page })
    }

    /// Makes every write done before the call durable (a backend whose
    /// writes are durable at once has nothing to do).
    ///
    /// sled 0.34's flushes can hang for good when several run at once
    /// (spacejam/sled#1308, fixed after its last release), so this
    /// runtime's flushes run one at a time in the whole process; the wait is
    /// short because one flush covers every write made before it started.
    pub(super) async fn flush_now(&self) -> Result<()> {
        if self.db.durable_writes() {
            return Ok(());
        }
        let ticket = self.flushes.requested.fetch_add(1, SeqCst) + 1;
        let turn = Arc::clone(&FLUSHING).lock_owned().await;
        if self.flushes.done.load(SeqCst) >= ticket {
            return Ok(());
        }
        let covered = self.flushes.requested.load(SeqCst);
        let db = self.db.clone();
        // The turn is held until the flush ends, even if this future is dropped.
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            db.flush()
        })
        .await
        .map_err(store_err)?
        .map_err(store_err)?;
        self.flushes.done.fetch_max(covered, SeqCst);
        Ok(())
    }
}

/// No group of writes here or anywhere in this runtime: in sled 0.34 they
/// take a process-wide lock that deadlocks with a concurrent flush. Hence
/// [`take`](SessionStore::take) is two steps, which the engine tolerates.
#[async_trait]
impl SessionStore for SessionTrees {
    async fn session(&self, id: &str) -> Result<Session> {
        self.vault
            .get(&self.sessions, id.as_bytes())?
            .ok_or_else(|| RuntimeError::not_found("session", id))
    }

    async fn update_session(&self, id: &str, change: SessionChange) -> Result<()> {
        let _guard = write_lock();
        // A change of status, stats or usage: no string to seal or resolve.
        let Some(mut session) = get_sealed::<Session>(&self.sessions, id.as_bytes())? else {
            return Ok(());
        };
        change(&mut session);
        session.updated_at = timestamp();
        put_sealed(&self.sessions, id, &session)
    }

    async fn environment(&self, id: &str) -> Result<Option<Environment>> {
        self.vault.get(&self.environments, id.as_bytes())
    }

    async fn push_inbox(&self, session_id: &str, events: &[Event]) -> Result<()> {
        for event in events {
            let key = self.key(session_id)?;
            self.inbox
                .insert(&key, &self.vault.encode(event)?)
                .map_err(store_err)?;
        }
        Ok(())
    }

    async fn inbox(&self, session_id: &str) -> Result<Vec<Queued>> {
        scan(&self.vault, &self.inbox, session_id)
            .map(|item| item.map(|(seq, event)| Queued { seq, event }))
            .collect()
    }

    async fn first_in_inbox(&self, session_id: &str) -> Result<Option<Queued>> {
        let first = scan(&self.vault, &self.inbox, session_id)
            .next()
            .transpose()?;
        Ok(first.map(|(seq, event)| Queued { seq, event }))
    }

    async fn discard(&self, session_id: &str, seq: u64) -> Result<()> {
        self.inbox
            .remove(&version_key(session_id, seq))
            .map_err(store_err)?;
        Ok(())
    }

    async fn append(&self, session_id: &str, event: &Event) -> Result<()> {
        self.append_now(session_id, event)
    }

    async fn take(&self, session_id: &str, seq: u64, event: &Event) -> Result<()> {
        self.append_now(session_id, event)?;
        self.inbox
            .remove(&version_key(session_id, seq))
            .map_err(store_err)?;
        Ok(())
    }

    async fn history(&self, session_id: &str) -> Result<Vec<Event>> {
        scan(&self.vault, &self.events, session_id)
            .map(|item| item.map(|(_, event)| event))
            .collect()
    }

    async fn clear(&self, session_id: &str) -> Result<()> {
        for tree in [&self.events, &self.inbox] {
            let keys: Vec<Vec<u8>> = tree
                .scan_prefix(session_id.as_bytes())
                .map(|item| item.map(|(key, _)| key).map_err(store_err))
                .collect::<Result<_>>()?;
            for key in keys {
                tree.remove(&key).map_err(store_err)?;
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.flush_now().await
    }
}

/// Whose turn it is to flush; see [`SessionTrees::flush_now`].
static FLUSHING: LazyLock<Arc<tokio::sync::Mutex<()>>> = LazyLock::new(Arc::default);

/// Flush requests of one Db, numbered; `done` is the last one a finished
/// flush covered.
#[derive(Default)]
struct Flushes {
    requested: AtomicU64,
    done: AtomicU64,
}

/// A session's entries of `tree` with their sequence numbers, oldest first.
fn scan<'a, T: DeserializeOwned>(
    vault: &'a Vault,
    tree: &'a Tree,
    session_id: &str,
) -> impl Iterator<Item = Result<(u64, T)>> + 'a {
    tree.scan_prefix(session_id.as_bytes()).map(move |item| {
        let (key, bytes) = item.map_err(store_err)?;
        Ok((sequence(&key), vault.decode(&bytes)?))
    })
}

fn sequence(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    if key.len() >= 8 {
        bytes.copy_from_slice(&key[key.len() - 8..]);
    }
    u64::from_be_bytes(bytes)
}
