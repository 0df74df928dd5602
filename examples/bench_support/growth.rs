//! `bench -- growth[=ROUNDS]`: what repeated runs do to a state, as a CI
//! job that runs on every push does to it. The same sessions are run ROUNDS
//! times (default 20) on one state, twice: keeping everything, and with the
//! manifest's `retention`. Each round archives the previous sessions and
//! records new transcripts; the figures are the first and last round's
//! time and the state's size on disk after each. With retention the size
//! must level off (target: the last round's state at most 1.5 times the
//! largest of the first three rounds).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use agentform::ops::models::ManifestModels;
use agentform::ops::retention;
use agentform::runner::{self, RunOptions, Silent};
use agentform::runtime::local::{LocalOptions, LocalRuntime};
use agentform::runtime::Providers;
use agentform::sandbox::local::LocalSandboxes;
use agentform::state::StateStore;

const SESSIONS: usize = 100;
const TURNS: usize = 5;
const CONCURRENCY: usize = 50;
const RETENTION: &str = "retention: { transcripts: 2, archived_sessions: 0 }\n";
const LEVEL_TARGET: f64 = 1.5;

/// One pass: per round, the time and the state's size after it.
struct Pass {
    rounds: Vec<(Duration, u64)>,
    transcripts: usize,
    database: u64,
    transcript_bytes: u64,
}

/// Prints the figures; the targets missed, if any.
pub async fn section(rounds: usize) -> Result<Vec<String>> {
    println!(
        "\n## growth: {rounds} runs of {SESSIONS} sessions x {TURNS} scripted turns on one state, \
         without and with `{}`",
        RETENTION.trim()
    );
    let without = pass(rounds, false).await?;
    let with = pass(rounds, true).await?;
    let mb = |b: u64| b as f64 / 1e6;
    for (name, p) in [("keeping everything", &without), ("with retention", &with)] {
        let (first, last) = (p.rounds[0], p.rounds[p.rounds.len() - 1]);
        println!(
            "{name:<19} round 1: {:6.2} s, state {:7.1} MB   round {rounds}: {:6.2} s, state {:7.1} MB   ({} transcripts kept)",
            first.0.as_secs_f64(),
            mb(first.1),
            last.0.as_secs_f64(),
            mb(last.1),
            p.transcripts
        );
    }
    for (name, p) in [("keeping everything", &without), ("with retention", &with)] {
        let sizes: Vec<String> = p.rounds.iter().map(|r| format!("{:.1}", mb(r.1))).collect();
        let times: Vec<String> = p
            .rounds
            .iter()
            .map(|r| format!("{:.2}", r.0.as_secs_f64()))
            .collect();
        println!("{name}: state after each round (MB): {}", sizes.join(" "));
        println!("{name}: each round (s): {}", times.join(" "));
        println!(
            "{name}: the database {:.1} MB, transcripts {:.1} MB at the end",
            mb(p.database),
            mb(p.transcript_bytes)
        );
    }
    let early = with.rounds.iter().take(3).map(|r| r.1).max().unwrap_or(0);
    let last = with.rounds.last().map_or(0, |r| r.1);
    let mut missed = Vec::new();
    if last as f64 > early as f64 * LEVEL_TARGET {
        missed.push(format!(
            "growth: with retention the state grew from {:.1} MB to {:.1} MB",
            mb(early),
            mb(last)
        ));
    }
    Ok(missed)
}

async fn pass(rounds: usize, retain: bool) -> Result<Pass> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("agentform.yaml"), manifest(retain))?;
    let manifest = Arc::new(crate::load(dir.path())?);
    let state_dir = dir.path().join("state");
    let state = Arc::new(StateStore::open(&state_dir, "bench")?);
    let local = LocalRuntime::open(
        state.db(),
        LocalOptions {
            sandboxes: Arc::new(LocalSandboxes::new(state_dir.join("workspaces"))),
            models: Arc::new(ManifestModels::new(&manifest)),
            ..LocalOptions::default()
        },
    )
    .map_err(|e| anyhow!("cannot open the local runtime: {e}"))?;
    let mut providers = Providers::default();
    providers.insert(Arc::new(local));
    let plan = crate::make_plan(&manifest, &state, &providers).await?;
    crate::run_apply(
        &plan,
        manifest.clone(),
        state.clone(),
        providers.clone(),
        crate::POPULATE_PARALLELISM,
    )
    .await?;
    let options = RunOptions {
        concurrency: CONCURRENCY,
        ..Default::default()
    };
    let mut out = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let report = runner::run(
            manifest.clone(),
            state.clone(),
            providers.clone(),
            &options,
            Arc::new(Silent),
        )
        .await
        .map_err(|e| anyhow!("run failed: {e}"))?;
        let pruned = retention::apply(&manifest.retention, &state, &providers)
            .await
            .map_err(|e| anyhow!("retention failed: {e}"))?;
        let elapsed = start.elapsed();
        if !report.passed() || !pruned.problems.is_empty() {
            bail!(
                "a round failed: {} of {SESSIONS} sessions passed; {:?}",
                report.outcomes.iter().filter(|o| o.passed()).count(),
                pruned.problems
            );
        }
        state.db().flush().map_err(|e| anyhow!("flush: {e}"))?;
        out.push((elapsed, size_on_disk(&state_dir)));
    }
    Ok(Pass {
        rounds: out,
        transcripts: state.transcripts()?.len(),
        database: size_on_disk(&state_dir.join("db")),
        transcript_bytes: size_on_disk(&state_dir.join("transcripts")),
    })
}

fn manifest(retain: bool) -> String {
    let mut m = String::from(
        "version: 1\nname: growth\nproviders:\n  local:\n    models:\n      scripted-growth:\n        backend: scripted\n        turns:\n",
    );
    for t in 0..TURNS {
        let _ = writeln!(
            m,
            "          - text: \"reply {t}: the total is {} units\"",
            t * 7
        );
    }
    if retain {
        m.push_str(RETENTION);
    }
    m.push_str("environments:\n  box: { config: { type: cloud } }\nagents:\n  bot: { model: scripted-growth, system: You answer briefly. }\nsessions:\n");
    for i in 0..SESSIONS {
        let _ = writeln!(
            m,
            "  s{i}:\n    agent: bot\n    environment: box\n    steps:"
        );
        for t in 0..TURNS {
            let _ = writeln!(
                m,
                "      - send: \"question {t} of session {i}\"\n        expect: [{{ contains: \"reply {t}\" }}]"
            );
        }
    }
    m
}

/// Bytes of every file under `dir`.
fn size_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size_on_disk(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
