//! Running one command in a sandbox to its end: started with a tag (so it
//! can be found before its pid is known), its output streamed and capped,
//! re-attached with `Connect` when the stream breaks, and killed with
//! `SendSignal` (then its process group) at the deadline. A server is
//! started the same way and left running once a line of its output says
//! it is ready ([`start`]). What the command is and where it runs is the
//! caller's.

use std::time::Duration;

use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};

use super::envd::{Envd, ProcessSpec, Selector, Signal};
use super::error::{E2bError, E2bErrorKind};
use super::output::{Output, Utf8};
use super::stream::{Exit, ProcessEvent, StreamError};
use crate::http::RetryPolicy;
use crate::sandbox::CommandOutput;

/// Re-attachments of one command after its stream broke.
const MAX_REATTACH: u32 = 5;
/// How long the end of a killed command is waited for.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long killing may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Marks where a command's output may have a gap.
const REATTACHED: &str =
    "\n[agentform: the stream from the sandbox broke and was re-attached; output may be missing here]\n";

/// A tag no other command of this process carries.
pub fn new_tag() -> String {
    format!("agentform-{:016x}", fastrand::u64(..))
}

/// How a command [`start`]ed was left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A line of its output began with the marker (the line, without its
    /// end): it runs on, detached.
    Ready(String),
    /// It ended first (or was killed at the deadline).
    Ended(CommandOutput),
    /// Its stream broke before either: whether it runs is for the caller
    /// to find out (the marker may have been in the lost output).
    Unknown(String),
}

/// Runs `spec` (its `tag` is set when missing) until it ends or `deadline`
/// passes; `on_output` sees output as it arrives.
pub async fn run(
    envd: &Envd,
    spec: ProcessSpec,
    deadline: Duration,
    retry: &RetryPolicy,
    on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
) -> Result<CommandOutput, E2bError> {
    match drive(envd, spec, deadline, retry, on_output, None).await? {
        Started::Ended(out) => Ok(out),
        // Only a marker or a detached stream leaves early.
        Started::Ready(_) | Started::Unknown(_) => Err(E2bError::new(
            E2bErrorKind::Protocol,
            "a command left running",
        )),
    }
}

/// Starts `spec` and leaves it running once a line of its stdout starts
/// with `ready`; killed if it has not by the deadline. The stream is not
/// re-attached when it breaks (a long-lived server's output would have a
/// gap): [`Started::Unknown`] says so.
pub async fn start(
    envd: &Envd,
    spec: ProcessSpec,
    ready: &str,
    deadline: Duration,
    retry: &RetryPolicy,
) -> Result<Started, E2bError> {
    drive(envd, spec, deadline, retry, &mut |_| {}, Some(ready)).await
}

async fn drive(
    envd: &Envd,
    mut spec: ProcessSpec,
    deadline: Duration,
    retry: &RetryPolicy,
    on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ready: Option<&str>,
) -> Result<Started, E2bError> {
    let deadline_at = Instant::now() + deadline;
    let mut lines = String::new();
    let tag = spec.tag.get_or_insert_with(new_tag).clone();
    let mut output = Output::default();
    let (mut stdout, mut stderr) = (Utf8::default(), Utf8::default());
    let mut emit = |text: String| {
        if !text.is_empty() {
            on_output(&text);
            output.push(&text);
        }
    };
    let mut timed_out = false;
    let mut stream = match timeout_at(deadline_at, envd.start(&spec)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) if ready.is_some() && e.is(E2bErrorKind::Connection) => {
            return Ok(Started::Unknown(e.message))
        }
        // The start may have arrived: look for the process by its tag.
        Ok(Err(e)) if e.is(E2bErrorKind::Connection) => None,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            timed_out = true;
            kill(envd, &Selector::Tag(tag.clone()), None).await;
            None
        }
    };
    let mut pid: Option<u32> = None;
    let mut exit: Option<Exit> = None;
    let mut give_up_at: Option<Instant> = None;
    let mut reattached = 0;
    let mut broken = String::from("the stream to the command broke");
    loop {
        let Some(events) = stream.as_mut() else {
            if timed_out {
                break;
            }
            if reattached >= MAX_REATTACH {
                return Err(lost(envd, &broken));
            }
            let wait = retry.delay(reattached, None);
            if Instant::now() + wait < deadline_at {
                sleep(wait).await;
            }
            reattached += 1;
            let selector = pid.map_or_else(|| Selector::Tag(tag.clone()), Selector::Pid);
            match timeout_at(deadline_at, envd.connect(&selector)).await {
                Ok(Ok(s)) => {
                    // Output in flight when the stream broke is not sent again.
                    emit(stdout.finish());
                    emit(stderr.finish());
                    emit(REATTACHED.to_owned());
                    stream = Some(s);
                }
                Ok(Err(e)) if e.is(E2bErrorKind::NotFound) => {
                    return Err(lost(
                        envd,
                        &format!("{broken}, and the command was gone when re-attaching"),
                    ))
                }
                Ok(Err(e)) if !is_transient(&e) => return Err(e),
                Ok(Err(e)) => broken = e.message,
                Err(_) => {
                    timed_out = true;
                    kill(envd, &selector, pid).await;
                }
            }
            continue;
        };
        let give_up = give_up_at.unwrap_or(deadline_at);
        tokio::select! {
            biased;
            _ = sleep_until(deadline_at), if !timed_out => {
                timed_out = true;
                let selector = pid.map_or_else(|| Selector::Tag(tag.clone()), Selector::Pid);
                kill(envd, &selector, pid).await;
                give_up_at = Some(Instant::now() + KILL_GRACE);
            }
            _ = sleep_until(give_up), if give_up_at.is_some() => break,
            event = events.next() => match event {
                Ok(Some(ProcessEvent::Start { pid: p })) => pid = Some(p),
                Ok(Some(ProcessEvent::Stdout(bytes))) => {
                    let text = stdout.decode(&bytes);
                    if let Some(marker) = ready {
                        lines.push_str(&text);
                        if let Some(line) = ready_line(&mut lines, marker) {
                            return Ok(Started::Ready(line));
                        }
                    }
                    emit(text)
                }
                Ok(Some(ProcessEvent::Stderr(bytes))) => emit(stderr.decode(&bytes)),
                Ok(Some(ProcessEvent::Keepalive)) => {}
                Ok(Some(ProcessEvent::End(end))) => {
                    exit = Some(end);
                    break;
                }
                Ok(None) => break,
                Err(StreamError::Broken(why)) if ready.is_some() => {
                    return Ok(Started::Unknown(why))
                }
                Err(StreamError::Broken(why)) => {
                    tracing::debug!(sandbox = envd.sandbox_id(), %why, "command stream broke; re-attaching");
                    broken = format!("the stream to the command broke ({why})");
                    stream = None;
                }
                Err(StreamError::Failed(e)) if reattached > 0 && e.is(E2bErrorKind::NotFound) => {
                    return Err(lost(envd, &format!("{broken}, and the command was gone when re-attaching")))
                }
                Err(StreamError::Failed(e)) => return Err(e),
            }
        }
    }
    emit(stdout.finish());
    emit(stderr.finish());
    if let Some(error) = exit.as_ref().and_then(|x| x.error.as_deref()) {
        if !error.is_empty() {
            emit(format!("{error}\n"));
        }
    }
    if !timed_out && exit.is_none() {
        return Err(E2bError::new(
            E2bErrorKind::Protocol,
            format!(
                "E2B sandbox `{}`: the command's stream ended without its exit status",
                envd.sandbox_id()
            ),
        ));
    }
    let exit_code = match (&exit, timed_out) {
        (Some(x), false) if x.exit_code >= 0 => Some(x.exit_code),
        _ => None,
    };
    Ok(Started::Ended(CommandOutput {
        output: output.finish(),
        exit_code,
        timed_out,
        refusals: Vec::new(),
    }))
}

/// The first whole line of `text` that starts with `marker`; the complete
/// lines are consumed, a partial last one is kept for the next chunk.
fn ready_line(text: &mut String, marker: &str) -> Option<String> {
    let end = text.rfind('\n')?;
    let found = text[..end]
        .lines()
        .find(|l| l.starts_with(marker))
        .map(str::to_owned);
    text.drain(..=end);
    found
}

/// Worth another try: no answer, or a server or rate-limit error.
fn is_transient(e: &E2bError) -> bool {
    matches!(
        e.kind,
        E2bErrorKind::Connection | E2bErrorKind::Server | E2bErrorKind::RateLimited
    )
}

fn lost(envd: &Envd, why: &str) -> E2bError {
    E2bError::new(
        E2bErrorKind::Connection,
        format!(
            "E2B sandbox `{}`: {why}; the command's outcome is unknown",
            envd.sandbox_id()
        ),
    )
}

/// Kills the process (`SendSignal`), then its process group (what it
/// started, where envd gave it a group of its own). Best effort: failures
/// are logged.
async fn kill(envd: &Envd, selector: &Selector, pid: Option<u32>) {
    match timeout(KILL_TIMEOUT, envd.send_signal(selector, Signal::Kill)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(sandbox = envd.sandbox_id(), "killing a command: {e}"),
        Err(_) => tracing::warn!(sandbox = envd.sandbox_id(), "killing a command timed out"),
    }
    let Some(pid) = pid else { return };
    let group = ProcessSpec::bash(&format!("kill -s KILL -- -{pid} 2>/dev/null; true"));
    let killed = async {
        let mut stream = envd.start(&group).await?;
        while let Ok(Some(event)) = stream.next().await {
            if matches!(event, ProcessEvent::End(_)) {
                break;
            }
        }
        Ok::<(), E2bError>(())
    };
    if let Ok(Err(e)) = timeout(KILL_TIMEOUT, killed).await {
        tracing::debug!(
            sandbox = envd.sandbox_id(),
            "killing a command's group: {e}"
        );
    }
}
