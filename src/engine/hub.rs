//! The live side of sessions: per session a [`Slot`] (its broadcast
//! channel, its worker's handle, its pending interrupts and what its
//! workers reuse), the [`Hub`] of slots, and [`Subscription`], one live
//! stream.
//!
//! Nothing here reads events for meaning beyond ending a stream at
//! `session.deleted`; an event must be stored before it is broadcast.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::store::SessionStore;
use crate::api::event::Event;
use crate::api::{ErrorKind, Result, RuntimeError};
use crate::model::Model;
use crate::sandbox::Sandbox;

/// Events a live stream may fall behind by before it breaks.
const STREAM_CAPACITY: usize = 256;

/// What the engine keeps in memory for a session.
pub(super) struct Slot {
    pub(super) id: String,
    /// Shared events: a channel preallocates its capacity per session, and
    /// every receiver gets a copy, so a pointer keeps both small.
    events: broadcast::Sender<Arc<Event>>,
    /// `user.interrupt` events waiting in the inbox; the worker cancels what
    /// it is doing while this is above zero.
    pub(super) interrupts: watch::Sender<u64>,
    /// Passed by whatever reads the inbox to change it or to decide on it:
    /// sending, the worker taking its next event or deciding to stop, and
    /// deletion. Held across store calls, so it is async; [`Slot::state`]
    /// is only ever held briefly inside it.
    pub(super) gate: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
    /// Resolved once per session, when its loop first needs it.
    pub(super) model: tokio::sync::Mutex<Option<Arc<dyn Model>>>,
    /// Opened before the session's first tool call.
    pub(super) sandbox: tokio::sync::Mutex<Option<Arc<dyn Sandbox>>>,
}

#[derive(Default)]
pub(super) struct SlotState {
    pub(super) worker: Option<JoinHandle<()>>,
    pub(super) deleted: bool,
}

impl Slot {
    fn new(id: &str, pending_interrupts: u64) -> Self {
        Slot {
            id: id.to_owned(),
            events: broadcast::channel(STREAM_CAPACITY).0,
            interrupts: watch::channel(pending_interrupts).0,
            gate: tokio::sync::Mutex::new(()),
            state: Mutex::new(SlotState::default()),
            model: tokio::sync::Mutex::new(None),
            sandbox: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding it cannot leave the handle or flag half-set.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends to the live streams; an event must be persisted first.
    pub(super) fn broadcast(&self, event: Event) {
        // No receivers is fine: nobody is streaming.
        let _ = self.events.send(Arc::new(event));
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }
}

/// The slots of the sessions this engine has touched.
#[derive(Default)]
pub(super) struct Hub {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Hub {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn slot(&self, store: &dyn SessionStore, id: &str) -> Result<Arc<Slot>> {
        let existing = self.slots().get(id).cloned();
        if let Some(slot) = existing {
            return Ok(slot);
        }
        let interrupts = store
            .inbox(id)
            .await?
            .iter()
            .filter(|queued| matches!(queued.event, Event::UserInterrupt(_)))
            .count() as u64;
        let mut slots = self.slots();
        let slot = slots
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Slot::new(id, interrupts)));
        Ok(Arc::clone(slot))
    }

    /// Drops a slot unless its worker still runs.
    pub(super) fn release_idle(&self, id: &str) {
        let mut slots = self.slots();
        let idle = slots
            .get(id)
            .is_some_and(|slot| slot.state().worker.as_ref().is_none_or(|w| w.is_finished()));
        if idle {
            slots.remove(id);
        }
    }

    pub(super) fn remove(&self, id: &str) {
        self.slots().remove(id);
    }

    /// Takes every worker's handle, so none is started behind our back until
    /// a new event arrives.
    pub(super) fn take_workers(&self) -> Vec<JoinHandle<()>> {
        self.slots()
            .values()
            .filter_map(|slot| slot.state().worker.take())
            .collect()
    }
}

/// A live stream of one session's events; nothing is replayed.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    ended: bool,
}

impl Subscription {
    pub(super) fn new(rx: broadcast::Receiver<Arc<Event>>) -> Self {
        Subscription { rx, ended: false }
    }

    /// The next event; `None` once the session is deleted or the engine is
    /// gone; an error when this stream fell too far behind and lost events
    /// (the caller reconnects and merges the history).
    pub async fn next(&mut self) -> Option<Result<Arc<Event>>> {
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
            Ok(event) => {
                if matches!(*event, Event::SessionDeleted(_)) {
                    self.ended = true;
                }
                Some(Ok(event))
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Err(RuntimeError::new(
                ErrorKind::Transport,
                format!(
                    "the event stream fell {missed} events behind and lost them; reconnect and \
                     merge the history (list the session's events)"
                ),
            ))),
            Err(broadcast::error::RecvError::Closed) => {
                self.ended = true;
                None
            }
        }
    }
}
