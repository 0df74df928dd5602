//! Running one command in a sandbox to its end through its command router:
//! started under a fresh exec id, its stdin written and closed, stdout and
//! stderr read as two streams that resume from their byte offset when they
//! break (nothing is lost or repeated), its exit status asked for beside
//! them and taken once they end, and at
//! the deadline its process group killed. What the command is, is the
//! caller's; [`shell`] wraps a tool's command so that it can be killed
//! whole.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use super::error::{ModalError, ModalErrorKind};
use super::proto::task_command_router as tcr;
use super::router::{ExitStatus, Router};
use super::rpc::uuid4;

/// Resumptions of one output stream in a row (the official client's
/// `stream_stdio_max_retries`).
const MAX_RESUMES: u32 = 10;
/// How long the end of a killed command is waited for.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long killing may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Stdin is written in pieces of up to this size, one `TaskExecStdinWrite`
/// each: the official client's `TASK_COMMAND_ROUTER_MAX_BUFFER_SIZE`, the
/// most it sends in one such write. Each write is a round trip, so an
/// uploaded executable takes a few instead of hundreds (its 256 KiB
/// `STREAMING_STDIN_CHUNK_SIZE` is for the streaming write, one call).
const STDIN_CHUNK: usize = 16 * 1024 * 1024;
/// Where a wrapped command records its process group (a shell word: the
/// sandbox's temporary directory).
const PGID_DIR: &str = "\"${TMPDIR:-/tmp}/.agentform-exec\"";

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    Stdout,
    Stderr,
}

/// One command to run.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub args: Vec<String>,
    /// An absolute path in the sandbox.
    pub workdir: Option<String>,
    pub stdin: Bytes,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when it was killed at the deadline.
    pub exit: Option<ExitStatus>,
    pub timed_out: bool,
}

/// `command` (a tool's shell command) as arguments that run it with
/// `bash -c` in a process group of its own, recorded under `exec_id`, so
/// that [`kill`] reaches whatever it started. Job control is on only to
/// start it: left on, bash would report the job's end on stderr.
pub fn shell(command: &str, exec_id: &str) -> Vec<String> {
    let wrapper = format!(
        "set -m; mkdir -p {PGID_DIR}; bash -c \"$1\" & job=$!; set +m; \
         echo \"$job\" > {PGID_DIR}/\"$2\"; wait \"$job\"; code=$?; \
         rm -f {PGID_DIR}/\"$2\"; exit \"$code\""
    );
    vec![
        "bash".into(),
        "-c".into(),
        wrapper,
        "agentform".into(),
        command.into(),
        exec_id.into(),
    ]
}

enum Event {
    Chunk(Fd, Vec<u8>),
    Done,
    Failed(ModalError),
}

/// Runs `spec` until it ends or `deadline` passes; `on_chunk` sees output
/// as it arrives. `exec_id` names the command (a fresh one when `None`).
pub async fn run(
    router: &Arc<Router>,
    spec: Spec,
    exec_id: Option<String>,
    deadline: Duration,
    on_chunk: &mut (dyn FnMut(Fd, &[u8]) + Send),
) -> Result<Outcome, ModalError> {
    let deadline_at = Instant::now() + deadline;
    let exec_id = exec_id.unwrap_or_else(uuid4);
    // The router kills the command a little after the deadline, in case
    // this process is gone by then.
    let backstop = u32::try_from(deadline.as_secs().saturating_add(10)).unwrap_or(u32::MAX);
    let start = tcr::TaskExecStartRequest {
        task_id: router.task_id().to_owned(),
        exec_id: exec_id.clone(),
        command_args: spec.args,
        stdout_config: tcr::TaskExecStdoutConfig::Pipe as i32,
        stderr_config: tcr::TaskExecStderrConfig::Pipe as i32,
        timeout_secs: Some(backstop),
        workdir: spec.workdir,
        ..Default::default()
    };
    match tokio::time::timeout_at(deadline_at, router.start(start)).await {
        Ok(result) => result?,
        Err(_) => {
            kill(router, &exec_id).await;
            return Ok(Outcome {
                exit: None,
                timed_out: true,
            });
        }
    }
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut readers = JoinSet::new();
    for fd in [Fd::Stdout, Fd::Stderr] {
        readers.spawn(read(Arc::clone(router), exec_id.clone(), fd, tx.clone()));
    }
    drop(tx);
    // Asked for beside the output, so that a short command's end is known
    // when its output is: one round trip less per command.
    let mut early_wait = JoinSet::new();
    {
        let (router, exec_id) = (Arc::clone(router), exec_id.clone());
        early_wait.spawn(async move { router.wait(&exec_id).await });
    }
    let stdin = write_stdin(router, &exec_id, spec.stdin.clone());
    let mut stdin_result = None;
    let mut open = 2;
    let mut timed_out = false;
    let mut give_up_at: Option<Instant> = None;
    tokio::pin!(stdin);
    while open > 0 {
        tokio::select! {
            biased;
            _ = sleep_until(deadline_at), if !timed_out => {
                timed_out = true;
                kill(router, &exec_id).await;
                give_up_at = Some(Instant::now() + KILL_GRACE);
            }
            _ = sleep_until(give_up_at.unwrap_or(deadline_at)), if give_up_at.is_some() => break,
            result = &mut stdin, if stdin_result.is_none() => {
                if let Err(e) = &result {
                    if !timed_out {
                        return Err(e.clone());
                    }
                }
                stdin_result = Some(result);
            }
            event = rx.recv() => match event {
                Some(Event::Chunk(fd, bytes)) => on_chunk(fd, &bytes),
                Some(Event::Done) => open -= 1,
                Some(Event::Failed(e)) if timed_out => {
                    tracing::debug!(sandbox = router.sandbox_id(), "after the deadline: {e}");
                    open -= 1;
                }
                Some(Event::Failed(e)) => return Err(e),
                None => break,
            }
        }
    }
    readers.abort_all();
    if timed_out {
        return Ok(Outcome {
            exit: None,
            timed_out: true,
        });
    }
    let remaining = deadline_at.saturating_duration_since(Instant::now());
    let exit = async {
        match early_wait.join_next().await {
            Some(Ok(Ok(exit))) => Ok(exit),
            // It failed (its call may have timed out while the command
            // ran): asked again, now that the output has ended.
            _ => router.wait(&exec_id).await,
        }
    };
    match tokio::time::timeout(remaining, exit).await {
        Ok(exit) => Ok(Outcome {
            exit: Some(exit?),
            timed_out: false,
        }),
        Err(_) => {
            kill(router, &exec_id).await;
            Ok(Outcome {
                exit: None,
                timed_out: true,
            })
        }
    }
}

/// Writes `data` to the command's stdin and closes it, with its last piece
/// (as the official client's `drain` after `write_eof`).
async fn write_stdin(router: &Router, exec_id: &str, data: Bytes) -> Result<(), ModalError> {
    let mut offset = 0usize;
    loop {
        let end = data.len().min(offset + STDIN_CHUNK);
        let eof = end == data.len();
        router
            .write_stdin(exec_id, offset as u64, data.slice(offset..end), eof)
            .await?;
        if eof {
            return Ok(());
        }
        offset = end;
    }
}

/// Reads one output stream to its end, resuming from the offset reached
/// when it breaks.
async fn read(router: Arc<Router>, exec_id: String, fd: Fd, tx: mpsc::Sender<Event>) {
    let retry = router.api().config().retry;
    let mut offset: u64 = 0;
    let mut resumes: u32 = 0;
    loop {
        let failure = match router.read(&exec_id, fd == Fd::Stderr, offset).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(item)) => {
                        resumes = 0;
                        offset += item.data.len() as u64;
                        if !item.data.is_empty()
                            && tx.send(Event::Chunk(fd, item.data)).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Event::Done).await;
                        return;
                    }
                    Err(status) => break router.stream_error(&status),
                }
            },
            Err(e) => e,
        };
        if !failure.is_transient() || resumes >= MAX_RESUMES {
            let _ = tx.send(Event::Failed(failure)).await;
            return;
        }
        tracing::debug!(
            sandbox = router.sandbox_id(),
            offset,
            "output stream broke ({failure}); resuming"
        );
        tokio::time::sleep(retry.delay(resumes, None).min(Duration::from_secs(2))).await;
        resumes += 1;
    }
}

/// Kills the command's process group (see [`shell`]). Best effort: failures
/// are logged.
pub async fn kill(router: &Arc<Router>, exec_id: &str) {
    let script = format!(
        "f={PGID_DIR}/\"$1\"; if [ -f \"$f\" ]; then kill -s KILL -- \"-$(cat \"$f\")\" 2>/dev/null; fi; true"
    );
    let spec = Spec {
        args: vec![
            "bash".into(),
            "-c".into(),
            script,
            "agentform".into(),
            exec_id.into(),
        ],
        workdir: None,
        stdin: Bytes::new(),
    };
    let mut ignore = |_: Fd, _: &[u8]| {};
    let killed = Box::pin(run(router, spec, None, KILL_TIMEOUT, &mut ignore));
    match timeout(KILL_TIMEOUT, killed).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(sandbox = router.sandbox_id(), "killing a command: {e}"),
        Err(_) => tracing::warn!(sandbox = router.sandbox_id(), "killing a command timed out"),
    }
}

/// What a command printed, whole: stdout up to `limit` bytes, stderr as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub outcome: Outcome,
}

/// Runs `spec` and keeps its output (files go through here).
pub async fn capture(
    router: &Arc<Router>,
    spec: Spec,
    limit: usize,
    deadline: Duration,
) -> Result<Captured, ModalError> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let outcome = run(router, spec, None, deadline, &mut |fd, bytes| match fd {
        Fd::Stdout => {
            let room = limit.saturating_sub(stdout.len());
            stdout.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        Fd::Stderr if stderr.len() < 64 * 1024 => stderr.extend_from_slice(bytes),
        Fd::Stderr => {}
    })
    .await?;
    if outcome.timed_out {
        return Err(ModalError::new(
            ModalErrorKind::Transient,
            format!(
                "Modal sandbox `{}`: a file operation timed out after {deadline:?}",
                router.sandbox_id()
            ),
        ));
    }
    Ok(Captured {
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_command_runs_in_its_own_group_and_keeps_its_status() {
        let id = format!("unit-{}", uuid4());
        let args = shell("echo \"out $$\"; echo err >&2; exit 7", &id);
        // A temporary directory of its own, as a sandbox has: a shared
        // `/tmp/.agentform-exec` may belong to another user.
        let tmp = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(&args[0])
            .args(&args[1..])
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("out "));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
        assert!(
            !tmp.path().join(".agentform-exec").join(&id).exists(),
            "cleaned up"
        );
    }
}
