//! `apply`: plan, then (after the command line's confirmation) back up the
//! state, execute the plan with a reporter and bring `agentform.lock` up to
//! date. The two steps are [`plan`] and [`Pending::execute`]; `destroy`
//! shares them.

use std::path::PathBuf;
use std::sync::Arc;

use crate::apply::{self, ApplyReport, Reporter};
use crate::graph::Address;
use crate::lockfile::{LockFile, LockFileError};
use crate::manifest::Manifest;
use crate::plan::{self, Plan, PlanOptions};
use crate::runtime::local::HISTORY_TREES;
use crate::runtime::Providers;
use crate::state::{StateError, StateStore};

use super::plan::{refuse_empty, PlanFailed};

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Limit to these resources and what they need.
    pub targets: Vec<Address>,
    /// Read the live objects first and repair drift.
    pub refresh: bool,
    /// Changes in flight at once (and parallel refresh calls).
    pub parallelism: usize,
    /// Plan a manifest without resources even when the state has some.
    pub allow_empty: bool,
}

/// Writing `agentform.lock` failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    File(#[from] LockFileError),
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// Nothing was changed: a change is not made without its backup.
    #[error("backing up the state before changing it; nothing was changed")]
    Backup(#[source] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// After an apply, the error names the lock file it was writing.
    #[error("writing `{}`", path.display())]
    LockAfterApply {
        path: PathBuf,
        #[source]
        source: LockError,
    },
}

/// Which command a plan is for: it decides what happens to the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verb {
    Apply,
    Destroy,
}

/// A plan and what executing it needs; made by [`plan`] or `destroy::plan`.
pub struct Pending {
    pub(super) plan: Plan,
    pub(super) manifest: Option<Manifest>,
    pub(super) state: StateStore,
    pub(super) providers: Providers,
    pub(super) parallelism: usize,
    pub(super) verb: Verb,
}

/// What an execution did.
#[derive(Debug)]
pub struct Executed {
    pub report: ApplyReport,
    /// The lock file, when it was written.
    pub lock_written: Option<PathBuf>,
    /// The backup written before the first change, unless backups are off.
    pub backup: Option<PathBuf>,
}

/// The plan that makes the deployment match `manifest`; refused like
/// `plan`'s when the manifest declares nothing.
pub async fn plan(
    manifest: Manifest,
    state: StateStore,
    providers: Providers,
    options: &ApplyOptions,
) -> Result<Pending, PlanFailed> {
    let plan_options = PlanOptions {
        refresh: options.refresh,
        destroy: false,
        targets: options.targets.clone(),
        parallelism: options.parallelism,
    };
    refuse_empty(&manifest, &state, &plan_options, options.allow_empty)?;
    let plan = plan::plan(Some(&manifest), &state, &providers, &plan_options).await?;
    Ok(Pending {
        plan,
        manifest: Some(manifest),
        state,
        providers,
        parallelism: options.parallelism,
        verb: Verb::Apply,
    })
}

impl Pending {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// With nothing to change: an apply still brings the lock file up to
    /// date (the path when it wrote it); a destroy does nothing.
    pub fn finish_unchanged(&self) -> Result<Option<PathBuf>, LockError> {
        match (&self.manifest, self.verb) {
            (Some(m), Verb::Apply) => update_lock(m, &self.state),
            _ => Ok(None),
        }
    }

    /// Backs up the state (when the plan changes something), applies the
    /// plan, reporting each change to `reporter`, then updates the lock
    /// file. Failed changes are in the report, not an error.
    pub async fn execute(self, reporter: Arc<dyn Reporter>) -> Result<Executed, ExecuteError> {
        let backup = if self.plan.has_changes() {
            self.state
                .backup(&HISTORY_TREES)
                .map_err(ExecuteError::Backup)?
        } else {
            None
        };
        let state = Arc::new(self.state);
        let manifest = self.manifest.map(Arc::new);
        let report = apply::apply(
            &self.plan,
            apply::Context {
                manifest: manifest.clone(),
                state: state.clone(),
                providers: self.providers,
                parallelism: self.parallelism,
                reporter,
            },
        )
        .await;
        let lock_written = match manifest.as_deref() {
            None => None,
            Some(m) => match self.verb {
                Verb::Apply => {
                    update_lock(m, &state).map_err(|source| ExecuteError::LockAfterApply {
                        path: m.lock_path(),
                        source,
                    })?
                }
                Verb::Destroy => update_lock(m, &state)?,
            },
        };
        Ok(Executed {
            report,
            lock_written,
            backup,
        })
    }
}

fn update_lock(manifest: &Manifest, state: &StateStore) -> Result<Option<PathBuf>, LockError> {
    Ok(LockFile::update(manifest, &state.list()?)?)
}
