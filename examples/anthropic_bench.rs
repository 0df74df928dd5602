//! Benchmark of the `anthropic` provider (agentform's Managed Agents HTTP
//! client) against `agentform serve`, next to the official Python SDK doing
//! the same work.
//!
//!   cargo run --release --example anthropic_bench             # both sections
//!   cargo run --release --example anthropic_bench -- apply    # 300 creates at 50 ms per call
//!   cargo run --release --example anthropic_bench -- stream   # SSE parse + transcript, events/s
//!
//! apply: 100 environments, 100 agents and 100 sessions (each on an agent and
//! an environment, every 4th pinning version 1) applied with `provider:
//! anthropic`, parallelism 16, against `agentform serve --latency-ms 50`; a
//! fresh server and state per run, median of 3, compared with the
//! critical-path bound; then the SDK making the same creates one by one.
//!
//! stream: a long conversation of a scripted model recorded from the server
//! once, copied to ≥ 50,000 events and served from an in-process loopback
//! responder; agentform reads it with `AnthropicRuntime::stream_events`
//! writing each event to a transcript, the SDK iterates
//! `client.beta.sessions.events.stream`.
//!
//! The SDK side is scripts/sdk_bench.py in the venv scripts/sdk-venv.sh makes
//! in target/sdk-venv; without python3 its rows are skipped. Every request
//! goes to 127.0.0.1.

#[path = "bench_support/critical_path.rs"]
mod critical_path;
#[path = "bench_support/serve_process.rs"]
mod serve_process;
#[path = "bench_support/sse_replay.rs"]
mod sse_replay;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use agentform::api::{META_ADDRESS, META_MANIFEST};
use agentform::apply::{self, Silent};
use agentform::manifest::{self, LoadOptions, Manifest};
use agentform::plan::{self, PlanOptions};
use agentform::runner::transcript::Sink;
use agentform::runtime::anthropic::{AnthropicOptions, AnthropicRuntime, RateLimits, Secret};
use agentform::runtime::{event, Providers, Runtime};
use agentform::state::StateStore;

use critical_path::Bound;
use serve_process::{describe_counts, server_binary, Serve};

const KEY: &str = "anthropic-bench-key";
const PROJECT: &str = "anthropic-bench";

const ENVIRONMENTS: usize = 100;
const AGENTS: usize = 100;
const SESSIONS: usize = 100;
const PIN_EVERY: usize = 4;
const LATENCY: Duration = Duration::from_millis(50);
const PARALLELISM: usize = 16;
const APPLY_RUNS: usize = 3;
const APPLY_TARGET: f64 = 1.5;
const SDK_APPLY_TARGET: f64 = 8.0;

/// Model turns of the recorded conversation: each says something and calls
/// one built-in tool, the last one only answers.
const RECORDED_TURNS: usize = 90;
const STREAM_MIN_EVENTS: usize = 50_000;
const PING_EVERY: usize = 25;
const STREAM_RUNS: usize = 7;
const SDK_STREAM_RUNS: usize = 3;
const STREAM_TARGET: f64 = 10.0;

/// One line of the final table.
struct Row {
    figure: String,
    value: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn new(figure: &str, value: String) -> Row {
        Row {
            figure: figure.into(),
            value,
            target: String::new(),
            met: None,
        }
    }

    fn judged(mut self, target: String, met: bool) -> Row {
        self.target = target;
        self.met = Some(met);
        self
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (apply, stream) = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => (true, true),
        ["apply"] => (true, false),
        ["stream"] => (false, true),
        _ => {
            eprintln!("usage: cargo run --release --example anthropic_bench [-- apply|stream]");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(run(apply, stream)));
    match result {
        Ok(rows) => {
            print_table(&rows);
            if rows.iter().any(|r| r.met == Some(false)) {
                println!("Some targets were missed.");
            } else {
                println!("All targets met.");
            }
            let section = args.first().map(|a| format!(" -- {a}")).unwrap_or_default();
            println!("Reproduce with: cargo run --release --example anthropic_bench{section}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(apply: bool, stream: bool) -> Result<Vec<Row>> {
    let bin = server_binary()?;
    let release = !cfg!(debug_assertions);
    let sdk = sdk_python();
    let mut rows = vec![Row::new(
        "build, CPUs",
        format!(
            "{}, {}",
            if release {
                "release"
            } else {
                "DEBUG (figures meaningless)"
            },
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
    )];
    if let Err(why) = &sdk {
        rows.push(Row::new("Python SDK", format!("skipped: {why}")));
    }
    if apply {
        rows.extend(apply_section(&bin, sdk.as_ref().ok()).await?);
    }
    if stream {
        rows.extend(stream_section(&bin, sdk.as_ref().ok()).await?);
    }
    Ok(rows)
}

fn print_table(rows: &[Row]) {
    let width = rows
        .iter()
        .map(|r| r.figure.chars().count())
        .max()
        .unwrap_or(0);
    println!();
    println!("anthropic provider benchmark");
    println!("{:-<100}", "");
    for r in rows {
        let verdict = match r.met {
            Some(true) => "  ok",
            Some(false) => "  MISSED",
            None => "",
        };
        let target = if r.target.is_empty() {
            String::new()
        } else {
            format!("   target {}", r.target)
        };
        println!(
            "{:<width$}  {}{target}{verdict}",
            r.figure,
            r.value,
            width = width
        );
    }
    println!("{:-<100}", "");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

// ----- the Python SDK -----------------------------------------------------------

/// The venv's interpreter, made (idempotently) by scripts/sdk-venv.sh.
fn sdk_python() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("sdk-venv");
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts").join("sdk-venv.sh"))
        .arg(&venv)
        .status()
        .map_err(|e| format!("cannot run scripts/sdk-venv.sh: {e}"))?;
    match status.code() {
        Some(0) => Ok(venv.join("bin").join("python")),
        Some(3) => Err("python3 (with venv) is not available".into()),
        _ => Err(format!("scripts/sdk-venv.sh failed ({status})")),
    }
}

/// Runs scripts/sdk_bench.py with `args` and parses the JSON it prints.
async fn sdk_bench(python: &Path, args: &[&str]) -> Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sdk_bench.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(&script).args(args).kill_on_drop(true);
    // Loopback only: no proxy, no base URL or key from the environment.
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .context("scripts/sdk_bench.py ran longer than 300 s")?
        .context("running scripts/sdk_bench.py")?;
    if !out.status.success() {
        bail!(
            "scripts/sdk_bench.py {} failed ({}):\n{}",
            args.first().copied().unwrap_or_default(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .with_context(|| format!("scripts/sdk_bench.py printed `{}`", text.trim()))
}

fn client(url: &str) -> Result<AnthropicRuntime> {
    AnthropicRuntime::new(AnthropicOptions {
        base_url: Some(url.to_owned()),
        api_key: Some(Secret::new(KEY)),
        limits: RateLimits::unlimited(),
        ..Default::default()
    })
    .map_err(|e| anyhow!("cannot build the anthropic client: {e}"))
}

// ----- apply --------------------------------------------------------------------

/// What both sides create: API bodies of the environments and agents, and
/// the sessions by index.
struct Workload {
    environments: Vec<(String, Value)>,
    agents: Vec<(String, Value)>,
    sessions: Vec<(String, Value)>,
}

fn workload() -> Workload {
    let environments = (0..ENVIRONMENTS)
        .map(|i| {
            let config = if i % 2 == 0 {
                json!({"type": "cloud", "packages": {"pip": ["pandas", "matplotlib"]},
                       "networking": {"type": "limited", "allowed_hosts": ["api.example.com"],
                                      "allow_package_managers": true}})
            } else {
                json!({"type": "cloud", "networking": {"type": "unrestricted"}})
            };
            let name = format!("env_{i:03}");
            let body = json!({"name": name, "description": format!("Sandbox number {i} for data work"),
                              "config": config, "metadata": {"team": "platform", "shard": (i % 7).to_string()}});
            (name, body)
        })
        .collect();
    let agents = (0..AGENTS)
        .map(|i| {
            let model = if i % 3 == 0 {
                json!({"id": "claude-sonnet-4-6", "speed": "standard"})
            } else {
                json!("claude-sonnet-4-6")
            };
            let name = format!("agent_{i:03}");
            let body = json!({
                "name": name,
                "model": model,
                "description": format!("Analyst number {i}"),
                "system": format!("You are analyst {i}. Answer questions about data set {i} concisely.\n\
                                   Report totals with their units and cite the files you used.\n"),
                "tools": [
                    {"type": "agent_toolset_20260401",
                     "default_config": {"permission_policy": {"type": "always_ask"}},
                     "configs": [{"name": "read", "permission_policy": {"type": "always_allow"}},
                                 {"name": "web_search", "enabled": false}]},
                    {"type": "custom", "name": "lookup_ticket",
                     "description": "Look up a support ticket by its id",
                     "input_schema": {"type": "object",
                                      "properties": {"id": {"type": "string"}, "verbose": {"type": "boolean"}},
                                      "required": ["id"]}},
                ],
                "metadata": {"team": "platform", "owner": format!("analyst-{}", i % 13)},
            });
            (name, body)
        })
        .collect();
    let sessions = (0..SESSIONS)
        .map(|i| {
            let version = (i % PIN_EVERY == 0).then_some(1);
            let name = format!("sess_{i:03}");
            let spec = json!({"agent": i % AGENTS, "environment": (i * 3) % ENVIRONMENTS,
                              "version": version, "title": format!("Benchmark session {i}"),
                              "metadata": {"purpose": "benchmark"}});
            (name, spec)
        })
        .collect();
    Workload {
        environments,
        agents,
        sessions,
    }
}

impl Workload {
    fn total(&self) -> usize {
        self.environments.len() + self.agents.len() + self.sessions.len()
    }

    /// The manifest, one file; JSON is YAML, so each resource is its body on one line.
    fn manifest(&self) -> Result<String> {
        let mut text =
            format!("# generated by examples/anthropic_bench.rs\nversion: 1\nname: {PROJECT}\nprovider: anthropic\n");
        text.push_str("environments:\n");
        for (name, body) in &self.environments {
            let _ = writeln!(text, "  {name}: {body}");
        }
        text.push_str("agents:\n");
        for (name, body) in &self.agents {
            let _ = writeln!(text, "  {name}: {body}");
        }
        text.push_str("sessions:\n");
        for (name, s) in &self.sessions {
            let index = |key: &str| s[key].as_u64().map(|i| i as usize);
            let (Some(agent), Some(env)) = (index("agent"), index("environment")) else {
                bail!("session {name} has no agent or environment index");
            };
            let agent = &self.agents[agent].0;
            let agent_ref = match s["version"].as_u64() {
                Some(v) => json!({"name": agent, "version": v}),
                None => json!(agent),
            };
            let entry = json!({"agent": agent_ref, "environment": self.environments[env].0,
                               "title": s["title"], "metadata": s["metadata"]});
            let _ = writeln!(text, "  {name}: {entry}");
        }
        Ok(text)
    }

    /// What scripts/sdk_bench.py sends: the same bodies, with the metadata
    /// tags agentform adds to every object it creates.
    fn sdk_spec(&self) -> Value {
        let tag = |kind: &str, name: &str, body: &Value| {
            let mut body = body.clone();
            body["metadata"][META_ADDRESS] = json!(format!("{kind}.{name}"));
            body["metadata"][META_MANIFEST] = json!(PROJECT);
            body
        };
        let list = |kind: &str, items: &[(String, Value)]| -> Vec<Value> {
            items.iter().map(|(n, b)| tag(kind, n, b)).collect()
        };
        json!({
            "environments": list("environment", &self.environments),
            "agents": list("agent", &self.agents),
            "sessions": list("session", &self.sessions),
        })
    }
}

fn load(dir: &Path) -> Result<Manifest> {
    manifest::load(&LoadOptions {
        files: vec![dir.to_path_buf()],
        vars: Vec::new(),
        allow_empty: false,
    })
    .map_err(|d| anyhow!("the generated manifest does not load:\n{}", d.render(false)))
}

struct ApplyRun {
    wall: Duration,
    plan: Duration,
    bound: Bound,
    requests: BTreeMap<String, u64>,
}

/// One apply on a fresh server and state: plan, then time the apply alone.
async fn agentform_apply(bin: &Path, w: &Workload) -> Result<ApplyRun> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = tmp.path().join("manifest");
    std::fs::create_dir_all(&dir).context("creating the manifest directory")?;
    std::fs::write(dir.join("agentform.yaml"), w.manifest()?).context("writing the manifest")?;
    let m = Arc::new(load(&dir)?);
    let latency = LATENCY.as_millis().to_string();
    let server = Serve::start(
        bin,
        &tmp.path().join("serve"),
        KEY,
        &["--latency-ms".into(), latency],
        true,
    )?;
    let mut providers = Providers::default();
    providers.insert(Arc::new(client(&server.url)?));
    let state = Arc::new(
        StateStore::open(&tmp.path().join("state"), "bench").context("opening the state")?,
    );
    let options = PlanOptions {
        parallelism: PARALLELISM,
        ..Default::default()
    };
    let start = Instant::now();
    let p = plan::plan(Some(&m), &state, &providers, &options)
        .await
        .map_err(|e| anyhow!("plan failed: {e}"))?;
    let plan_time = start.elapsed();
    let pending = p.pending().count();
    if pending != w.total() || p.pending().any(|c| c.provider != "anthropic") {
        bail!(
            "expected {} creates on the anthropic provider, the plan has {pending}",
            w.total()
        );
    }
    let b = critical_path::bound(&p, LATENCY, PARALLELISM)?;
    let ctx = apply::Context {
        manifest: Some(m),
        state,
        providers,
        parallelism: PARALLELISM,
        reporter: Arc::new(Silent),
    };
    let start = Instant::now();
    let report = apply::apply(&p, ctx).await;
    let wall = start.elapsed();
    let failures: Vec<String> = report
        .failed()
        .take(3)
        .map(|(a, _, o)| format!("{a}: {o:?}"))
        .collect();
    let requests = server.stop()?;
    if !failures.is_empty() {
        bail!(
            "the apply failed for {} change(s), e.g.\n  {}",
            report.failed().count(),
            failures.join("\n  ")
        );
    }
    Ok(ApplyRun {
        wall,
        plan: plan_time,
        bound: b,
        requests,
    })
}

async fn apply_section(bin: &Path, sdk: Option<&PathBuf>) -> Result<Vec<Row>> {
    let w = workload();
    let mut walls = Vec::new();
    let mut plans = Vec::new();
    let mut last = None;
    for run in 1..=APPLY_RUNS {
        let r = agentform_apply(bin, &w).await?;
        eprintln!(
            "[apply] run {run}: {:.1} ms (bound {:.0} ms); server answered {}",
            ms(r.wall),
            ms(r.bound.bound),
            describe_counts(&r.requests)
        );
        walls.push(r.wall);
        plans.push(r.plan);
        last = Some(r);
    }
    let last = last.ok_or_else(|| anyhow!("no apply run"))?;
    let b = &last.bound;
    let runs: Vec<String> = walls.iter().map(|t| format!("{:.0}", ms(*t))).collect();
    let wall = median(walls);
    let ratio = wall.as_secs_f64() / b.bound.as_secs_f64().max(1e-9);
    let lat = ms(LATENCY);
    let mut rows = vec![
        Row::new(
            "apply: workload",
            format!(
                "{} resources ({ENVIRONMENTS} environments, {AGENTS} agents, {SESSIONS} sessions), \
                 server latency {lat:.0} ms, parallelism {PARALLELISM}",
                w.total()
            ),
        ),
        Row::new(
            "apply: planned runtime calls",
            format!(
                "{} in all; critical path {} call(s) over {} change(s)",
                b.total_calls, b.critical_calls, b.depth
            ),
        ),
        Row::new(
            "apply: bound",
            format!(
                "max({} × {lat:.0}, ⌈{}/{PARALLELISM}⌉ × {lat:.0}) = {:.0} ms",
                b.critical_calls,
                b.total_calls,
                ms(b.bound)
            ),
        ),
        Row::new(
            "apply: agentform wall (median)",
            format!("{:.1} ms (runs {} ms)", ms(wall), runs.join(", ")),
        ),
        Row::new(
            "apply: plan before it (not counted)",
            format!("{:.1} ms", ms(median(plans))),
        ),
        Row::new("apply: wall / bound", format!("{ratio:.2}"))
            .judged(format!("≤ {APPLY_TARGET}"), ratio <= APPLY_TARGET),
        Row::new(
            "apply: HTTP calls, agentform (last run)",
            describe_counts(&last.requests),
        ),
    ];
    let Some(python) = sdk else {
        return Ok(rows);
    };

    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let spec = tmp.path().join("sdk-spec.json");
    std::fs::write(&spec, serde_json::to_vec(&w.sdk_spec())?).context("writing the SDK spec")?;
    let server = Serve::start(
        bin,
        &tmp.path().join("serve"),
        KEY,
        &["--latency-ms".into(), LATENCY.as_millis().to_string()],
        true,
    )?;
    let spec_arg = spec.to_string_lossy();
    let out = sdk_bench(python, &["apply", &spec_arg, &server.url, KEY]).await;
    let requests = server.stop()?;
    let out = out?;
    let seconds = out["seconds"]
        .as_f64()
        .ok_or_else(|| anyhow!("no `seconds` in the SDK's answer: {out}"))?;
    let sdk_ms = seconds * 1e3;
    let speedup = sdk_ms / ms(wall).max(1e-9);
    eprintln!(
        "[apply] SDK, sequential: {sdk_ms:.0} ms; server answered {}",
        describe_counts(&requests)
    );
    rows.push(Row::new(
        "apply: SDK sequential",
        format!(
            "{sdk_ms:.0} ms ({} calls, anthropic {})",
            out["calls"],
            out["sdk"].as_str().unwrap_or("?")
        ),
    ));
    rows.push(
        Row::new("apply: SDK / agentform", format!("{speedup:.1}×")).judged(
            format!("≥ {SDK_APPLY_TARGET}×"),
            speedup >= SDK_APPLY_TARGET,
        ),
    );
    rows.push(Row::new(
        "apply: HTTP calls, SDK",
        describe_counts(&requests),
    ));
    Ok(rows)
}

// ----- stream -------------------------------------------------------------------

/// The scripted model of the recorded conversation.
fn stream_manifest() -> String {
    let mut text = String::from(
        "version: 1\nname: anthropic-bench-stream\nproviders:\n  local:\n    models:\n      scripted-long:\n        backend: scripted\n        turns:\n",
    );
    let note = "Totals by region: north 1,204 units, south 988 units, east 1,517 units, \
                west 734 units; returns are netted out and the figures cite orders.csv.";
    for i in 0..RECORDED_TURNS {
        let file = format!("notes/part-{:02}.md", i / 3);
        let (tool, input) = match i % 3 {
            0 => (
                "write",
                json!({"file_path": file, "content": format!("# Part {}\n\n{note}\n", i / 3)}),
            ),
            1 => ("read", json!({"file_path": file})),
            _ => ("glob", json!({"pattern": "notes/**/*.md"})),
        };
        let turn = json!({"text": format!("Step {i}: checking the notes before answering. {note}"),
                          "tool_use": [{"name": tool, "input": input}]});
        let _ = writeln!(text, "          - {turn}");
    }
    let last = json!({"text": "All parts are written and checked; the totals stand as reported."});
    let _ = writeln!(text, "          - {last}");
    text
}

/// One conversation's raw stream from `agentform serve`: open the stream,
/// send a message, read until the session goes idle at the end of its turn.
async fn record_stream(bin: &Path, dir: &Path) -> Result<Vec<u8>> {
    let manifest = dir.join("stream.yaml");
    std::fs::write(&manifest, stream_manifest()).context("writing the stream manifest")?;
    let server = Serve::start(
        bin,
        &dir.join("serve"),
        KEY,
        &["-f".into(), manifest.to_string_lossy().into_owned()],
        true,
    )?;
    let rt = client(&server.url)?;
    let err = |e: agentform::runtime::RuntimeError| anyhow!("{e}");
    let env = rt
        .create_environment(json!({"name": "replay-box",
            "config": {"type": "cloud", "networking": {"type": "unrestricted"}}}))
        .await
        .map_err(err)?;
    let agent = rt
        .create_agent(json!({"name": "replayer", "model": "scripted-long",
            "tools": [{"type": "agent_toolset_20260401",
                       "default_config": {"permission_policy": {"type": "always_allow"}}}]}))
        .await
        .map_err(err)?;
    let session = rt
        .create_session(json!({"agent": agent.id, "environment_id": env.id}))
        .await
        .map_err(err)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("building an HTTP client")?;
    let mut response = http
        .get(format!(
            "{}/v1/sessions/{}/events/stream",
            server.url, session.id
        ))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "managed-agents-2026-04-01")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("opening the event stream to record")?;
    rt.send_events(
        &session.id,
        vec![json!({"type": "user.message",
                    "content": [{"type": "text", "text": "Write the notes, then report the totals."}]})],
    )
    .await
    .map_err(err)?;
    let mut recorded = Vec::new();
    let mut scanned = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    'read: loop {
        if recorded.len() > 64 << 20 || Instant::now() > deadline {
            bail!("no end of turn within 64 MiB or 120 s of stream");
        }
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
            .await
            .context("the recorded stream stalled")?
            .context("reading the recorded stream")?
            .ok_or_else(|| anyhow!("the stream ended before the session went idle"))?;
        recorded.extend_from_slice(&chunk);
        // Look at each complete frame once.
        while let Some(end) = find(&recorded[scanned..], b"\n\n") {
            let frame = String::from_utf8_lossy(&recorded[scanned..scanned + end]).into_owned();
            scanned += end + 2;
            if frame.starts_with("event: session.status_idle") {
                if frame.contains("\"end_turn\"") {
                    break 'read;
                }
                bail!("the recorded session stopped early: {frame}");
            }
        }
    }
    recorded.truncate(scanned);
    drop(response);
    let requests = server.stop()?;
    eprintln!(
        "[stream] recorded {} bytes; server answered {}",
        recorded.len(),
        describe_counts(&requests)
    );
    Ok(recorded)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the runner does with each event of a session's stream (see
/// `runner::session`): drop repeated ids, write it to the transcript, keep it;
/// without a transcript path, only read the events (the parse alone).
/// Returns the events read and the time taken, the writes flushed included.
async fn agentform_stream(url: &str, transcript: Option<PathBuf>) -> Result<(usize, Duration)> {
    let rt = client(url)?;
    let start = Instant::now();
    let key = "session.replay";
    let sink = transcript.map(|path| {
        let sink = Sink::start(agentform::redact::Redactor::new([KEY.to_owned()]));
        sink.open(key, path);
        sink
    });
    let mut stream = rt
        .stream_events("sesn_replay")
        .await
        .map_err(|e| anyhow!("opening the stream: {e}"))?;
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    while let Some(e) = stream.next().await {
        let e = e.map_err(|e| anyhow!("the stream broke: {e}"))?;
        let Some(sink) = &sink else {
            events.push(e);
            continue;
        };
        let id = event::id(&e).to_owned();
        if !id.is_empty() && !seen.insert(id) {
            continue;
        }
        sink.event(key, &e);
        events.push(e);
    }
    if let Some(sink) = sink {
        sink.close(key);
        if let Some(e) = sink.shutdown().await.first() {
            bail!("writing the transcript: {e}");
        }
    }
    Ok((events.len(), start.elapsed()))
}

async fn stream_section(bin: &Path, sdk: Option<&PathBuf>) -> Result<Vec<Row>> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let recorded = record_stream(bin, tmp.path()).await?;
    let frames = sse_replay::frames(&recorded)?;
    let replay = sse_replay::replay(&frames, STREAM_MIN_EVENTS, PING_EVERY)?;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for f in &frames {
        let kind = f.lines().next().and_then(|l| l.strip_prefix("event: "));
        *kinds.entry(kind.unwrap_or("?").to_owned()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let responder =
        sse_replay::Responder::start(replay.body.clone(), 2 * STREAM_RUNS + SDK_STREAM_RUNS + 4)
            .await?;
    let mb = replay.body.len() as f64 / (1 << 20) as f64;

    let mut parse_times = Vec::new();
    let mut times = Vec::new();
    for run in 1..=STREAM_RUNS {
        let (n, alone) = agentform_stream(&responder.url, None).await?;
        if n != replay.events {
            bail!(
                "parse run {run}: read {n} events; the replay has {}",
                replay.events
            );
        }
        parse_times.push(alone);
        let path = tmp.path().join(format!("transcripts/run-{run}.jsonl"));
        let (n, t) = agentform_stream(&responder.url, Some(path.clone())).await?;
        let lines = std::fs::read_to_string(&path)
            .with_context(|| format!("reading back {}", path.display()))?
            .lines()
            .count();
        if n != replay.events || lines != n {
            bail!(
                "run {run}: read {n} events and wrote {lines} lines; the replay has {}",
                replay.events
            );
        }
        eprintln!(
            "[stream] agentform run {run}: {:.1} ms, {:.0} events/s (parse alone {:.1} ms)",
            ms(t),
            n as f64 / t.as_secs_f64(),
            ms(alone)
        );
        times.push(t);
    }
    let span = |v: &[Duration]| {
        let lo = v.iter().min().copied().unwrap_or_default();
        let hi = v.iter().max().copied().unwrap_or_default();
        format!("runs {:.0}–{:.0} ms", ms(lo), ms(hi))
    };
    let (parse_spread, spread) = (span(&parse_times), span(&times));
    let t = median(times);
    let rate = replay.events as f64 / t.as_secs_f64();
    let parse_t = median(parse_times);
    let mut rows = vec![
        Row::new(
            "stream: recording",
            format!(
                "{} events from one {RECORDED_TURNS}-tool-call conversation: {}",
                frames.len(),
                kinds.join(", ")
            ),
        ),
        Row::new(
            "stream: replay",
            format!(
                "{} events + {} pings, {mb:.1} MiB ({} copies, ids renumbered)",
                replay.events, replay.pings, replay.copies
            ),
        ),
        Row::new(
            "stream: agentform parse alone",
            format!(
                "{:.0} events/s ({:.1} ms median of {STREAM_RUNS}, {parse_spread}; not judged)",
                replay.events as f64 / parse_t.as_secs_f64(),
                ms(parse_t)
            ),
        ),
        Row::new(
            "stream: agentform parse + transcript",
            format!(
                "{rate:.0} events/s ({:.1} ms median of {STREAM_RUNS}, {spread}; {:.0} MiB/s)",
                ms(t),
                mb / t.as_secs_f64()
            ),
        ),
    ];
    let Some(python) = sdk else {
        return Ok(rows);
    };
    let runs = SDK_STREAM_RUNS.to_string();
    let out = sdk_bench(
        python,
        &["stream", &responder.url, KEY, "sesn_replay", &runs],
    )
    .await?;
    let counts: Vec<u64> = out["events"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let seconds: Vec<Duration> = out["seconds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(Duration::from_secs_f64)
                .collect()
        })
        .unwrap_or_default();
    if counts.len() != SDK_STREAM_RUNS || counts.iter().any(|&n| n as usize != replay.events) {
        bail!(
            "the SDK counted {counts:?} events; the replay has {}",
            replay.events
        );
    }
    let sdk_spread = span(&seconds);
    let sdk_t = median(seconds);
    let sdk_rate = replay.events as f64 / sdk_t.as_secs_f64();
    let speedup = rate / sdk_rate;
    eprintln!("[stream] SDK: {sdk_rate:.0} events/s");
    rows.push(Row::new(
        "stream: SDK iteration",
        format!(
            "{sdk_rate:.0} events/s ({:.1} ms median of {SDK_STREAM_RUNS}, {sdk_spread})",
            ms(sdk_t)
        ),
    ));
    rows.push(
        Row::new("stream: agentform / SDK", format!("{speedup:.1}×"))
            .judged(format!("≥ {STREAM_TARGET}×"), speedup >= STREAM_TARGET),
    );
    rows.push(Row::new(
        "stream: HTTP calls",
        format!(
            "{} streams served ({} agentform, {SDK_STREAM_RUNS} SDK), one GET each",
            responder.served(),
            2 * STREAM_RUNS
        ),
    ));
    Ok(rows)
}
