//! What the engine keeps, behind one trait: each session's events (its
//! inbox and its history), its record and its environment, and flushing.
//!
//! The local runtime implements it over its sled trees; a PostgreSQL state
//! can implement it with a table of events keyed by session and sequence.
//! The engine decides what goes in and when; a store only keeps it, and
//! must not interpret events.

use async_trait::async_trait;

use crate::api::event::Event;
use crate::api::{Environment, Result, Session};

/// A change to a session's record (its status, stats, usage).
pub type SessionChange = Box<dyn FnOnce(&mut Session) + Send>;

/// An event in a session's inbox, with the sequence number that orders it.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub seq: u64,
    pub event: Event,
}

/// Storage of sessions' events and records.
///
/// Two lists per session: the **inbox**, events users sent that the
/// session's worker has not processed yet (as accepted, `processed_at:
/// null`), and the **history**, in the order the worker processed or
/// emitted them. Sequence numbers grow across both and across restarts.
/// Only the engine's worker appends to the history.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The session's record; a `not_found` error once it is gone.
    async fn session(&self, id: &str) -> Result<Session>;

    /// Read-modify-write of the session's record, atomic against other
    /// writers of it; nothing happens when the session is gone.
    async fn update_session(&self, id: &str, change: SessionChange) -> Result<()>;

    /// An environment's record; `None` when it no longer exists.
    async fn environment(&self, id: &str) -> Result<Option<Environment>>;

    /// Adds accepted events to the end of the inbox, in order.
    async fn push_inbox(&self, session_id: &str, events: &[Event]) -> Result<()>;

    /// The inbox, oldest first.
    async fn inbox(&self, session_id: &str) -> Result<Vec<Queued>>;

    /// The oldest event of the inbox.
    async fn first_in_inbox(&self, session_id: &str) -> Result<Option<Queued>>;

    /// Removes an event from the inbox.
    async fn discard(&self, session_id: &str, seq: u64) -> Result<()>;

    /// Appends an event to the history.
    async fn append(&self, session_id: &str, event: &Event) -> Result<()>;

    /// Moves inbox event `seq` to the history as `event` (now processed):
    /// appended first, then removed from the inbox, so that at any moment
    /// it is in one or both; the engine drops such leftovers when it starts.
    async fn take(&self, session_id: &str, seq: u64, event: &Event) -> Result<()>;

    /// The whole history, oldest first.
    async fn history(&self, session_id: &str) -> Result<Vec<Event>>;

    /// Removes the session's inbox and history.
    async fn clear(&self, session_id: &str) -> Result<()>;

    /// Makes every write done before the call durable.
    async fn flush(&self) -> Result<()>;
}
