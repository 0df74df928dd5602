//! [`E2bSandbox`]: one session's E2B sandbox as a [`Sandbox`]. File paths
//! are relative to the workspace and confined to it lexically (no absolute
//! paths, no `..` above it: the VM is the boundary, the tools' contract is
//! the local sandbox's); commands run in it with the environment's
//! packages on their paths. Every call re-arms the sandbox's timeout when
//! due. A sandbox found gone (killed, or past its timeout) fails the call
//! that found it, clearly; the next call opens a new one.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::envd::{Envd, ProcessSpec, DIRECTORY};
use super::error::{E2bError, E2bErrorKind};
use super::provision::{with_packages, WORKSPACE};
use super::{exec, Shared};
use crate::sandbox::{CommandOutput, Sandbox, SandboxError, SandboxSpec};

/// Levels a file listing descends.
const LIST_DEPTH: u32 = 255;

/// `path`, relative to the workspace, as the sandbox's absolute path; an
/// absolute path or one that climbs above the workspace is refused.
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
        return Ok(WORKSPACE.to_owned());
    }
    Ok(format!("{WORKSPACE}/{}", parts.join("/")))
}

/// The sandbox in use.
pub(super) struct Live {
    pub envd: Envd,
    /// When its timeout was last set.
    armed_at: StdMutex<Instant>,
}

impl Live {
    pub fn new(envd: Envd) -> Self {
        Live {
            envd,
            armed_at: StdMutex::new(Instant::now()),
        }
    }
}

enum Current {
    Live(Arc<Live>),
    /// Found gone: the next call opens a new sandbox and says so.
    Gone,
    TornDown,
}

/// One session's E2B sandbox.
pub struct E2bSandbox {
    shared: Arc<Shared>,
    spec: SandboxSpec,
    current: tokio::sync::Mutex<Current>,
}

impl std::fmt::Debug for E2bSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2bSandbox")
            .field("session", &self.spec.session_id)
            .finish_non_exhaustive()
    }
}

/// The session's sandbox is gone: what a tool sees.
fn gone_error(sandbox_id: &str) -> SandboxError {
    SandboxError::Other(format!(
        "the session's E2B sandbox `{sandbox_id}` is gone (killed, or past its timeout): \
         its workspace is lost; the next tool call starts a new sandbox"
    ))
}

impl E2bSandbox {
    pub(super) fn new(shared: Arc<Shared>, spec: SandboxSpec, live: Arc<Live>) -> Self {
        E2bSandbox {
            shared,
            spec,
            current: tokio::sync::Mutex::new(Current::Live(live)),
        }
    }

    /// The id of the sandbox in use, if one is.
    pub async fn sandbox_id(&self) -> Option<String> {
        match &*self.current.lock().await {
            Current::Live(live) => Some(live.envd.sandbox_id().to_owned()),
            _ => None,
        }
    }

    /// The sandbox to use, and whether it replaces one found gone.
    async fn live(&self) -> Result<(Arc<Live>, bool), SandboxError> {
        let mut current = self.current.lock().await;
        let (live, fresh) = match &*current {
            Current::Live(live) => (Arc::clone(live), false),
            Current::Gone => {
                let live = self.shared.open_live(&self.spec).await?;
                *current = Current::Live(Arc::clone(&live));
                (live, true)
            }
            Current::TornDown => {
                return Err(SandboxError::Other(
                    "the session's E2B sandbox was torn down".into(),
                ))
            }
        };
        drop(current);
        self.rearm(&live).await?;
        Ok((live, fresh))
    }

    /// Sets the timeout again once a quarter of it has passed.
    async fn rearm(&self, live: &Live) -> Result<(), SandboxError> {
        let timeout = self.shared.api.config().timeout;
        let due = {
            let armed = live.armed_at.lock().unwrap_or_else(|e| e.into_inner());
            armed.elapsed() >= timeout / 4
        };
        if !due {
            return Ok(());
        }
        let id = live.envd.sandbox_id();
        match self.shared.api.set_timeout(id, timeout).await {
            Ok(()) => {
                *live.armed_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                Ok(())
            }
            Err(e) if e.is(E2bErrorKind::SandboxGone) => Err(self.gone(live).await),
            Err(e) => {
                tracing::warn!(sandbox = id, "cannot re-arm the sandbox's timeout: {e}");
                Ok(())
            }
        }
    }

    /// Marks `live` gone (unless another call replaced it already).
    async fn gone(&self, live: &Live) -> SandboxError {
        let id = live.envd.sandbox_id();
        let mut current = self.current.lock().await;
        if let Current::Live(now) = &*current {
            if now.envd.sandbox_id() == id {
                *current = Current::Gone;
            }
        }
        tracing::warn!(sandbox = id, session = %self.spec.session_id, "the E2B sandbox is gone");
        gone_error(id)
    }

    /// `error` of a call to `live`, as the tools get it: a gone sandbox is
    /// marked so (asking the control plane when the connection failed).
    async fn failed(&self, live: &Live, path: Option<&str>, error: E2bError) -> SandboxError {
        let gone = match error.kind {
            E2bErrorKind::SandboxGone => true,
            E2bErrorKind::Connection => {
                matches!(self.shared.api.get(live.envd.sandbox_id()).await, Ok(None))
            }
            _ => false,
        };
        if gone {
            return self.gone(live).await;
        }
        match (path, error.kind) {
            (Some(path), E2bErrorKind::NotFound) => SandboxError::Io {
                path: path.to_owned(),
                message: "no such file or directory".into(),
            },
            (Some(path), E2bErrorKind::Rejected) => SandboxError::Io {
                path: path.to_owned(),
                message: error.message,
            },
            _ => SandboxError::Other(error.message),
        }
    }
}

#[async_trait]
impl Sandbox for E2bSandbox {
    /// `bash -l -c command` in the workspace, with the environment's
    /// packages on its paths; killed at the deadline.
    async fn run(
        &self,
        command: &str,
        deadline: Duration,
        on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<CommandOutput, SandboxError> {
        let (live, fresh) = self.live().await?;
        let mut note = String::new();
        if fresh {
            note = "[agentform: the session's E2B sandbox was gone; this command runs in a new \
                    sandbox with an empty workspace]\n"
                .to_owned();
            on_output(&note);
        }
        let mut spec = ProcessSpec::bash(&with_packages(&self.spec.packages, command));
        spec.cwd = Some(WORKSPACE.to_owned());
        let config = self.shared.api.config();
        let run = exec::run(&live.envd, spec, deadline, &config.retry, on_output);
        tokio::pin!(run);
        // A command may outlast the sandbox's timeout: keep re-arming it.
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = tokio::time::sleep(config.timeout / 4) => {
                    if let Err(e) = self.rearm(&live).await {
                        tracing::warn!(session = %self.spec.session_id, "{e}");
                    }
                }
            }
        };
        match result {
            Ok(mut out) => {
                out.output.insert_str(0, &note);
                Ok(out)
            }
            Err(e) => Err(self.failed(&live, None, e).await),
        }
    }

    async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, SandboxError> {
        let absolute = confine(path)?;
        let (live, _) = self.live().await?;
        match live.envd.read_file(&absolute, limit).await {
            Ok(bytes) => Ok(bytes),
            Err(e) => Err(self.failed(&live, Some(path), e).await),
        }
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let absolute = confine(path)?;
        if absolute == WORKSPACE {
            return Err(SandboxError::Io {
                path: path.to_owned(),
                message: "is a directory".into(),
            });
        }
        let (live, _) = self.live().await?;
        match live.envd.write_file(&absolute, contents).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failed(&live, Some(path), e).await),
        }
    }

    /// Paths relative to `dir`, sorted; directories are not listed, symlinks
    /// are (not followed).
    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        let absolute = confine(dir)?;
        let (live, _) = self.live().await?;
        let entries = match live.envd.list_dir(&absolute, LIST_DEPTH).await {
            Ok(entries) => entries,
            Err(e) => return Err(self.failed(&live, Some(dir), e).await),
        };
        Ok(relative_files(&entries))
    }

    /// Kills the sandbox.
    async fn teardown(&self) -> Result<(), SandboxError> {
        let mut current = self.current.lock().await;
        let previous = std::mem::replace(&mut *current, Current::TornDown);
        drop(current);
        if let Current::Live(live) = previous {
            self.shared
                .api
                .kill(live.envd.sandbox_id())
                .await
                .map_err(|e| SandboxError::Other(e.message))?;
        }
        Ok(())
    }
}

/// The files of a listing, relative to the listed directory. envd lists
/// below the directory as it resolved it, walking in lexical order, so the
/// first entry's parent is that directory.
fn relative_files(entries: &[super::envd::Entry]) -> Vec<String> {
    let Some(first) = entries.first() else {
        return Vec::new();
    };
    let base = match first.path.rfind('/') {
        Some(i) => &first.path[..=i],
        None => "",
    };
    let mut files: Vec<String> = entries
        .iter()
        .filter(|e| e.kind != DIRECTORY)
        .filter_map(|e| e.path.strip_prefix(base))
        .map(str::to_owned)
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::super::envd::Entry;
    use super::*;

    #[test]
    fn paths_stay_in_the_workspace() {
        assert_eq!(confine("").unwrap(), WORKSPACE);
        assert_eq!(confine(".").unwrap(), WORKSPACE);
        assert_eq!(
            confine("a/./b//c.txt").unwrap(),
            format!("{WORKSPACE}/a/b/c.txt")
        );
        assert_eq!(confine("a/../b").unwrap(), format!("{WORKSPACE}/b"));
        for escape in ["/etc/passwd", "..", "../x", "a/../../x", "a/../..", "x\0y"] {
            assert!(
                matches!(confine(escape), Err(SandboxError::Escape(_))),
                "{escape}"
            );
        }
    }

    #[test]
    fn listings_are_relative_sorted_and_without_directories() {
        let entry = |path: &str, kind: &str| Entry {
            name: path.rsplit('/').next().unwrap().to_owned(),
            kind: kind.to_owned(),
            path: path.to_owned(),
        };
        let entries = [
            entry("/r/a", DIRECTORY),
            entry("/r/a/z.txt", "FILE_TYPE_FILE"),
            entry("/r/b.txt", "FILE_TYPE_FILE"),
            entry("/r/.hidden/x", "FILE_TYPE_FILE"),
            entry("/r/link", "FILE_TYPE_SYMLINK"),
        ];
        assert_eq!(
            relative_files(&entries),
            vec![".hidden/x", "a/z.txt", "b.txt", "link"]
        );
        assert!(relative_files(&[]).is_empty());
    }
}
