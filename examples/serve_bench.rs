//! Load benchmark of `agentform serve` over loopback HTTP.
//!
//!   cargo run --release --example serve_bench
//!   cargo run --release --example serve_bench -- clients=64 seconds=5
//!
//! Builds and starts the `agentform` binary of the same profile (`target/release/agentform`)
//! as `agentform serve --listen 127.0.0.1:0` with a one-turn scripted model, then with N
//! concurrent clients (tokio tasks, one HTTP client each) measures:
//!   (a) `POST /v1/agents`: requests/s, p50/p99 latency;
//!   (b) one-turn conversations: create a session, open its SSE stream, send a `user.message`,
//!       read until `session.status_idle`: conversations/s, p50/p99 latency;
//!   (c) as (b) with one client: the latency floor of a conversation, without queueing;
//! and the server's peak RSS (`VmHWM` from /proc/<pid>/status) before stopping it with SIGTERM.
//! Every loop is bounded by time and by count; everything stays on loopback.
//! `SERVE_BENCH_TRACE=1` prints the cumulative time of each step of every conversation.

#[path = "bench_support/serve_process.rs"]
mod serve_process;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use serve_process::{server_binary, Serve};

const KEY: &str = "bench-key";
const DEFAULT_CLIENTS: usize = 64;
const DEFAULT_SECONDS: f64 = 5.0;
/// Per-client cap on requests in one phase, whatever the duration.
const MAX_PER_CLIENT: usize = 200_000;
const WARMUP: Duration = Duration::from_millis(500);

const TARGET_CREATE_RPS: f64 = 2_000.0;
const TARGET_CREATE_P99_MS: f64 = 50.0;

const MANIFEST: &str = "\
version: 1
name: serve-bench
providers:
  local:
    models:
      scripted-echo:
        backend: scripted
        turns:
          - text: Hello from the scripted model.
";

fn main() -> ExitCode {
    let mut clients = DEFAULT_CLIENTS;
    let mut seconds = DEFAULT_SECONDS;
    for a in std::env::args().skip(1) {
        match a.split_once('=') {
            Some(("clients", v)) if v.parse::<usize>().is_ok_and(|n| n > 0) => {
                clients = v.parse().unwrap()
            }
            Some(("seconds", v)) if v.parse::<f64>().is_ok_and(|s| s > 0.0 && s <= 600.0) => {
                seconds = v.parse().unwrap()
            }
            _ => {
                eprintln!("usage: serve_bench [clients=N] [seconds=S]   (got {a:?})");
                return ExitCode::from(2);
            }
        }
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(clients, Duration::from_secs_f64(seconds))));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .build()
        .expect("http client")
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let resp = http
        .post(url)
        .header("x-api-key", KEY)
        .header("anthropic-beta", "managed-agents-2026-04-01")
        .json(body)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!("POST {url}: HTTP {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

#[derive(Default)]
struct Phase {
    latencies_us: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Phase {
    fn merge(&mut self, other: Phase) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&mut self, p: usize) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let i = (n * p / 100).min(n - 1);
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Runs `op` from `clients` tasks until `duration` has passed (and at most
/// MAX_PER_CLIENT times per task); each task has its own HTTP client.
async fn phase<F, Fut>(clients: usize, duration: Duration, op: F) -> Phase
where
    F: Fn(reqwest::Client, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for task in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut out = Phase::default();
            for i in 0..MAX_PER_CLIENT {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match op(http.clone(), task, i).await {
                    Ok(()) => out.latencies_us.push(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
            out
        }));
    }
    let mut all = Phase::default();
    for t in tasks {
        all.merge(t.await.expect("client task"));
    }
    all.elapsed = start.elapsed();
    all
}

/// One conversation: session, stream, send, read until `session.status_idle`.
/// `SERVE_BENCH_TRACE=1`: print the cumulative time of each step of every conversation.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var("SERVE_BENCH_TRACE").is_ok_and(|v| v == "1"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn conversation(
    http: reqwest::Client,
    base: Arc<str>,
    agent: Arc<str>,
    env: Arc<str>,
) -> Result<()> {
    let t0 = Instant::now();
    let session = post(
        &http,
        &format!("{base}/v1/sessions"),
        &json!({"agent": &*agent, "environment_id": &*env}),
    )
    .await?;
    let sid = session["id"]
        .as_str()
        .ok_or_else(|| anyhow!("session without id: {session}"))?;
    let t_created = t0.elapsed();
    let mut stream = http
        .get(format!("{base}/v1/sessions/{sid}/events/stream"))
        .header("x-api-key", KEY)
        .header("anthropic-beta", "managed-agents-2026-04-01")
        .send()
        .await?;
    if !stream.status().is_success() {
        bail!("stream: HTTP {}", stream.status());
    }
    let t_opened = t0.elapsed();
    post(
        &http,
        &format!("{base}/v1/sessions/{sid}/events"),
        &json!({"events": [{"type": "user.message", "content": [{"type": "text", "text": "Hello?"}]}]}),
    )
    .await?;
    let t_sent = t0.elapsed();
    let mut buf = String::new();
    // Bounded by the client timeout and a byte cap.
    while buf.len() < 1 << 20 {
        let Some(chunk) = stream.chunk().await? else {
            bail!("stream ended before session.status_idle");
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if buf.contains("event: session.status_idle") || buf.contains("event:session.status_idle") {
            // Only complete once the idle frame's blank line arrived.
            let at = buf.find("session.status_idle").unwrap();
            if buf[at..].contains("\n\n") || buf[at..].contains("\r\n\r\n") {
                if trace() {
                    eprintln!(
                        "conversation: session {:.2} ms, stream open {:.2} ms, sent {:.2} ms, idle {:.2} ms",
                        ms(t_created),
                        ms(t_opened),
                        ms(t_sent),
                        ms(t0.elapsed())
                    );
                }
                return Ok(());
            }
        }
    }
    bail!("no session.status_idle within 1 MiB of stream")
}

async fn run(clients: usize, duration: Duration) -> Result<bool> {
    let bin = server_binary()?;
    let release = bin.parent().is_some_and(|d| d.ends_with("release"));
    if !release {
        eprintln!("WARNING: debug build; run with --release for meaningful figures");
    }
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("agentform.yaml");
    std::fs::write(&manifest, MANIFEST)?;
    let extra = ["-f".to_owned(), manifest.to_string_lossy().into_owned()];
    let server = Serve::start(&bin, &dir.path().join("serve"), KEY, &extra, false)?;
    let base: Arc<str> = server.url.clone().into();
    eprintln!(
        "server {} (pid {}), {clients} clients, {:.1} s per phase, {} CPUs",
        base,
        server.pid(),
        duration.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Fixtures for the conversations.
    let http = client();
    let env = post(
        &http,
        &format!("{base}/v1/environments"),
        &json!({"name": "bench", "config": {"type": "cloud", "networking": {"type": "unrestricted"}}}),
    )
    .await?;
    let env: Arc<str> = env["id"].as_str().context("environment id")?.into();
    let agent = post(
        &http,
        &format!("{base}/v1/agents"),
        &json!({"name": "bench-conversation", "model": "scripted-echo"}),
    )
    .await?;
    let agent: Arc<str> = agent["id"].as_str().context("agent id")?.into();

    let create = {
        let base = base.clone();
        move |http: reqwest::Client, task: usize, i: usize| {
            let url = format!("{base}/v1/agents");
            async move {
                post(
                    &http,
                    &url,
                    &json!({"name": format!("bench-{task}-{i}"), "model": "scripted-echo"}),
                )
                .await
                .map(drop)
            }
        }
    };

    // Warm-up (connections, caches), not measured.
    let _ = phase(clients, WARMUP, create.clone()).await;
    let mut a = phase(clients, duration, create).await;

    let talk = {
        let (base, agent, env) = (base.clone(), agent.clone(), env.clone());
        move |http: reqwest::Client, _task: usize, _i: usize| {
            conversation(http, base.clone(), agent.clone(), env.clone())
        }
    };
    let mut b = phase(clients, duration, talk.clone()).await;
    // The latency floor of a conversation: one client, no queueing.
    let mut c = phase(1, duration.min(Duration::from_secs(2)), talk).await;

    let rss = server.peak_rss_kib();
    // Exit code 0 after SIGTERM, or why not.
    let exit = server.stop().map(|_| 0).map_err(|e| format!("{e:#}"));

    let (a50, a99) = (a.percentile_ms(50), a.percentile_ms(99));
    let (b50, b99) = (b.percentile_ms(50), b.percentile_ms(99));
    let (c50, c99) = (c.percentile_ms(50), c.percentile_ms(99));
    let a_ok = a.rate() >= TARGET_CREATE_RPS && a99 < TARGET_CREATE_P99_MS && a.errors == 0;
    println!();
    println!(
        "agentform serve, {clients} concurrent clients, loopback, {} build",
        if release { "release" } else { "DEBUG" }
    );
    println!("{:-<96}", "");
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>8} {:>8}  target",
        "phase", "ops/s", "p50 ms", "p99 ms", "ops", "errors"
    );
    println!("{:-<96}", "");
    println!(
        "{:<34} {:>10.0} {:>10.2} {:>10.2} {:>8} {:>8}  {} (>= {} req/s, p99 < {} ms)",
        "(a) POST /v1/agents",
        a.rate(),
        a50,
        a99,
        a.latencies_us.len(),
        a.errors,
        if a_ok { "MET" } else { "MISSED" },
        TARGET_CREATE_RPS,
        TARGET_CREATE_P99_MS
    );
    println!(
        "{:<34} {:>10.0} {:>10.2} {:>10.2} {:>8} {:>8}",
        "(b) session+stream+send -> idle",
        b.rate(),
        b50,
        b99,
        b.latencies_us.len(),
        b.errors
    );
    println!(
        "{:<34} {:>10.0} {:>10.2} {:>10.2} {:>8} {:>8}",
        "(c) as (b), 1 client",
        c.rate(),
        c50,
        c99,
        c.latencies_us.len(),
        c.errors
    );
    println!("{:-<96}", "");
    match rss {
        Some(kib) => println!("server peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS: unavailable (no /proc)"),
    }
    match &exit {
        Ok(code) => println!("server exit after SIGTERM: {code}"),
        Err(e) => println!("server exit after SIGTERM: {e}"),
    }
    for (name, p) in [("(a)", &a), ("(b)", &b), ("(c)", &c)] {
        if let Some(e) = &p.first_error {
            println!("{name} first error: {e}");
        }
    }
    println!();
    println!(
        "reproduce: cargo run --release --example serve_bench -- clients={clients} seconds={}",
        duration.as_secs_f64()
    );
    Ok(a_ok && b.errors == 0 && c.errors == 0 && exit.is_ok())
}
