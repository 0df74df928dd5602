//! A session's live side, as the runtime drives it: sending events to its
//! worker, opening its stream, and forgetting it once its record is gone.
//!
//! The bridge between the records (`store.rs`, `rules/`) and the events
//! and workers (`events.rs`, `agent_loop.rs`); no API rule lives here.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::body::invalid;
use super::events::{self, LiveEvents, OpenUses, EVENT_PREFIX};
use super::ids::{new_id, timestamp};
use super::{agent_loop, LocalRuntime};
use crate::api::{event, Result, RuntimeError};
use crate::runtime::EventStream;

impl LocalRuntime {
    pub(super) fn send_events_now(&self, session_id: &str, params: &[Value]) -> Result<Vec<Value>> {
        self.records.session(session_id)?;
        let slot = self.hub.slot(&self.store, session_id)?;
        let mut state = slot.state();
        // Checked again under the slot lock, which deletion takes too.
        let session = self.records.session(session_id)?;
        if state.deleted {
            return Err(RuntimeError::not_found("session", session_id));
        }
        if session.archived_at.is_some() {
            return Err(invalid(format!("session `{session_id}` is archived")));
        }
        // The inbox first: an event the worker moves meanwhile is then in
        // both (and counted once) rather than in neither.
        let inbox = self.store.inbox(session_id)?;
        let history = self.store.history(session_id)?;
        let processed: HashSet<&str> = history.iter().map(event::id).collect();
        let unprocessed = inbox
            .iter()
            .map(|(_, e)| e)
            .filter(|e| !processed.contains(event::id(e)));
        let open = OpenUses::replay(history.iter().chain(unprocessed));
        let accepted = events::accept(params, open)?;
        self.store.push_inbox(session_id, &accepted)?;
        let interrupts = accepted
            .iter()
            .filter(|e| event::kind(e) == "user.interrupt")
            .count() as u64;
        if interrupts > 0 {
            slot.interrupts.send_modify(|n| *n += interrupts);
        }
        agent_loop::ensure_worker(&self.ctx(), &slot, &mut state);
        Ok(accepted)
    }

    pub(super) fn stream_events_now(&self, session_id: &str) -> Result<EventStream> {
        let session = self.records.session(session_id)?;
        let slot = self.hub.slot(&self.store, session_id)?;
        let mut state = slot.state();
        if state.deleted {
            return Err(RuntimeError::not_found("session", session_id));
        }
        let rx = slot.subscribe();
        // A turn a stopped process left running carries on.
        if session.status == "running" {
            agent_loop::ensure_worker(&self.ctx(), &slot, &mut state);
        }
        Ok(EventStream::new(LiveEvents {
            rx,
            ended: false,
            drop_after: self.options.drop_stream_after,
        }))
    }

    /// After the session record is gone: stops its worker, ends its streams,
    /// removes its events and its workspace.
    pub(super) async fn forget_session(&self, id: &str) -> Result<()> {
        let slot = self.hub.slot(&self.store, id)?;
        let worker = {
            let mut state = slot.state();
            state.deleted = true;
            state.worker.take()
        };
        if let Some(worker) = worker {
            worker.abort();
            let _ = worker.await;
        }
        self.store.clear(id)?;
        agent_loop::remove_workspace(&slot, self.options.sandboxes.as_ref()).await;
        self.hub.remove(id);
        slot.broadcast(json!({
            "id": new_id(EVENT_PREFIX),
            "type": "session.deleted",
            "processed_at": timestamp(),
        }));
        Ok(())
    }
}
