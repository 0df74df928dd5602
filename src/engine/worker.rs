//! The per-session worker: one task per session that has something to do.
//!
//! A worker is started when events arrive for a session that has none,
//! works through the session's inbox and ends when the inbox is empty, the
//! session being idle. Everything it needs is rebuilt from the stored
//! events when it starts, so a session carries on after a restart (see
//! [`Worker::recover`]); what it reuses across workers (the resolved model
//! and the sandbox) lives in the session's [`Slot`].
//!
//! Here: the worker's life, how it processes each inbox event, how events
//! are recorded and the session's record kept current, and interrupts. A
//! turn's model calls are in `turn.rs`, tools in `tools.rs`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::hub::{Slot, SlotState};
use super::open_uses::{OpenUses, UseState};
use super::store::{Queued, SessionStore};
use super::EngineOptions;
use crate::api::event::{Event, Marker, StopReason};
use crate::api::ids::{new_id, timestamp, EVENT_PREFIX};
use crate::api::session::CacheCreationUsage;
use crate::api::{Result, Session, Usage};

/// What every worker of an engine shares.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) options: EngineOptions,
}

/// Starts the session's worker unless one is running.
pub(super) fn ensure(ctx: &Ctx, slot: &Arc<Slot>, state: &mut SlotState) {
    if state.deleted || state.worker.as_ref().is_some_and(|h| !h.is_finished()) {
        return;
    }
    let ctx = ctx.clone();
    let worker_slot = Arc::clone(slot);
    state.worker = Some(tokio::spawn(async move {
        if let Err(e) = Worker::run(ctx, &worker_slot).await {
            tracing::error!(session = %worker_slot.id, "the session's worker stopped: {e}");
            // The next event starts a new one.
            worker_slot.state().worker = None;
        }
    }));
}

/// Work a stopped process left half done; see [`Worker::leftover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftover {
    Nothing,
    /// A turn to carry on; `running` if its status event was emitted.
    Turn {
        running: bool,
    },
    /// An interrupt whose turn end was not emitted.
    Interrupt,
    /// Confirmations or custom tool results not acted on.
    Resolved,
}

/// Whether `e` resolves a tool use waiting in `open`.
fn resolves(open: &OpenUses, e: &Event) -> bool {
    let (id, state) = match e {
        Event::UserToolConfirmation(c) => (&c.tool_use_id, UseState::Ask),
        Event::UserCustomToolResult(r) => (&r.custom_tool_use_id, UseState::Custom),
        _ => return false,
    };
    open.get(id).is_some_and(|u| u.state == state)
}

fn is_resolution(event: &Event) -> bool {
    matches!(
        event,
        Event::UserToolConfirmation(_) | Event::UserCustomToolResult(_)
    )
}

/// How a tool use, or the model's answer, ended the wait for it.
pub(super) enum Step<T> {
    Done(T),
    Interrupted,
}

pub(super) struct Worker {
    pub(super) ctx: Ctx,
    pub(super) slot: Arc<Slot>,
    pub(super) session: Session,
    pub(super) history: Vec<Event>,
    pub(super) open: OpenUses,
    /// Since when the session has been running, for `stats.active_seconds`.
    running_since: Option<Instant>,
}

impl Worker {
    async fn run(ctx: Ctx, slot: &Arc<Slot>) -> Result<()> {
        let session = match ctx.store.session(&slot.id).await {
            Ok(session) => session,
            Err(e) if e.is_not_found() => {
                slot.state().worker = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let history = ctx.store.history(&slot.id).await?;
        drop_processed(ctx.store.as_ref(), &slot.id, &history).await?;
        let mut worker = Worker {
            open: OpenUses::replay(&history),
            ctx,
            slot: Arc::clone(slot),
            session,
            history,
            running_since: None,
        };
        worker.recover().await?;
        loop {
            match worker.next_in_inbox().await? {
                Some(queued) => worker.handle(queued).await?,
                None => {
                    // Behind the gate, so an event sent now either is seen
                    // here or finds no worker and starts one.
                    let _gate = slot.gate.lock().await;
                    if worker.ctx.store.first_in_inbox(&slot.id).await?.is_none() {
                        slot.state().worker = None;
                        return Ok(());
                    }
                }
            }
        }
    }

    pub(super) fn id(&self) -> &str {
        &self.slot.id
    }

    /// The oldest unprocessed event; behind the gate, so the events of one
    /// `send` are seen all together.
    async fn next_in_inbox(&self) -> Result<Option<Queued>> {
        let _gate = self.slot.gate.lock().await;
        self.ctx.store.first_in_inbox(self.id()).await
    }

    // ----- events -------------------------------------------------------------------

    /// Processes one event from the inbox.
    async fn handle(&mut self, queued: Queued) -> Result<()> {
        match &queued.event {
            Event::UserMessage(_) => {
                self.take(queued).await?;
                self.running().await?;
                self.drive().await
            }
            Event::UserInterrupt(_) => {
                let was_waiting = !self.open.is_empty();
                self.take(queued).await?;
                if was_waiting {
                    self.idle(StopReason::EndTurn).await?;
                }
                Ok(())
            }
            Event::UserToolConfirmation(_) | Event::UserCustomToolResult(_) => {
                let mut changed = self.resolve(queued).await?;
                // Resolutions sent together are answered together.
                while let Some(queued) = self.next_in_inbox().await? {
                    if !is_resolution(&queued.event) {
                        break;
                    }
                    changed |= self.resolve(queued).await?;
                }
                if !changed {
                    return Ok(());
                }
                let waiting = self.open.waiting();
                let runnable = self.open.in_state(UseState::Allowed).next().is_some();
                if runnable || waiting.is_empty() {
                    self.running().await?;
                    self.drive().await
                } else {
                    self.requires_action(waiting).await
                }
            }
            // Nothing else is accepted; record it so the inbox moves on.
            _ => self.take(queued).await,
        }
    }

    /// Applies a confirmation or custom tool result; whether it resolved a
    /// tool use that was waiting (it may have been dropped since it was sent).
    async fn resolve(&mut self, queued: Queued) -> Result<bool> {
        let id = match &queued.event {
            Event::UserToolConfirmation(c) => c.tool_use_id.clone(),
            Event::UserCustomToolResult(r) => r.custom_tool_use_id.clone(),
            _ => String::new(),
        };
        let live = resolves(&self.open, &queued.event);
        self.take(queued).await?;
        if let Some(denied) = self.open.get(&id).filter(|u| u.state == UseState::Denied) {
            let message = denied
                .deny_message
                .clone()
                .unwrap_or_else(|| "denied by the user".to_owned());
            self.tool_result(&id, &message, true).await?;
        }
        Ok(live)
    }

    /// Moves an inbox event to the history, processed now, and streams it.
    async fn take(&mut self, queued: Queued) -> Result<()> {
        let Queued { seq, mut event } = queued;
        event.set_processed_at(timestamp());
        if matches!(event, Event::UserInterrupt(_)) {
            // With the count, behind the gate `send` counts behind.
            let _gate = self.slot.gate.lock().await;
            self.ctx.store.take(self.id(), seq, &event).await?;
            self.slot
                .interrupts
                .send_modify(|n| *n = n.saturating_sub(1));
        } else {
            self.ctx.store.take(self.id(), seq, &event).await?;
        }
        self.record(event).await
    }

    /// Emits a new event, made by `make` from its id and time; its id.
    pub(super) async fn emit(
        &mut self,
        make: impl FnOnce(String, String) -> Event,
    ) -> Result<String> {
        let event = make(new_id(EVENT_PREFIX), timestamp());
        let id = event.id().to_owned();
        self.ctx.store.append(self.id(), &event).await?;
        self.record(event).await?;
        Ok(id)
    }

    pub(super) async fn running(&mut self) -> Result<()> {
        self.emit(|id, processed_at| Event::SessionStatusRunning(Marker { id, processed_at }))
            .await
            .map(drop)
    }

    /// Applies a persisted event to the worker's state and the session, then
    /// streams it. Idle events are on disk before anyone sees them.
    async fn record(&mut self, event: Event) -> Result<()> {
        self.open.apply(&event);
        match &event {
            Event::SessionStatusRunning(_) => {
                self.running_since.get_or_insert_with(Instant::now);
                self.update_session("running", 0.0).await?;
            }
            Event::SessionStatusIdle(_) => {
                let active = self
                    .running_since
                    .take()
                    .map_or(0.0, |since| since.elapsed().as_secs_f64());
                self.update_session("idle", active).await?;
                self.ctx.store.flush().await?;
            }
            _ => {}
        }
        self.slot.broadcast(event.clone());
        self.history.push(event);
        Ok(())
    }

    async fn update_session(&self, status: &str, active_seconds: f64) -> Result<()> {
        let created = OffsetDateTime::parse(&self.session.created_at, &Rfc3339).ok();
        let status = status.to_owned();
        let change = move |s: &mut Session| {
            s.status = status;
            let active = s.stats.active_seconds.unwrap_or(0.0) + active_seconds;
            s.stats.active_seconds = Some(active);
            if let Some(created) = created {
                let duration = (OffsetDateTime::now_utc() - created).as_seconds_f64();
                s.stats.duration_seconds = Some(duration.max(0.0));
            }
        };
        self.ctx
            .store
            .update_session(self.id(), Box::new(change))
            .await
    }

    pub(super) async fn add_usage(&self, usage: &Usage) -> Result<()> {
        let usage = *usage;
        let change = move |s: &mut Session| {
            let add = |v: &mut Option<u64>, n: u64| *v = Some(v.unwrap_or(0) + n);
            add(&mut s.usage.input_tokens, usage.input_tokens);
            add(&mut s.usage.output_tokens, usage.output_tokens);
            add(
                &mut s.usage.cache_read_input_tokens,
                usage.cache_read_input_tokens,
            );
            let cache = s.usage.cache_creation.get_or_insert(CacheCreationUsage {
                ephemeral_1h_input_tokens: Some(0),
                ephemeral_5m_input_tokens: None,
            });
            add(
                &mut cache.ephemeral_5m_input_tokens,
                usage.cache_creation_input_tokens,
            );
        };
        self.ctx
            .store
            .update_session(self.id(), Box::new(change))
            .await
    }

    // ----- interrupts ---------------------------------------------------------------

    pub(super) fn interrupt_pending(&self) -> bool {
        *self.slot.interrupts.borrow() > 0
    }

    /// Runs `work` unless a `user.interrupt` arrives first.
    pub(super) async fn cancellable<T>(&self, work: impl Future<Output = T>) -> Step<T> {
        let mut interrupts = self.slot.interrupts.subscribe();
        tokio::select! {
            biased;
            Ok(_) = interrupts.wait_for(|n| *n > 0) => Step::Interrupted,
            value = work => Step::Done(value),
        }
    }

    /// Ends the turn for the first `user.interrupt` waiting in the inbox.
    pub(super) async fn interrupted(&mut self, model_request: Option<&str>) -> Result<()> {
        let interrupt = self
            .ctx
            .store
            .inbox(self.id())
            .await?
            .into_iter()
            .find(|queued| matches!(queued.event, Event::UserInterrupt(_)));
        match interrupt {
            Some(queued) => self.take(queued).await?,
            None => {
                self.slot.interrupts.send_replace(0);
            }
        }
        if let Some(start) = model_request {
            self.span_end(start, &Usage::default(), true).await?;
        }
        self.idle(StopReason::EndTurn).await
    }

    // ----- recovery -----------------------------------------------------------------

    /// What a process that stopped (or failed) left half done, judging by
    /// the events since the last status event.
    fn leftover(&self) -> Leftover {
        let last = self
            .history
            .iter()
            .rposition(|e| e.kind().starts_with("session.status_"));
        let settled = last.map_or(0, |i| i + 1);
        let running =
            last.is_some_and(|i| matches!(self.history[i], Event::SessionStatusRunning(_)));
        let mut open = OpenUses::replay(&self.history[..settled]);
        let mut leftover = if running {
            Leftover::Turn { running }
        } else {
            Leftover::Nothing
        };
        for e in &self.history[settled..] {
            match e {
                Event::UserMessage(_) => leftover = Leftover::Turn { running },
                Event::UserInterrupt(_)
                    if running || !open.is_empty() || leftover != Leftover::Nothing =>
                {
                    leftover = Leftover::Interrupt
                }
                Event::UserToolConfirmation(_) | Event::UserCustomToolResult(_)
                    if leftover == Leftover::Nothing && resolves(&open, e) =>
                {
                    leftover = Leftover::Resolved
                }
                _ => {}
            }
            open.apply(e);
        }
        leftover
    }

    /// Finishes what a stopped process left half done, so that the session
    /// carries on as if it had not stopped: a turn is resumed (tool uses that
    /// may have been running get an error result, since whether they took
    /// effect is unknown, and the model is asked again), an interrupt ends
    /// the turn, confirmations are acted on.
    async fn recover(&mut self) -> Result<()> {
        let leftover = self.leftover();
        if leftover == Leftover::Nothing {
            return Ok(());
        }
        self.running_since = Some(Instant::now());
        if let Some(start) = self.open_span() {
            self.span_end(&start, &Usage::default(), true).await?;
        }
        let unfinished: Vec<_> = self
            .open
            .in_state(UseState::Denied)
            .chain(
                self.open
                    .in_state(UseState::Allowed)
                    .filter(|_| leftover != Leftover::Resolved),
            )
            .map(|u| (u.id.clone(), u.state, u.deny_message.clone()))
            .collect();
        match leftover {
            Leftover::Interrupt => return self.idle(StopReason::EndTurn).await,
            Leftover::Turn { running: true } => {}
            _ => self.running().await?,
        }
        for (id, state, deny_message) in unfinished {
            let message = match state {
                UseState::Denied => deny_message.unwrap_or_else(|| "denied by the user".to_owned()),
                _ => "the runtime stopped while this tool use was pending or running; it may or \
                      may not have taken effect"
                    .to_owned(),
            };
            self.tool_result(&id, &message, true).await?;
        }
        self.drive().await
    }

    /// The start of a model request that has no end.
    fn open_span(&self) -> Option<String> {
        let mut open = None;
        for e in &self.history {
            match e {
                Event::SpanModelRequestStart(start) => open = Some(start.id.clone()),
                Event::SpanModelRequestEnd(_) => open = None,
                _ => {}
            }
        }
        open
    }
}

/// Removes inbox events that are in the history already (a stop between
/// the two steps of [`SessionStore::take`] leaves such copies).
async fn drop_processed(
    store: &dyn SessionStore,
    session_id: &str,
    history: &[Event],
) -> Result<()> {
    let inbox = store.inbox(session_id).await?;
    if inbox.is_empty() {
        return Ok(());
    }
    let seen: HashSet<&str> = history.iter().map(Event::id).collect();
    for queued in inbox {
        if seen.contains(queued.event.id()) {
            store.discard(session_id, queued.seq).await?;
        }
    }
    Ok(())
}
