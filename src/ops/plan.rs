//! `plan`: the plan of a loaded manifest against the state, and with
//! `--locked` where a deploy of it would differ from `agentform.lock`. A
//! manifest that declares nothing while the state records resources is
//! refused unless emptiness was asked for: planning it removes everything.

use std::path::PathBuf;

use crate::lockfile::{LockFile, LockFileError};
use crate::manifest::Manifest;
use crate::plan::{self, Plan, PlanError, PlanOptions};
use crate::runtime::Providers;
use crate::state::{StateError, StateStore};

/// The plan, and the verdict of the lock file when it was asked for.
#[derive(Debug)]
pub struct Planned {
    pub plan: Plan,
    /// `Ok` when the lock agrees or was not asked about; the plan stands
    /// either way, so it is shown before this fails the command.
    pub locked: Result<(), LockedError>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockedError {
    #[error(transparent)]
    Read(#[from] LockFileError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("--locked: `{}` does not exist; run `agentform apply` and commit the lock file", .0.display())]
    Missing(PathBuf),
    #[error(
        "--locked: the deploy would differ from `{}`:\n  {}\nhint: run `agentform apply` and commit the updated lock file",
        path.display(),
        problems.join("\n  ")
    )]
    Differs {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// Planning failed, or was refused before it began.
#[derive(Debug, thiserror::Error)]
pub enum PlanFailed {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Empty(#[from] EmptyManifest),
}

/// The manifest declares no resources while the state records some.
#[derive(Debug, thiserror::Error)]
#[error(
    "the manifest declares no resources, but the state records {recorded} resource{s}: the plan would delete or archive all of them\nhint: to destroy everything on purpose, run `agentform destroy`, or pass `--allow-empty` to `plan` or `apply`",
    s = if *recorded == 1 { "" } else { "s" }
)]
pub struct EmptyManifest {
    pub recorded: usize,
}

/// Refuses a manifest without resources over a state with some, unless
/// `allow_empty`; a destroy plan means it and is never refused.
pub fn refuse_empty(
    manifest: &Manifest,
    state: &StateStore,
    options: &PlanOptions,
    allow_empty: bool,
) -> Result<(), PlanFailed> {
    if allow_empty || options.destroy || !manifest.resources.is_empty() {
        return Ok(());
    }
    let recorded = state.list().map_err(PlanError::from)?.len();
    if recorded == 0 {
        return Ok(());
    }
    Err(EmptyManifest { recorded }.into())
}

pub async fn plan(
    manifest: &Manifest,
    state: &StateStore,
    providers: &Providers,
    options: &PlanOptions,
    locked: bool,
    allow_empty: bool,
) -> Result<Planned, PlanFailed> {
    refuse_empty(manifest, state, options, allow_empty)?;
    let plan = plan::plan(Some(manifest), state, providers, options).await?;
    let locked = if locked {
        check_lock(manifest, &plan, state)
    } else {
        Ok(())
    };
    Ok(Planned { plan, locked })
}

/// Whether deploying `plan` keeps `agentform.lock` as it is.
pub fn check_lock(manifest: &Manifest, plan: &Plan, state: &StateStore) -> Result<(), LockedError> {
    let path = manifest.lock_path();
    let lock = LockFile::read(&path)?.ok_or_else(|| LockedError::Missing(path.clone()))?;
    let problems = lock.disagreements(manifest, plan, &state.list()?);
    if problems.is_empty() {
        return Ok(());
    }
    Err(LockedError::Differs { path, problems })
}
