//! The critical-path bound of an apply: how fast a plan can possibly be
//! applied when every runtime call takes a fixed latency. Shared by
//! `examples/bench.rs` and `examples/anthropic_bench.rs`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};

use agentform::graph::Address;
use agentform::plan::{Action, Change, Plan};

/// Runtime calls a change makes, as `apply::execute` performs it.
pub fn calls(c: &Change) -> u64 {
    match c.action {
        Action::NoOp => 0,
        // One create call; an adoption first lists (at least one page).
        Action::Create if c.adopt => 2,
        Action::Create | Action::Update | Action::Archive | Action::Delete => 1,
        // Destroy the old object, then create.
        Action::Replace if c.remote_id.is_some() => 2,
        Action::Replace => 1,
    }
}

pub struct Bound {
    pub total_calls: u64,
    pub critical_calls: u64,
    pub depth: usize,
    pub bound: Duration,
}

/// max(critical path in calls × latency, ⌈total calls / parallelism⌉ × latency).
pub fn bound(plan: &Plan, latency: Duration, parallelism: usize) -> Result<Bound> {
    let changes: Vec<&Change> = plan.pending().collect();
    let index: HashMap<&Address, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (&c.address, i))
        .collect();
    // Longest path (in calls and in changes) ending at each change, by DFS with memo.
    let mut memo: Vec<Option<(u64, usize)>> = vec![None; changes.len()];
    let mut on_stack = vec![false; changes.len()];
    fn visit(
        i: usize,
        changes: &[&Change],
        index: &HashMap<&Address, usize>,
        memo: &mut Vec<Option<(u64, usize)>>,
        on_stack: &mut Vec<bool>,
    ) -> Result<(u64, usize)> {
        if let Some(v) = memo[i] {
            return Ok(v);
        }
        if std::mem::replace(&mut on_stack[i], true) {
            bail!(
                "the plan's `after` edges form a cycle at {}",
                changes[i].address
            );
        }
        let mut best = (0u64, 0usize);
        for a in &changes[i].after {
            if let Some(&j) = index.get(a) {
                let (c, d) = visit(j, changes, index, memo, on_stack)?;
                best = (best.0.max(c), best.1.max(d));
            }
        }
        on_stack[i] = false;
        let v = (best.0 + calls(changes[i]), best.1 + 1);
        memo[i] = Some(v);
        Ok(v)
    }
    let mut critical_calls = 0;
    let mut depth = 0;
    for i in 0..changes.len() {
        let (c, d) = visit(i, &changes, &index, &mut memo, &mut on_stack)?;
        critical_calls = critical_calls.max(c);
        depth = depth.max(d);
    }
    let total_calls: u64 = changes.iter().map(|c| calls(c)).sum();
    let waves = total_calls.div_ceil(parallelism.max(1) as u64);
    let bound = latency * (critical_calls.max(waves) as u32);
    Ok(Bound {
        total_calls,
        critical_calls,
        depth,
        bound,
    })
}
