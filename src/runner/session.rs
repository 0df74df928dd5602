//! Driving one session through its steps: stream first, then send; answer
//! custom tools and confirmations; interrupt when asked; on a broken stream,
//! reopen it and merge the history so no event is missed or repeated.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant as Deadline;

use super::expect;
use super::transcript::{Sink, StepResult};
use crate::api::Usage;
use crate::manifest::spec::{ConfirmSpec, InterruptSpec, SessionSpec, ToolHandlerSpec};
use crate::manifest::{parse_duration, Templater};
use crate::runtime::{event, list_all, EventStream, Runtime, RuntimeError};

const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Driver<'a> {
    pub runtime: Arc<dyn Runtime>,
    pub session_id: String,
    pub script: &'a SessionSpec,
    pub templater: &'a Templater,
    pub sink: &'a Sink,
    pub key: String,
    /// Where handler commands run.
    pub workdir: &'a Path,
    pub run_deadline: Deadline,
}

pub struct Driven {
    pub steps: Vec<StepResult>,
    pub usage: Usage,
    pub events: usize,
    pub error: Option<String>,
}

struct Conversation {
    stream: EventStream,
    seen: HashSet<String>,
    /// Every event so far, in order.
    events: Vec<Value>,
    /// Reconnects in a row that brought no new event.
    fruitless: u32,
    /// When the current stream was opened.
    opened: std::time::Instant,
}

/// Fruitless reconnects in a row after which the stream counts as dead.
const MAX_FRUITLESS_RECONNECTS: u32 = 30;
/// Backoff between fruitless reconnects: doubled from this, capped below.
const RECONNECT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(25);
const MAX_RECONNECT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(2);
/// A stream open this long before it broke was not part of a storm.
const STABLE_STREAM: std::time::Duration = std::time::Duration::from_secs(5);

impl Driver<'_> {
    pub async fn drive(&self) -> Driven {
        let mut usage = Usage::default();
        let mut steps = Vec::new();
        let stream = match self.runtime.stream_events(&self.session_id).await {
            Ok(s) => s,
            Err(e) => {
                return Driven {
                    steps,
                    usage,
                    events: 0,
                    error: Some(format!("cannot open the event stream: {e}")),
                };
            }
        };
        let mut conv = Conversation {
            stream,
            seen: HashSet::new(),
            events: Vec::new(),
            fruitless: 0,
            opened: std::time::Instant::now(),
        };
        let mut replies: Vec<String> = Vec::new();
        let mut error = None;
        for (index, step) in self.script.steps.iter().enumerate() {
            let result = self
                .step(index, step, &mut conv, &replies, &mut usage)
                .await;
            replies.push(result.reply.clone());
            let failed_hard = result.error.is_some();
            steps.push(result);
            if failed_hard {
                error = steps.last().and_then(|s| s.error.clone());
                break;
            }
        }
        Driven {
            steps,
            usage,
            events: conv.events.len(),
            error,
        }
    }

    fn record(&self, conv: &mut Conversation, e: Value) -> Option<Value> {
        let id = event::id(&e).to_string();
        if !id.is_empty() && !conv.seen.insert(id) {
            return None;
        }
        self.sink.event(&self.key, &e);
        conv.events.push(e.clone());
        Some(e)
    }

    /// The next new event, reconnecting and merging the history when the stream breaks.
    async fn next_event(
        &self,
        conv: &mut Conversation,
        pending: &mut Vec<Value>,
    ) -> Result<Value, String> {
        loop {
            if !pending.is_empty() {
                let e = pending.remove(0);
                if let Some(e) = self.record(conv, e) {
                    conv.fruitless = 0;
                    return Ok(e);
                }
                continue;
            }
            match conv.stream.next().await {
                Some(Ok(e)) => {
                    if let Some(e) = self.record(conv, e) {
                        conv.fruitless = 0;
                        return Ok(e);
                    }
                }
                broken => {
                    // A long session may reconnect any number of times; only
                    // streams that break at once with nothing new count.
                    if conv.opened.elapsed() > STABLE_STREAM {
                        conv.fruitless = 0;
                    }
                    conv.fruitless += 1;
                    if conv.fruitless > MAX_FRUITLESS_RECONNECTS {
                        return Err(format!(
                            "the event stream broke {MAX_FRUITLESS_RECONNECTS} times in a row without a new event; giving up"
                        ));
                    }
                    if conv.fruitless > 1 {
                        let wait = RECONNECT_BACKOFF
                            .saturating_mul(1 << (conv.fruitless - 2).min(16))
                            .min(MAX_RECONNECT_BACKOFF);
                        tokio::time::sleep(wait).await;
                    }
                    if let Some(Err(e)) = &broken {
                        tracing::info!("event stream broke ({e}); reconnecting");
                    }
                    // Reopen first, then read the history: whatever happens in
                    // between arrives on the new stream and is deduplicated.
                    conv.stream = self
                        .runtime
                        .stream_events(&self.session_id)
                        .await
                        .map_err(|e| format!("cannot reopen the event stream: {e}"))?;
                    conv.opened = std::time::Instant::now();
                    let rt = &self.runtime;
                    let sid = self.session_id.as_str();
                    let history = list_all(|q| async move { rt.list_events(sid, &q).await })
                        .await
                        .map_err(|e: RuntimeError| format!("cannot read the event history: {e}"))?;
                    pending.extend(
                        history
                            .into_iter()
                            .filter(|e| !conv.seen.contains(event::id(e))),
                    );
                }
            }
        }
    }

    async fn step(
        &self,
        index: usize,
        step: &crate::manifest::spec::StepSpec,
        conv: &mut Conversation,
        replies: &[String],
        usage: &mut Usage,
    ) -> StepResult {
        let mut result = StepResult {
            index,
            ..Default::default()
        };
        let text = match self
            .templater
            .render_with(&step.send, &json!({ "replies": replies }))
        {
            Ok((Value::String(s), _)) => s,
            Ok((other, _)) => other.to_string(),
            Err(e) => {
                result.error = Some(format!("step {}: template error: {}", index + 1, e.message));
                return result;
            }
        };
        result.send = text.clone();
        let timeout = step
            .timeout
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_STEP_TIMEOUT);
        let deadline = (Deadline::now() + timeout).min(self.run_deadline);
        let started = Instant::now();
        let message = json!({"type": "user.message", "content": [{"type": "text", "text": text}]});
        if let Err(e) = self
            .runtime
            .send_events(&self.session_id, vec![message])
            .await
        {
            result.error = Some(format!(
                "step {}: sending the message failed: {e}",
                index + 1
            ));
            return result;
        }
        let interrupt_at = match &step.interrupt {
            Some(InterruptSpec::AfterMs(ms)) => Some(Deadline::now() + Duration::from_millis(*ms)),
            _ => None,
        };
        let mut interrupted = false;
        let mut answered: HashSet<String> = HashSet::new();
        let mut pending = Vec::new();
        let mut step_events = 0u32;
        let mut session_error: Option<String> = None;
        loop {
            let next = async {
                match interrupt_at.filter(|_| !interrupted) {
                    Some(at) => tokio::select! {
                        e = self.next_event(conv, &mut pending) => Some(e),
                        _ = tokio::time::sleep_until(at) => None,
                    },
                    None => Some(self.next_event(conv, &mut pending).await),
                }
            };
            let e = match tokio::time::timeout_at(deadline, next).await {
                Err(_) => {
                    result.error = Some(format!(
                        "step {}: no reply within {}",
                        index + 1,
                        if deadline == self.run_deadline {
                            "the run's timeout".to_string()
                        } else {
                            format!("{timeout:?}")
                        }
                    ));
                    let _ = self.runtime.interrupt(&self.session_id).await;
                    break;
                }
                Ok(None) => {
                    interrupted = true;
                    if let Err(e) = self.runtime.interrupt(&self.session_id).await {
                        result.error = Some(format!("step {}: interrupt failed: {e}", index + 1));
                        break;
                    }
                    continue;
                }
                Ok(Some(Err(msg))) => {
                    result.error = Some(format!("step {}: {msg}", index + 1));
                    break;
                }
                Ok(Some(Ok(e))) => e,
            };
            step_events += 1;
            let kind = event::kind(&e).to_string();
            match kind.as_str() {
                "agent.message" => {
                    if !result.reply.is_empty() {
                        result.reply.push('\n');
                    }
                    result.reply.push_str(&event::text(&e));
                }
                "agent.tool_use" | "agent.custom_tool_use" | "agent.mcp_tool_use" => {
                    let name = e
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    if matches!(&step.interrupt, Some(InterruptSpec::OnTool(t)) if *t == name)
                        && !interrupted
                    {
                        interrupted = true;
                        let _ = self.runtime.interrupt(&self.session_id).await;
                    }
                    result.tools_used.push(name);
                }
                "span.model_request_start" => result.turns += 1,
                "span.model_request_end" => {
                    let u = e.get("model_usage").cloned().unwrap_or_default();
                    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
                    usage.input_tokens += n("input_tokens");
                    usage.output_tokens += n("output_tokens");
                    usage.cache_creation_input_tokens += n("cache_creation_input_tokens");
                    usage.cache_read_input_tokens += n("cache_read_input_tokens");
                }
                "session.error" => {
                    let msg = e
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error");
                    tracing::warn!("{}: session error: {msg}", self.key);
                    session_error.get_or_insert_with(|| msg.to_string());
                }
                "session.status_terminated" => {
                    result.stop_reason = Some("terminated".into());
                    result.error = Some(format!("step {}: the session terminated", index + 1));
                    break;
                }
                "session.status_idle" => {
                    let reason = event::stop_reason(&e).unwrap_or("end_turn").to_string();
                    if reason == "requires_action" {
                        let ids: Vec<String> = e
                            .pointer("/stop_reason/event_ids")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if let Err(msg) = self
                            .answer(&ids, &conv.events, &mut answered, deadline)
                            .await
                        {
                            result.error = Some(format!("step {}: {msg}", index + 1));
                            break;
                        }
                        if interrupted {
                            result.stop_reason = Some(reason);
                            break;
                        }
                        continue;
                    }
                    result.stop_reason = Some(reason);
                    break;
                }
                _ => {}
            }
            if let Some(InterruptSpec::AfterEvents(n)) = &step.interrupt {
                if !interrupted && step_events >= *n {
                    interrupted = true;
                    let _ = self.runtime.interrupt(&self.session_id).await;
                }
            }
        }
        result.latency_ms = started.elapsed().as_millis() as u64;
        if let (None, Some(msg)) = (&result.error, session_error) {
            result.error = Some(format!(
                "step {}: the session reported an error: {msg}",
                index + 1
            ));
        }
        if result.error.is_none() {
            result.expectations = step
                .expect
                .iter()
                .map(|x| expect::check(x, &result))
                .collect();
        }
        result
    }

    /// Answers the events a `requires_action` idle waits for.
    async fn answer(
        &self,
        ids: &[String],
        events: &[Value],
        answered: &mut HashSet<String>,
        deadline: Deadline,
    ) -> Result<(), String> {
        let mut replies = Vec::new();
        for id in ids {
            if !answered.insert(id.clone()) {
                continue;
            }
            let Some(e) = events.iter().find(|e| event::id(e) == id) else {
                return Err(format!(
                    "the session waits for event `{id}`, which never arrived"
                ));
            };
            let name = e.get("name").and_then(Value::as_str).unwrap_or_default();
            match event::kind(e) {
                "agent.custom_tool_use" => {
                    let input = e.get("input").cloned().unwrap_or(json!({}));
                    let (text, is_error) = match self.script.tools.get(name) {
                        Some(ToolHandlerSpec::Result(text)) => (text.clone(), false),
                        Some(ToolHandlerSpec::Run(cmd)) => {
                            run_handler(cmd, &input, self.workdir, deadline).await
                        }
                        None => (
                            format!("no handler for custom tool `{name}` in the manifest"),
                            true,
                        ),
                    };
                    let mut reply = json!({
                        "type": "user.custom_tool_result",
                        "custom_tool_use_id": id,
                        "content": [{"type": "text", "text": text}],
                    });
                    if is_error {
                        reply["is_error"] = json!(true);
                    }
                    replies.push(reply);
                }
                _ => {
                    let reply = match self.script.confirm.get(name) {
                        Some(ConfirmSpec::Allow) => {
                            json!({"type": "user.tool_confirmation", "tool_use_id": id, "result": "allow"})
                        }
                        Some(ConfirmSpec::DenyWith { deny }) => {
                            json!({"type": "user.tool_confirmation", "tool_use_id": id, "result": "deny", "deny_message": deny})
                        }
                        Some(ConfirmSpec::Deny) | None => json!({
                            "type": "user.tool_confirmation",
                            "tool_use_id": id,
                            "result": "deny",
                            "deny_message": format!("`{name}` is not allowed by this run's confirmation policy"),
                        }),
                    };
                    replies.push(reply);
                }
            }
        }
        if replies.is_empty() {
            return Ok(());
        }
        self.runtime
            .send_events(&self.session_id, replies)
            .await
            .map(|_| ())
            .map_err(|e| format!("answering the agent failed: {e}"))
    }
}

/// Runs a custom tool's host command with the input as JSON on stdin. The
/// deadline covers writing the input too (a handler that never reads it
/// cannot hold the step); at the deadline the handler's process group is
/// killed.
async fn run_handler(
    cmd: &str,
    input: &Value,
    workdir: &Path,
    deadline: Deadline,
) -> (String, bool) {
    let spawned = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .current_dir(workdir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return (format!("cannot run the handler `{cmd}`: {e}"), true),
    };
    let group = child.id();
    let stdin = child.stdin.take();
    let input = input.to_string();
    let write = async move {
        if let Some(mut stdin) = stdin {
            // A handler that exits without reading its input is fine.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
    };
    let finished = async move { tokio::join!(write, child.wait_with_output()).1 };
    let result = tokio::time::timeout_at(deadline, finished).await;
    if result.is_err() {
        if let Some(pid) = group
            .and_then(|g| i32::try_from(g).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
    match result {
        Err(_) => (format!("the handler `{cmd}` did not finish in time"), true),
        Ok(Err(e)) => (format!("the handler `{cmd}` failed: {e}"), true),
        Ok(Ok(out)) if out.status.success() => (
            String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
            false,
        ),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.trim().is_empty() {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(err.trim_end());
            }
            (
                format!("{text}\n(exit status {})", out.status.code().unwrap_or(-1)),
                true,
            )
        }
    }
}
