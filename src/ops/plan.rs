//! `plan`: the plan of a loaded manifest against the state, and with
//! `--locked` where a deploy of it would differ from `agentform.lock`.

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

pub async fn plan(
    manifest: &Manifest,
    state: &StateStore,
    providers: &Providers,
    options: &PlanOptions,
    locked: bool,
) -> Result<Planned, PlanError> {
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
