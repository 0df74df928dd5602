//! Walks a plan: every pending change in dependency order with bounded
//! parallelism, the state written after every single remote action.
//!
//! A failed change stops its dependents; independent changes still finish.
//! Creates are preceded by an intent record, so an object created just before a
//! crash is found by its metadata and adopted instead of created twice.
//!
//! This file holds the walk; `execute` dispatches one change to the actions in
//! `create`, `update` and `execute::destroy_remote`. Nothing here decides what
//! to change: that is the plan's.

mod create;
mod execute;
#[cfg(test)]
mod tests;
mod update;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::graph::Address;
use crate::manifest::Manifest;
use crate::plan::{Action, Change, Plan};
use crate::runtime::{Providers, RuntimeError};
use crate::state::{StateError, StateStore};

/// Test hook: abort the process right after the remote create of this address
/// returns and before its record is written, to exercise adoption.
pub const CRASH_AFTER_CREATE_ENV: &str = "AGENTFORM_TEST_CRASH_AFTER_CREATE";

/// Progress of an apply, reported as it happens. Implemented by the CLI.
pub trait Reporter: Send + Sync {
    fn started(&self, _change: &Change) {}
    fn finished(&self, _change: &Change, _outcome: &Outcome, _elapsed: Duration) {}
}

/// Reports nothing.
pub struct Silent;
impl Reporter for Silent {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; the text says what happened (e.g. "created agent_… (version 1)").
    Done(String),
    Failed(String),
    /// Not attempted because a change it waits for failed.
    Skipped {
        because: Address,
    },
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub results: Vec<(Address, Action, Outcome)>,
}

impl ApplyReport {
    pub fn failed(&self) -> impl Iterator<Item = &(Address, Action, Outcome)> {
        self.results
            .iter()
            .filter(|(_, _, o)| !matches!(o, Outcome::Done(_)))
    }

    pub fn ok(&self) -> bool {
        self.failed().next().is_none()
    }

    pub fn count(&self, action: Action) -> usize {
        self.results
            .iter()
            .filter(|(_, a, o)| *a == action && matches!(o, Outcome::Done(_)))
            .count()
    }
}

#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error("{0}")]
    Remote(#[from] RuntimeError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Other(String),
}

pub struct Context {
    pub manifest: Option<Arc<Manifest>>,
    pub state: Arc<StateStore>,
    pub providers: Providers,
    pub parallelism: usize,
    pub reporter: Arc<dyn Reporter>,
}

/// Which change waits for which, by index into the pending changes.
struct Waits {
    /// How many changes each one still waits for.
    waiting: Vec<usize>,
    /// The changes that wait for each one.
    dependents: Vec<Vec<usize>>,
}

impl Waits {
    fn new(changes: &[Change]) -> Self {
        let index: HashMap<&Address, usize> = changes
            .iter()
            .enumerate()
            .map(|(i, c)| (&c.address, i))
            .collect();
        let mut waits = Waits {
            waiting: vec![0; changes.len()],
            dependents: vec![Vec::new(); changes.len()],
        };
        for (i, c) in changes.iter().enumerate() {
            for a in &c.after {
                if let Some(&j) = index.get(a) {
                    waits.waiting[i] += 1;
                    waits.dependents[j].push(i);
                }
            }
        }
        waits
    }

    fn ready(&self) -> VecDeque<usize> {
        (0..self.waiting.len())
            .filter(|i| self.waiting[*i] == 0)
            .collect()
    }

    /// `i` is done: the dependents that wait for nothing else now.
    fn done(&mut self, i: usize, outcomes: &[Option<Outcome>]) -> Vec<usize> {
        let mut ready = Vec::new();
        for &d in &self.dependents[i] {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 && outcomes[d].is_none() {
                ready.push(d);
            }
        }
        ready
    }

    /// `i` failed: every change that waits for it, directly or not.
    fn blocked_by(&self, i: usize, outcomes: &[Option<Outcome>]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = self.dependents[i].clone();
        let mut seen = HashSet::new();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) || outcomes[d].is_some() {
                continue;
            }
            out.push(d);
            stack.extend(self.dependents[d].iter().copied());
        }
        out
    }
}

/// Applies the pending changes of `plan`; never fails as a whole: every
/// change has its outcome in the report.
pub async fn apply(plan: &Plan, ctx: Context) -> ApplyReport {
    let ctx = Arc::new(ctx);
    let changes: Vec<Change> = plan.pending().cloned().collect();
    let mut waits = Waits::new(&changes);
    let mut ready = waits.ready();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; changes.len()];
    let mut running = tokio::task::JoinSet::new();
    let parallelism = ctx.parallelism.max(1);
    loop {
        while running.len() < parallelism {
            let Some(i) = ready.pop_front() else { break };
            running.spawn(run_one(i, changes[i].clone(), ctx.clone()));
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, outcome) = match joined {
            Ok(r) => r,
            Err(e) => {
                // A panicking task is a bug; nothing else can be attributed.
                tracing::error!("apply task failed: {e}");
                continue;
            }
        };
        let ok = matches!(outcome, Outcome::Done(_));
        outcomes[i] = Some(outcome);
        if ok {
            ready.extend(waits.done(i, &outcomes));
            continue;
        }
        for d in waits.blocked_by(i, &outcomes) {
            let o = Outcome::Skipped {
                because: changes[i].address.clone(),
            };
            ctx.reporter.finished(&changes[d], &o, Duration::ZERO);
            outcomes[d] = Some(o);
        }
    }
    let results = changes
        .iter()
        .zip(outcomes)
        .map(|(c, o)| {
            let o = o.unwrap_or_else(|| Outcome::Failed("not attempted".into()));
            (c.address.clone(), c.action, o)
        })
        .collect();
    ApplyReport { results }
}

async fn run_one(i: usize, change: Change, ctx: Arc<Context>) -> (usize, Outcome) {
    ctx.reporter.started(&change);
    let start = Instant::now();
    let outcome = match execute::execute(&change, &ctx).await {
        Ok(done) => Outcome::Done(done),
        Err(e) => Outcome::Failed(e.to_string()),
    };
    ctx.reporter.finished(&change, &outcome, start.elapsed());
    (i, outcome)
}
