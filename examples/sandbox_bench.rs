//! Where tools and loops run, measured against the fake E2B of the tests
//! (`tests/fake_e2b/`) with a latency added to every call (50 ms by
//! default): the distance to a remote sandbox service, on one machine.
//!
//!   cargo run --example sandbox_bench
//!   cargo run --example sandbox_bench -- latency_ms=50 sessions=100 parallelism=16 calls=100
//!
//! Drives the `agentform` executable of the same profile, each figure from
//! the command's wall time or the run's transcript:
//!   (a) session cold start of `provider: e2b`: `apply` of one session
//!       (sandbox created, agentform uploaded, serve ready, its objects
//!       made), then the first reply (`run --continue`, a one-word step);
//!   (b) `calls` bash calls of `true` in one step, per row: `local` (the
//!       loop and tools here, unconfined), `e2b stage 1` (loop here, tools
//!       on E2B), `e2b stage 2` (loop and tools in the sandbox); a first
//!       step warms each up (opens the sandbox), the second is timed;
//!   (c) `apply` of `sessions` sessions on `provider: e2b` at
//!       `--parallelism`, against the critical-path bound: the waves of
//!       sessions (⌈sessions / parallelism⌉) times one session's apply;
//!       then a `plan --refresh` of them, which must find no change.
//!
//! The executable uploaded is this profile's `agentform` without its debug
//! information (`strip --strip-debug`, when `strip` is on PATH): a debug
//! build is 250 MiB, of which copying bytes would be most of what is
//! measured. A row is a manifest header (`Row`): another provider
//! (`modal`) is one more entry in `rows()`. Everything stays on loopback.

#[path = "bench_support/serve_process.rs"]
mod serve_process;

#[path = "../tests/fake_e2b/mod.rs"]
#[allow(dead_code)]
mod fake_e2b;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use fake_e2b::{FakeE2b, Options};

struct Args {
    latency_ms: u64,
    sessions: usize,
    parallelism: usize,
    calls: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        latency_ms: 50,
        sessions: 100,
        parallelism: 16,
        calls: 100,
    };
    for arg in std::env::args().skip(1) {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| anyhow!("`{arg}`: write NAME=VALUE"))?;
        let n: u64 = v.parse().with_context(|| format!("`{arg}`"))?;
        match k {
            "latency_ms" => a.latency_ms = n,
            "sessions" => a.sessions = n as usize,
            "parallelism" => a.parallelism = n.max(1) as usize,
            "calls" => a.calls = n as usize,
            _ => bail!("unknown argument `{k}`"),
        }
    }
    Ok(a)
}

/// One way of running sessions: what the manifest says above its resources.
struct Row {
    name: &'static str,
    /// `provider:` and `providers:` lines; `{models}` is replaced by the
    /// model backends.
    header: String,
    /// Whether it makes sandboxes on the fake.
    remote: bool,
}

fn rows(fake: &FakeE2b, upload: &Path) -> Vec<Row> {
    let e2b = format!(
        "  e2b:\n    api_url: {}\n    sandbox_url: {}\n    timeout: 10m\n    agent_binary: {}\n",
        fake.api_url,
        fake.sandbox_url,
        upload.display()
    );
    vec![
        Row {
            name: "local (unconfined)",
            header: "providers:\n  local:\n    sandbox: none\n{models}".into(),
            remote: false,
        },
        Row {
            name: "e2b stage 1 (tools on E2B)",
            header: format!("providers:\n  local:\n    sandbox: e2b\n{{models}}{e2b}"),
            remote: true,
        },
        Row {
            name: "e2b stage 2 (loop on E2B)",
            header: format!("provider: e2b\nproviders:\n  local:\n{{models}}{e2b}"),
            remote: true,
        },
        // A `modal` row: its header here, once the provider exists.
    ]
}

/// A manifest of `sessions` sessions whose scripted model first calls
/// `true` once (the warm-up step), then `calls` times (the timed step).
fn manifest(row: &Row, sessions: usize, calls: usize) -> String {
    let bash = json!({"name": "bash", "input": {"command": "true"}});
    let mut turns = vec![json!({"tool_use": [bash]}), json!({"text": "warm"})];
    turns.extend((0..calls).map(|_| json!({"tool_use": [bash]})));
    turns.push(json!({"text": "done"}));
    let models = format!(
        "    models:\n      scripted:\n        backend: scripted\n        turns: {}\n",
        Value::Array(turns)
    );
    let mut text = format!(
        "version: 1\nname: bench\n{}\nenvironments:\n  box:\n    config: {{ type: cloud }}\n\
         agents:\n  bot:\n    model: scripted\n    tools: [{{ type: agent_toolset_20260401 }}]\nsessions:\n",
        row.header.replace("{models}", &models)
    );
    for i in 0..sessions {
        text.push_str(&format!(
            "  s{i}:\n    agent: bot\n    environment: box\n    steps:\n      - send: warm\n        timeout: 600s\n      - send: go\n        timeout: 600s\n"
        ));
    }
    text
}

struct Cli<'a> {
    bin: &'a Path,
    dir: PathBuf,
    key: String,
}

impl Cli<'_> {
    /// Runs `agentform ARGS` in the directory; its wall time.
    fn run(&self, args: &[&str]) -> Result<Duration> {
        let started = Instant::now();
        let out = Command::new(self.bin)
            .args(args)
            .current_dir(&self.dir)
            .env("E2B_API_KEY", &self.key)
            .env("NO_COLOR", "1")
            .output()
            .context("running agentform")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "agentform {} failed:\n{}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(took)
    }

    /// The latency of each step of the last run's transcripts.
    fn step_latencies(&self) -> Result<Vec<u64>> {
        let mut latest: Option<(std::time::SystemTime, PathBuf)> = None;
        for entry in walk(&self.dir.join("state/transcripts")) {
            let modified = entry.metadata()?.modified()?;
            if latest.as_ref().is_none_or(|(t, _)| modified > *t) {
                latest = Some((modified, entry));
            }
        }
        let (_, file) = latest.ok_or_else(|| anyhow!("no transcript"))?;
        let text = std::fs::read_to_string(&file)?;
        for line in text.lines().rev() {
            let v: Value = serde_json::from_str(line)?;
            let steps = v
                .pointer("/steps")
                .or_else(|| v.pointer("/footer/steps"))
                .and_then(Value::as_array);
            if let Some(steps) = steps {
                return Ok(steps
                    .iter()
                    .map(|s| s["latency_ms"].as_u64().unwrap_or(0))
                    .collect());
            }
        }
        bail!("{} has no footer", file.display())
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `bin` without debug information, in `dir`; `bin` itself without `strip`.
fn strip(bin: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("agentform");
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    if stripped {
        out
    } else {
        eprintln!("no `strip`: uploading {} whole", bin.display());
        bin.to_path_buf()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn setup<'a>(bin: &'a Path, fake: &FakeE2b, text: &str) -> Result<(tempfile::TempDir, Cli<'a>)> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("agentform.yaml"), text)?;
    let cli = Cli {
        bin,
        dir: dir.path().to_path_buf(),
        key: fake.key().to_owned(),
    };
    Ok((dir, cli))
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<()> {
    let a = args()?;
    let bin = serve_process::server_binary()?;
    let fake = FakeE2b::start(Options {
        latency: Duration::from_millis(a.latency_ms),
        ..Options::default()
    });
    let stripped = tempfile::tempdir()?;
    let upload = strip(&bin, stripped.path());
    let rows = rows(&fake, &upload);
    println!(
        "# sandbox bench: fake E2B with {} ms per call; uploads {} ({} MiB per sandbox)",
        a.latency_ms,
        upload.display(),
        std::fs::metadata(&upload)?.len() >> 20
    );

    // (a) cold start of a stage-2 session.
    let stage2 = &rows[2];
    let (_d, cli) = setup(&bin, &fake, &manifest(stage2, 1, 0))?;
    let apply_one = cli.run(&["apply", "--auto-approve"])?;
    cli.run(&["run", "--continue"])?;
    let first = cli.step_latencies()?;
    println!("\n## (a) session cold start, `provider: e2b`");
    println!(
        "apply of one session (sandbox, upload, serve ready, objects)  {:8.0} ms",
        ms(apply_one)
    );
    println!(
        "first reply (one step, scripted model)                        {:8} ms",
        first.first().copied().unwrap_or(0)
    );
    cli.run(&["destroy", "--auto-approve"])?;

    // (b) bash calls per row.
    println!(
        "\n## (b) {} bash calls of `true` in one step (after a warm-up step)",
        a.calls
    );
    for row in &rows {
        let (_d, cli) = setup(&bin, &fake, &manifest(row, 1, a.calls))?;
        cli.run(&["apply", "--auto-approve"])?;
        cli.run(&["run", "--continue"])?;
        let steps = cli.step_latencies()?;
        let timed = steps.get(1).copied().unwrap_or(0);
        println!(
            "{:30} {:8} ms  ({:6.1} ms per call; warm-up step {} ms)",
            row.name,
            timed,
            timed as f64 / a.calls.max(1) as f64,
            steps.first().copied().unwrap_or(0)
        );
        cli.run(&["destroy", "--auto-approve"])?;
        if row.remote && !fake.alive().is_empty() {
            bail!("{}: sandboxes left: {:?}", row.name, fake.alive());
        }
    }

    // (c) apply of many sessions.
    let (_d, cli) = setup(&bin, &fake, &manifest(stage2, a.sessions, 0))?;
    let parallelism = a.parallelism.to_string();
    let apply_many = cli.run(&["apply", "--auto-approve", "--parallelism", &parallelism])?;
    let made = fake.alive().len();
    let waves = a.sessions.div_ceil(a.parallelism) as u32;
    let bound = apply_one * waves;
    println!(
        "\n## (c) apply of {} sessions on `provider: e2b` at --parallelism {}",
        a.sessions, a.parallelism
    );
    println!(
        "apply                                   {:8.0} ms ({made} sandboxes)",
        ms(apply_many)
    );
    println!(
        "critical-path bound ({waves} waves × one session's apply) {:8.0} ms  → {:.2}× (target ≤ 1.5×)",
        ms(bound),
        apply_many.as_secs_f64() / bound.as_secs_f64()
    );
    // From 16 records a plan lists the sessions (every sandbox's serve).
    let refresh = cli.run(&["plan", "--refresh", "--detailed-exitcode"])?;
    println!(
        "plan --refresh (No changes)              {:8.0} ms",
        ms(refresh)
    );
    cli.run(&["destroy", "--auto-approve", "--parallelism", &parallelism])?;
    if !fake.alive().is_empty() {
        bail!("sandboxes left after destroy: {}", fake.alive().len());
    }
    Ok(())
}
