//! Session events of the local runtime: their storage, the checks on what
//! users send, the per-session live channels and the bookkeeping of tool uses
//! that wait for the user.
//!
//! Two trees hold a session's events, both keyed by session id + big-endian
//! sequence (`sled::Db::generate_id`, monotonic across restarts):
//!
//! * `local.inbox`: events users sent that the session's worker has not
//!   processed yet, as accepted (`processed_at: null`);
//! * `local.events`: the history, in the order the worker processed or
//!   emitted them. A user event moves from the inbox to the history (with its
//!   `processed_at`) when the worker processes it, in one transaction.
//!
//! Only the worker appends to the history, and it persists each event before
//! broadcasting it, so the history equals what was streamed, in order.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::body::{
    as_object, check_keys, expected, field, invalid, one_of, present, required, string,
};
use super::ids::{new_id, timestamp};
use super::paging::{non_empty_cursor, page_limit, PAGE_PREFIX};
use super::store::{
    decode, encode, get, put, store_err, version_key, write_lock, ENVIRONMENTS_TREE, SESSIONS_TREE,
};
use super::LocalOptions;
use crate::model::Model;
use crate::runtime::{
    event, ErrorKind, EventSource, ListQuery, Page, Result, RuntimeError, Session,
};
use crate::sandbox::Sandbox;

pub(super) const EVENTS_TREE: &str = "local.events";
pub(super) const INBOX_TREE: &str = "local.inbox";
pub(super) const EVENT_PREFIX: &str = "sevt";

/// Events a live stream may fall behind by before it breaks.
const STREAM_CAPACITY: usize = 256;

const SENDABLE: [&str; 4] = [
    "user.message",
    "user.interrupt",
    "user.tool_confirmation",
    "user.custom_tool_result",
];
/// Event params the API has that the local runtime does not take.
const UNSUPPORTED: [&str; 3] = ["user.define_outcome", "user.tool_result", "system.message"];

// ----- storage ------------------------------------------------------------------

/// The trees workers and the runtime share.
#[derive(Clone)]
pub(super) struct Store {
    db: sled::Db,
    flushes: Arc<Flushes>,
    events: sled::Tree,
    inbox: sled::Tree,
    pub(super) sessions: sled::Tree,
    pub(super) environments: sled::Tree,
}

impl Store {
    pub(super) fn open(db: &sled::Db) -> Result<Self> {
        Ok(Store {
            db: db.clone(),
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

    /// Appends an event the worker emitted to the history.
    pub(super) fn append(&self, session_id: &str, event: &Value) -> Result<()> {
        let key = self.key(session_id)?;
        self.events.insert(key, encode(event)?).map_err(store_err)?;
        Ok(())
    }

    /// Moves an inbox event to the history as `event` (now processed): first
    /// appended, then removed from the inbox, so that at any moment it is in
    /// one or both (a reader that looks at the inbox first, then the
    /// history, never misses it), and a crash in between leaves a copy in
    /// the inbox that [`drop_processed`](Self::drop_processed) removes.
    ///
    /// No sled transaction or batch here or anywhere in this runtime: in sled
    /// 0.34 they take a process-wide lock that deadlocks with a concurrent
    /// flush.
    pub(super) fn take(&self, session_id: &str, inbox_key: &[u8], event: &Value) -> Result<()> {
        self.append(session_id, event)?;
        self.inbox.remove(inbox_key).map_err(store_err)?;
        Ok(())
    }

    /// Removes inbox events that are in the history already.
    pub(super) fn drop_processed(&self, session_id: &str, history: &[Value]) -> Result<()> {
        let inbox = self.inbox(session_id)?;
        if inbox.is_empty() {
            return Ok(());
        }
        let seen: std::collections::HashSet<&str> = history.iter().map(event::id).collect();
        for (key, e) in inbox {
            if seen.contains(event::id(&e)) {
                self.inbox.remove(key).map_err(store_err)?;
            }
        }
        Ok(())
    }

    /// Adds accepted events to the inbox, in order.
    pub(super) fn push_inbox(&self, session_id: &str, events: &[Value]) -> Result<()> {
        for event in events {
            let key = self.key(session_id)?;
            self.inbox.insert(key, encode(event)?).map_err(store_err)?;
        }
        Ok(())
    }

    /// The whole history of a session, oldest first.
    pub(super) fn history(&self, session_id: &str) -> Result<Vec<Value>> {
        scan(&self.events, session_id)
            .map(|item| item.map(|(_, v)| v))
            .collect()
    }

    /// The unprocessed events of a session with their keys, oldest first.
    pub(super) fn inbox(&self, session_id: &str) -> Result<Vec<(sled::IVec, Value)>> {
        scan(&self.inbox, session_id).collect()
    }

    pub(super) fn first_in_inbox(&self, session_id: &str) -> Result<Option<(sled::IVec, Value)>> {
        scan(&self.inbox, session_id).next().transpose()
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
        let items: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match (cursor, descending) {
                (None, false) => Box::new(self.events.range((first, last))),
                (None, true) => Box::new(self.events.range((first, last)).rev()),
                (Some(after), false) => Box::new(
                    self.events
                        .range((Bound::Excluded(version_key(session_id, after)), last)),
                ),
                (Some(before), true) => Box::new(
                    self.events
                        .range((first, Bound::Excluded(version_key(session_id, before))))
                        .rev(),
                ),
            };
        let mut data = Vec::new();
        let mut last_seq = None;
        let mut more = false;
        for item in items {
            let (key, bytes) = item.map_err(store_err)?;
            let event: Value = decode(&bytes)?;
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

    /// Removes a session's history and inbox.
    pub(super) fn clear(&self, session_id: &str) -> Result<()> {
        for tree in [&self.events, &self.inbox] {
            for item in tree.scan_prefix(session_id.as_bytes()).keys() {
                tree.remove(item.map_err(store_err)?).map_err(store_err)?;
            }
        }
        Ok(())
    }

    pub(super) fn load_session(&self, id: &str) -> Result<Session> {
        get(&self.sessions, id.as_bytes())?.ok_or_else(|| RuntimeError::not_found("session", id))
    }

    /// Read-modify-write of a session record; a deleted session is left alone.
    pub(super) fn update_session(&self, id: &str, f: impl FnOnce(&mut Session)) -> Result<()> {
        let _guard = write_lock();
        let Some(mut session) = get::<Session>(&self.sessions, id.as_bytes())? else {
            return Ok(());
        };
        f(&mut session);
        session.updated_at = timestamp();
        put(&self.sessions, id, &session)
    }

    /// Makes every write done before the call durable.
    ///
    /// sled 0.34's flushes can hang for good when several run at once
    /// (spacejam/sled#1308, fixed after its last release), so this
    /// runtime's flushes run one at a time in the whole process; the wait is
    /// short because one flush covers every write made before it started.
    pub(super) async fn flush(&self) -> Result<()> {
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
            crate::state::flush(&db)
        })
        .await
        .map_err(store_err)?
        .map_err(store_err)?;
        self.flushes.done.fetch_max(covered, SeqCst);
        Ok(())
    }
}

/// Whose turn it is to flush; see [`Store::flush`].
static FLUSHING: LazyLock<Arc<tokio::sync::Mutex<()>>> = LazyLock::new(Arc::default);

/// Flush requests of one Db, numbered; `done` is the last one a finished
/// flush covered.
#[derive(Default)]
struct Flushes {
    requested: AtomicU64,
    done: AtomicU64,
}

fn scan<'a>(
    tree: &'a sled::Tree,
    session_id: &str,
) -> impl Iterator<Item = Result<(sled::IVec, Value)>> + 'a {
    tree.scan_prefix(session_id.as_bytes()).map(|item| {
        let (key, bytes) = item.map_err(store_err)?;
        Ok((key, decode(&bytes)?))
    })
}

fn sequence(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    if key.len() >= 8 {
        bytes.copy_from_slice(&key[key.len() - 8..]);
    }
    u64::from_be_bytes(bytes)
}

// ----- live state -----------------------------------------------------------------

/// What the runtime keeps in memory for a session: its live channel, its
/// worker and what the worker reuses between turns.
pub(super) struct Slot {
    pub(super) id: String,
    events: broadcast::Sender<Value>,
    /// `user.interrupt` events waiting in the inbox; the worker cancels what
    /// it is doing while this is above zero.
    pub(super) interrupts: watch::Sender<u64>,
    state: Mutex<SlotState>,
    /// Resolved once per session, when its loop first needs it.
    pub(super) model: tokio::sync::Mutex<Option<Arc<dyn Model>>>,
    /// Created before the session's first tool call.
    pub(super) workspace: tokio::sync::Mutex<Option<Arc<dyn Sandbox>>>,
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
            state: Mutex::new(SlotState::default()),
            model: tokio::sync::Mutex::new(None),
            workspace: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding it cannot leave the handle or flag half-set.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends to the live streams; an event must be persisted first.
    pub(super) fn broadcast(&self, event: Value) {
        // No receivers is fine: nobody is streaming.
        let _ = self.events.send(event);
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.events.subscribe()
    }
}

/// The slots of the sessions this runtime has touched.
#[derive(Default)]
pub(super) struct Hub {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Hub {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn slot(&self, store: &Store, id: &str) -> Result<Arc<Slot>> {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(id) {
            return Ok(Arc::clone(slot));
        }
        let interrupts = store
            .inbox(id)?
            .iter()
            .filter(|(_, e)| event::kind(e) == "user.interrupt")
            .count() as u64;
        let slot = Arc::new(Slot::new(id, interrupts));
        slots.insert(id.to_owned(), Arc::clone(&slot));
        Ok(slot)
    }

    /// Drops an archived session's slot unless its worker still runs: a
    /// slot holds a stream buffer, and a long-lived runtime archives many.
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

/// A live stream of one session's events.
pub(super) struct LiveEvents {
    pub(super) rx: broadcast::Receiver<Value>,
    pub(super) ended: bool,
    /// Fault injection: the stream ends after this many more events, like a
    /// dropped connection.
    pub(super) drop_after: Option<usize>,
}

#[async_trait]
impl EventSource for LiveEvents {
    async fn next(&mut self) -> Option<Result<Value>> {
        if self.ended || self.drop_after == Some(0) {
            return None;
        }
        match self.rx.recv().await {
            Ok(event) => {
                if event::kind(&event) == "session.deleted" {
                    self.ended = true;
                }
                if let Some(n) = &mut self.drop_after {
                    *n -= 1;
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

// ----- tool uses waiting for something ------------------------------------------------

/// Where a tool use without a result stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UseState {
    /// Built-in tool allowed to run (by policy or by the user).
    Allowed,
    /// Built-in tool waiting for `user.tool_confirmation`.
    Ask,
    /// Denied; its error result follows at once.
    Denied,
    /// Custom tool waiting for `user.custom_tool_result`.
    Custom,
}

#[derive(Debug, Clone)]
pub(super) struct OpenUse {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) input: Value,
    pub(super) state: UseState,
    pub(super) deny_message: Option<String>,
}

/// The tool uses of the current turn that have no result yet, derived from
/// the events alone so that it can be rebuilt after a restart.
#[derive(Debug, Clone, Default)]
pub(super) struct OpenUses {
    uses: Vec<OpenUse>,
}

impl OpenUses {
    pub(super) fn replay<'a>(events: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut open = OpenUses::default();
        for e in events {
            open.apply(e);
        }
        open
    }

    pub(super) fn apply(&mut self, e: &Value) {
        let text = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or_default();
        match event::kind(e) {
            "agent.tool_use" | "agent.custom_tool_use" => {
                let state = if event::kind(e) == "agent.custom_tool_use" {
                    UseState::Custom
                } else {
                    match text("evaluated_permission") {
                        "allow" => UseState::Allowed,
                        "ask" => UseState::Ask,
                        _ => UseState::Denied,
                    }
                };
                self.uses.push(OpenUse {
                    id: event::id(e).to_owned(),
                    name: text("name").to_owned(),
                    input: e.get("input").cloned().unwrap_or_else(|| json!({})),
                    state,
                    deny_message: None,
                });
            }
            "user.tool_confirmation" => {
                if let Some(u) = self.get_mut(text("tool_use_id"), UseState::Ask) {
                    if text("result") == "allow" {
                        u.state = UseState::Allowed;
                    } else {
                        u.state = UseState::Denied;
                        u.deny_message = e
                            .get("deny_message")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                    }
                }
            }
            "agent.tool_result" => {
                let id = text("tool_use_id");
                self.uses.retain(|u| u.id != id);
            }
            "user.custom_tool_result" => {
                let id = text("custom_tool_use_id");
                self.uses
                    .retain(|u| !(u.id == id && u.state == UseState::Custom));
            }
            "user.message" | "user.interrupt" => self.uses.clear(),
            "session.status_idle" if event::stop_reason(e) != Some("requires_action") => {
                self.uses.clear()
            }
            _ => {}
        }
    }

    fn get_mut(&mut self, id: &str, state: UseState) -> Option<&mut OpenUse> {
        self.uses
            .iter_mut()
            .find(|u| u.id == id && u.state == state)
    }

    pub(super) fn get(&self, id: &str) -> Option<&OpenUse> {
        self.uses.iter().find(|u| u.id == id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.uses.is_empty()
    }

    pub(super) fn in_state(&self, state: UseState) -> impl Iterator<Item = &OpenUse> {
        self.uses.iter().filter(move |u| u.state == state)
    }

    /// Ids of the uses waiting for the user, in order.
    pub(super) fn waiting(&self) -> Vec<String> {
        self.uses
            .iter()
            .filter(|u| matches!(u.state, UseState::Ask | UseState::Custom))
            .map(|u| u.id.clone())
            .collect()
    }
}

// ----- accepting what users send ------------------------------------------------------

/// Checks `params` against the session's state as it will be once its inbox
/// is processed, and gives the events as accepted (with ids, not processed).
pub(super) fn accept(params: &[Value], mut open: OpenUses) -> Result<Vec<Value>> {
    if params.is_empty() {
        return Err(invalid("`events`: must contain at least one event"));
    }
    let mut accepted = Vec::with_capacity(params.len());
    for (i, param) in params.iter().enumerate() {
        let event = accept_one(param, &format!("events[{i}]"), &open)?;
        open.apply(&event);
        accepted.push(event);
    }
    Ok(accepted)
}

fn accept_one(param: &Value, path: &str, open: &OpenUses) -> Result<Value> {
    let map = as_object(param, path)?;
    let type_path = field(path, "type");
    let kind = string(required(map, path, "type")?, &type_path)?;
    if UNSUPPORTED.contains(&kind) {
        return Err(invalid(format!(
            "`{type_path}`: `{kind}` is not supported by the local runtime"
        )));
    }
    let kind = one_of(&json!(kind), &type_path, &SENDABLE)?.to_owned();
    if let Some(thread) = present(map, "session_thread_id") {
        string(thread, &field(path, "session_thread_id"))?;
        return Err(invalid(format!(
            "`{path}.session_thread_id`: the local runtime has no session threads"
        )));
    }
    let mut event = Map::new();
    event.insert("id".to_owned(), json!(new_id(EVENT_PREFIX)));
    event.insert("type".to_owned(), json!(kind));
    match kind.as_str() {
        "user.message" => {
            check_keys(map, path, &["type", "content", "session_thread_id"])?;
            let content = content_blocks(
                required(map, path, "content")?,
                &field(path, "content"),
                &["text", "image", "document", "redacted"],
            )?;
            event.insert("content".to_owned(), content);
        }
        "user.interrupt" => {
            check_keys(map, path, &["type", "session_thread_id"])?;
        }
        "user.tool_confirmation" => {
            check_keys(
                map,
                path,
                &[
                    "type",
                    "result",
                    "tool_use_id",
                    "deny_message",
                    "session_thread_id",
                ],
            )?;
            let result = one_of(
                required(map, path, "result")?,
                &field(path, "result"),
                &["allow", "deny"],
            )?;
            let id_path = field(path, "tool_use_id");
            let id = string(required(map, path, "tool_use_id")?, &id_path)?;
            if !open.get(id).is_some_and(|u| u.state == UseState::Ask) {
                return Err(invalid(format!(
                    "`{id_path}`: `{id}` is not a tool use awaiting confirmation"
                )));
            }
            event.insert("result".to_owned(), json!(result));
            event.insert("tool_use_id".to_owned(), json!(id));
            if let Some(message) = present(map, "deny_message") {
                let message_path = field(path, "deny_message");
                let message = string(message, &message_path)?;
                if result != "deny" {
                    return Err(invalid(format!(
                        "`{message_path}`: only allowed when `result` is `deny`"
                    )));
                }
                event.insert("deny_message".to_owned(), json!(message));
            }
        }
        _ => {
            check_keys(
                map,
                path,
                &[
                    "type",
                    "custom_tool_use_id",
                    "content",
                    "is_error",
                    "session_thread_id",
                ],
            )?;
            let id_path = field(path, "custom_tool_use_id");
            let id = string(required(map, path, "custom_tool_use_id")?, &id_path)?;
            if !open.get(id).is_some_and(|u| u.state == UseState::Custom) {
                return Err(invalid(format!(
                    "`{id_path}`: `{id}` is not a custom tool use awaiting its result"
                )));
            }
            event.insert("custom_tool_use_id".to_owned(), json!(id));
            if let Some(content) = present(map, "content") {
                let content = content_blocks(
                    content,
                    &field(path, "content"),
                    &["text", "image", "document", "search_result"],
                )?;
                event.insert("content".to_owned(), content);
            }
            if let Some(is_error) = present(map, "is_error") {
                let is_error = is_error
                    .as_bool()
                    .ok_or_else(|| expected(&field(path, "is_error"), "a boolean", is_error))?;
                event.insert("is_error".to_owned(), json!(is_error));
            }
        }
    }
    event.insert("processed_at".to_owned(), Value::Null);
    Ok(Value::Object(event))
}

/// A non-empty array of content blocks of the `allowed` types.
fn content_blocks(value: &Value, path: &str, allowed: &[&str]) -> Result<Value> {
    let Some(blocks) = value.as_array() else {
        return Err(expected(path, "an array of content blocks", value));
    };
    if blocks.is_empty() {
        return Err(invalid(format!(
            "`{path}`: must contain at least one content block"
        )));
    }
    for (i, block) in blocks.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let map = as_object(block, &p)?;
        match one_of(required(map, &p, "type")?, &field(&p, "type"), allowed)? {
            "text" => {
                let text = string(required(map, &p, "text")?, &field(&p, "text"))?;
                if text.is_empty() {
                    return Err(invalid(format!("`{p}.text`: must not be empty")));
                }
            }
            "image" | "document" => {
                let source = as_object(required(map, &p, "source")?, &field(&p, "source"))?;
                string(
                    required(source, &field(&p, "source"), "type")?,
                    &field(&p, "source.type"),
                )?;
            }
            "search_result" => {
                for key in ["source", "title"] {
                    string(required(map, &p, key)?, &field(&p, key))?;
                }
                let content = required(map, &p, "content")?;
                if !content.is_array() {
                    return Err(expected(&field(&p, "content"), "an array", content));
                }
            }
            _ => {}
        }
    }
    Ok(value.clone())
}

/// Options the runtime hands each worker.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) store: Store,
    pub(super) options: LocalOptions,
}
