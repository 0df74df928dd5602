//! `run`: every selected session driven through its steps by the runner,
//! and the JUnit report of a run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Runs the sessions `options` selects; a failed expectation is in the
/// report, not an error.
pub async fn run(
    manifest: Manifest,
    state: StateStore,
    providers: Providers,
    options: &RunOptions,
    reporter: Arc<dyn RunReporter>,
) -> Result<RunReport, RunError> {
    runner::run(
        Arc::new(manifest),
        Arc::new(state),
        providers,
        options,
        reporter,
    )
    .await
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
