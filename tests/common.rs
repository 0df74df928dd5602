//! A builder for running the `agentform` binary in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentform");

pub struct Test {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn success(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(self, needle: &str) -> Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Makes sure bubblewrap is installed (the project's script), once per test
/// process: the local runtime's tools run confined.
fn ensure_bubblewrap() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-bubblewrap.sh");
        let status = Command::new("bash").arg(script).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "the tests need bubblewrap and `{script}` could not install it"
        );
    });
}

impl Test {
    pub fn new() -> Self {
        ensure_bubblewrap();
        Test {
            dir: tempfile::tempdir().expect("temp dir"),
            env: Vec::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, contents: &str) -> &Self {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, contents).expect("write");
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The command, ready to run in the test directory with the default state `./state`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.root())
            .env_remove("AGENTFORM_STATE")
            .env_remove("RUST_LOG")
            .env_remove(agentform::apply::CRASH_AFTER_CREATE_ENV)
            .env_remove("AGENTFORM_LOCAL_LATENCY_MS")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("AGENTFORM_BWRAP")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run agentform");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Every file under `state/`, to prove a command left the state alone.
    pub fn state_snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.file_name().is_some_and(|n| n != "lock") {
                    out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path("state"), &mut out);
        out.sort();
        out
    }
}

/// Every file under `dir`, recursively; none when it does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The `remote_id` that `state show ADDRESS` prints.
#[track_caller]
pub fn remote_id(t: &Test, address: &str) -> String {
    t.run(&["state", "show", address])
        .success()
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("remote_id: "))
        .unwrap_or_else(|| panic!("no remote_id for {address}"))
        .trim()
        .to_owned()
}

/// `apply` of environment `box`, whose image or template build fails: it
/// fails naming the environment and the build's log, and the environment
/// keeps the pip packages `pip` it had.
#[track_caller]
pub fn failed_build_keeps_packages(t: &Test, pip: &[&str]) {
    let failed = t.run(&["apply", "--auto-approve"]);
    assert_ne!(failed.code, 0, "{}", failed.stderr);
    assert!(
        failed.stderr.contains("environment.box")
            && failed.stderr.contains("cannot be provisioned")
            && failed.stderr.contains("No matching distribution found"),
        "{}",
        failed.stderr
    );
    let (_, envs, _) = live_objects(&t.path("state"));
    assert_eq!(envs.len(), 1);
    match &envs[0].config {
        agentform::api::environment::EnvironmentConfig::Cloud(c) => {
            assert_eq!(c.packages.pip, pip);
        }
        other => panic!("{other:?}"),
    }
}

/// The records of the local runtime, read through the library once no process holds the state.
pub fn live_objects(
    state_dir: &Path,
) -> (
    Vec<agentform::runtime::Agent>,
    Vec<agentform::runtime::Environment>,
    Vec<agentform::runtime::Session>,
) {
    use agentform::runtime::{list_all, Runtime};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let objects = rt.block_on(async {
        let state = agentform::state::StateStore::open(state_dir, "test").expect("open state");
        let local = agentform::runtime::local::LocalRuntime::open(state.db(), Default::default())
            .expect("local runtime");
        let local = &local;
        let agents = list_all(|q| async move { local.list_agents(&q).await })
            .await
            .expect("agents");
        let envs = list_all(|q| async move { local.list_environments(&q).await })
            .await
            .expect("environments");
        let sessions = list_all(|q| async move { local.list_sessions(&q).await })
            .await
            .expect("sessions");
        (agents, envs, sessions)
    });
    sled_let_go(&state_dir.join("db"));
    objects
}

/// Returns once no sled database in this process holds `db` (sled's I/O
/// threads may keep its file locked a moment after the last handle is
/// dropped), so that the next opener, here or in a command, is not refused.
pub fn sled_let_go(db: &Path) {
    let Ok(file) = std::fs::File::open(db.join("db")) else {
        return;
    };
    for _ in 0..500 {
        if file.try_lock().is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("sled kept {} locked for 5 s", db.display());
}

/// The tool results of every transcript, in order: (text, is_error).
pub fn tool_results(t: &Test) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut files = files_under(&t.path("state/transcripts"));
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let e = &line["event"];
            if line["kind"] == "event" && e["type"] == "agent.tool_result" {
                let text = e["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<String>();
                out.push((text, e["is_error"] == true));
            }
        }
    }
    out
}

/// Every byte written under the test directory, and every output.
pub fn everything(t: &Test, outputs: &[&Output]) -> String {
    let mut all = String::new();
    for f in files_under(t.root()) {
        all.push_str(&String::from_utf8_lossy(
            &std::fs::read(&f).unwrap_or_default(),
        ));
    }
    for o in outputs {
        all.push_str(&o.stdout);
        all.push_str(&o.stderr);
    }
    all
}

/// The text of every transcript.
pub fn transcripts(t: &Test) -> String {
    let mut text = String::new();
    for f in files_under(&t.path("state/transcripts")) {
        text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    text
}

/// Processes on this machine whose command line holds `marker`.
pub fn count_processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .count()
}
