//! The local agent loop: one task per session that has something to do.
//!
//! A worker is started when events arrive for a session that has none, works
//! through the session's inbox (see `events.rs`) and ends when the inbox is
//! empty, the session being idle. Everything it needs is rebuilt from the
//! stored events when it starts, so a session carries on after a restart;
//! what it reuses across workers (the resolved model and the workspace) lives
//! in the session's [`Slot`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::events::{Ctx, OpenUses, Slot, SlotState, UseState, EVENT_PREFIX};
use super::ids::{new_id, timestamp};
use super::store::get;
use crate::api::environment::{EnvironmentConfig, Networking};
use crate::api::session::CacheCreationUsage;
use crate::api::tool::CustomTool;
use crate::api::{Tool, META_ADDRESS};
use crate::model::{Model, ModelError, ModelRequest, ModelResponse, Usage};
use crate::runtime::{event, Environment, Result, Session};
use crate::sandbox::{tools, Network, Packages, Sandbox, SandboxProvider, SandboxSpec};

/// `max_tokens` of every model request.
pub(super) const MAX_TOKENS: u32 = 8192;

/// Starts the session's worker unless one is running.
pub(super) fn ensure_worker(ctx: &Ctx, slot: &Arc<Slot>, state: &mut SlotState) {
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
fn resolves(open: &OpenUses, e: &Value) -> bool {
    let (field, state) = if event::kind(e) == "user.tool_confirmation" {
        ("tool_use_id", UseState::Ask)
    } else {
        ("custom_tool_use_id", UseState::Custom)
    };
    let id = e.get(field).and_then(Value::as_str).unwrap_or_default();
    open.get(id).is_some_and(|u| u.state == state)
}

/// How a tool use, or the model's answer, ended the wait for it.
enum Step<T> {
    Done(T),
    Interrupted,
}

struct Worker {
    ctx: Ctx,
    slot: Arc<Slot>,
    session: Session,
    history: Vec<Value>,
    open: OpenUses,
    /// Since when the session has been running, for `stats.active_seconds`.
    running_since: Option<Instant>,
}

impl Worker {
    async fn run(ctx: Ctx, slot: &Arc<Slot>) -> Result<()> {
        let session = match ctx.store.load_session(&slot.id) {
            Ok(session) => session,
            Err(e) if e.is_not_found() => {
                slot.state().worker = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let history = ctx.store.history(&slot.id)?;
        ctx.store.drop_processed(&slot.id, &history)?;
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
            match worker.next_in_inbox()? {
                Some((key, event)) => worker.handle(&key, event).await?,
                None => {
                    // Under the slot lock, so an event sent now either is seen
                    // here or finds no worker and starts one.
                    let mut state = slot.state();
                    if worker.ctx.store.first_in_inbox(&slot.id)?.is_none() {
                        state.worker = None;
                        return Ok(());
                    }
                }
            }
        }
    }

    fn id(&self) -> &str {
        &self.slot.id
    }

    /// The oldest unprocessed event; under the slot lock, so the events of
    /// one `send_events` call are seen all together.
    fn next_in_inbox(&self) -> Result<Option<(sled::IVec, Value)>> {
        let _state = self.slot.state();
        self.ctx.store.first_in_inbox(self.id())
    }

    /// What a process that stopped (or failed) left half done, judging by
    /// the events since the last status event.
    fn leftover(&self) -> Leftover {
        let last = self
            .history
            .iter()
            .rposition(|e| event::kind(e).starts_with("session.status_"));
        let settled = last.map_or(0, |i| i + 1);
        let running =
            last.is_some_and(|i| event::kind(&self.history[i]) == "session.status_running");
        let mut open = OpenUses::replay(&self.history[..settled]);
        let mut leftover = if running {
            Leftover::Turn { running }
        } else {
            Leftover::Nothing
        };
        for e in &self.history[settled..] {
            match event::kind(e) {
                "user.message" => leftover = Leftover::Turn { running },
                "user.interrupt"
                    if running || !open.is_empty() || leftover != Leftover::Nothing =>
                {
                    leftover = Leftover::Interrupt
                }
                "user.tool_confirmation" | "user.custom_tool_result"
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

    // ----- events -------------------------------------------------------------------

    /// Processes one event from the inbox.
    async fn handle(&mut self, key: &[u8], event: Value) -> Result<()> {
        match event::kind(&event) {
            "user.message" => {
                self.take(key, event).await?;
                self.emit("session.status_running", json!({})).await?;
                self.drive().await
            }
            "user.interrupt" => {
                let was_waiting = !self.open.is_empty();
                self.take(key, event).await?;
                if was_waiting {
                    self.idle("end_turn").await?;
                }
                Ok(())
            }
            "user.tool_confirmation" | "user.custom_tool_result" => {
                let mut changed = self.resolve(key, event).await?;
                // Resolutions sent together are answered together.
                while let Some((key, event)) = self.next_in_inbox()? {
                    if !is_resolution(&event) {
                        break;
                    }
                    changed |= self.resolve(&key, event).await?;
                }
                if !changed {
                    return Ok(());
                }
                let waiting = self.open.waiting();
                let runnable = self.open.in_state(UseState::Allowed).next().is_some();
                if runnable || waiting.is_empty() {
                    self.emit("session.status_running", json!({})).await?;
                    self.drive().await
                } else {
                    self.requires_action(waiting).await
                }
            }
            // Nothing else is accepted; record it so the inbox moves on.
            _ => self.take(key, event).await,
        }
    }

    /// Applies a confirmation or custom tool result; whether it resolved a
    /// tool use that was waiting (it may have been dropped since it was sent).
    async fn resolve(&mut self, key: &[u8], event: Value) -> Result<bool> {
        let id_field = if event::kind(&event) == "user.tool_confirmation" {
            "tool_use_id"
        } else {
            "custom_tool_use_id"
        };
        let id = event
            .get(id_field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let live = resolves(&self.open, &event);
        self.take(key, event).await?;
        if let Some(denied) = self.open.get(&id).filter(|u| u.state == UseState::Denied) {
            let message = denied
                .deny_message
                .clone()
                .unwrap_or_else(|| "denied by the user".to_owned());
            self.tool_result(&id, &message, true).await?;
        }
        Ok(live)
    }

    /// Runs the turn until it ends or waits for the user: runs the tool uses
    /// that may run, then asks the model, and again while it uses tools.
    async fn drive(&mut self) -> Result<()> {
        loop {
            if self.interrupt_pending() {
                return self.interrupted(None).await;
            }
            let runnable: Vec<_> = self.open.in_state(UseState::Allowed).cloned().collect();
            for tool_use in runnable {
                match self
                    .cancellable(self.run_tool(&tool_use.name, &tool_use.input))
                    .await
                {
                    Step::Interrupted => return self.interrupted(None).await,
                    Step::Done(Ok(result)) => {
                        self.tool_result(&tool_use.id, &result.content, result.is_error)
                            .await?;
                    }
                    Step::Done(Err(message)) => {
                        self.tool_result(&tool_use.id, &message, true).await?;
                        return self.fail("unknown_error", &message).await;
                    }
                }
            }
            let waiting = self.open.waiting();
            if !waiting.is_empty() {
                return self.requires_action(waiting).await;
            }

            let model = match self.model().await {
                Ok(model) => model,
                Err(e) => return self.fail(error_type(&e), &e.to_string()).await,
            };
            let request = self.request();
            let start = self.emit("span.model_request_start", json!({})).await?;
            let response = match self.cancellable(model.complete(&request)).await {
                Step::Interrupted => return self.interrupted(Some(&start)).await,
                Step::Done(response) => response,
            };
            let response = match response {
                Ok(response) => response,
                Err(e) => {
                    self.span_end(&start, &Usage::default(), true).await?;
                    return self.fail(error_type(&e), &e.to_string()).await;
                }
            };
            self.span_end(&start, &response.usage, false).await?;
            self.add_usage(&response.usage)?;
            if !self.emit_response(&response).await? {
                let reason = if response.stop_reason == "refusal" {
                    "refusal"
                } else {
                    "end_turn"
                };
                return self.idle(reason).await;
            }
        }
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
            Leftover::Interrupt => return self.idle("end_turn").await,
            Leftover::Turn { running: true } => {}
            _ => {
                self.emit("session.status_running", json!({})).await?;
            }
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
            match event::kind(e) {
                "span.model_request_start" => open = Some(event::id(e).to_owned()),
                "span.model_request_end" => open = None,
                _ => {}
            }
        }
        open
    }

    /// Ends the turn for the first `user.interrupt` waiting in the inbox.
    async fn interrupted(&mut self, model_request: Option<&str>) -> Result<()> {
        let interrupt = self
            .ctx
            .store
            .inbox(self.id())?
            .into_iter()
            .find(|(_, e)| event::kind(e) == "user.interrupt");
        match interrupt {
            Some((key, e)) => self.take(&key, e).await?,
            None => {
                self.slot.interrupts.send_replace(0);
            }
        }
        if let Some(start) = model_request {
            self.span_end(start, &Usage::default(), true).await?;
        }
        self.idle("end_turn").await
    }

    async fn fail(&mut self, kind: &str, message: &str) -> Result<()> {
        self.emit(
            "session.error",
            json!({"error": {"type": kind, "message": message, "retry_status": {"type": "terminal"}}}),
        )
        .await?;
        self.idle("retries_exhausted").await
    }

    async fn idle(&mut self, reason: &str) -> Result<()> {
        self.emit(
            "session.status_idle",
            json!({"stop_reason": {"type": reason}}),
        )
        .await
        .map(drop)
    }

    async fn requires_action(&mut self, event_ids: Vec<String>) -> Result<()> {
        self.emit(
            "session.status_idle",
            json!({"stop_reason": {"type": "requires_action", "event_ids": event_ids}}),
        )
        .await
        .map(drop)
    }

    async fn span_end(&mut self, start: &str, usage: &Usage, is_error: bool) -> Result<()> {
        self.emit(
            "span.model_request_end",
            json!({
                "model_request_start_id": start,
                "model_usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                    "cache_read_input_tokens": usage.cache_read_input_tokens,
                },
                "is_error": is_error,
            }),
        )
        .await
        .map(drop)
    }

    async fn tool_result(&mut self, tool_use_id: &str, text: &str, is_error: bool) -> Result<()> {
        let content = if text.is_empty() {
            json!([])
        } else {
            json!([{"type": "text", "text": text}])
        };
        self.emit(
            "agent.tool_result",
            json!({"tool_use_id": tool_use_id, "content": content, "is_error": is_error}),
        )
        .await
        .map(drop)
    }

    /// Emits the model's answer; whether it used tools.
    async fn emit_response(&mut self, response: &ModelResponse) -> Result<bool> {
        let mut text = Vec::new();
        let mut used_tools = false;
        for block in &response.content {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let t = block
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !t.is_empty() {
                        text.push(json!({"type": "text", "text": t}));
                    }
                }
                Some("tool_use") => {
                    if !text.is_empty() {
                        let content = std::mem::take(&mut text);
                        self.emit("agent.message", json!({"content": content}))
                            .await?;
                    }
                    used_tools = true;
                    let name = block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let input = match block.get("input") {
                        Some(input @ Value::Object(_)) => input.clone(),
                        _ => json!({}),
                    };
                    self.emit_tool_use(name, input).await?;
                }
                _ => {}
            }
        }
        if !text.is_empty() {
            self.emit("agent.message", json!({"content": text})).await?;
        }
        Ok(used_tools)
    }

    async fn emit_tool_use(&mut self, name: &str, input: Value) -> Result<()> {
        let tools = &self.session.agent.tools;
        if let Some(policy) = builtin_policy(tools, name) {
            let (permission, evaluation) = match policy.as_str() {
                "always_allow" => ("allow", json!({"type": "always_allow"})),
                "always_ask" => ("ask", json!({"type": "always_ask"})),
                // No classifier runs locally: `auto` asks.
                _ => (
                    "ask",
                    json!({"type": "auto", "evaluated_permission": {"type": "ask", "reason_code": "indeterminate"}}),
                ),
            };
            self.emit(
                "agent.tool_use",
                json!({"name": name, "input": input, "evaluated_permission": permission, "evaluation": evaluation}),
            )
            .await?;
        } else if custom_tools(tools).any(|t| t.name == name) {
            self.emit(
                "agent.custom_tool_use",
                json!({"name": name, "input": input}),
            )
            .await?;
        } else {
            let id = self
                .emit(
                    "agent.tool_use",
                    json!({"name": name, "input": input, "evaluated_permission": "deny"}),
                )
                .await?;
            let message = format!("tool `{name}` is not available to this agent");
            self.tool_result(&id, &message, true).await?;
        }
        Ok(())
    }

    /// Moves an inbox event to the history, processed now, and streams it.
    async fn take(&mut self, key: &[u8], mut event: Value) -> Result<()> {
        event["processed_at"] = json!(timestamp());
        if event::kind(&event) == "user.interrupt" {
            // With the count, under the lock `send_events` counts under.
            let _state = self.slot.state();
            self.ctx.store.take(self.id(), key, &event)?;
            self.slot
                .interrupts
                .send_modify(|n| *n = n.saturating_sub(1));
        } else {
            self.ctx.store.take(self.id(), key, &event)?;
        }
        self.record(event).await
    }

    /// Emits a new event; its id.
    async fn emit(&mut self, kind: &str, fields: Value) -> Result<String> {
        let id = new_id(EVENT_PREFIX);
        let mut event = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        event.insert("id".to_owned(), json!(id));
        event.insert("type".to_owned(), json!(kind));
        event.insert("processed_at".to_owned(), json!(timestamp()));
        let event = Value::Object(event);
        self.ctx.store.append(self.id(), &event)?;
        self.record(event).await?;
        Ok(id)
    }

    /// Applies a persisted event to the worker's state and the session, then
    /// streams it. Idle events are on disk before anyone sees them.
    async fn record(&mut self, event: Value) -> Result<()> {
        self.open.apply(&event);
        match event::kind(&event) {
            "session.status_running" => {
                self.running_since.get_or_insert_with(Instant::now);
                self.update_session("running", 0.0)?;
            }
            "session.status_idle" => {
                let active = self
                    .running_since
                    .take()
                    .map_or(0.0, |since| since.elapsed().as_secs_f64());
                self.update_session("idle", active)?;
                self.ctx.store.flush().await?;
            }
            _ => {}
        }
        self.slot.broadcast(event.clone());
        self.history.push(event);
        Ok(())
    }

    fn update_session(&self, status: &str, active_seconds: f64) -> Result<()> {
        let created = OffsetDateTime::parse(&self.session.created_at, &Rfc3339).ok();
        self.ctx.store.update_session(self.id(), |s| {
            status.clone_into(&mut s.status);
            let active = s.stats.active_seconds.unwrap_or(0.0) + active_seconds;
            s.stats.active_seconds = Some(active);
            if let Some(created) = created {
                let duration = (OffsetDateTime::now_utc() - created).as_seconds_f64();
                s.stats.duration_seconds = Some(duration.max(0.0));
            }
        })
    }

    fn add_usage(&self, usage: &Usage) -> Result<()> {
        self.ctx.store.update_session(self.id(), |s| {
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
        })
    }

    // ----- interrupts ---------------------------------------------------------------

    fn interrupt_pending(&self) -> bool {
        *self.slot.interrupts.borrow() > 0
    }

    /// Runs `work` unless a `user.interrupt` arrives first.
    async fn cancellable<T>(&self, work: impl Future<Output = T>) -> Step<T> {
        let mut interrupts = self.slot.interrupts.subscribe();
        tokio::select! {
            biased;
            Ok(_) = interrupts.wait_for(|n| *n > 0) => Step::Interrupted,
            value = work => Step::Done(value),
        }
    }

    // ----- the model ------------------------------------------------------------------

    async fn model(&self) -> Result<Arc<dyn Model>, ModelError> {
        let mut cached = self.slot.model.lock().await;
        if let Some(model) = cached.as_ref() {
            return Ok(Arc::clone(model));
        }
        let id = &self.session.agent.model.id;
        let model = self.ctx.options.models.resolve(id)?;
        *cached = Some(Arc::clone(&model));
        Ok(model)
    }

    fn request(&self) -> ModelRequest {
        let agent = &self.session.agent;
        let tools = &agent.tools;
        let mut definitions: Vec<Value> = tools::definitions()
            .into_iter()
            .filter(|d| {
                d["name"]
                    .as_str()
                    .is_some_and(|name| builtin_policy(tools, name).is_some())
            })
            .collect();
        definitions.extend(custom_tools(tools).map(|t| {
            json!({"name": t.name, "description": t.description, "input_schema": t.input_schema})
        }));
        ModelRequest {
            model: agent.model.id.clone(),
            system: agent.system.clone(),
            messages: conversation(&self.history),
            tools: definitions,
            max_tokens: MAX_TOKENS,
        }
    }

    // ----- tools ---------------------------------------------------------------------

    /// Runs a built-in tool in the session's workspace; an error when the
    /// workspace cannot be had.
    async fn run_tool(&self, name: &str, input: &Value) -> Result<tools::ToolResult, String> {
        let workspace = self.workspace().await?;
        Ok(tools::run(
            workspace.as_ref(),
            name,
            input,
            self.ctx.options.tool_deadline,
        )
        .await)
    }

    /// The session's sandbox, opened before its first tool call, with the
    /// environment's packages and networking.
    async fn workspace(&self) -> Result<Arc<dyn Sandbox>, String> {
        let mut cached = self.slot.workspace.lock().await;
        if let Some(workspace) = cached.as_ref() {
            return Ok(Arc::clone(workspace));
        }
        let env_id = &self.session.environment_id;
        let environment: Environment = get(&self.ctx.store.environments, env_id.as_bytes())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("tools cannot run: environment `{env_id}` no longer exists"))?;
        let spec = sandbox_spec(self.id(), &environment);
        let workspace = self
            .ctx
            .options
            .sandboxes
            .open(&spec)
            .await
            .map_err(|e| format!("tools cannot run: {e}"))?;
        *cached = Some(Arc::clone(&workspace));
        Ok(workspace)
    }
}

/// What a session's sandbox is made of, from its environment's config.
fn sandbox_spec(session_id: &str, environment: &Environment) -> SandboxSpec {
    let cloud = match &environment.config {
        EnvironmentConfig::Cloud(cloud) => Some(cloud),
        _ => None,
    };
    let strings = |manager: &str| -> Vec<String> {
        cloud
            .and_then(|c| c.packages.list(manager))
            .cloned()
            .unwrap_or_default()
    };
    for manager in ["apt", "cargo", "gem", "go"] {
        if !strings(manager).is_empty() {
            tracing::warn!(
                environment = %environment.id,
                "the local runtime installs only pip and npm packages; {manager} packages are skipped"
            );
        }
    }
    let network = match cloud.map(|c| &c.networking) {
        Some(Networking::Limited(limited)) => Network::Limited {
            allowed_hosts: limited.allowed_hosts.clone(),
            allow_package_managers: limited.allow_package_managers,
        },
        _ => Network::Unrestricted,
    };
    SandboxSpec {
        session_id: session_id.to_owned(),
        environment_id: environment.id.clone(),
        packages: Packages {
            pip: strings("pip"),
            npm: strings("npm"),
        },
        environment_address: environment.metadata.get(META_ADDRESS).cloned(),
        network,
    }
}

/// Removes a session's sandbox.
pub(super) async fn remove_workspace(slot: &Slot, sandboxes: &dyn SandboxProvider) {
    let workspace = slot.workspace.lock().await.take();
    let mut result = match workspace {
        Some(workspace) => workspace.teardown().await,
        None => Ok(()),
    };
    if result.is_ok() {
        result = sandboxes.remove(&slot.id).await;
    }
    if let Err(e) = result {
        tracing::warn!(session = %slot.id, "cannot remove the session's workspace: {e}");
    }
}

fn is_resolution(event: &Value) -> bool {
    matches!(
        event::kind(event),
        "user.tool_confirmation" | "user.custom_tool_result"
    )
}

/// The `session.error` type for a model error.
fn error_type(e: &ModelError) -> &'static str {
    match e {
        ModelError::Api { status: 529, .. } => "model_overloaded_error",
        ModelError::Api { status: 429, .. } => "model_rate_limited_error",
        _ => "model_request_failed_error",
    }
}

/// The permission policy of a built-in tool the agent has enabled and this
/// runtime runs.
fn builtin_policy(tools: &[Tool], name: &str) -> Option<String> {
    if !tools::BUILTIN.contains(&name) {
        return None;
    }
    let toolset = tools.iter().find_map(|t| match t {
        Tool::AgentToolset(toolset) => Some(toolset),
        _ => None,
    })?;
    let config = toolset.configs.iter().find(|c| c.name == name)?;
    if !config.enabled {
        return None;
    }
    Some(
        config
            .permission_policy
            .name()
            .unwrap_or("always_ask")
            .to_owned(),
    )
}

fn custom_tools(tools: &[Tool]) -> impl Iterator<Item = &CustomTool> {
    tools.iter().filter_map(|t| match t {
        Tool::Custom(custom) => Some(custom),
        _ => None,
    })
}

/// The Messages-API conversation the events tell: user text, assistant text
/// and tool uses, tool results. Tool uses left without a result (dropped by
/// an interrupt, a new message or an error) get an error result, so the
/// conversation stays valid.
pub(super) fn conversation(history: &[Value]) -> Vec<Value> {
    let mut b = Conversation::default();
    for e in history {
        match event::kind(e) {
            "user.message" => {
                b.close("not run: the user sent a new message instead");
                for block in e["content"].as_array().into_iter().flatten() {
                    if block["type"] != "redacted" {
                        b.push("user", block.clone());
                    }
                }
            }
            "user.interrupt" => b.close("not run: interrupted by the user"),
            "session.status_idle" if event::stop_reason(e) != Some("requires_action") => {
                b.close("not run: the turn ended first")
            }
            "agent.message" => {
                for block in e["content"].as_array().into_iter().flatten() {
                    if block["type"] == "text" {
                        b.push("assistant", block.clone());
                    }
                }
            }
            "agent.tool_use" | "agent.custom_tool_use" => {
                let id = event::id(e).to_owned();
                b.push(
                    "assistant",
                    json!({"type": "tool_use", "id": id, "name": e["name"], "input": e["input"]}),
                );
                b.open.push(id);
            }
            "agent.tool_result" => b.result(e, "tool_use_id"),
            "user.custom_tool_result" => b.result(e, "custom_tool_use_id"),
            _ => {}
        }
    }
    b.close("not run");
    b.messages
}

#[derive(Default)]
struct Conversation {
    messages: Vec<Value>,
    /// Tool uses still without a result.
    open: Vec<String>,
}

impl Conversation {
    fn push(&mut self, role: &str, block: Value) {
        if let Some(last) = self.messages.last_mut() {
            if last["role"] == role {
                if let Some(content) = last["content"].as_array_mut() {
                    content.push(block);
                    return;
                }
            }
        }
        self.messages
            .push(json!({"role": role, "content": [block]}));
    }

    fn result(&mut self, e: &Value, id_field: &str) {
        let id = e[id_field].as_str().unwrap_or_default();
        let Some(at) = self.open.iter().position(|open| open == id) else {
            return;
        };
        self.open.remove(at);
        let content = match &e["content"] {
            Value::Array(blocks) => Value::Array(blocks.clone()),
            _ => json!([]),
        };
        let is_error = e["is_error"].as_bool().unwrap_or(false);
        self.push(
            "user",
            json!({"type": "tool_result", "tool_use_id": id, "content": content, "is_error": is_error}),
        );
    }

    fn close(&mut self, why: &str) {
        for id in std::mem::take(&mut self.open) {
            self.push(
                "user",
                json!({"type": "tool_result", "tool_use_id": id, "content": [{"type": "text", "text": why}], "is_error": true}),
            );
        }
    }
}
