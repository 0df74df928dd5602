//! The local workspace: a directory on this machine in which the built-in
//! tools run.
//!
//! What is enforced here, and what is not:
//!
//! * **File tools** ([`Sandbox::read_file`], [`Sandbox::write_file`],
//!   [`Sandbox::list_files`]) are confined to the workspace root. Paths are
//!   relative to it; absolute paths, `..` that climbs above the root and
//!   symlinks (anywhere in the path, dangling or not) that lead outside the
//!   canonical root are refused with [`SandboxError::Escape`]. The check
//!   resolves symlinks component by component, the way the kernel does, and
//!   the file operation then uses the resolved, symlink-free path. Known
//!   limits: a concurrent process that swaps a directory for a symlink between
//!   the check and the use (TOCTOU) is not defended against, nor are hard
//!   links to outside files.
//! * **Commands** ([`Sandbox::run`]) start in the root with a reduced
//!   environment, but are *not* confined to it: `bash` can read and write
//!   whatever the user running agentform can. The only isolation is the
//!   network one, see [`Network::Limited`].
//! * **Packages** are installed once per environment by [`provision`] into an
//!   environment directory shared by that environment's workspaces.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex, Once, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::Instant;

use super::{
    CommandOutput, Network, Packages, Sandbox, SandboxError, SandboxProvider, SandboxSpec,
};

/// Command output kept by [`Sandbox::run`]: the last 100 KB.
pub const OUTPUT_LIMIT: usize = 100 * 1024;

/// How long pipes are still read after the command exited (or was killed):
/// a process left in the background may hold them open forever.
const PIPE_GRACE: Duration = Duration::from_millis(300);

/// Symlinks followed while resolving one path before giving up (as Linux).
const MAX_SYMLINKS: usize = 40;

/// How to create a [`Workspace`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkspaceOptions {
    pub network: Network,
    /// The environment directory that [`provision`] installed packages into;
    /// commands see them through `PYTHONPATH`, `NODE_PATH` and `PATH`.
    pub env_dir: Option<PathBuf>,
}

/// A directory on this machine, used as a [`Sandbox`].
#[derive(Debug)]
pub struct Workspace {
    /// Canonical (symlink-free, absolute) root.
    root: PathBuf,
    options: WorkspaceOptions,
    /// Prefix that runs a command without network, when enforced.
    unshare: Option<Vec<String>>,
}

impl Workspace {
    /// Creates `root` (and its parents) and a workspace over it.
    pub fn create(root: PathBuf, mut options: WorkspaceOptions) -> Result<Self, SandboxError> {
        // Commands run in the root, so a relative env_dir would not resolve.
        if let Some(dir) = options.env_dir.as_mut() {
            if let Ok(absolute) = std::path::absolute(&*dir) {
                *dir = absolute;
            }
        }
        std::fs::create_dir_all(&root).map_err(|e| io_error(&root.to_string_lossy(), &e))?;
        let root =
            std::fs::canonicalize(&root).map_err(|e| io_error(&root.to_string_lossy(), &e))?;
        let unshare = match options.network {
            Network::Unrestricted => None,
            Network::Limited { .. } => {
                let probe = unshare_prefix();
                if probe.is_none() {
                    static WARNED: Once = Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!(
                            "`unshare -n` does not work on this machine: commands of workspaces with \
                             limited networking run with full network access"
                        )
                    });
                }
                probe
            }
        };
        Ok(Self {
            root,
            options,
            unshare,
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether commands really run without network ([`Network::Limited`] and
    /// a working `unshare`). Always false for [`Network::Unrestricted`].
    pub fn network_enforced(&self) -> bool {
        self.unshare.is_some()
    }

    /// Resolves a workspace-relative path to an absolute one inside the root,
    /// following symlinks; see the module documentation.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, SandboxError> {
        resolve_in(&self.root, path)
    }

    fn command(&self, command: &str) -> Command {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(prefix) = &self.unshare {
            argv.extend(prefix.iter().map(OsString::from));
        }
        argv.extend(["bash".into(), "-c".into(), command.into()]);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd.current_dir(&self.root)
            .env_clear()
            .envs(self.environment())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    /// The environment of commands: PATH, HOME (the root), LANG, and the
    /// package directories of the environment.
    fn environment(&self) -> Vec<(String, OsString)> {
        let base_path = std::env::var_os("PATH")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            });
        let lang = std::env::var_os("LANG")
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "C.UTF-8".into());
        let mut path_dirs: Vec<PathBuf> = Vec::new();
        let mut env = vec![
            ("HOME".to_string(), self.root.clone().into_os_string()),
            ("LANG".to_string(), lang),
        ];
        if let Some(dir) = &self.options.env_dir {
            let pip = dir.join("pip");
            let modules = dir.join("npm").join("node_modules");
            path_dirs.push(modules.join(".bin"));
            path_dirs.push(pip.join("bin"));
            env.push(("PYTHONPATH".to_string(), pip.into_os_string()));
            env.push(("NODE_PATH".to_string(), modules.into_os_string()));
        }
        path_dirs.extend(std::env::split_paths(&base_path));
        let path = std::env::join_paths(path_dirs).unwrap_or(base_path);
        env.push(("PATH".to_string(), path));
        env
    }
}

/// The `unshare` invocation that works here, probed once per process.
fn unshare_prefix() -> Option<Vec<String>> {
    static PROBE: OnceLock<Option<Vec<String>>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            [&["unshare", "-n"][..], &["unshare", "-rn"][..]]
                .into_iter()
                .find_map(|prefix| {
                    let ok = std::process::Command::new(prefix[0])
                        .args(&prefix[1..])
                        .arg("true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    ok.then(|| prefix.iter().map(|s| s.to_string()).collect())
                })
        })
        .clone()
}

fn io_error(path: &str, e: &std::io::Error) -> SandboxError {
    SandboxError::Io {
        path: path.to_string(),
        message: e.to_string(),
    }
}

fn escape(path: &str) -> SandboxError {
    SandboxError::Escape(path.to_string())
}

/// Resolves `path` (relative to the canonical `root`) to an absolute path
/// inside `root` without symlinks in its existing part, or fails with
/// [`SandboxError::Escape`].
fn resolve_in(root: &Path, path: &str) -> Result<PathBuf, SandboxError> {
    let given = Path::new(path);
    // Components still to walk, front first; symlink targets are spliced in.
    let mut pending: Vec<OsString> = Vec::new();
    for component in given.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(escape(path)),
            Component::CurDir => {}
            Component::ParentDir => pending.push("..".into()),
            Component::Normal(name) => pending.push(name.to_os_string()),
        }
    }
    pending.reverse();
    // Real (non-symlink or missing) components below root.
    let mut stack: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            // The stack holds no symlinks, so its parent is the physical one.
            if stack.pop().is_none() {
                return Err(escape(path));
            }
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&stack);
        candidate.push(&name);
        let metadata = match std::fs::symlink_metadata(&candidate) {
            Ok(m) => m,
            Err(_) => {
                // Missing (or unreadable): nothing to follow.
                stack.push(name);
                continue;
            }
        };
        if !metadata.file_type().is_symlink() {
            stack.push(name);
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(SandboxError::Io {
                path: path.to_string(),
                message: "too many levels of symbolic links".to_string(),
            });
        }
        let target = std::fs::read_link(&candidate).map_err(|e| io_error(path, &e))?;
        let relative: PathBuf = if target.is_absolute() {
            let inside = match target.strip_prefix(root) {
                Ok(rest) => rest.to_path_buf(),
                // Maybe inside through another spelling of the root (e.g. a
                // symlinked /tmp); only an existing target can tell.
                Err(_) => match std::fs::canonicalize(&target) {
                    Ok(real) => real
                        .strip_prefix(root)
                        .map_err(|_| escape(path))?
                        .to_path_buf(),
                    Err(_) => return Err(escape(path)),
                },
            };
            stack.clear();
            inside
        } else {
            target
        };
        let mut spliced = Vec::new();
        for component in relative.components() {
            match component {
                Component::Prefix(_) | Component::RootDir => return Err(escape(path)),
                Component::CurDir => {}
                Component::ParentDir => spliced.push("..".into()),
                Component::Normal(n) => spliced.push(n.to_os_string()),
            }
        }
        pending.extend(spliced.into_iter().rev());
    }
    let mut resolved = root.to_path_buf();
    resolved.extend(&stack);
    Ok(resolved)
}

/// Runs blocking file-system work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SandboxError::Other(format!("file-system task failed: {e}")))?
}

/// Every non-directory entry below `dir`, relative to `dir`, not descending
/// into symlinked directories.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        // `DirEntry::file_type` does not follow symlinks.
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// Interleaves output chunks, keeping the last [`OUTPUT_LIMIT`] bytes.
#[derive(Default)]
struct OutputBuffer {
    text: String,
    dropped: usize,
}

impl OutputBuffer {
    fn push(&mut self, chunk: &str) {
        self.text.push_str(chunk);
        if self.text.len() > 2 * OUTPUT_LIMIT {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.text.len() <= OUTPUT_LIMIT {
            return;
        }
        let mut cut = self.text.len() - OUTPUT_LIMIT;
        while !self.text.is_char_boundary(cut) {
            cut += 1;
        }
        self.text.drain(..cut);
        self.dropped += cut;
    }

    fn finish(mut self) -> String {
        self.trim();
        if self.dropped == 0 {
            self.text
        } else {
            format!(
                "[... output truncated: {} earlier bytes omitted, the last {} KB follow ...]\n{}",
                self.dropped,
                OUTPUT_LIMIT / 1024,
                self.text
            )
        }
    }
}

/// Decodes a pipe's bytes as UTF-8, keeping an incomplete trailing sequence
/// in `carry` for the next chunk; invalid bytes become U+FFFD.
fn decode(carry: &mut Vec<u8>, bytes: &[u8], at_eof: bool) -> String {
    carry.extend_from_slice(bytes);
    let mut out = String::new();
    let mut rest: &[u8] = carry;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &after[n..];
                    }
                    None if at_eof => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = &[];
                        break;
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    let rest = rest.to_vec();
    *carry = rest;
    out
}

/// Kills the whole process group `pgid` (the command and its children).
fn kill_group(pgid: u32) {
    // Without a libc binding, the shell's `kill` reaches a process group.
    let _ = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("kill -KILL -- -{pgid} 2>/dev/null"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[async_trait]
impl Sandbox for Workspace {
    /// Runs `bash -c command` in the root, with stdin null and the reduced
    /// environment (PATH, HOME = root, LANG, package paths). stdout and
    /// stderr are two pipes read concurrently: chunks are passed on in the
    /// order they are read, so writes to both within a moment may swap.
    /// At the deadline the whole process group is killed (`timed_out`).
    /// Background processes are not killed when the command exits normally,
    /// but their output is only read for a short grace period after it.
    async fn run(
        &self,
        command: &str,
        deadline: Duration,
        on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<CommandOutput, SandboxError> {
        let started = Instant::now();
        let deadline_at = started + deadline;
        let mut child = self
            .command(command)
            .spawn()
            .map_err(|e| SandboxError::Other(format!("cannot start bash: {e}")))?;
        let pgid = child.id();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
        let (mut out_carry, mut err_carry) = (Vec::new(), Vec::new());
        let mut output = OutputBuffer::default();
        let mut status = None;
        let mut timed_out = false;
        // Set once the command exited or was killed: stop reading then.
        let mut give_up_at: Option<Instant> = None;
        loop {
            if stdout.is_none() && stderr.is_none() && status.is_some() {
                break;
            }
            let give_up = give_up_at.unwrap_or(deadline_at);
            // Biased: the timers come first so that a flood of output cannot
            // starve them; when both pipes are ready stdout goes first.
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline_at), if !timed_out && status.is_none() => {
                    timed_out = true;
                    if let Some(pgid) = pgid {
                        let _ = tokio::task::spawn_blocking(move || kill_group(pgid)).await;
                    }
                    let _ = child.start_kill();
                    give_up_at = Some(Instant::now() + PIPE_GRACE + Duration::from_secs(2));
                }
                _ = tokio::time::sleep_until(give_up), if give_up_at.is_some() => {
                    break;
                }
                read = async { stdout.as_mut().unwrap().read(&mut out_buf).await }, if stdout.is_some() => {
                    let n = read.unwrap_or(0);
                    let text = decode(&mut out_carry, &out_buf[..n], n == 0);
                    if n == 0 {
                        stdout = None;
                    }
                    if !text.is_empty() {
                        on_output(&text);
                        output.push(&text);
                    }
                }
                read = async { stderr.as_mut().unwrap().read(&mut err_buf).await }, if stderr.is_some() => {
                    let n = read.unwrap_or(0);
                    let text = decode(&mut err_carry, &err_buf[..n], n == 0);
                    if n == 0 {
                        stderr = None;
                    }
                    if !text.is_empty() {
                        on_output(&text);
                        output.push(&text);
                    }
                }
                exited = child.wait(), if status.is_none() => {
                    status = Some(exited.map_err(|e| SandboxError::Other(format!("waiting for bash: {e}")))?);
                    if give_up_at.is_none() {
                        give_up_at = Some(Instant::now() + PIPE_GRACE);
                    }
                }
            }
        }
        if status.is_none() {
            // Killed but not reaped in time; `kill_on_drop` finishes the job.
            let _ = child.start_kill();
        }
        Ok(CommandOutput {
            output: output.finish(),
            exit_code: status.and_then(|s| s.code()),
            timed_out,
        })
    }

    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let resolved = self.resolve(path)?;
        let path = path.to_string();
        blocking(move || {
            if resolved.is_dir() {
                return Err(SandboxError::Io {
                    path,
                    message: "is a directory".to_string(),
                });
            }
            std::fs::read(&resolved).map_err(|e| io_error(&path, &e))
        })
        .await
    }

    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError> {
        let resolved = self.resolve(path)?;
        if resolved == self.root {
            return Err(SandboxError::Io {
                path: path.to_string(),
                message: "is a directory".to_string(),
            });
        }
        let path = path.to_string();
        let contents = contents.to_vec();
        blocking(move || {
            if let Some(parent) = resolved.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_error(&path, &e))?;
            }
            std::fs::write(&resolved, contents).map_err(|e| io_error(&path, &e))
        })
        .await
    }

    /// Paths are relative to `dir` (so to the root for `""`), joined with `/`.
    /// Directories themselves are not listed; symlinks are, without
    /// descending into symlinked directories.
    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError> {
        let resolved = self.resolve(dir)?;
        let dir = dir.to_string();
        blocking(move || {
            let metadata = std::fs::metadata(&resolved).map_err(|e| io_error(&dir, &e))?;
            if !metadata.is_dir() {
                return Err(SandboxError::Io {
                    path: dir,
                    message: "not a directory".to_string(),
                });
            }
            let mut files = Vec::new();
            walk(&resolved, "", &mut files).map_err(|e| io_error(&dir, &e))?;
            files.sort();
            Ok(files)
        })
        .await
    }

    async fn teardown(&self) -> Result<(), SandboxError> {
        let root = self.root.clone();
        blocking(move || match std::fs::remove_dir_all(&root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&root.to_string_lossy(), &e)),
        })
        .await
    }
}

/// Package-manager commands used by [`provision`]; each gets the target
/// directory and then the package names appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installers {
    /// Followed by `ENV_DIR/pip PKG...`.
    pub pip: Vec<String>,
    /// Followed by `ENV_DIR/npm PKG...`.
    pub npm: Vec<String>,
}

impl Default for Installers {
    fn default() -> Self {
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect();
        Self {
            pip: words("python3 -m pip install --quiet --target"),
            npm: words("npm install --silent --prefix"),
        }
    }
}

/// Name of the marker file holding the digest of the installed packages.
pub const PROVISIONED_MARKER: &str = ".provisioned";

fn packages_digest(packages: &Packages) -> String {
    let mut hasher = Sha256::new();
    for (manager, list) in [("pip", &packages.pip), ("npm", &packages.npm)] {
        hasher.update(manager.as_bytes());
        hasher.update([0]);
        for package in list {
            hasher.update(package.as_bytes());
            hasher.update([0]);
        }
        hasher.update([1]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One lock per environment directory, so concurrent sessions of one
/// environment install once (within this process; separate agentform
/// processes are not coordinated).
fn env_lock(env_dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<StdMutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(env_dir.to_path_buf()).or_default().clone()
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    &text[cut..]
}

async fn install(
    manager: &str,
    prefix: &[String],
    target: &Path,
    packages: &[String],
) -> Result<(), SandboxError> {
    let failed = |message: String| {
        SandboxError::Provision(format!(
            "{manager} install of {}: {message}",
            packages.join(" ")
        ))
    };
    let (program, args) = prefix
        .split_first()
        .ok_or_else(|| failed("no installer command configured".to_string()))?;
    std::fs::create_dir_all(target)
        .map_err(|e| failed(format!("cannot create {}: {e}", target.display())))?;
    let output = Command::new(program)
        .args(args)
        .arg(target)
        .args(packages)
        .current_dir(target)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| failed(format!("cannot run `{program}`: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let status = match output.status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    };
    Err(failed(format!("{status}\n{}", tail(text.trim_end(), 2000))))
}

/// Installs `packages` into `env_dir` (pip into `env_dir/pip`, npm into
/// `env_dir/npm`) unless the same package lists were installed already.
/// Returns whether anything was installed. On failure the marker is not
/// written, so the next call tries again.
pub async fn provision(
    env_dir: &Path,
    packages: &Packages,
    installers: &Installers,
) -> Result<bool, SandboxError> {
    if packages.pip.is_empty() && packages.npm.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(env_dir).map_err(|e| io_error(&env_dir.to_string_lossy(), &e))?;
    let env_dir =
        std::fs::canonicalize(env_dir).map_err(|e| io_error(&env_dir.to_string_lossy(), &e))?;
    let lock = env_lock(&env_dir);
    let _guard = lock.lock().await;
    let marker = env_dir.join(PROVISIONED_MARKER);
    let digest = packages_digest(packages);
    if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == digest) {
        return Ok(false);
    }
    if !packages.pip.is_empty() {
        install("pip", &installers.pip, &env_dir.join("pip"), &packages.pip).await?;
    }
    if !packages.npm.is_empty() {
        install("npm", &installers.npm, &env_dir.join("npm"), &packages.npm).await?;
    }
    std::fs::write(&marker, format!("{digest}\n"))
        .map_err(|e| io_error(&marker.to_string_lossy(), &e))?;
    Ok(true)
}

/// Sandboxes as directories on this machine: sessions' workspaces under
/// `ROOT/sessions/<session_id>/`, environments' packages under
/// `ROOT/environments/<environment_id>/`.
#[derive(Debug, Clone)]
pub struct LocalSandboxes {
    pub root: PathBuf,
    pub installers: Installers,
}

impl LocalSandboxes {
    pub fn new(root: PathBuf) -> Self {
        LocalSandboxes {
            root,
            installers: Installers::default(),
        }
    }

    fn session_dir(&self, session_id: &str) -> PathBuf {
        self.root.join("sessions").join(session_id)
    }
}

#[async_trait]
impl SandboxProvider for LocalSandboxes {
    async fn open(&self, spec: &SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        let env_id = &spec.environment_id;
        let packages = &spec.packages;
        let env_dir = if packages.pip.is_empty() && packages.npm.is_empty() {
            None
        } else {
            let dir = self.root.join("environments").join(env_id);
            provision(&dir, packages, &self.installers)
                .await
                .map_err(|e| SandboxError::Provision(format!("environment `{env_id}`: {e}")))?;
            Some(dir)
        };
        let workspace = Workspace::create(
            self.session_dir(&spec.session_id),
            WorkspaceOptions {
                network: spec.network.clone(),
                env_dir,
            },
        )?;
        Ok(Arc::new(workspace))
    }

    async fn remove(&self, session_id: &str) -> Result<(), SandboxError> {
        let dir = self.session_dir(session_id);
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_error(&dir.to_string_lossy(), &e)),
            _ => Ok(()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(dir.path().join("ws"), WorkspaceOptions::default()).unwrap();
        (dir, ws)
    }

    async fn run(ws: &Workspace, command: &str) -> CommandOutput {
        ws.run(command, Duration::from_secs(20), &mut |_| {})
            .await
            .unwrap()
    }

    fn is_escape<T: std::fmt::Debug>(r: Result<T, SandboxError>) -> bool {
        matches!(r, Err(SandboxError::Escape(_)))
    }

    #[test]
    fn create_makes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::create(dir.path().join("a/b/c"), WorkspaceOptions::default()).unwrap();
        assert!(ws.root().is_dir());
        assert!(ws.root().is_absolute());
        assert!(!ws.network_enforced());
    }

    #[test]
    fn resolve_plain_paths() {
        let (_d, ws) = workspace();
        let root = ws.root().to_path_buf();
        assert_eq!(ws.resolve("").unwrap(), root);
        assert_eq!(ws.resolve(".").unwrap(), root);
        assert_eq!(ws.resolve("a/b.txt").unwrap(), root.join("a/b.txt"));
        assert_eq!(ws.resolve("./a//b/../c").unwrap(), root.join("a/c"));
        assert_eq!(ws.resolve("a/..").unwrap(), root);
    }

    #[tokio::test]
    async fn refuses_lexical_escapes() {
        let (_d, ws) = workspace();
        for path in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "..",
            "a/b/../../../x",
            "/",
        ] {
            assert!(is_escape(ws.resolve(path)), "{path}");
            assert!(is_escape(ws.read_file(path).await), "{path}");
            assert!(is_escape(ws.write_file(path, b"x").await), "{path}");
            assert!(is_escape(ws.list_files(path).await), "{path}");
        }
        assert_eq!(
            ws.read_file("../x").await.unwrap_err(),
            SandboxError::Escape("../x".into())
        );
    }

    #[tokio::test]
    async fn refuses_symlinks_out() {
        let (d, ws) = workspace();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        let root = ws.root().to_path_buf();
        symlink("/etc", root.join("etc")).unwrap();
        symlink(&outside, root.join("out_dir")).unwrap();
        symlink(outside.join("secret"), root.join("secret_link")).unwrap();
        symlink("../outside", root.join("rel_out")).unwrap();
        // A dangling symlink whose target is outside.
        symlink(outside.join("new_file"), root.join("dangling")).unwrap();
        symlink("../outside/new_rel", root.join("dangling_rel")).unwrap();
        // A symlinked parent directory.
        std::fs::create_dir(root.join("sub")).unwrap();
        symlink(&outside, root.join("sub/parent_link")).unwrap();

        for path in [
            "etc/passwd",
            "etc",
            "out_dir/secret",
            "secret_link",
            "rel_out/secret",
            "sub/parent_link/secret",
        ] {
            assert!(is_escape(ws.read_file(path).await), "{path}");
        }
        for path in [
            "dangling",
            "dangling_rel",
            "out_dir/new",
            "out_dir/deeper/new",
            "sub/parent_link/new",
            "secret_link",
            "etc/x",
        ] {
            assert!(is_escape(ws.write_file(path, b"pwned").await), "{path}");
        }
        assert!(is_escape(ws.list_files("out_dir").await));
        assert!(is_escape(ws.list_files("etc").await));
        assert!(!outside.join("new_file").exists());
        assert!(!outside.join("new_rel").exists());
        assert!(!outside.join("new").exists());
        assert!(!outside.join("deeper").exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "s"
        );
    }

    #[tokio::test]
    async fn follows_symlinks_that_stay_inside() {
        let (_d, ws) = workspace();
        let root = ws.root().to_path_buf();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::fs::write(root.join("real/dir/f.txt"), "hi").unwrap();
        symlink("real/dir", root.join("rel_link")).unwrap();
        symlink(root.join("real"), root.join("abs_link")).unwrap();
        symlink("../real/dir/f.txt", root.join("real/up_link")).unwrap();
        symlink("inside_new.txt", root.join("dangling_in")).unwrap();
        assert_eq!(ws.read_file("rel_link/f.txt").await.unwrap(), b"hi");
        assert_eq!(ws.read_file("abs_link/dir/f.txt").await.unwrap(), b"hi");
        assert_eq!(ws.read_file("real/up_link").await.unwrap(), b"hi");
        // `..` after a symlink is physical: rel_link/.. is real/, not the root.
        assert_eq!(ws.resolve("rel_link/..").unwrap(), root.join("real"));
        ws.write_file("dangling_in", b"ok").await.unwrap();
        assert_eq!(std::fs::read(root.join("inside_new.txt")).unwrap(), b"ok");
        // A symlink that climbs above the root through a link is refused.
        symlink("../../..", root.join("real/dir/climb")).unwrap();
        assert!(is_escape(ws.resolve("real/dir/climb/x")));
    }

    #[tokio::test]
    async fn symlink_loops_fail_cleanly() {
        let (_d, ws) = workspace();
        let root = ws.root().to_path_buf();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        assert!(matches!(
            ws.read_file("a").await,
            Err(SandboxError::Io { .. })
        ));
    }

    #[tokio::test]
    async fn files_round_trip() {
        let (_d, ws) = workspace();
        ws.write_file("deep/er/f.txt", b"one").await.unwrap();
        assert_eq!(ws.read_file("deep/er/f.txt").await.unwrap(), b"one");
        ws.write_file("deep/er/f.txt", b"two").await.unwrap();
        assert_eq!(ws.read_file("./deep/er/f.txt").await.unwrap(), b"two");
        assert!(matches!(
            ws.read_file("missing").await,
            Err(SandboxError::Io { .. })
        ));
        assert!(matches!(
            ws.read_file("deep").await,
            Err(SandboxError::Io { .. })
        ));
        assert!(matches!(
            ws.write_file("", b"x").await,
            Err(SandboxError::Io { .. })
        ));
    }

    #[tokio::test]
    async fn list_files_is_recursive_sorted_and_does_not_follow_dir_links() {
        let (_d, ws) = workspace();
        let root = ws.root().to_path_buf();
        for f in ["b.txt", "a/z.txt", "a/b/c.txt", ".hidden/x", "a.txt"] {
            ws.write_file(f, b"x").await.unwrap();
        }
        std::fs::create_dir(root.join("empty")).unwrap();
        symlink("a", root.join("link_to_a")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        let files = ws.list_files("").await.unwrap();
        assert_eq!(
            files,
            vec![
                ".hidden/x",
                "a.txt",
                "a/b/c.txt",
                "a/z.txt",
                "b.txt",
                "etc",
                "link_to_a"
            ]
        );
        assert_eq!(ws.list_files("a").await.unwrap(), vec!["b/c.txt", "z.txt"]);
        assert_eq!(ws.list_files("link_to_a/b").await.unwrap(), vec!["c.txt"]);
        assert!(matches!(
            ws.list_files("b.txt").await,
            Err(SandboxError::Io { .. })
        ));
        assert!(matches!(
            ws.list_files("nope").await,
            Err(SandboxError::Io { .. })
        ));
    }

    #[tokio::test]
    async fn teardown_removes_the_root() {
        let (_d, ws) = workspace();
        ws.write_file("f", b"x").await.unwrap();
        ws.teardown().await.unwrap();
        assert!(!ws.root().exists());
        ws.teardown().await.unwrap();
    }

    #[tokio::test]
    async fn run_captures_output_cwd_and_environment() {
        let (_d, ws) = workspace();
        let out = run(&ws, "echo out; echo err >&2; pwd; echo \"$HOME\"; exit 3").await;
        assert_eq!(out.exit_code, Some(3));
        assert!(!out.timed_out);
        let root = ws.root().to_string_lossy().into_owned();
        assert_eq!(
            out.output.lines().filter(|l| *l == root).count(),
            2,
            "{}",
            out.output
        );
        assert!(out.output.contains("out\n") && out.output.contains("err\n"));
        let out = run(
            &ws,
            "read x; echo \"[$x]\"; env | cut -d= -f1 | sort | tr '\\n' ' '",
        )
        .await;
        assert_eq!(out.exit_code, Some(0));
        assert!(out.output.starts_with("[]\n"), "{}", out.output);
        assert!(!out.output.contains("CARGO"), "{}", out.output);
    }

    #[tokio::test]
    async fn run_interleaves_in_order_of_arrival() {
        let (_d, ws) = workspace();
        let out = run(&ws, "echo 1; sleep 0.1; echo 2 >&2; sleep 0.1; echo 3").await;
        assert_eq!(out.output, "1\n2\n3\n");
    }

    #[tokio::test]
    async fn run_streams_output() {
        let (_d, ws) = workspace();
        let mut chunks: Vec<String> = Vec::new();
        let out = ws
            .run(
                "echo first; sleep 0.2; echo second >&2",
                Duration::from_secs(20),
                &mut |c| chunks.push(c.to_string()),
            )
            .await
            .unwrap();
        assert!(chunks.len() >= 2, "{chunks:?}");
        assert_eq!(chunks.concat(), out.output);
        assert_eq!(chunks[0], "first\n");
    }

    #[tokio::test]
    async fn run_kills_the_process_group_at_the_deadline() {
        let (_d, ws) = workspace();
        let started = std::time::Instant::now();
        let marker = ws.root().join("survived");
        let out = ws
            .run(
                "(sleep 2; touch survived) & echo started; sleep 30",
                Duration::from_millis(300),
                &mut |_| {},
            )
            .await
            .unwrap();
        assert!(out.timed_out);
        assert_eq!(out.exit_code, None);
        assert!(out.output.contains("started"));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a child of the command survived the kill");
    }

    #[tokio::test]
    async fn run_does_not_wait_for_background_processes() {
        let (_d, ws) = workspace();
        let started = std::time::Instant::now();
        let out = run(&ws, "sleep 10 & echo done").await;
        assert!(!out.timed_out);
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.output, "done\n");
        assert!(started.elapsed() < Duration::from_secs(8));
    }

    #[tokio::test]
    async fn run_truncates_to_the_last_100kb() {
        let (_d, ws) = workspace();
        let out = run(
            &ws,
            "head -c 300000 /dev/zero | tr '\\0' a; echo; echo THE-END",
        )
        .await;
        assert!(out.output.len() < OUTPUT_LIMIT + 200);
        assert!(
            out.output.starts_with("[... output truncated"),
            "{}",
            &out.output[..100]
        );
        assert!(out.output.ends_with("THE-END\n"));
    }

    #[tokio::test]
    async fn run_keeps_multibyte_characters_whole() {
        let (_d, ws) = workspace();
        let out = run(&ws, "for i in $(seq 5000); do printf 'é€😀'; done").await;
        assert!(!out.output.contains(char::REPLACEMENT_CHARACTER));
        assert_eq!(out.output.chars().count(), 15000);
    }

    #[test]
    fn decode_carries_partial_sequences() {
        let mut carry = Vec::new();
        let euro = "€".as_bytes();
        assert_eq!(decode(&mut carry, &euro[..1], false), "");
        assert_eq!(decode(&mut carry, &euro[1..], false), "€");
        assert_eq!(decode(&mut carry, b"a\xffb", false), "a\u{FFFD}b");
        assert_eq!(decode(&mut carry, &euro[..2], true), "\u{FFFD}");
        assert!(carry.is_empty());
    }

    #[tokio::test]
    async fn run_sees_env_dir_packages() {
        let d = tempfile::tempdir().unwrap();
        let env_dir = d.path().join("env");
        std::fs::create_dir_all(env_dir.join("npm/node_modules/.bin")).unwrap();
        let tool = env_dir.join("npm/node_modules/.bin/hello-tool");
        std::fs::write(&tool, "#!/bin/sh\necho hello from tool\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let options = WorkspaceOptions {
            network: Network::Unrestricted,
            env_dir: Some(env_dir.clone()),
        };
        let ws = Workspace::create(d.path().join("ws"), options).unwrap();
        let out = run(&ws, "hello-tool; echo \"$PYTHONPATH\"; echo \"$NODE_PATH\"").await;
        let expected = format!(
            "hello from tool\n{}\n{}\n",
            env_dir.join("pip").display(),
            env_dir.join("npm/node_modules").display()
        );
        assert_eq!(out.output, expected);
    }

    #[tokio::test]
    async fn limited_network_has_no_network_when_enforced() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connect = format!("echo hi > /dev/tcp/127.0.0.1/{port} && echo connected");
        let d = tempfile::tempdir().unwrap();
        let open = Workspace::create(d.path().join("open"), WorkspaceOptions::default()).unwrap();
        let out = run(&open, &connect).await;
        assert_eq!(out.exit_code, Some(0), "{}", out.output);

        let options = WorkspaceOptions {
            network: Network::Limited {
                allowed_hosts: vec!["pypi.org".into()],
            },
            env_dir: None,
        };
        let ws = Workspace::create(d.path().join("closed"), options).unwrap();
        if !ws.network_enforced() {
            // `unshare` does not work here: nothing to check.
            return;
        }
        let out = run(&ws, &connect).await;
        assert_ne!(out.exit_code, Some(0), "{}", out.output);
        assert!(!out.output.contains("connected"));
        // Files and the working directory still work inside the namespace.
        let out = run(&ws, "echo x > f && cat f && pwd").await;
        assert_eq!(out.exit_code, Some(0), "{}", out.output);
        assert_eq!(out.output, format!("x\n{}\n", ws.root().display()));
    }

    fn fake_installer(dir: &Path) -> Vec<String> {
        let script = dir.join("fake-install.sh");
        std::fs::write(
            &script,
            "target=\"$1\"; shift\nsleep 0.2\necho \"$@\" >> \"$target/../calls-$(basename \"$target\")\"\n\
             for p in \"$@\"; do touch \"$target/$p\"; done\n",
        )
        .unwrap();
        vec!["bash".to_string(), script.to_string_lossy().into_owned()]
    }

    fn calls(env_dir: &Path, manager: &str) -> Vec<String> {
        std::fs::read_to_string(env_dir.join(format!("calls-{manager}")))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn provision_installs_once_then_skips() {
        let d = tempfile::tempdir().unwrap();
        let fake = fake_installer(d.path());
        let installers = Installers {
            pip: fake.clone(),
            npm: fake,
        };
        let env_dir = d.path().join("env");
        let packages = Packages {
            pip: vec!["requests".into(), "rich".into()],
            npm: vec!["left-pad".into()],
        };
        assert!(provision(&env_dir, &packages, &installers).await.unwrap());
        assert!(env_dir.join("pip/requests").exists() && env_dir.join("pip/rich").exists());
        assert!(env_dir.join("npm/left-pad").exists());
        assert!(!provision(&env_dir, &packages, &installers).await.unwrap());
        assert_eq!(calls(&env_dir, "pip"), vec!["requests rich"]);
        assert_eq!(calls(&env_dir, "npm"), vec!["left-pad"]);
        // Other packages: installed again.
        let more = Packages {
            pip: vec!["requests".into()],
            npm: vec![],
        };
        assert!(provision(&env_dir, &more, &installers).await.unwrap());
        assert_eq!(calls(&env_dir, "pip").len(), 2);
        assert_eq!(calls(&env_dir, "npm").len(), 1);
        // Nothing to install.
        assert!(
            !provision(&d.path().join("none"), &Packages::default(), &installers)
                .await
                .unwrap()
        );
        assert!(!d.path().join("none").exists());
    }

    #[tokio::test]
    async fn provision_concurrent_sessions_install_once() {
        let d = tempfile::tempdir().unwrap();
        let fake = fake_installer(d.path());
        let installers = Installers {
            pip: fake.clone(),
            npm: fake,
        };
        let env_dir = d.path().join("env");
        let packages = Packages {
            pip: vec!["numpy".into()],
            npm: vec![],
        };
        let results = futures_join(
            provision(&env_dir, &packages, &installers),
            provision(&env_dir, &packages, &installers),
            provision(&env_dir, &packages, &installers),
        )
        .await;
        assert_eq!(results.iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
        assert_eq!(calls(&env_dir, "pip"), vec!["numpy"]);
    }

    async fn futures_join<F: std::future::Future>(a: F, b: F, c: F) -> [F::Output; 3] {
        let (a, b, c) = tokio::join!(a, b, c);
        [a, b, c]
    }

    #[tokio::test]
    async fn provision_failure_names_the_manager_and_writes_no_marker() {
        let d = tempfile::tempdir().unwrap();
        let installers = Installers {
            pip: vec![
                "bash".into(),
                "-c".into(),
                "echo 'ERROR: no such package' >&2; exit 3".into(),
            ],
            npm: vec!["true".into()],
        };
        let env_dir = d.path().join("env");
        let packages = Packages {
            pip: vec!["nonexistent-pkg".into()],
            npm: vec![],
        };
        let err = provision(&env_dir, &packages, &installers)
            .await
            .unwrap_err();
        let SandboxError::Provision(message) = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("pip"), "{message}");
        assert!(message.contains("no such package"), "{message}");
        assert!(message.contains("exit code 3"), "{message}");
        assert!(!env_dir.join(PROVISIONED_MARKER).exists());
        let missing = Installers {
            pip: vec!["/nonexistent/installer".into()],
            npm: vec![],
        };
        let err = provision(&env_dir, &packages, &missing).await.unwrap_err();
        assert!(err.to_string().contains("pip"), "{err}");
    }

    #[test]
    fn default_installers() {
        let i = Installers::default();
        assert_eq!(i.pip.join(" "), "python3 -m pip install --quiet --target");
        assert_eq!(i.npm.join(" "), "npm install --silent --prefix");
    }
}
