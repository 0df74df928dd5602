//! [`ModalSandbox`]: one session's Modal sandbox as a [`Sandbox`]. File
//! paths are relative to the workspace and confined to it lexically (no
//! absolute paths, no `..` above it: the container is the boundary, the
//! tools' contract is the local sandbox's). Commands and files both go
//! through the command router: a file is written as a command's stdin and
//! read as its stdout, bounded as the local file tools are. A sandbox found
//! finished (terminated, or past its fixed timeout) fails the call that
//! found it, clearly; the next call opens a new one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::error::{ModalError, ModalErrorKind};
use super::exec::{self, Fd, Spec};
use super::image::WORKSPACE;
use super::router::{ExitStatus, Router};
use super::rpc::uuid4;
use super::Shared;
use crate::sandbox::e2b::output::{Output, Utf8};
use crate::sandbox::{CommandOutput, Sandbox, SandboxError, SandboxSpec};

/// How long one file operation may take.
const FILE_DEADLINE: Duration = Duration::from_secs(5 * 60);
/// Exit codes of the file scripts, each a refusal the tools know.
const MISSING: i32 = 3;
const DIRECTORY: i32 = 4;

/// `path`, relative to the workspace, as a path relative to it (`.` for the
/// workspace itself); an absolute path or one that climbs above the
/// workspace is refused.
pub fn confine(path: &str) -> Result<String, SandboxError> {
    if path.starts_with('/') || path.contains('\0') {
        return Err(SandboxError::Escape(path.to_owned()));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(SandboxError::Escape(path.to_owned()));
                }
            }
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Ok(".".to_owned());
    }
    Ok(format!("./{}", parts.join("/")))
}

enum Current {
    Live(Arc<Router>),
    /// Found finished: the next call opens a new sandbox and says so.
    Gone,
    TornDown,
}

/// One session's Modal sandbox.
pub struct ModalSandbox {
    shared: Arc<Shared>,
    spec: SandboxSpec,
    current: tokio::sync::Mutex<Current>,
}

impl std::fmt::Debug for ModalSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModalSandbox")
            .field("session", &self.spec.session_id)
            .finish_non_exhaustive()
    }
}

/// The session's sandbox is gone: what a tool sees.
fn gone_error(sandbox_id: &str) -> SandboxError {
    SandboxError::Other(format!(
        "the session's Modal sandbox `{sandbox_id}` is gone (terminated, or past its timeout): \
         its workspace is lost; the next tool call starts a new sandbox"
    ))
}

impl ModalSandbox {
    pub(super) fn new(shared: Arc<Shared>, spec: SandboxSpec, router: Arc<Router>) -> Self {
        ModalSandbox {
            shared,
            spec,
            current: tokio::sync::Mutex::new(Current::Live(router)),
        }
    }

    /// The id of the sandbox in use, if one is.
    pub async fn sandbox_id(&self) -> Option<String> {
        match &*self.current.lock().await {
            Current::Live(router) => Some(router.sandbox_id().to_owned()),
            _ => None,
        }
    }

    /// The sandbox to use, and whether it replaces one found gone.
    async fn live(&self) -> Result<(Arc<Router>, bool), SandboxError> {
        let mut current = self.current.lock().await;
        match &*current {
            Current::Live(router) => Ok((Arc::clone(router), false)),
            Current::Gone => {
                let router = self.shared.open_router(&self.spec).await?;
                *current = Current::Live(Arc::clone(&router));
                Ok((router, true))
            }
            Current::TornDown => Err(SandboxError::Other(
                "the session's Modal sandbox was terminated".into(),
            )),
        }
    }

    /// `error` of a call to `router`, as the tools get it: a finished
    /// sandbox is marked gone (asking the control plane when unsure).
    async fn failed(&self, router: &Router, error: ModalError) -> SandboxError {
        let id = router.sandbox_id();
        let gone = match error.kind {
            ModalErrorKind::SandboxGone => true,
            ModalErrorKind::NotFound | ModalErrorKind::Transient => {
                matches!(self.shared.api.finished(id).await, Ok(true))
            }
            _ => false,
        };
        if !gone {
            return SandboxError::Other(error.message);
        }
        let mut current = self.current.lock().await;
        if let Current::Live(now) = &*current {
            if now.sandbox_id() == id {
                *current = Current::Gone;
            }
        }
        tracing::warn!(sandbox = id, session = %self.spec.session_id, "the Modal sandbox is gone");
        gone_error(id)
    }

    /// Runs a file script with `path` as `$1`; its refusals as the tools
    /// know them.
    async fn file_script(
        &self,
        path: &str,
        script: &str,
        relative: String,
        stdin: Bytes,
        limit: usize,
    ) -> Result<Vec<u8>, SandboxError> {
        let (router, _) = self.live().await?;
        let spec = Spec {
            args: vec![
                "bash".into(),
                "-c".into(),
                script.into(),
                "agentform".into(),
                relative,
            ],
            workdir: Some(WORKSPACE.to_owned()),
            stdin,
        };
        let captured = match exec::capture(&router, spec, limit, FILE_DEADLINE).await {
            Ok(c) => c,
            Err(e) => return Err(self.failed(&router, e).await),
        };
        let io = |message: &str| SandboxError::Io {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        match captured.outcome.exit {
            Some(ExitStatus::Code(0)) => Ok(captured.stdout),
            Some(ExitStatus::Code(MISSING)) => Err(io("no such file or directory")),
            Some(ExitStatus::Code(DIRECTORY)) => Err(io("is a directory")),
            _ => Err(io(captured.stderr.trim())),
        }
    }
}

#[async_trait]
impl Sandbox for ModalSandbox {
    /// `bash -c command` in the workspace, in a process group of its own
    /// that dies at the deadline.
    async fn run(
        &self,
        command: &str,
        deadline: Duration,
        on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<CommandOutput, SandboxError> {
        let (router, fresh) = self.live().await?;
        let mut output = Output::default();
        if fresh {
            let note = "[agentform: the session's Modal sandbox was gone; this command runs in a \
                        new sandbox with an empty workspace]\n";
            on_output(note);
            output.push(note);
        }
        let exec_id = uuid4();
        let spec = Spec {
            args: exec::shell(command, &exec_id),
            workdir: Some(WORKSPACE.to_owned()),
            stdin: Bytes::new(),
        };
        let (mut stdout, mut stderr) = (Utf8::default(), Utf8::default());
        let mut emit = |text: String| {
            if !text.is_empty() {
                on_output(&text);
                output.push(&text);
            }
        };
        let outcome = exec::run(&router, spec, Some(exec_id), deadline, &mut |fd, bytes| {
            let text = match fd {
                Fd::Stdout => stdout.decode(bytes),
                Fd::Stderr => stderr.decode(bytes),
            };
            emit(text);
        })
        .await;
        emit(stdout.finish());
        emit(stderr.finish());
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => return Err(self.failed(&router, e).await),
        };
        let exit_code = match outcome.exit {
            Some(ExitStatus::Code(c)) if !outcome.timed_out => Some(c),
            _ => None,
        };
        Ok(CommandOutput {
            output: output.finish(),
            exit_code,
            timed_out: outcome.timed_out,
            refusals: Vec::new(),
        })
    }

    async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, SandboxError> {
        let relative = confine(path)?;
        let script = format!(
            "[ -e \"$1\" ] || {{ echo 'no such file or directory' >&2; exit {MISSING}; }}; \
             [ -d \"$1\" ] && {{ echo 'is a directory' >&2; exit {DIRECTORY}; }}; \
             exec head -c {limit} -- \"$1\""
        );
        self.file_script(path, &script, relative, Bytes::new(), limit)
            .await
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let relative = confine(path)?;
        if relative == "." {
            return Err(SandboxError::Io {
                path: path.to_owned(),
                message: "is a directory".into(),
            });
        }
        let script = format!(
            "[ -d \"$1\" ] && {{ echo 'is a directory' >&2; exit {DIRECTORY}; }}; \
             mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\""
        );
        self.file_script(path, &script, relative, Bytes::copy_from_slice(contents), 0)
            .await
            .map(|_| ())
    }

    /// Paths relative to `dir`, sorted; directories are not listed, symlinks
    /// are (not followed).
    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        let relative = confine(dir)?;
        let script = format!(
            "cd -- \"$1\" 2>/dev/null || {{ echo 'no such file or directory' >&2; exit {MISSING}; }}; \
             find . -mindepth 1 ! -type d -print0"
        );
        let listing = self
            .file_script(dir, &script, relative, Bytes::new(), 64 << 20)
            .await?;
        let mut files: Vec<String> = listing
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let p = String::from_utf8_lossy(p);
                p.strip_prefix("./").unwrap_or(&p).to_owned()
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Terminates the sandbox.
    async fn teardown(&self) -> Result<(), SandboxError> {
        let mut current = self.current.lock().await;
        let previous = std::mem::replace(&mut *current, Current::TornDown);
        drop(current);
        if let Current::Live(router) = previous {
            self.shared
                .api
                .terminate(router.sandbox_id())
                .await
                .map_err(|e| SandboxError::Other(e.message))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_workspace() {
        assert_eq!(confine("").unwrap(), ".");
        assert_eq!(confine(".").unwrap(), ".");
        assert_eq!(confine("a/./b//c.txt").unwrap(), "./a/b/c.txt");
        assert_eq!(confine("a/../b").unwrap(), "./b");
        assert_eq!(confine("-rf").unwrap(), "./-rf");
        for escape in ["/etc/passwd", "..", "../x", "a/../../x", "a/../..", "x\0y"] {
            assert!(
                matches!(confine(escape), Err(SandboxError::Escape(_))),
                "{escape}"
            );
        }
    }
}
