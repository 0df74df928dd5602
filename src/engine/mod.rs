//! The agent loop and event hub: runs sessions over a model
//! ([`dyn Model`](crate::model::Model), given by a [`ModelResolver`]) and a
//! sandbox ([`dyn Sandbox`](crate::sandbox::Sandbox), opened by a
//! [`SandboxProvider`]), keeping their events in a [`SessionStore`].
//!
//! [`Engine`] is its public face: sending events to a session (checked in
//! `accept.rs`, queued in its inbox), subscribing to its live events
//! (`hub.rs`), closing an archived session's sandbox, forgetting a deleted
//! session, shutting down. One worker task
//! per busy session works through its inbox (`worker.rs`: its life,
//! interrupts, recovery after a restart), runs turns (`turn.rs`, asking the
//! model the conversation of `conversation.rs`) and tools (`tools.rs`),
//! tracking the tool uses that wait (`open_uses.rs`). Events are the typed
//! [`Event`]s of [`crate::api::event`].
//!
//! It must not know which model, sandbox or store it drives, nor the
//! runtimes above it: the local runtime hands it sessions and implements
//! its store; objects, their rules and listing stay there.

mod accept;
mod conversation;
mod hub;
mod open_uses;
pub mod store;
mod tools;
mod turn;
mod worker;

#[cfg(test)]
mod accept_tests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tools_tests;
#[cfg(test)]
mod turn_tests;
#[cfg(test)]
mod worker_tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::event::{Event, Marker};
use crate::api::ids::{new_id, timestamp, EVENT_PREFIX};
use crate::api::{Result, RuntimeError};
use crate::model::{Model, ModelError};
use crate::sandbox::{NoSandboxes, SandboxProvider};
use hub::Hub;
use open_uses::OpenUses;
use worker::Ctx;

pub use hub::Subscription;
pub use store::{Queued, SessionChange, SessionStore};

/// Tool calls past this are killed, unless [`EngineOptions::tool_deadline`]
/// says otherwise.
pub const DEFAULT_TOOL_DEADLINE: Duration = Duration::from_secs(120);

/// What the engine runs sessions with.
#[derive(Clone)]
pub struct EngineOptions {
    /// Where tools run: one sandbox per session. Without one, tool calls
    /// fail with a `session.error`.
    pub sandboxes: Arc<dyn SandboxProvider>,
    /// The model backend of an agent's model id; asked once per session.
    pub models: Arc<dyn ModelResolver>,
    /// How long one tool call may run.
    pub tool_deadline: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            sandboxes: Arc::new(NoSandboxes),
            models: Arc::new(NoModels),
            tool_deadline: DEFAULT_TOOL_DEADLINE,
        }
    }
}

/// Gives the model backend for an agent's model id (`model.id`). Called once
/// per session, when its loop first needs the model, so each session gets
/// its own instance if the resolver makes one per call.
pub trait ModelResolver: Send + Sync {
    fn resolve(&self, model_id: &str) -> Result<Arc<dyn Model>, ModelError>;
}

impl<F> ModelResolver for F
where
    F: Fn(&str) -> Result<Arc<dyn Model>, ModelError> + Send + Sync,
{
    fn resolve(&self, model_id: &str) -> Result<Arc<dyn Model>, ModelError> {
        self(model_id)
    }
}

/// The default resolver: no model is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModels;

impl ModelResolver for NoModels {
    fn resolve(&self, model_id: &str) -> Result<Arc<dyn Model>, ModelError> {
        Err(ModelError::Config(format!(
            "no model backend is configured for model `{model_id}`; declare one under \
             `providers.local.models`"
        )))
    }
}

/// The sessions of one store, run: their workers and live channels.
pub struct Engine {
    ctx: Ctx,
    hub: Hub,
}

impl Drop for Engine {
    /// Workers stop with their engine; a turn they leave running carries on
    /// when the session is next used.
    fn drop(&mut self) {
        for worker in self.hub.take_workers() {
            worker.abort();
        }
    }
}

impl Engine {
    pub fn new(store: Arc<dyn SessionStore>, options: EngineOptions) -> Self {
        Engine {
            ctx: Ctx { store, options },
            hub: Hub::default(),
        }
    }

    /// `POST /v1/sessions/{id}/events`: checks `params` against the session
    /// as it will be once its inbox is processed, queues them, and starts
    /// the session's worker; the events as accepted (with ids, not
    /// processed). Nothing is queued when one of them is refused.
    pub async fn send(&self, session_id: &str, params: &[Value]) -> Result<Vec<Event>> {
        let store = &self.ctx.store;
        store.session(session_id).await?;
        let slot = self.hub.slot(store.as_ref(), session_id).await?;
        let _gate = slot.gate.lock().await;
        // Checked again behind the gate, which deletion passes too.
        let session = store.session(session_id).await?;
        if slot.state().deleted {
            return Err(RuntimeError::not_found("session", session_id));
        }
        if session.archived_at.is_some() {
            return Err(RuntimeError::invalid(format!(
                "session `{session_id}` is archived"
            )));
        }
        // The inbox first: an event the worker moves meanwhile is then in
        // both (and counted once) rather than in neither.
        let inbox = store.inbox(session_id).await?;
        let history = store.history(session_id).await?;
        let processed: HashSet<&str> = history.iter().map(Event::id).collect();
        let unprocessed = inbox
            .iter()
            .map(|queued| &queued.event)
            .filter(|e| !processed.contains(e.id()));
        let open = OpenUses::replay(history.iter().chain(unprocessed));
        let accepted = accept::accept(params, open)?;
        store.push_inbox(session_id, &accepted).await?;
        let interrupts = accepted
            .iter()
            .filter(|e| matches!(e, Event::UserInterrupt(_)))
            .count() as u64;
        if interrupts > 0 {
            slot.interrupts.send_modify(|n| *n += interrupts);
        }
        worker::ensure(&self.ctx, &slot, &mut slot.state());
        Ok(accepted)
    }

    /// `GET /v1/sessions/{id}/events/stream`: the session's events from now
    /// on. A turn a stopped process left running carries on.
    pub async fn subscribe(&self, session_id: &str) -> Result<Subscription> {
        let session = self.ctx.store.session(session_id).await?;
        let slot = self.hub.slot(self.ctx.store.as_ref(), session_id).await?;
        let mut state = slot.state();
        if state.deleted {
            return Err(RuntimeError::not_found("session", session_id));
        }
        let subscription = Subscription::new(slot.subscribe());
        if session.status == "running" {
            worker::ensure(&self.ctx, &slot, &mut state);
        }
        Ok(subscription)
    }

    /// After the session's record is gone: stops its worker, ends its
    /// streams (with `session.deleted`), removes its events and its sandbox.
    pub async fn forget(&self, session_id: &str) -> Result<()> {
        let slot = self.hub.slot(self.ctx.store.as_ref(), session_id).await?;
        let worker = {
            let _gate = slot.gate.lock().await;
            let mut state = slot.state();
            state.deleted = true;
            state.worker.take()
        };
        if let Some(worker) = worker {
            worker.abort();
            let _ = worker.await;
        }
        self.ctx.store.clear(session_id).await?;
        tools::remove_sandbox(&slot, self.ctx.options.sandboxes.as_ref()).await;
        self.hub.remove(session_id);
        slot.broadcast(Event::SessionDeleted(Marker {
            id: new_id(EVENT_PREFIX),
            processed_at: timestamp(),
        }));
        Ok(())
    }

    /// After the session's record was archived: tells the sandbox
    /// provider (the local workspace is kept, an E2B sandbox is killed),
    /// then drops the session's live state unless its worker still runs
    /// (it holds a stream buffer, and a long-lived engine archives many).
    /// A provider's failure is logged: the archive stands, and the sandbox
    /// ends at its own timeout.
    pub async fn archived(&self, session_id: &str) {
        if let Err(e) = self.ctx.options.sandboxes.archive(session_id).await {
            tracing::warn!(
                session = session_id,
                "closing the archived session's sandbox: {e}"
            );
        }
        self.hub.release_idle(session_id);
    }

    /// Stops every worker and waits until they are gone (so nothing holds
    /// the store any more). A turn that was running is carried on when its
    /// session is next sent to or subscribed to.
    pub async fn shutdown(&self) {
        for worker in self.hub.take_workers() {
            worker.abort();
            let _ = worker.await;
        }
    }
}
