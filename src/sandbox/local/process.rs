//! Running a command of a workspace: the one place that launches processes
//! (commands, package installers, the `unshare` probe, the group kill). It
//! owns the command line and environment, the deadline, output capture and
//! the kill of the process group; it must not decide which paths a command
//! may touch (see `paths.rs` for the file tools' rules).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::confine::{self, Bubblewrap, Jail, Net};
use super::proxy::{AllowList, EgressProxy};
use crate::sandbox::{CommandOutput, Limits, Network, SandboxError};

/// Command output kept by [`Sandbox::run`](crate::sandbox::Sandbox::run):
/// the last 100 KB.
pub const OUTPUT_LIMIT: usize = 100 * 1024;

/// How long pipes are still read after the command exited (or was killed):
/// a process left in the background may hold them open forever.
const PIPE_GRACE: Duration = Duration::from_millis(300);

/// How the commands of a workspace are confined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Confinement {
    /// bubblewrap, as `confine.rs` sets it up; commands refuse to run where
    /// it does not work.
    #[default]
    Bubblewrap,
    /// No confinement: commands run with agentform's rights (only limited
    /// networking is attempted, with `unshare -n`). The manifest must ask
    /// for it (`providers.local.sandbox: none`).
    None,
}

/// How the commands of one workspace (or of one environment's installs)
/// are launched.
#[derive(Debug)]
pub(super) struct Launcher {
    /// The working directory and `HOME`, bound read-write when confined.
    root: PathBuf,
    /// The environment's package directory, see [`provision`](super::provision).
    env_dir: Option<PathBuf>,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Unconfined {
        /// Prefix that runs a command without network, when enforced.
        unshare: Option<Vec<String>>,
    },
    Confined {
        bwrap: &'static Bubblewrap,
        limits: Limits,
        net: Net,
        /// Keeps the egress proxy of a bridged network alive.
        proxy: Option<Arc<EgressProxy>>,
        /// Whether the package directory is writable (installs).
        packages_writable: bool,
    },
    /// Commands were to be confined and cannot be: they refuse with this.
    Refused(SandboxError),
}

/// What a [`Launcher`] needs besides its directories.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    pub confinement: Confinement,
    pub network: Network,
    pub limits: Limits,
    /// The agentform binary, for the egress bridge; this executable if `None`.
    pub agentform_binary: Option<PathBuf>,
    /// An egress proxy to share (installs and the workspace of one session).
    pub proxy: Option<Arc<EgressProxy>>,
}

impl Launcher {
    pub(super) fn new(
        root: PathBuf,
        env_dir: Option<PathBuf>,
        options: &LaunchOptions,
    ) -> Result<Self, SandboxError> {
        let mode = match options.confinement {
            Confinement::None => Mode::Unconfined {
                unshare: unconfined_unshare(&options.network),
            },
            Confinement::Bubblewrap => {
                confined_mode(&root, options, false).unwrap_or_else(Mode::Refused)
            }
        };
        Ok(Self {
            root,
            env_dir,
            mode,
        })
    }

    /// A launcher for an environment's package installs: the package
    /// directory is writable, the working directory is `workdir` in it.
    pub(super) fn for_install(
        env_dir: PathBuf,
        workdir: PathBuf,
        options: &LaunchOptions,
    ) -> Result<Self, SandboxError> {
        let mode = match options.confinement {
            Confinement::None => Mode::Unconfined { unshare: None },
            Confinement::Bubblewrap => confined_mode(&env_dir, options, true)?,
        };
        Ok(Self {
            root: workdir,
            env_dir: Some(env_dir),
            mode,
        })
    }

    /// Whether commands really run without network (limited networking,
    /// confined or with a working `unshare`).
    pub(super) fn network_enforced(&self) -> bool {
        match &self.mode {
            Mode::Unconfined { unshare } => unshare.is_some(),
            Mode::Confined { net, .. } => *net != Net::Shared,
            Mode::Refused(_) => true,
        }
    }

    /// Whether commands run confined.
    pub(super) fn confined(&self) -> bool {
        matches!(self.mode, Mode::Confined { .. })
    }

    /// `program` in the root (confined, or behind the `unshare` prefix),
    /// with stdin null, piped output, the reduced environment and a process
    /// group of its own.
    fn command(&self, program: &[OsString]) -> Result<Command, SandboxError> {
        let (argv, env) = match &self.mode {
            Mode::Refused(why) => return Err(why.clone()),
            Mode::Unconfined { unshare } => {
                let mut argv: Vec<OsString> = Vec::new();
                if let Some(prefix) = unshare {
                    argv.extend(prefix.iter().map(OsString::from));
                }
                argv.extend(program.iter().cloned());
                (argv, self.unconfined_environment())
            }
            Mode::Confined {
                bwrap,
                limits,
                net,
                packages_writable,
                ..
            } => {
                let jail = Jail {
                    workdir: &self.root,
                    packages: self.env_dir.as_deref(),
                    packages_writable: *packages_writable,
                    net: net.clone(),
                    limits,
                    env: &[],
                };
                (bwrap.argv(&jail, program), Vec::new())
            }
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let dir = if self.confined() {
            Path::new("/")
        } else {
            self.root.as_path()
        };
        cmd.current_dir(dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// The environment of unconfined commands: agentform's PATH and LANG,
    /// HOME (the root), and the package directories of the environment
    /// before agentform's `PYTHONPATH` and `NODE_PATH`.
    fn unconfined_environment(&self) -> Vec<(String, OsString)> {
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
        let mut own: [(&str, Option<PathBuf>); 2] = [("PYTHONPATH", None), ("NODE_PATH", None)];
        if let Some(dir) = &self.env_dir {
            let pip = dir.join("pip");
            let modules = dir.join("npm").join("node_modules");
            path_dirs.push(modules.join(".bin"));
            path_dirs.push(pip.join("bin"));
            own = [("PYTHONPATH", Some(pip)), ("NODE_PATH", Some(modules))];
        }
        // Agentform's own package paths follow the environment's, as its
        // PATH does (an E2B template's packages, for the serve in a
        // sandbox).
        for (name, dir) in own {
            let inherited = std::env::var_os(name).filter(|v| !v.is_empty());
            let dirs: Vec<PathBuf> = dir
                .into_iter()
                .chain(inherited.iter().flat_map(std::env::split_paths))
                .collect();
            if let (false, Ok(value)) = (dirs.is_empty(), std::env::join_paths(dirs)) {
                env.push((name.to_string(), value));
            }
        }
        path_dirs.extend(std::env::split_paths(&base_path));
        let path = std::env::join_paths(path_dirs).unwrap_or(base_path);
        env.push(("PATH".to_string(), path));
        env
    }

    /// Runs `bash -c command`; see [`Launcher::run_program`].
    pub(super) async fn run(
        &self,
        command: &str,
        deadline: Duration,
        on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<CommandOutput, SandboxError> {
        let program = ["bash".into(), "-c".into(), command.into()];
        self.run_program(&program, deadline, on_output).await
    }

    /// Runs `program` (see [`Launcher::command`]). stdout and stderr are two
    /// pipes read concurrently: chunks are passed on in the order they are
    /// read, so writes to both within a moment may swap. At the deadline the
    /// whole process group is killed (`timed_out`); confined, everything the
    /// command started dies with it, and with the command's end. Unconfined,
    /// background processes are not killed when the command exits normally,
    /// but their output is only read for a short grace period after it.
    pub(super) async fn run_program(
        &self,
        program: &[OsString],
        deadline: Duration,
        on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<CommandOutput, SandboxError> {
        let deadline_at = Instant::now() + deadline;
        let what = program[0].to_string_lossy().into_owned();
        let mut child = self
            .command(program)?
            .spawn()
            .map_err(|e| SandboxError::Other(format!("cannot start {what}: {e}")))?;
        let mut stdout = Pipe::new(child.stdout.take());
        let mut stderr = Pipe::new(child.stderr.take());
        let mut output = OutputBuffer::default();
        let mut emit = |text: String| {
            if !text.is_empty() {
                on_output(&text);
                output.push(&text);
            }
        };
        let mut status = None;
        let mut timed_out = false;
        // Set once the command exited or was killed: stop reading then.
        let mut give_up_at: Option<Instant> = None;
        while stdout.is_open() || stderr.is_open() || status.is_none() {
            let give_up = give_up_at.unwrap_or(deadline_at);
            // Biased: the timers come first so that a flood of output cannot
            // starve them; when both pipes are ready stdout goes first.
            tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline_at), if !timed_out && status.is_none() => {
                    timed_out = true;
                    kill(&mut child).await;
                    give_up_at = Some(Instant::now() + PIPE_GRACE + Duration::from_secs(2));
                }
                _ = tokio::time::sleep_until(give_up), if give_up_at.is_some() => break,
                read = stdout.read(), if stdout.is_open() => emit(stdout.decode(read)),
                read = stderr.read(), if stderr.is_open() => emit(stderr.decode(read)),
                exited = child.wait(), if status.is_none() => {
                    status = Some(exited.map_err(|e| SandboxError::Other(format!("waiting for {what}: {e}")))?);
                    give_up_at.get_or_insert_with(|| Instant::now() + PIPE_GRACE);
                }
            }
        }
        if status.is_none() {
            // Killed but not reaped in time; `kill_on_drop` finishes the job.
            let _ = child.start_kill();
        }
        let refusals = match &self.mode {
            Mode::Confined {
                proxy: Some(proxy), ..
            } => proxy.take_refusals(),
            _ => Vec::new(),
        };
        Ok(CommandOutput {
            output: output.finish(),
            exit_code: status.and_then(|s| s.code()),
            timed_out,
            refusals,
        })
    }
}

/// The confined mode of a launcher rooted at `root`.
fn confined_mode(
    root: &Path,
    options: &LaunchOptions,
    packages_writable: bool,
) -> Result<Mode, SandboxError> {
    let bwrap = confine::bubblewrap()?;
    if bwrap.drops_privileges() {
        confine::reachable_by_others(root)?;
    }
    let (net, proxy) = match &options.network {
        Network::Unrestricted => (Net::Shared, None),
        network if !network.reaches_anything() => (Net::None, None),
        Network::Limited {
            allowed_hosts,
            allow_package_managers,
        } => {
            let proxy = match &options.proxy {
                Some(proxy) => Arc::clone(proxy),
                None => Arc::new(EgressProxy::start(AllowList::new(
                    allowed_hosts,
                    *allow_package_managers,
                ))?),
            };
            let binary = match &options.agentform_binary {
                Some(path) => path.clone(),
                None => std::env::current_exe().map_err(|e| {
                    SandboxError::Other(format!("cannot find the agentform binary: {e}"))
                })?,
            };
            if bwrap.drops_privileges() {
                confine::reachable_by_others(&binary)?;
            }
            let net = Net::Bridged {
                socket: proxy.socket().to_path_buf(),
                binary,
                port: BRIDGE_PORT,
            };
            (net, Some(proxy))
        }
    };
    Ok(Mode::Confined {
        bwrap,
        limits: options.limits,
        net,
        proxy,
        packages_writable,
    })
}

/// The port the egress bridge listens on inside a sandbox (its own
/// network namespace, so it is never taken).
const BRIDGE_PORT: u16 = 3128;

/// Unconfined: `unshare -n` for limited networking where it works.
fn unconfined_unshare(network: &Network) -> Option<Vec<String>> {
    match network {
        Network::Unrestricted => None,
        Network::Limited { .. } => {
            let probe = unshare_prefix();
            if probe.is_none() {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "`unshare -n` does not work on this machine: commands of unconfined \
                         workspaces with limited networking run with full network access"
                    )
                });
            }
            probe
        }
    }
}

/// Kills `child` and its whole process group.
async fn kill(child: &mut Child) {
    if let Some(pgid) = child.id() {
        kill_group(pgid);
    }
    let _ = child.start_kill();
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

/// Kills the whole process group `pgid` (the command and its children).
fn kill_group(pgid: u32) {
    let Some(pid) = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// One output pipe of a command: its reader until end of file, and the
/// bytes of a character not yet complete.
struct Pipe<R> {
    reader: Option<R>,
    buf: Vec<u8>,
    carry: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Pipe<R> {
    fn new(reader: Option<R>) -> Self {
        Self {
            reader,
            buf: vec![0u8; 8192],
            carry: Vec::new(),
        }
    }

    fn is_open(&self) -> bool {
        self.reader.is_some()
    }

    /// The next read; never completes on a closed pipe.
    async fn read(&mut self) -> std::io::Result<usize> {
        match self.reader.as_mut() {
            Some(reader) => reader.read(&mut self.buf).await,
            None => std::future::pending().await,
        }
    }

    /// The text of a read's bytes; a failed or empty read closes the pipe.
    fn decode(&mut self, read: std::io::Result<usize>) -> String {
        let n = read.unwrap_or(0);
        if n == 0 {
            self.reader = None;
        }
        decode(&mut self.carry, &self.buf[..n], n == 0)
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{run, workspace};
    use super::super::{Workspace, WorkspaceOptions};
    use super::*;
    use crate::sandbox::Sandbox;

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
            ..WorkspaceOptions::default()
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
                allowed_hosts: vec![],
                allow_package_managers: false,
            },
            ..WorkspaceOptions::default()
        };
        let ws = Workspace::create(d.path().join("closed"), options).unwrap();
        assert!(ws.network_enforced());
        let out = run(&ws, &connect).await;
        assert_ne!(out.exit_code, Some(0), "{}", out.output);
        assert!(!out.output.contains("connected"));
        // Files and the working directory still work inside the namespace.
        let out = run(&ws, "echo x > f && cat f && pwd").await;
        assert_eq!(out.exit_code, Some(0), "{}", out.output);
        assert_eq!(out.output, format!("x\n{}\n", ws.root().display()));
    }
}
