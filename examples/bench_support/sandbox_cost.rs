//! `bench -- sandbox`: what confinement costs a command. One session runs
//! 100 `bash` tool calls of `true`, confined by bubblewrap and with the
//! opt-out (`providers.local.sandbox: none`); the difference per command is
//! the cost of the sandbox (target: under 20 ms).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use agentform::sandbox::local::{Confinement, Workspace, WorkspaceOptions};
use agentform::sandbox::tools;

const CALLS: usize = 100;
const ROUNDS: usize = 3;
const TARGET_MS: f64 = 20.0;

async fn session(confinement: Confinement) -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let options = WorkspaceOptions {
        confinement,
        ..WorkspaceOptions::default()
    };
    let ws = Workspace::create(dir.path().join("ws"), options)?;
    let input = json!({"command": "true"});
    let started = Instant::now();
    for _ in 0..CALLS {
        let result = tools::run(&ws, "bash", &input, Duration::from_secs(60)).await;
        if result.is_error {
            bail!("`true` failed ({confinement:?}): {}", result.content);
        }
    }
    Ok(started.elapsed())
}

/// Prints the figures; the targets missed, if any.
pub async fn section() -> Result<Vec<String>> {
    println!("\n## sandbox: {CALLS} bash calls of `true` in one session, median of {ROUNDS}");
    let mut confined = Vec::new();
    let mut open = Vec::new();
    for _ in 0..ROUNDS {
        confined.push(session(Confinement::Bubblewrap).await?);
        open.push(session(Confinement::None).await?);
    }
    confined.sort();
    open.sort();
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / CALLS as f64;
    let (c, o) = (per(confined[ROUNDS / 2]), per(open[ROUNDS / 2]));
    println!("confined (bubblewrap)   {c:7.2} ms per command");
    println!("unconfined (opt-out)    {o:7.2} ms per command");
    println!(
        "added by confinement    {:7.2} ms per command (target < {TARGET_MS} ms)",
        c - o
    );
    let mut missed = Vec::new();
    if c - o >= TARGET_MS {
        missed.push(format!("sandbox: {:.1} ms added per command", c - o));
    }
    Ok(missed)
}
