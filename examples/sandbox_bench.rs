//! Where tools and loops run, measured against the fakes of the tests
//! (`tests/fake_e2b/`, `tests/fake_modal/`) with a latency added to every
//! call (50 ms by default): the distance to a remote sandbox service, on
//! one machine.
//!
//!   cargo run --example sandbox_bench
//!   cargo run --example sandbox_bench -- latency_ms=50 sessions=100 parallelism=16 calls=100
//!   cargo run --example sandbox_bench -- modal=0 calls=0   # E2B's (a) and (c) only
//!
//! Drives the `agentform` executable of the same profile, each figure from
//! the command's wall time or the run's transcript:
//!   (a) session cold start of `provider: e2b` and `provider: modal`:
//!       `apply` of one session (sandbox created, agentform uploaded or, on
//!       Modal, mounted, serve ready, its objects made), then the first
//!       reply (`run --continue`, a one-word step); then the `apply` of one
//!       more session, when what is sent once per service (Modal's mount of
//!       the executable) is there, as it is for each of many sessions;
//!   (b) `calls` bash calls of `true` in one step, per row: `local` (the
//!       loop and tools here, unconfined), stage 1 of each service (loop
//!       here, tools in the sandbox), stage 2 (loop and tools in the
//!       sandbox); a first step warms each up (opens the sandbox), the
//!       second is timed;
//!   (c) per service, `apply` of `sessions` stage-2 sessions at
//!       `--parallelism`, against the critical-path bound: the waves of
//!       sessions (⌈sessions / parallelism⌉) times the one more session's
//!       apply of (a); the CPU time it took (the fakes, the `agentform` command,
//!       the serves in the sandboxes) and each session's phases from the
//!       apply's debug log (`session phases`, `serve launch phases`),
//!       alone and among the many; then a `plan --refresh`, which must
//!       find no change.
//!
//! The executable uploaded is this profile's `agentform` without its debug
//! information (`strip --strip-debug`, when `strip` is on PATH): a debug
//! build is 250 MiB, of which copying bytes would be most of what is
//! measured. A row is a manifest header (`Row`). Everything stays on
//! loopback.

#[path = "bench_support/serve_process.rs"]
mod serve_process;

#[path = "../tests/fake_e2b/mod.rs"]
#[allow(dead_code)]
mod fake_e2b;

#[path = "../tests/fake_modal/mod.rs"]
#[allow(dead_code, unused_imports)]
mod fake_modal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use fake_e2b::FakeE2b;
use fake_modal::FakeModal;

struct Args {
    latency_ms: u64,
    sessions: usize,
    parallelism: usize,
    calls: usize,
    /// The rows run: `None` (local) and the remote services asked for.
    services: Vec<Option<Service>>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        latency_ms: 50,
        sessions: 100,
        parallelism: 16,
        calls: 100,
        services: vec![None, Some(Service::E2b), Some(Service::Modal)],
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
            "e2b" | "modal" => {
                let service = Some(if k == "e2b" {
                    Service::E2b
                } else {
                    Service::Modal
                });
                a.services.retain(|s| *s != service || n != 0);
            }
            _ => bail!("unknown argument `{k}`"),
        }
    }
    Ok(a)
}

/// The fake service a row's sandboxes are made on.
#[derive(Clone, Copy, PartialEq)]
enum Service {
    E2b,
    Modal,
}

/// One way of running sessions: what the manifest says above its resources.
struct Row {
    name: &'static str,
    /// `provider:` and `providers:` lines; `{models}` is replaced by the
    /// model backends.
    header: String,
    /// Where it makes sandboxes, if anywhere.
    remote: Option<Service>,
    /// Whether the loop runs in the sandbox (`provider: …`).
    stage2: bool,
}

/// Both fakes, with the same latency.
struct Fakes {
    e2b: FakeE2b,
    modal: FakeModal,
}

impl Fakes {
    fn alive(&self, service: Service) -> usize {
        match service {
            Service::E2b => self.e2b.alive().len(),
            Service::Modal => self.modal.alive().len(),
        }
    }
}

fn rows(fakes: &Fakes, upload: &Path) -> Vec<Row> {
    let e2b = format!(
        "  e2b:\n    api_url: {}\n    sandbox_url: {}\n    timeout: 10m\n    agent_binary: {}\n",
        fakes.e2b.api_url,
        fakes.e2b.sandbox_url,
        upload.display()
    );
    let modal = format!(
        "  modal:\n    server_url: {}\n    app: bench\n    timeout: 10m\n    agent_binary: {}\n",
        fakes.modal.server_url,
        upload.display()
    );
    // Stage 1: tools on the service; stage 2: the loop there too.
    let remote = |name, service, provider: &str, stage2| Row {
        name,
        header: match stage2 {
            false => format!("providers:\n  local:\n    sandbox: {service}\n{{models}}{provider}"),
            true => format!("provider: {service}\nproviders:\n  local:\n{{models}}{provider}"),
        },
        remote: Some(if service == "e2b" {
            Service::E2b
        } else {
            Service::Modal
        }),
        stage2,
    };
    vec![
        Row {
            name: "local (unconfined)",
            header: "providers:\n  local:\n    sandbox: none\n{models}".into(),
            remote: None,
            stage2: false,
        },
        remote("e2b stage 1 (tools on E2B)", "e2b", &e2b, false),
        remote("e2b stage 2 (loop on E2B)", "e2b", &e2b, true),
        remote("modal stage 1 (tools on Modal)", "modal", &modal, false),
        remote("modal stage 2 (loop on Modal)", "modal", &modal, true),
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
    envs: Vec<(&'static str, String)>,
}

impl Cli<'_> {
    /// Runs `agentform ARGS` in the directory; its wall time.
    fn run(&self, args: &[&str]) -> Result<Duration> {
        self.run_logged(args, None).map(|(took, _)| took)
    }

    /// Runs `agentform ARGS` with `RUST_LOG=log` (when given, through `sh`
    /// whose `times` says the command's CPU time); its wall time and its log.
    fn run_logged(&self, args: &[&str], log: Option<&str>) -> Result<(Duration, String)> {
        let started = Instant::now();
        let mut command = match log {
            Some(_) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg("\"$0\" \"$@\"; s=$?; times >&2; exit $s")
                    .arg(self.bin);
                sh
            }
            None => Command::new(self.bin),
        };
        command
            .args(args)
            .current_dir(&self.dir)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1");
        if let Some(log) = log {
            command.env("RUST_LOG", log);
        }
        let out = command.output().context("running agentform")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "agentform {} failed:\n{}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((took, String::from_utf8_lossy(&out.stderr).into_owned()))
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

/// What the apply's debug log says each session's phases took.
const PHASE_LOG: &str = "warn,agentform::runtime::remote=debug";
const PHASES: [&str; 7] = [
    "list_ms",
    "create_ms",
    "upload_ms",
    "ready_ms",
    "port_file_ms",
    "launch_ms",
    "objects_ms",
];

/// The CPU seconds of the command, from the last line `times` wrote
/// (`0m1.230s 0m0.450s`: its children's user and system time).
fn command_cpu(log: &str) -> f64 {
    let seconds = |t: &str| {
        let (m, s) = t.trim_end_matches('s').split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    log.lines()
        .last()
        .map(|l| l.split_whitespace().filter_map(seconds).sum())
        .unwrap_or(0.0)
}

/// Per phase, every session's time (ms), from the `session phases` and
/// `serve launch phases` lines of an apply's log.
fn phases(log: &str) -> BTreeMap<&'static str, Vec<u64>> {
    let mut out: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" phases")) {
        for field in line.split_whitespace() {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            if let (Some(name), Ok(v)) = (PHASES.iter().find(|p| **p == k), v.parse()) {
                out.entry(*name).or_default().push(v);
            }
        }
    }
    out
}

fn print_phases(one: &BTreeMap<&str, Vec<u64>>, many: &BTreeMap<&str, Vec<u64>>) {
    let mean = |v: Option<&Vec<u64>>| {
        v.filter(|v| !v.is_empty())
            .map(|v| v.iter().sum::<u64>() as f64 / v.len() as f64)
            .unwrap_or(0.0)
    };
    let max = |v: Option<&Vec<u64>>| v.and_then(|v| v.iter().max().copied()).unwrap_or(0);
    println!("  per session, ms:      alone   in the apply of many (mean / max)");
    for p in PHASES {
        let label = match p {
            "list_ms" => "list (leftovers)",
            "create_ms" => "sandbox create",
            "upload_ms" => "  upload (binary unless placed)",
            "ready_ms" => "  serve start → ready",
            "port_file_ms" => "  port file",
            "launch_ms" => "launch (the three above)",
            _ => "serve objects (env, agent, session)",
        };
        println!(
            "  {label:36} {:6.0}  {:6.0} / {:6}",
            mean(one.get(p)),
            mean(many.get(p)),
            max(many.get(p))
        );
    }
}

/// CPU seconds: this process (the fakes), its reaped children (the
/// `agentform` commands and the finished commands of the fakes'
/// sandboxes), and the serves still running in the fakes' sandboxes.
#[derive(Clone, Copy, Default)]
struct Cpu {
    fakes: f64,
    children: f64,
    serves: f64,
}

/// utime+stime (and cutime+cstime) of `/proc/PID/stat`, in seconds (100 Hz).
fn proc_cpu(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14-17 of the line are 11-14 after the command.
    Some(((f[11] + f[12]) / 100.0, (f[13] + f[14]) / 100.0))
}

fn cpu(roots: &[&Path]) -> Cpu {
    let (fakes, children) = proc_cpu("self").unwrap_or_default();
    let mut serves = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.parse::<u32>().is_ok()) else {
            continue;
        };
        let inside = std::fs::read_link(entry.path().join("cwd"))
            .is_ok_and(|cwd| roots.iter().any(|r| cwd.starts_with(r)));
        if inside {
            serves += proc_cpu(pid).map(|(own, _)| own).unwrap_or(0.0);
        }
    }
    Cpu {
        fakes,
        children,
        serves,
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

fn setup<'a>(bin: &'a Path, fakes: &Fakes, text: &str) -> Result<(tempfile::TempDir, Cli<'a>)> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("agentform.yaml"), text)?;
    let cli = Cli {
        bin,
        dir: dir.path().to_path_buf(),
        envs: vec![
            ("E2B_API_KEY", fakes.e2b.key().to_owned()),
            ("MODAL_TOKEN_ID", fakes.modal.token_id().to_owned()),
            ("MODAL_TOKEN_SECRET", fakes.modal.token_secret().to_owned()),
        ],
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
    let latency = Duration::from_millis(a.latency_ms);
    let fakes = Fakes {
        e2b: FakeE2b::start(fake_e2b::Options {
            latency,
            ..fake_e2b::Options::default()
        }),
        modal: FakeModal::start(fake_modal::Options {
            latency,
            ..fake_modal::Options::default()
        }),
    };
    let stripped = tempfile::tempdir()?;
    let upload = strip(&bin, stripped.path());
    let rows: Vec<Row> = rows(&fakes, &upload)
        .into_iter()
        .filter(|r| a.services.contains(&r.remote))
        .collect();
    println!(
        "# sandbox bench: fake E2B and fake Modal with {} ms per call; uploads {} ({} MiB per sandbox)",
        a.latency_ms,
        upload.display(),
        std::fs::metadata(&upload)?.len() >> 20
    );
    let stage2: Vec<&Row> = rows.iter().filter(|r| r.stage2).collect();

    // (a) cold start of a stage-2 session; the apply of one more is the
    // bound's unit.
    let mut one_apply = Vec::new();
    for row in &stage2 {
        let (_d, cli) = setup(&bin, &fakes, &manifest(row, 1, 0))?;
        let apply_one = cli.run(&["apply", "--auto-approve"])?;
        cli.run(&["run", "--continue"])?;
        let first = cli.step_latencies()?;
        println!("\n## (a) session cold start, {}", row.name);
        println!(
            "apply of one session (sandbox, upload, serve ready, objects)  {:8.0} ms",
            ms(apply_one)
        );
        println!(
            "first reply (one step, scripted model)                        {:8} ms",
            first.first().copied().unwrap_or(0)
        );
        cli.run(&["destroy", "--auto-approve"])?;
        // Again, as each of many sessions is made: what the first one made
        // or sent once (Modal's mount of the executable) is there.
        let (_d, cli) = setup(&bin, &fakes, &manifest(row, 1, 0))?;
        let (apply_again, log) = cli.run_logged(&["apply", "--auto-approve"], Some(PHASE_LOG))?;
        println!(
            "apply of one more session (the bound's unit)                 {:8.0} ms",
            ms(apply_again)
        );
        cli.run(&["destroy", "--auto-approve"])?;
        one_apply.push((apply_again, phases(&log)));
    }

    // (b) bash calls per row.
    if a.calls > 0 {
        println!(
            "\n## (b) {} bash calls of `true` in one step (after a warm-up step)",
            a.calls
        );
    }
    for row in rows.iter().filter(|_| a.calls > 0) {
        let (_d, cli) = setup(&bin, &fakes, &manifest(row, 1, a.calls))?;
        cli.run(&["apply", "--auto-approve"])?;
        cli.run(&["run", "--continue"])?;
        let steps = cli.step_latencies()?;
        let timed = steps.get(1).copied().unwrap_or(0);
        println!(
            "{:32} {:8} ms  ({:6.1} ms per call; warm-up step {} ms)",
            row.name,
            timed,
            timed as f64 / a.calls.max(1) as f64,
            steps.first().copied().unwrap_or(0)
        );
        cli.run(&["destroy", "--auto-approve"])?;
        if let Some(service) = row.remote {
            if fakes.alive(service) > 0 {
                bail!("{}: {} sandboxes left", row.name, fakes.alive(service));
            }
        }
    }

    // (c) apply of many sessions.
    let roots = [
        fakes.e2b.shared.dir.as_path(),
        fakes.modal.shared.dir.as_path(),
    ];
    for (row, (apply_one, one_phases)) in stage2.iter().zip(&one_apply) {
        let service = row.remote.unwrap_or(Service::E2b);
        let (_d, cli) = setup(&bin, &fakes, &manifest(row, a.sessions, 0))?;
        let parallelism = a.parallelism.to_string();
        let before = cpu(&roots);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let (apply_many, log) = cli.run_logged(
            &["apply", "--auto-approve", "--parallelism", &parallelism],
            Some(PHASE_LOG),
        )?;
        let after = cpu(&roots);
        let made = fakes.alive(service);
        let waves = a.sessions.div_ceil(a.parallelism) as u32;
        let bound = *apply_one * waves;
        println!(
            "\n## (c) apply of {} sessions, {} at --parallelism {} (load average before: {})",
            a.sessions,
            row.name,
            a.parallelism,
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "apply                                   {:8.0} ms ({made} sandboxes)",
            ms(apply_many)
        );
        println!(
            "critical-path bound ({waves} waves × one more session's apply) {:8.0} ms  → {:.2}× (target ≤ 1.5×)",
            ms(bound),
            apply_many.as_secs_f64() / bound.as_secs_f64()
        );
        let cli_cpu = command_cpu(&log);
        let (fake_cpu, commands_cpu, serve_cpu) = (
            after.fakes - before.fakes,
            (after.children - before.children - cli_cpu).max(0.0),
            after.serves - before.serves,
        );
        let total = fake_cpu + cli_cpu + commands_cpu + serve_cpu;
        println!(
            "CPU used: {total:.1} s = agentform apply {cli_cpu:.1} + fakes {fake_cpu:.1} + \
             sandbox commands {commands_cpu:.1} + serves {serve_cpu:.1}; on 2 cores at least {:.1} s of wall time",
            total / 2.0
        );
        print_phases(one_phases, &phases(&log));
        // From 16 records a plan lists the sessions (every sandbox's serve).
        let refresh = cli.run(&["plan", "--refresh", "--detailed-exitcode"])?;
        println!(
            "plan --refresh (No changes)              {:8.0} ms",
            ms(refresh)
        );
        cli.run(&["destroy", "--auto-approve", "--parallelism", &parallelism])?;
        if fakes.alive(service) > 0 {
            bail!("sandboxes left after destroy: {}", fakes.alive(service));
        }
    }
    Ok(())
}
