//! Confinement of commands with bubblewrap (`bwrap`): the one place that
//! decides what a command can see and do. A confined command gets
//!
//! * a mount namespace holding the system read-only (`/usr`, `/bin`, `/lib*`,
//!   `/sbin`, `/etc` with its secrets masked), the workspace read-write at its
//!   own path, the environment's packages read-only, a private `/tmp`, its
//!   own `/proc` and a minimal `/dev` — nothing else;
//! * its own PID, IPC, UTS, user and (unless networking is unrestricted)
//!   network namespaces, no capabilities, `no_new_privs`, a new session;
//! * a fixed environment (`PATH`, `HOME`, `LANG`, `TERM=dumb` and the
//!   package paths) and nothing of agentform's;
//! * limits on memory, processes, file size and CPU time (`prlimit`, set
//!   inside the new user namespace so that the process count is the
//!   sandbox's own);
//! * when agentform runs as root, the unprivileged user `nobody` (65534), so
//!   that files readable only by root stay unreadable.
//!
//! bwrap kills everything in the sandbox when its parent (agentform) dies,
//! and a command's whole tree dies with its PID namespace. This module only
//! builds command lines and probes the machine; `process.rs` runs them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use super::process::Confinement;
use crate::sandbox::{Limits, SandboxError};

/// Overrides where bwrap is found (a path); for machines that keep it
/// elsewhere, and for tests of the refusal when it is missing.
pub const BWRAP_ENV: &str = "AGENTFORM_BWRAP";

/// The user confined commands run as when agentform runs as root.
pub const SANDBOX_UID: u32 = 65534;

/// `PATH` of confined commands, before the package directories.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the egress bridge and its socket appear inside the sandbox.
pub const BRIDGE_DIR: &str = "/run/agentform";

/// System directories bound read-only (symlinks are recreated as symlinks).
const SYSTEM_DIRS: [&str; 9] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Files under `/etc` replaced by an empty file: password hashes and the like.
const MASKED_FILES: [&str; 6] = [
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/security/opasswd",
];

/// Directories under `/etc` replaced by an empty one: private keys.
const MASKED_DIRS: [&str; 3] = ["/etc/ssl/private", "/etc/sudoers.d", "/etc/ssh"];

/// What this machine confines commands with, found once per process.
#[derive(Debug, Clone)]
pub struct Bubblewrap {
    bwrap: PathBuf,
    prlimit: PathBuf,
    /// `setpriv` when agentform runs as root: commands drop to [`SANDBOX_UID`].
    setpriv: Option<PathBuf>,
}

/// The bubblewrap of this machine, or why commands cannot be confined here.
pub fn bubblewrap() -> Result<&'static Bubblewrap, SandboxError> {
    static FOUND: OnceLock<Result<Bubblewrap, String>> = OnceLock::new();
    FOUND.get_or_init(detect).as_ref().map_err(|why| {
        SandboxError::Unconfined(format!(
            "commands cannot run confined on this machine: {why}. Install bubblewrap \
                 (Debian/Ubuntu: `apt install bubblewrap`, Fedora: `dnf install bubblewrap`), or \
                 opt out in the manifest with `providers.local.sandbox: none` to run commands \
                 unconfined, with your rights"
        ))
    })
}

fn detect() -> Result<Bubblewrap, String> {
    let bwrap = match std::env::var_os(BWRAP_ENV).filter(|p| !p.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(format!(
                    "bubblewrap is not at `{}` ({BWRAP_ENV})",
                    path.display()
                ));
            }
            path
        }
        None => find_program("bwrap").ok_or("bubblewrap (`bwrap`) is not installed")?,
    };
    let prlimit = find_program("prlimit").ok_or("`prlimit` (util-linux) is not installed")?;
    if !prlimit.starts_with("/usr") && !prlimit.starts_with("/bin") {
        return Err(format!(
            "`prlimit` is at `{}`, outside the system directories a sandbox sees",
            prlimit.display()
        ));
    }
    let setpriv = if rustix::process::geteuid().is_root() {
        Some(find_program("setpriv").ok_or("`setpriv` (util-linux) is not installed")?)
    } else {
        None
    };
    let found = Bubblewrap {
        bwrap,
        prlimit,
        setpriv,
    };
    found.probe()?;
    Ok(found)
}

/// The first `name` on `PATH`, then in the usual system directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Network of a confined command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// The machine's network.
    Shared,
    /// A network namespace with loopback only.
    None,
    /// Loopback only, plus the egress bridge: the agentform binary listens on
    /// `127.0.0.1:port` inside and relays to the proxy's Unix socket.
    Bridged {
        socket: PathBuf,
        binary: PathBuf,
        port: u16,
    },
}

/// Everything one confined command line is made of.
#[derive(Debug, Clone)]
pub struct Jail<'a> {
    /// Bound read-write at its own path; the working directory and `HOME`.
    pub workdir: &'a Path,
    /// The environment's package directory, at its own path.
    pub packages: Option<&'a Path>,
    /// Whether `packages` is writable (package installs).
    pub packages_writable: bool,
    pub net: Net,
    pub limits: &'a Limits,
    /// Variables besides the fixed ones.
    pub env: &'a [(String, OsString)],
}

impl Bubblewrap {
    /// Whether commands drop to [`SANDBOX_UID`] (agentform runs as root).
    pub fn drops_privileges(&self) -> bool {
        self.setpriv.is_some()
    }

    /// Runs a trivial command the way every command will run; an error
    /// carries what bwrap said.
    fn probe(&self) -> Result<(), String> {
        let limits = Limits::default();
        let dir = std::env::temp_dir();
        let jail = Jail {
            workdir: &dir,
            packages: None,
            packages_writable: false,
            net: Net::None,
            limits: &limits,
            env: &[],
        };
        let argv = self.argv(&jail, &["true".into()]);
        let output = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", argv[0].to_string_lossy()))?;
        if output.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "bubblewrap does not work on this machine: {}",
            said.trim()
        ))
    }

    /// The command line that runs `program` (with its arguments) in `jail`.
    pub fn argv(&self, jail: &Jail<'_>, program: &[OsString]) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(setpriv) = &self.setpriv {
            argv.push(setpriv.into());
            for arg in [
                format!("--reuid={SANDBOX_UID}"),
                format!("--regid={SANDBOX_UID}"),
                "--clear-groups".into(),
                "--".into(),
            ] {
                argv.push(arg.into());
            }
        }
        argv.push(self.bwrap.clone().into());
        let mut a = Args(&mut argv);
        a.flags(&[
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
        ]);
        if jail.net == Net::Shared {
            a.flags(&["--share-net"]);
        }
        system_mounts(&mut a);
        a.flags(&["--proc", "/proc", "--dev", "/dev"]);
        a.flags(&["--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run"]);
        if let Some(dir) = jail.packages {
            let bind = if jail.packages_writable {
                "--bind"
            } else {
                "--ro-bind"
            };
            a.path_pair(bind, dir);
        }
        a.path_pair("--bind", jail.workdir);
        a.flag("--chdir").path(jail.workdir);
        if let Net::Bridged { socket, binary, .. } = &jail.net {
            a.flag("--ro-bind")
                .path(binary)
                .flag(format!("{BRIDGE_DIR}/agentform"));
            a.flag("--bind")
                .path(socket)
                .flag(format!("{BRIDGE_DIR}/egress.sock"));
        }
        a.flag("--clearenv");
        for (name, value) in environment(jail) {
            a.flag("--setenv").flag(name).value(value);
        }
        a.flag("--");
        if let Net::Bridged { port, .. } = &jail.net {
            a.flag(format!("{BRIDGE_DIR}/agentform"));
            a.flags(&[BRIDGE_COMMAND]);
            a.flag(format!("{BRIDGE_DIR}/egress.sock"));
            a.flag(format!("127.0.0.1:{port}"));
            a.flag("--");
        }
        a.path(&self.prlimit);
        let l = jail.limits;
        a.flag(format!("--as={}", l.memory_bytes));
        a.flag(format!("--nproc={}", l.processes));
        a.flag(format!("--fsize={}", l.file_size_bytes));
        a.flag(format!("--cpu={}", l.cpu_seconds));
        a.flag("--");
        argv.extend(program.iter().cloned());
        argv
    }
}

/// The hidden subcommand of the agentform binary that relays TCP inside a
/// sandbox to the egress proxy's socket, then runs the command.
pub const BRIDGE_COMMAND: &str = "__sandbox-bridge";

/// The variables of a confined command: the fixed set, the package paths,
/// the proxy, then the jail's own.
fn environment(jail: &Jail<'_>) -> Vec<(String, OsString)> {
    let mut path: Vec<PathBuf> = Vec::new();
    let mut env: Vec<(String, OsString)> = vec![
        ("HOME".into(), jail.workdir.as_os_str().to_owned()),
        ("LANG".into(), "C.UTF-8".into()),
        ("TERM".into(), "dumb".into()),
        ("TMPDIR".into(), "/tmp".into()),
    ];
    if let Some(dir) = jail.packages {
        let pip = dir.join("pip");
        let modules = dir.join("npm").join("node_modules");
        path.push(modules.join(".bin"));
        path.push(pip.join("bin"));
        env.push(("PYTHONPATH".into(), pip.into_os_string()));
        env.push(("NODE_PATH".into(), modules.into_os_string()));
    }
    path.extend(std::env::split_paths(SANDBOX_PATH));
    let path = std::env::join_paths(path).unwrap_or_else(|_| SANDBOX_PATH.into());
    env.push(("PATH".into(), path));
    if let Net::Bridged { port, .. } = &jail.net {
        let proxy = OsString::from(format!("http://127.0.0.1:{port}"));
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "npm_config_proxy",
            "npm_config_https_proxy",
        ] {
            env.push((name.into(), proxy.clone()));
        }
    }
    env.extend(jail.env.iter().cloned());
    env
}

/// The system, read-only, with secrets masked.
fn system_mounts(a: &mut Args<'_>) {
    for dir in SYSTEM_DIRS {
        let path = Path::new(dir);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    a.flag("--symlink").path(&target).flag(dir);
                }
            }
            Ok(m) if m.is_dir() => {
                a.flags(&["--ro-bind", dir, dir]);
            }
            _ => {}
        }
    }
    for file in MASKED_FILES {
        if Path::new(file).is_file() {
            a.flags(&["--ro-bind", "/dev/null", file]);
        }
    }
    for dir in MASKED_DIRS {
        if Path::new(dir).is_dir() {
            a.flags(&["--tmpfs", dir, "--remount-ro", dir]);
        }
    }
}

/// Appends to a command line.
struct Args<'a>(&'a mut Vec<OsString>);

impl Args<'_> {
    fn flag(&mut self, s: impl Into<OsString>) -> &mut Self {
        self.0.push(s.into());
        self
    }

    fn flags(&mut self, items: &[&str]) -> &mut Self {
        self.0.extend(items.iter().map(OsString::from));
        self
    }

    fn path(&mut self, p: &Path) -> &mut Self {
        self.0.push(p.as_os_str().to_owned());
        self
    }

    fn value(&mut self, v: OsString) -> &mut Self {
        self.0.push(v);
        self
    }

    /// `flag path path`: a mount at the same place.
    fn path_pair(&mut self, flag: &str, p: &Path) -> &mut Self {
        self.flag(flag).path(p).path(p)
    }
}

/// Whether `dir` and each of its ancestors can be searched by other users;
/// when commands drop to [`SANDBOX_UID`], bwrap must reach the workspace.
pub fn reachable_by_others(dir: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors() {
        let Ok(metadata) = std::fs::metadata(ancestor) else {
            continue;
        };
        if metadata.permissions().mode() & 0o001 == 0 {
            return Err(SandboxError::Unconfined(format!(
                "commands run as the unprivileged user `nobody` when agentform runs as root, and \
                 `{}` cannot be entered by other users (mode {:o}); keep the state elsewhere, \
                 or `chmod o+x` that directory",
                ancestor.display(),
                metadata.permissions().mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// Gives `path` to [`SANDBOX_UID`] when confined commands drop to it, so
/// that they can change what the file tools and installers made.
pub fn hand_over(path: &Path, confinement: Confinement) -> std::io::Result<()> {
    if confinement == Confinement::Bubblewrap
        && bubblewrap().is_ok_and(Bubblewrap::drops_privileges)
    {
        std::os::unix::fs::chown(path, Some(SANDBOX_UID), Some(SANDBOX_UID))?;
    }
    Ok(())
}
