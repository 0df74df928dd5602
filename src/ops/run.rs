//! `run`: every selected session driven through its steps by the runner,
//! then the manifest's `retention` applied, and the JUnit report of a run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::retention::{self, Pruned};
use crate::manifest::Manifest;
use crate::runner::{self, RunError, RunOptions, RunReport, RunReporter};
use crate::runtime::Providers;
use crate::state::StateStore;

#[derive(Debug, thiserror::Error)]
#[error("writing the JUnit report `{}`", path.display())]
pub struct JunitError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A run, and what the manifest's retention removed after it.
#[derive(Debug)]
pub struct Ran {
    pub report: RunReport,
    pub retention: Pruned,
}

/// Runs the sessions `options` selects, then applies the manifest's
/// `retention`; a failed expectation is in the report, not an error, and
/// so is a problem applying retention.
pub async fn run(
    manifest: Manifest,
    state: StateStore,
    providers: Providers,
    options: &RunOptions,
    reporter: Arc<dyn RunReporter>,
) -> Result<Ran, RunError> {
    let manifest = Arc::new(manifest);
    let state = Arc::new(state);
    let mut report = runner::run(
        manifest.clone(),
        state.clone(),
        providers.clone(),
        options,
        reporter,
    )
    .await?;
    let retention = match retention::apply(&manifest.retention, &state, &providers).await {
        Ok(pruned) => pruned,
        Err(e) => {
            report.write_errors.push(format!("applying retention: {e}"));
            Pruned::default()
        }
    };
    report.write_errors.extend(
        retention
            .problems
            .iter()
            .map(|p| format!("applying retention: {p}")),
    );
    Ok(Ran { report, retention })
}

/// Writes the run's JUnit XML report to `path`.
pub fn write_junit(report: &RunReport, path: &Path) -> Result<(), JunitError> {
    let xml = runner::report::junit(
        &report.run_id,
        &report.outcomes,
        report.duration.as_secs_f64(),
    );
    std::fs::write(path, xml).map_err(|source| JunitError {
        path: path.to_path_buf(),
        source,
    })
}
