//! Performance benchmark of validate, plan and apply on generated manifests.
//!
//!   cargo run --release --example bench            # plan, apply and phases
//!   cargo run --release --example bench -- plan    # validate + plan at 1,000 and 10,000 resources
//!   cargo run --release --example bench -- apply   # apply of 300 resources at 20 ms per call
//!   cargo run --release --example bench -- phases  # where a 10,000-resource plan spends its time
//!   cargo run --release --example bench -- sweep   # validate and plan at 1k … 20k resources, per resource
//!   cargo run --release --example bench -- profile=1000  # a load/plan loop for `perf record`
//!   cargo run --release --example bench -- growth  # 20 runs on one state, with and without retention
//!   cargo run --release --example bench -- backends  # the PostgreSQL state against sled: apply 300, plan 10,000
//!
//! Everything runs in temporary directories on the embedded local runtime.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use agentform::apply::{self, Outcome, Silent};
use agentform::graph::{Address, Kind};
use agentform::manifest::{self, LoadOptions, Manifest};
use agentform::plan::{self, desired, Outputs, Plan, PlanOptions};
use agentform::runtime::local::{LocalOptions, LocalRuntime};
use agentform::runtime::Providers;
use agentform::state::StateStore;

#[path = "bench_support/sandbox_cost.rs"]
mod sandbox_cost;

#[path = "bench_support/critical_path.rs"]
mod critical_path;

#[path = "bench_support/growth.rs"]
mod growth;

#[path = "bench_support/backends.rs"]
mod backends;

/// The tests' throwaway PostgreSQL cluster, for `backends`.
#[path = "../tests/postgres/cluster.rs"]
#[allow(dead_code)]
mod pg_cluster;
use critical_path::bound;

const FILES: usize = 10;
const PLAN_SIZES: [(usize, usize); 2] = [(1_000, 5), (10_000, 3)];
const PLAN_TARGET_MS: f64 = 500.0;
const RATIO_TARGET: f64 = 12.0;
/// Parallelism of the zero-latency apply that fills the state for the no-op plans.
const POPULATE_PARALLELISM: usize = 64;

const APPLY_LATENCY: Duration = Duration::from_millis(20);
const APPLY_PARALLELISM: usize = 16;
const APPLY_RUNS: usize = 3;
const APPLY_TARGET: f64 = 1.5;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        let result = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(child(&args[1..])));
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut sections = Vec::new();
    for a in &args {
        let (name, size) = match a.split_once('=') {
            Some((n, v)) => match v.parse::<usize>() {
                Ok(v) if v >= 5 => (n, Some(v)),
                _ => {
                    eprintln!("error: `{a}`: expected a number ≥ 5 after `=` (resources, or rounds for growth)");
                    return ExitCode::FAILURE;
                }
            },
            None => (a.as_str(), None),
        };
        match name {
            "plan" | "apply" | "phases" | "sweep" | "run" | "sandbox" if size.is_none() => {
                sections.push((name.to_string(), None))
            }
            "profile" | "growth" | "backends" => sections.push((name.to_string(), size)),
            "all" if size.is_none() => {
                sections.extend(["plan", "apply", "phases"].map(|s| (s.to_string(), None)))
            }
            "-h" | "--help" => {
                println!("usage: cargo run --release --example bench [-- SECTION...]");
                println!("  plan        validate and plan at 1,000 and 10,000 resources");
                println!("  apply       apply 300 resources at 20 ms per call vs the critical-path bound");
                println!("  phases      split a 10,000-resource validate and plan into steps");
                println!("  sweep       validate and plan at 1k, 2k, 5k, 10k and 20k resources (scaling)");
                println!(
                    "  profile[=N] load and plan N (10,000) resources in a loop, for `perf record`"
                );
                println!("  run         1,000 sessions x 5 scripted turns at concurrency 200 (issue: the runner)");
                println!("  sandbox     100 bash calls per session, confined vs unconfined");
                println!("  growth[=N]  N (20) runs on one state: first and last round, state size, with and without retention");
                println!("  backends[=N] the PostgreSQL state vs sled: apply 300 at 20 ms, open + plan N (10,000)");
                println!("  all         plan, apply and phases (the default)");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!(
                    "error: unknown section `{a}`; expected plan, apply, phases, sweep, run, sandbox, growth[=N], backends[=N], profile[=N] or all"
                );
                return ExitCode::FAILURE;
            }
        }
    }
    if sections.is_empty() {
        sections.extend(["plan", "apply", "phases"].map(|s| (s.to_string(), None)));
    }
    sections.dedup();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        println!(
            "agentform benchmark — {} build, {} CPU(s), tokio multi-thread runtime",
            if cfg!(debug_assertions) {
                "DEBUG (numbers are meaningless, use --release)"
            } else {
                "release"
            },
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        let mut missed = Vec::new();
        for (name, size) in &sections {
            match name.as_str() {
                "plan" => missed.extend(plan_section().await?),
                "apply" => missed.extend(apply_section().await?),
                "run" => missed.extend(run_section().await?),
                "sandbox" => missed.extend(sandbox_cost::section().await?),
                "phases" => phases_section().await?,
                "sweep" => sweep_section().await?,
                "profile" => profile_section(size.unwrap_or(PLAN_SIZES[1].0)).await?,
                "growth" => missed.extend(growth::section(size.unwrap_or(20)).await?),
                "backends" => {
                    missed.extend(backends::section(size.unwrap_or(PLAN_SIZES[1].0)).await?)
                }
                _ => {}
            }
        }
        Ok::<_, anyhow::Error>(missed)
    });
    let command = if args.is_empty() {
        "cargo run --release --example bench".to_string()
    } else {
        format!("cargo run --release --example bench -- {}", args.join(" "))
    };
    match result {
        Ok(missed) => {
            println!();
            let judged = sections
                .iter()
                .any(|(n, _)| ["plan", "apply", "run", "growth", "backends"].contains(&n.as_str()));
            if missed.is_empty() {
                if judged {
                    println!("All targets met.");
                }
            } else {
                println!("Targets missed:");
                for m in &missed {
                    println!("  - {m}");
                }
            }
            println!("Reproduce with: {command}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            eprintln!("(while running: {command})");
            ExitCode::FAILURE
        }
    }
}

// ----- manifest generation ------------------------------------------------------

/// What to generate.
#[derive(Debug, Clone, Copy)]
struct Shape {
    environments: usize,
    agents: usize,
    sessions: usize,
    /// Every N-th agent refers to the previous agent's id in its system prompt.
    agent_ref_every: Option<usize>,
    /// Every N-th session pins `{name, version: 1}`.
    pin_every: usize,
    files: usize,
}

impl Shape {
    /// ~1/5 environments, ~2/5 agents, ~2/5 sessions.
    fn mix(total: usize) -> Shape {
        let environments = total / 5;
        let agents = total * 2 / 5;
        Shape {
            environments,
            agents,
            sessions: total - environments - agents,
            agent_ref_every: Some(50),
            pin_every: 4,
            files: FILES,
        }
    }

    fn total(&self) -> usize {
        self.environments + self.agents + self.sessions
    }
}

fn env_name(i: usize) -> String {
    format!("env_{i:05}")
}

fn agent_name(i: usize) -> String {
    format!("agent_{i:05}")
}

/// Writes the manifest as `shape.files` files in `dir`; resource `i` of each
/// kind goes to file `i % files`, so references cross files.
fn write_manifest(dir: &Path, shape: &Shape) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = shape.files.max(1);
    let mut texts: Vec<String> = (0..files)
        .map(|f| format!("# generated by examples/bench.rs, file {f}\nversion: 1\n"))
        .collect();
    texts[0].push_str("name: bench\nvars:\n  model: claude-sonnet-4-6\n  team: platform\n");

    let mut envs = vec![String::new(); files];
    for i in 0..shape.environments {
        let s = &mut envs[i % files];
        let _ = writeln!(s, "  {}:", env_name(i));
        let _ = writeln!(s, "    description: Sandbox number {i} for data work");
        if i % 2 == 0 {
            s.push_str(concat!(
                "    config:\n",
                "      type: cloud\n",
                "      packages:\n",
                "        pip: [pandas, matplotlib]\n",
                "      networking:\n",
                "        type: limited\n",
                "        allowed_hosts: [api.example.com]\n",
                "        allow_package_managers: true\n",
            ));
        } else {
            s.push_str(
                "    config:\n      type: cloud\n      networking: { type: unrestricted }\n",
            );
        }
        s.push_str("    metadata:\n      team: \"{{ vars.team }}\"\n");
        let _ = writeln!(s, "      shard: \"{}\"", i % 7);
    }

    let mut agents = vec![String::new(); files];
    for i in 0..shape.agents {
        let s = &mut agents[i % files];
        let _ = writeln!(s, "  {}:", agent_name(i));
        if i % 3 == 0 {
            s.push_str("    model: { id: \"{{ vars.model }}\", speed: standard }\n");
        } else {
            s.push_str("    model: \"{{ vars.model }}\"\n");
        }
        let _ = writeln!(s, "    description: Analyst number {i}");
        s.push_str("    system: |\n");
        let _ = writeln!(
            s,
            "      You are analyst {i}. Answer questions about data set {i} concisely."
        );
        s.push_str("      Report totals with their units and cite the files you used.\n");
        if let Some(every) = shape.agent_ref_every {
            if i % every == 1 {
                let _ = writeln!(
                    s,
                    "      Hand anything outside your scope to agent {{{{ agent.{}.id }}}}.",
                    agent_name(i - 1)
                );
            }
        }
        s.push_str(concat!(
            "    tools:\n",
            "      - type: agent_toolset_20260401\n",
            "        default_config:\n",
            "          permission_policy: { type: always_ask }\n",
            "        configs:\n",
            "          - name: read\n",
            "            permission_policy: { type: always_allow }\n",
            "          - name: web_search\n",
            "            enabled: false\n",
            "      - type: custom\n",
            "        name: lookup_ticket\n",
            "        description: Look up a support ticket by its id\n",
            "        input_schema:\n",
            "          type: object\n",
            "          properties:\n",
            "            id: { type: string }\n",
            "            verbose: { type: boolean }\n",
            "          required: [id]\n",
            "    metadata:\n",
            "      team: \"{{ vars.team }}\"\n",
        ));
        let _ = writeln!(s, "      owner: analyst-{}", i % 13);
    }

    let mut sessions = vec![String::new(); files];
    for i in 0..shape.sessions {
        let s = &mut sessions[i % files];
        let agent = agent_name(i % shape.agents.max(1));
        let env = env_name((i * 3) % shape.environments.max(1));
        let _ = writeln!(s, "  sess_{i:05}:");
        if shape.pin_every > 0 && i % shape.pin_every == 0 {
            let _ = writeln!(s, "    agent: {{ name: {agent}, version: 1 }}");
        } else {
            let _ = writeln!(s, "    agent: {agent}");
        }
        let _ = writeln!(s, "    environment: {env}");
        let _ = writeln!(s, "    title: Benchmark session {i}");
        s.push_str("    metadata:\n      purpose: benchmark\n");
    }

    for (f, text) in texts.iter_mut().enumerate() {
        for (section, body) in [
            ("environments", &envs[f]),
            ("agents", &agents[f]),
            ("sessions", &sessions[f]),
        ] {
            if !body.is_empty() {
                let _ = writeln!(text, "{section}:");
                text.push_str(body);
            }
        }
        let path = dir.join(format!("part-{f:02}.yaml"));
        std::fs::write(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

// ----- helpers ------------------------------------------------------------------

fn load(dir: &Path) -> Result<Manifest> {
    manifest::load(&LoadOptions {
        files: vec![dir.to_path_buf()],
        vars: Vec::new(),
        allow_empty: false,
    })
    .map_err(|d| anyhow!("the generated manifest does not load:\n{}", d.render(false)))
}

fn open_state(dir: &Path, latency: Duration) -> Result<(StateStore, Providers)> {
    let state = StateStore::open(dir, "bench")
        .with_context(|| format!("opening the state in {}", dir.display()))?;
    let local = LocalRuntime::open(
        state.db(),
        LocalOptions {
            latency,
            ..LocalOptions::default()
        },
    )
    .map_err(|e| anyhow!("cannot open the local runtime: {e}"))?;
    let mut providers = Providers::default();
    providers.insert(Arc::new(local));
    Ok((state, providers))
}

fn plan_options() -> PlanOptions {
    PlanOptions {
        refresh: false,
        destroy: false,
        targets: Vec::new(),
        parallelism: 10,
    }
}

async fn make_plan(m: &Manifest, state: &StateStore, providers: &Providers) -> Result<Plan> {
    plan::plan(Some(m), state, providers, &plan_options())
        .await
        .map_err(|e| anyhow!("plan failed: {e}"))
}

/// Applies `plan`; fails with the first problems when anything did not complete.
async fn run_apply(
    plan: &Plan,
    manifest: Arc<Manifest>,
    state: Arc<StateStore>,
    providers: Providers,
    parallelism: usize,
) -> Result<Duration> {
    let start = Instant::now();
    let report = apply::apply(
        plan,
        apply::Context {
            manifest: Some(manifest),
            state,
            providers,
            parallelism,
            reporter: Arc::new(Silent),
        },
    )
    .await;
    let elapsed = start.elapsed();
    if !report.ok() {
        let failed: Vec<String> = report
            .failed()
            .take(5)
            .map(|(a, _, o)| match o {
                Outcome::Failed(e) => format!("{a}: {e}"),
                Outcome::Skipped { because } => format!("{a}: skipped because {because} failed"),
                Outcome::Done(_) => String::new(),
            })
            .collect();
        bail!(
            "apply failed for {} change(s), e.g.:\n  {}",
            report.failed().count(),
            failed.join("\n  ")
        );
    }
    Ok(elapsed)
}

fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pending(plan: &Plan) -> usize {
    plan.pending().count()
}

// ----- section 1: validate and plan ---------------------------------------------

/// One measurement, taken two ways: repeatedly in this process (warm heap and
/// caches), and once per fresh child process, as the CLI runs it.
#[derive(Clone, Copy, Default)]
struct Pair {
    warm: Duration,
    fresh: Duration,
}

struct SizeResult {
    total: usize,
    runs: usize,
    validate: Pair,
    plan_empty: Pair,
    plan_noop: Pair,
    populate: Duration,
    populate_changes: usize,
}

/// The child side of a fresh-process measurement: `__child validate DIR` or
/// `__child plan DIR STATE`. Prints the elapsed nanoseconds and, for a plan,
/// the number of pending changes.
async fn child(args: &[String]) -> Result<()> {
    match args {
        [op, dir] if op == "validate" => {
            let start = Instant::now();
            let m = load(Path::new(dir))?;
            let elapsed = start.elapsed();
            println!("{} {}", elapsed.as_nanos(), m.resources.len());
            Ok(())
        }
        [op, dir, state] if op == "plan" => {
            let m = load(Path::new(dir))?;
            let (state, providers) = open_state(Path::new(state), Duration::ZERO)?;
            let start = Instant::now();
            let p = make_plan(&m, &state, &providers).await?;
            let elapsed = start.elapsed();
            println!("{} {}", elapsed.as_nanos(), pending(&p));
            Ok(())
        }
        _ => bail!("bad child arguments: {args:?}"),
    }
}

/// Runs `__child ARGS` in a fresh process; returns the time it measured and
/// the count it printed.
fn fresh(args: &[&Path], op: &str) -> Result<(Duration, usize)> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let out = std::process::Command::new(exe)
        .arg("__child")
        .arg(op)
        .args(args)
        .output()
        .context("running a child process")?;
    if !out.status.success() {
        bail!(
            "the child process for `{op}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let nanos: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| anyhow!("unexpected child output `{}`", text.trim()))?;
    let count: usize = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| anyhow!("unexpected child output `{}`", text.trim()))?;
    Ok((Duration::from_nanos(nanos), count))
}

/// Median of `runs` fresh-process measurements, each checked to report `expect`.
fn fresh_median(args: &[&Path], op: &str, runs: usize, expect: usize) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let (t, count) = fresh(args, op)?;
        if count != expect {
            bail!("the child `{op}` reported {count}, expected {expect}");
        }
        times.push(t);
    }
    Ok(median(times))
}

/// Median of `runs` plans in this process; every plan stays alive until the
/// series ends, so freeing one run's memory is not charged to the next.
async fn warm_plans(
    m: &Manifest,
    state: &StateStore,
    providers: &Providers,
    runs: usize,
) -> Result<(Duration, Plan)> {
    let mut times = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let p = make_plan(m, state, providers).await?;
        times.push(start.elapsed());
        kept.push(p);
    }
    let p = kept.pop().ok_or_else(|| anyhow!("no run"))?;
    drop(kept);
    Ok((median(times), p))
}

async fn bench_size(total: usize, runs: usize) -> Result<SizeResult> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = tmp.path().join("manifest");
    let shape = Shape::mix(total);
    write_manifest(&dir, &shape)?;
    eprintln!(
        "[plan {total}] {} environments, {} agents, {} sessions in {} files",
        shape.environments, shape.agents, shape.sessions, shape.files
    );

    // validate = manifest::load; results stay alive until the series ends.
    let mut times = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let m = load(&dir)?;
        times.push(start.elapsed());
        kept.push(m);
    }
    let m = kept.pop().ok_or_else(|| anyhow!("no run"))?;
    drop(kept);
    if m.resources.len() != total {
        bail!(
            "the manifest has {} resources, expected {total}",
            m.resources.len()
        );
    }
    let validate = Pair {
        warm: median(times),
        fresh: fresh_median(&[&dir], "validate", runs, total)?,
    };

    // plan against an empty state
    let empty = tmp.path().join("state-empty");
    let (state, providers) = open_state(&empty, Duration::ZERO)?;
    let (warm, p) = warm_plans(&m, &state, &providers, runs).await?;
    if p.summary.add != total || pending(&p) != total {
        bail!(
            "plan against an empty state: {} to add, {} pending; expected {total}",
            p.summary.add,
            pending(&p)
        );
    }
    drop((p, state, providers));
    let plan_empty = Pair {
        warm,
        fresh: fresh_median(&[&dir, &empty], "plan", runs, total)?,
    };

    // fill a state by applying at zero latency
    let full = tmp.path().join("state-full");
    let (state, providers) = open_state(&full, Duration::ZERO)?;
    let state = Arc::new(state);
    let m = Arc::new(m);
    let p = make_plan(&m, &state, &providers).await?;
    let populate_changes = pending(&p);
    eprintln!(
        "[plan {total}] applying {populate_changes} changes at 0 ms latency, parallelism {POPULATE_PARALLELISM} …"
    );
    let populate = run_apply(
        &p,
        m.clone(),
        state.clone(),
        providers.clone(),
        POPULATE_PARALLELISM,
    )
    .await?;
    drop(p);
    eprintln!(
        "[plan {total}] populated in {:.1} s",
        populate.as_secs_f64()
    );

    // no-op plan against the applied state
    let (warm, p) = warm_plans(&m, &state, &providers, runs).await?;
    if p.has_changes() {
        let first: Vec<String> = p
            .pending()
            .take(5)
            .map(|c| format!("{} {:?} {:?}", c.address, c.action, c.reasons))
            .collect();
        bail!(
            "the plan after apply is not a no-op: {} pending change(s), e.g.\n  {}",
            pending(&p),
            first.join("\n  ")
        );
    }
    drop((p, providers));
    // The state's lock must be released before a child can open it.
    let state =
        Arc::try_unwrap(state).map_err(|_| anyhow!("the state is still in use after the apply"))?;
    drop(state);
    let plan_noop = Pair {
        warm,
        fresh: fresh_median(&[&dir, &full], "plan", runs, 0)?,
    };
    Ok(SizeResult {
        total,
        runs,
        validate,
        plan_empty,
        plan_noop,
        populate,
        populate_changes,
    })
}

async fn plan_section() -> Result<Vec<String>> {
    let mut results = Vec::new();
    for (total, runs) in PLAN_SIZES {
        results.push(bench_size(total, runs).await?);
    }
    let (small, large) = (&results[0], &results[1]);
    let mut missed = Vec::new();

    println!();
    println!(
        "1. validate and plan (no refresh), {} files, median of {} / {} runs",
        FILES, small.runs, large.runs
    );
    println!("   warm = repeated in one process; fresh = one new process per run, as the CLI runs");
    println!(
        "   {:<44} {:>12} {:>12} {:>9}   target",
        "",
        format!("{} res", small.total),
        format!("{} res", large.total),
        "ratio",
    );
    let row = |label: &str, a: Duration, b: Duration, abs: bool, missed: &mut Vec<String>| {
        let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-9);
        let mut verdict = Vec::new();
        if ratio <= RATIO_TARGET {
            verdict.push(format!("ratio ≤ {RATIO_TARGET}: ok"));
        } else {
            verdict.push(format!("ratio ≤ {RATIO_TARGET}: MISSED"));
            missed.push(format!(
                "{label}: t(10k)/t(1k) = {ratio:.1} > {RATIO_TARGET}"
            ));
        }
        if abs {
            if ms(b) < PLAN_TARGET_MS {
                verdict.push(format!("10k < {PLAN_TARGET_MS} ms: ok"));
            } else {
                verdict.push(format!("10k < {PLAN_TARGET_MS} ms: MISSED"));
                missed.push(format!(
                    "{label}: {:.1} ms at 10,000 resources ≥ {PLAN_TARGET_MS} ms",
                    ms(b)
                ));
            }
        }
        println!(
            "   {:<44} {:>9.1} ms {:>9.1} ms {:>8.1}x   {}",
            label,
            ms(a),
            ms(b),
            ratio,
            verdict.join(", ")
        );
    };
    for (label, pick, abs) in [
        ("validate (manifest::load), warm", 0, false),
        ("validate (manifest::load), fresh", 1, false),
        ("plan, empty state (all create), warm", 2, true),
        ("plan, empty state (all create), fresh", 3, true),
        ("plan, applied state (no-op), warm", 4, true),
        ("plan, applied state (no-op), fresh", 5, true),
        ("load + plan, empty, fresh (sum of medians)", 6, false),
        ("load + plan, no-op, fresh (sum of medians)", 7, false),
    ] {
        let get = |r: &SizeResult| match pick {
            0 => r.validate.warm,
            1 => r.validate.fresh,
            2 => r.plan_empty.warm,
            3 => r.plan_empty.fresh,
            4 => r.plan_noop.warm,
            5 => r.plan_noop.fresh,
            6 => r.validate.fresh + r.plan_empty.fresh,
            _ => r.validate.fresh + r.plan_noop.fresh,
        };
        row(label, get(small), get(large), abs, &mut missed);
    }
    println!(
        "   {:<44} {:>10.2} s {:>10.2} s {:>8.1}x   (one run each; {} and {} creates, parallelism {POPULATE_PARALLELISM})",
        "fill state: apply at 0 ms latency",
        small.populate.as_secs_f64(),
        large.populate.as_secs_f64(),
        large.populate.as_secs_f64() / small.populate.as_secs_f64().max(1e-9),
        small.populate_changes,
        large.populate_changes
    );
    Ok(missed)
}

// ----- section 2: apply against the critical-path bound -------------------------

async fn apply_section() -> Result<Vec<String>> {
    let shape = Shape {
        environments: 100,
        agents: 100,
        sessions: 100,
        agent_ref_every: None,
        pin_every: 4,
        files: FILES,
    };
    let mut times = Vec::new();
    let mut plan_times = Vec::new();
    let mut b = None;
    for run in 0..APPLY_RUNS {
        let tmp = tempfile::tempdir().context("creating a temporary directory")?;
        let dir = tmp.path().join("manifest");
        write_manifest(&dir, &shape)?;
        let m = Arc::new(load(&dir)?);
        let (state, providers) = open_state(&tmp.path().join("state"), APPLY_LATENCY)?;
        let start = Instant::now();
        let p = make_plan(&m, &state, &providers).await?;
        plan_times.push(start.elapsed());
        if pending(&p) != shape.total() {
            bail!(
                "expected {} changes, the plan has {}",
                shape.total(),
                pending(&p)
            );
        }
        let this = bound(&p, APPLY_LATENCY, APPLY_PARALLELISM)?;
        let t = run_apply(&p, m, Arc::new(state), providers, APPLY_PARALLELISM).await?;
        eprintln!(
            "[apply] run {}: {:.1} ms (bound {:.0} ms)",
            run + 1,
            ms(t),
            ms(this.bound)
        );
        times.push(t);
        b = Some(this);
    }
    let b = b.ok_or_else(|| anyhow!("no run"))?;
    let runs: Vec<String> = times.iter().map(|t| format!("{:.1}", ms(*t))).collect();
    let med = median(times);
    let ratio = med.as_secs_f64() / b.bound.as_secs_f64().max(1e-9);
    let lat = ms(APPLY_LATENCY);
    let waves = b.total_calls.div_ceil(APPLY_PARALLELISM as u64);

    println!();
    println!(
        "2. apply of {} resources ({} environments, {} agents, {} sessions), empty state,",
        shape.total(),
        shape.environments,
        shape.agents,
        shape.sessions
    );
    println!(
        "   local runtime at {lat:.0} ms per call, parallelism {APPLY_PARALLELISM}, median of {APPLY_RUNS} runs"
    );
    println!(
        "   {:<40} {} in all; critical path {} call(s) over {} change(s)",
        "runtime calls", b.total_calls, b.critical_calls, b.depth
    );
    println!(
        "   {:<40} max({} × {lat:.0} ms, ⌈{}/{}⌉ = {} × {lat:.0} ms) = {:.0} ms",
        "bound",
        b.critical_calls,
        b.total_calls,
        APPLY_PARALLELISM,
        waves,
        ms(b.bound)
    );
    println!(
        "   {:<40} {:.1} ms   (runs: {} ms)",
        "apply wall time (median)",
        ms(med),
        runs.join(", ")
    );
    println!(
        "   {:<40} {:.1} ms",
        "plan before it (median, not counted)",
        ms(median(plan_times))
    );
    let mut missed = Vec::new();
    println!(
        "   {:<40} {:.2}   target ≤ {APPLY_TARGET}: {}",
        "ratio wall / bound",
        ratio,
        if ratio <= APPLY_TARGET {
            "ok"
        } else {
            "MISSED"
        }
    );
    if ratio > APPLY_TARGET {
        missed.push(format!(
            "apply: {:.1} ms is {ratio:.2} × the bound of {:.0} ms (> {APPLY_TARGET})",
            ms(med),
            ms(b.bound)
        ));
    }
    Ok(missed)
}

// ----- section 3: where a large plan spends its time ----------------------------

/// Re-does the steps of `plan::plan` (no refresh) with public APIs, timing each,
/// and splits the validate time into reading and parsing the YAML versus the rest.
async fn phases_section() -> Result<()> {
    let total = PLAN_SIZES[1].0;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = tmp.path().join("manifest");
    write_manifest(&dir, &Shape::mix(total))?;

    let files: Vec<PathBuf> = manifest::discover(std::slice::from_ref(&dir))
        .map_err(|d| anyhow!("discovering the manifest files: {}", d.message))?;
    let mut rows: Vec<(String, Duration)> = Vec::new();

    let start = Instant::now();
    let m = load(&dir)?;
    let load_time = start.elapsed();
    let start = Instant::now();
    let mut nodes = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f)?;
        nodes.push(
            manifest::yaml::parse(i, &text)
                .map_err(|d| anyhow!("parsing {}: {}", f.display(), d.message))?,
        );
    }
    let parse_time = start.elapsed();
    let start = Instant::now();
    for n in &nodes {
        manifest::yaml::to_json(n, &mut Vec::new(), &mut |s, _| {
            Ok(manifest::yaml::scalar_value(s))
        })
        .map_err(|d| anyhow!("converting: {}", d.message))?;
    }
    let json_time = start.elapsed();
    rows.push(("validate: manifest::load, in all".into(), load_time));
    rows.push(("  of which read + yaml::parse".into(), parse_time));
    rows.push(("  of which yaml::to_json (no templates)".into(), json_time));
    rows.push((
        "  rest: templates, serde, declare, validate, graph".into(),
        load_time.saturating_sub(parse_time + json_time),
    ));
    // `Loader::declare_all` finds each resource's key with `yaml::locate`,
    // whose `key_span` scans the section's keys: time that alone, with the
    // resources in ten files and in one.
    let one = tmp.path().join("one-file");
    write_manifest(
        &one,
        &Shape {
            files: 1,
            ..Shape::mix(total)
        },
    )?;
    let one_text = std::fs::read_to_string(one.join("part-00.yaml"))?;
    let one_node = manifest::yaml::parse(0, &one_text)
        .map_err(|d| anyhow!("parsing the one-file manifest: {}", d.message))?;
    for (label, nodes) in [
        ("  locate() of every resource key, 10 files", &nodes[..]),
        (
            "  locate() of every resource key, 1 file",
            std::slice::from_ref(&one_node),
        ),
    ] {
        let start = Instant::now();
        let mut found = 0usize;
        for node in nodes {
            for section in ["environments", "agents", "sessions"] {
                let names: Vec<String> = node
                    .as_mapping()
                    .and_then(|m| m.get_mapping(section))
                    .map(|m| m.keys().map(|k| k.as_str().to_string()).collect())
                    .unwrap_or_default();
                for name in &names {
                    let path = [manifest::yaml::Seg::Key(section.into())];
                    if manifest::yaml::locate(node, &path, Some(name)).is_some() {
                        found += 1;
                    }
                }
            }
        }
        if found != total {
            bail!("located {found} of {total} resource keys");
        }
        rows.push((label.into(), start.elapsed()));
    }

    let (state, providers) = open_state(&tmp.path().join("state"), Duration::ZERO)?;
    let state = Arc::new(state);
    let m = Arc::new(m);
    let p = make_plan(&m, &state, &providers).await?;
    run_apply(
        &p,
        m.clone(),
        state.clone(),
        providers.clone(),
        POPULATE_PARALLELISM,
    )
    .await?;

    let start = Instant::now();
    make_plan(&m, &state, &providers).await?;
    rows.push(("plan (no-op), in all".into(), start.elapsed()));

    let start = Instant::now();
    let records: HashMap<Address, _> = state
        .list()
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .map(|r| (r.address.clone(), r))
        .collect();
    rows.push((
        "  state.list() (read + decode records)".into(),
        start.elapsed(),
    ));
    let start = Instant::now();
    let order = m.graph.topological();
    rows.push(("  graph.topological()".into(), start.elapsed()));
    let start = Instant::now();
    let mut desired_all = Vec::with_capacity(order.len());
    for a in &order {
        let r = m
            .resource(a)
            .ok_or_else(|| anyhow!("{a} is in the graph but not the manifest"))?;
        let lookup = |x: &Address| records.get(x).map(Outputs::from_record);
        desired_all.push(desired(r, &m.templater, &lookup).map_err(|e| anyhow!("{e}"))?);
    }
    rows.push(("  desired() of every resource".into(), start.elapsed()));
    let start = Instant::now();
    let mut differs = 0;
    for (a, d) in order.iter().zip(&desired_all) {
        if d.digest().as_deref() != records.get(a).map(|r| r.digest.as_str()) {
            differs += 1;
        }
    }
    rows.push(("  digest() of every resource".into(), start.elapsed()));
    let deferred: usize = m.resources.iter().map(|r| r.deferred.len()).sum();
    let by_kind = |k: Kind| m.resources.iter().filter(|r| r.address.kind == k).count();

    println!();
    println!(
        "3. phases at {total} resources ({} environments, {} agents, {} sessions, {deferred} deferred templates), one run each",
        by_kind(Kind::Environment),
        by_kind(Kind::Agent),
        by_kind(Kind::Session)
    );
    for (label, t) in &rows {
        println!("   {label:<52} {:>9.1} ms", ms(*t));
    }
    if differs > 0 {
        println!("   warning: {differs} digest(s) differ from the state");
    }
    Ok(())
}

/// A loop for profilers, doing the same total work at any size and keeping
/// every result alive like the `plan` section does:
/// `perf record -g target/release/examples/bench profile=1000`.
async fn profile_section(total: usize) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = tmp.path().join("manifest");
    write_manifest(&dir, &Shape::mix(total))?;
    let (state, providers) = open_state(&tmp.path().join("state"), Duration::ZERO)?;
    let rounds = (50_000 / total).max(1);
    let start = Instant::now();
    let mut manifests = Vec::new();
    for _ in 0..rounds {
        manifests.push(load(&dir)?);
    }
    let loads = start.elapsed();
    let m = manifests.pop().ok_or_else(|| anyhow!("no run"))?;
    drop(manifests);
    let start = Instant::now();
    let mut plans = Vec::new();
    for _ in 0..rounds {
        plans.push(make_plan(&m, &state, &providers).await?);
    }
    let elapsed = start.elapsed();
    drop(plans);
    println!();
    println!(
        "profile loop at {total} resources: {rounds} loads in {:.1} ms, {rounds} plans (empty state) in {:.1} ms",
        ms(loads),
        ms(elapsed)
    );
    Ok(())
}

/// Minor page faults of this process so far (Linux), to tell memory effects
/// from algorithmic ones; 0 where `/proc` is not available.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            rest.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

/// How validate and plan scale: time per resource at several sizes, and at
/// 10,000 resources in one file instead of ten.
async fn sweep_section() -> Result<()> {
    println!();
    println!(
        "4. scaling of validate and plan (empty state), median of 5 runs; per resource: µs and minor page faults"
    );
    println!(
        "   {:>8} {:>6} {:>12} {:>8} {:>8} {:>12} {:>8} {:>8}",
        "res", "files", "validate", "µs/res", "flt/res", "plan", "µs/res", "flt/res"
    );
    let cases = [
        (1_000, FILES),
        (2_000, FILES),
        (5_000, FILES),
        (10_000, FILES),
        (20_000, FILES),
        (1_000, 1),
        (10_000, 1),
    ];
    for (total, files) in cases {
        let tmp = tempfile::tempdir().context("creating a temporary directory")?;
        let dir = tmp.path().join("manifest");
        let shape = Shape {
            files,
            ..Shape::mix(total)
        };
        write_manifest(&dir, &shape)?;
        let (state, providers) = open_state(&tmp.path().join("state"), Duration::ZERO)?;
        let runs = 5;
        let mut loads = Vec::new();
        let mut kept = Vec::new();
        let faults = minor_faults();
        for _ in 0..runs {
            let start = Instant::now();
            let m = load(&dir)?;
            loads.push(start.elapsed());
            kept.push(m);
        }
        let load_faults = minor_faults().saturating_sub(faults);
        let m = kept.pop().ok_or_else(|| anyhow!("no run"))?;
        drop(kept);
        let mut plans = Vec::new();
        let mut kept = Vec::new();
        let faults = minor_faults();
        for _ in 0..runs {
            let start = Instant::now();
            let p = make_plan(&m, &state, &providers).await?;
            plans.push(start.elapsed());
            kept.push(p);
        }
        let plan_faults = minor_faults().saturating_sub(faults);
        drop(kept);
        let (l, p) = (median(loads), median(plans));
        let per = |faults: u64| faults as f64 / (runs * total) as f64;
        println!(
            "   {:>8} {:>6} {:>9.1} ms {:>8.1} {:>8.2} {:>9.1} ms {:>8.1} {:>8.2}",
            total,
            files,
            ms(l),
            ms(l) * 1e3 / total as f64,
            per(load_faults),
            ms(p),
            ms(p) * 1e3 / total as f64,
            per(plan_faults)
        );
    }
    Ok(())
}

// ----- run: the scripted conversation runner ------------------------------------

const RUN_SESSIONS: usize = 1_000;
const RUN_TURNS: usize = 5;
const RUN_CONCURRENCY: usize = 200;
const RUN_RSS_TARGET_MB: f64 = 300.0;
const RUN_OVERHEAD_TARGET: f64 = 0.10;

/// Peak resident memory of this process, from /proc.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn run_section() -> Result<Vec<String>> {
    println!("\n## run: {RUN_SESSIONS} sessions x {RUN_TURNS} scripted turns, concurrency {RUN_CONCURRENCY}");
    let dir = tempfile::tempdir()?;
    let mut m = String::from("version: 1\nname: runbench\nproviders:\n  local:\n    models:\n      scripted-bench:\n        backend: scripted\n        turns:\n");
    for t in 0..RUN_TURNS {
        let _ = writeln!(
            m,
            "          - text: \"reply {t}: the total is {} units\"",
            t * 7
        );
    }
    m.push_str("environments:\n  box: { config: { type: cloud } }\nagents:\n  bot: { model: scripted-bench, system: You answer briefly. }\nsessions:\n");
    for i in 0..RUN_SESSIONS {
        let _ = writeln!(
            m,
            "  s{i}:\n    agent: bot\n    environment: box\n    steps:"
        );
        for t in 0..RUN_TURNS {
            let _ = writeln!(m, "      - send: \"question {t} of session {i}\"\n        expect: [{{ contains: \"reply {t}\" }}]");
        }
    }
    std::fs::write(dir.path().join("agentform.yaml"), m)?;
    let manifest = Arc::new(load(dir.path())?);
    let state_dir = dir.path().join("state");
    let state = Arc::new(StateStore::open(&state_dir, "bench")?);
    let local = LocalRuntime::open(
        state.db(),
        LocalOptions {
            sandboxes: Arc::new(agentform::sandbox::local::LocalSandboxes::new(
                state_dir.join("workspaces"),
            )),
            models: Arc::new(agentform::ops::models::ManifestModels::new(&manifest)),
            ..LocalOptions::default()
        },
    )
    .map_err(|e| anyhow!("cannot open the local runtime: {e}"))?;
    let mut providers = Providers::default();
    providers.insert(Arc::new(local));
    let plan = make_plan(&manifest, &state, &providers).await?;
    let applied = run_apply(
        &plan,
        manifest.clone(),
        state.clone(),
        providers.clone(),
        POPULATE_PARALLELISM,
    )
    .await?;
    println!(
        "applied {} resources in {:.2} s",
        pending(&plan),
        applied.as_secs_f64()
    );

    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut events = 0usize;
    for round in 0..6 {
        let transcripts = round % 2 == 1;
        let options = agentform::runner::RunOptions {
            concurrency: RUN_CONCURRENCY,
            transcripts,
            ..Default::default()
        };
        let start = Instant::now();
        let report = agentform::runner::run(
            manifest.clone(),
            state.clone(),
            providers.clone(),
            &options,
            Arc::new(agentform::runner::Silent),
        )
        .await
        .map_err(|e| anyhow!("run failed: {e}"))?;
        let elapsed = start.elapsed();
        let passed = report.outcomes.iter().filter(|o| o.passed()).count();
        if passed != RUN_SESSIONS {
            let first = report
                .outcomes
                .iter()
                .find(|o| !o.passed())
                .map(|o| format!("{}: {:?}", o.address, o.failure_messages()));
            bail!("only {passed} of {RUN_SESSIONS} sessions passed; first failure: {first:?}");
        }
        events = report.outcomes.iter().map(|o| o.footer.events).sum();
        println!(
            "round {}: transcripts {:<3} {:>7.2} s  {:>7.1} sessions/s  {:>8.0} events/s",
            round + 1,
            if transcripts { "on" } else { "off" },
            elapsed.as_secs_f64(),
            RUN_SESSIONS as f64 / elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64()
        );
        if transcripts {
            with.push(elapsed)
        } else {
            without.push(elapsed)
        }
    }
    let on = median(with);
    let off = median(without);
    let overhead = on.as_secs_f64() / off.as_secs_f64() - 1.0;
    let rss = peak_rss_mb().unwrap_or(f64::NAN);
    println!("all {RUN_SESSIONS} sessions completed in every round; {events} events per run");
    println!(
        "median with transcripts: {:.2} s ({:.1} sessions/s, {:.0} events/s); without: {:.2} s; transcript overhead {:+.1}%",
        on.as_secs_f64(),
        RUN_SESSIONS as f64 / on.as_secs_f64(),
        events as f64 / on.as_secs_f64(),
        off.as_secs_f64(),
        overhead * 100.0
    );
    println!("peak RSS of the benchmark process (apply + 6 runs): {rss:.0} MB");
    let mut missed = Vec::new();
    if rss > RUN_RSS_TARGET_MB {
        missed.push(format!(
            "run: peak RSS {rss:.0} MB > {RUN_RSS_TARGET_MB} MB"
        ));
    }
    if overhead > RUN_OVERHEAD_TARGET {
        missed.push(format!(
            "run: transcripts add {:.1}% > 10%",
            overhead * 100.0
        ));
    }
    Ok(missed)
}
