//! `bench -- backends[=N]`: the PostgreSQL state against the sled state.
//! An apply of 300 resources (local runtime, 20 ms per call, parallelism
//! 16) into an empty state, and a no-op plan of N (10,000) resources
//! against a full state, opening the state each time as the CLI does.
//! Targets: PostgreSQL within 1.5× of sled for the apply, 2× for the plan.
//!
//! The PostgreSQL server is a throwaway cluster on this machine (the
//! tests' harness, `scripts/install-postgresql.sh`), with fsync on, as the
//! sled state flushes; `AGENTFORM_BENCH_POSTGRES=postgres://…` uses another
//! server instead (each run takes a schema of its own in its database).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use agentform::runtime::local::{LocalOptions, LocalRuntime};
use agentform::runtime::Providers;
use agentform::state::{Location, OpenOptions, StateStore};

use super::pg_cluster::Cluster;
use super::{
    load, make_plan, median, ms, pending, run_apply, write_manifest, Shape, APPLY_LATENCY,
    APPLY_PARALLELISM, APPLY_RUNS, FILES, POPULATE_PARALLELISM,
};

const APPLY_RATIO: f64 = 1.5;
const PLAN_RATIO: f64 = 2.0;
const PLAN_RUNS: usize = 3;

/// Where the states go: a directory each, or a schema each in one database.
struct Places {
    tmp: tempfile::TempDir,
    postgres: String,
    _cluster: Option<Cluster>,
    next: AtomicUsize,
}

impl Places {
    fn new() -> Result<Places> {
        let tmp = tempfile::tempdir().context("creating a temporary directory")?;
        let (postgres, cluster) = match std::env::var("AGENTFORM_BENCH_POSTGRES") {
            Ok(url) => (url, None),
            Err(_) => {
                eprintln!("[backends] starting a throwaway PostgreSQL cluster (fsync on) …");
                let cluster = Cluster::start(true);
                let db = cluster.database();
                (cluster.url(&db), Some(cluster))
            }
        };
        Ok(Places {
            tmp,
            postgres,
            _cluster: cluster,
            next: AtomicUsize::new(0),
        })
    }

    /// A new, empty place for `backend`.
    fn fresh(&self, backend: Backend) -> Result<Location> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let text = match backend {
            Backend::Sled => self
                .tmp
                .path()
                .join(format!("state-{n}"))
                .display()
                .to_string(),
            Backend::Postgres => {
                let sep = if self.postgres.contains('?') {
                    '&'
                } else {
                    '?'
                };
                format!(
                    "{}{sep}schema=bench_{}_{n}",
                    self.postgres,
                    std::process::id()
                )
            }
        };
        Location::parse(&text).map_err(|e| anyhow!(e))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sled,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

fn open(location: &Location, latency: Duration) -> Result<(StateStore, Providers)> {
    let state = StateStore::open_at(location, "bench", &OpenOptions::default())
        .with_context(|| format!("opening the state at {location}"))?;
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

/// The median apply of 300 resources into an empty state.
async fn apply(places: &Places, backend: Backend, dir: &Path, shape: &Shape) -> Result<Duration> {
    let mut times = Vec::new();
    for run in 0..APPLY_RUNS {
        let m = Arc::new(load(dir)?);
        let (state, providers) = open(&places.fresh(backend)?, APPLY_LATENCY)?;
        let p = make_plan(&m, &state, &providers).await?;
        if pending(&p) != shape.total() {
            bail!(
                "expected {} changes, the plan has {}",
                shape.total(),
                pending(&p)
            );
        }
        let t = run_apply(&p, m, Arc::new(state), providers, APPLY_PARALLELISM).await?;
        eprintln!(
            "[backends] apply on {}, run {}: {:.1} ms",
            backend.name(),
            run + 1,
            ms(t)
        );
        times.push(t);
    }
    Ok(median(times))
}

/// Fills a state with the manifest in `dir`, then times opening it and
/// planning (a no-op) as the CLI does; the median.
async fn plan(places: &Places, backend: Backend, dir: &Path, total: usize) -> Result<Duration> {
    let m = Arc::new(load(dir)?);
    let location = places.fresh(backend)?;
    {
        let (state, providers) = open(&location, Duration::ZERO)?;
        let p = make_plan(&m, &state, &providers).await?;
        let start = Instant::now();
        run_apply(
            &p,
            m.clone(),
            Arc::new(state),
            providers,
            POPULATE_PARALLELISM,
        )
        .await?;
        eprintln!(
            "[backends] {} state of {total} resources filled in {:.1} s",
            backend.name(),
            start.elapsed().as_secs_f64()
        );
    }
    let mut times = Vec::new();
    for _ in 0..PLAN_RUNS {
        let start = Instant::now();
        let (state, providers) = open(&location, Duration::ZERO)?;
        let p = make_plan(&m, &state, &providers).await?;
        times.push(start.elapsed());
        if p.has_changes() {
            bail!(
                "the plan after apply is not a no-op: {} pending",
                pending(&p)
            );
        }
    }
    Ok(median(times))
}

/// Prints the figures; the targets missed, if any.
pub async fn section(plan_size: usize) -> Result<Vec<String>> {
    let places = Places::new()?;
    let apply_shape = Shape {
        environments: 100,
        agents: 100,
        sessions: 100,
        agent_ref_every: None,
        pin_every: 4,
        files: FILES,
    };
    let apply_dir = places.tmp.path().join("apply-manifest");
    write_manifest(&apply_dir, &apply_shape)?;
    let plan_shape = Shape::mix(plan_size);
    let plan_dir = places.tmp.path().join("plan-manifest");
    write_manifest(&plan_dir, &plan_shape)?;

    let mut rows = Vec::new();
    for backend in [Backend::Sled, Backend::Postgres] {
        let a = apply(&places, backend, &apply_dir, &apply_shape).await?;
        let p = plan(&places, backend, &plan_dir, plan_size).await?;
        rows.push((backend, a, p));
    }
    println!();
    println!(
        "state backends: apply of {} resources at {:.0} ms per call, parallelism {APPLY_PARALLELISM} \
         (median of {APPLY_RUNS}); open + no-op plan of {plan_size} resources (median of {PLAN_RUNS})",
        apply_shape.total(),
        ms(APPLY_LATENCY)
    );
    for (backend, a, p) in &rows {
        println!(
            "   {:<12} apply {:>9.1} ms   plan {:>9.1} ms",
            backend.name(),
            ms(*a),
            ms(*p)
        );
    }
    let mut missed = Vec::new();
    if let [(_, sled_apply, sled_plan), (_, pg_apply, pg_plan)] = rows[..] {
        for (what, pg, sled, target) in [
            ("apply", pg_apply, sled_apply, APPLY_RATIO),
            ("plan", pg_plan, sled_plan, PLAN_RATIO),
        ] {
            let ratio = pg.as_secs_f64() / sled.as_secs_f64().max(1e-9);
            let ok = ratio <= target;
            println!(
                "   {what:<5} PostgreSQL / sled = {ratio:.2}   target ≤ {target}: {}",
                if ok { "ok" } else { "MISSED" }
            );
            if !ok {
                missed.push(format!(
                    "backends: {what} on PostgreSQL is {ratio:.2} × sled's (> {target})"
                ));
            }
        }
    }
    Ok(missed)
}
