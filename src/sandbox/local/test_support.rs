//! Helpers shared by the local sandbox's unit tests.

use std::time::Duration;

use super::{Workspace, WorkspaceOptions};
use crate::sandbox::{CommandOutput, Sandbox, SandboxError};

/// Makes sure bubblewrap is installed (with the project's script), once per
/// test process; confined tests cannot run without it.
pub(crate) fn ensure_bubblewrap() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-bubblewrap.sh");
        let status = std::process::Command::new("bash").arg(script).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "bubblewrap is needed by the sandbox tests and `{script}` could not install it"
        );
    });
}

pub(super) fn workspace() -> (tempfile::TempDir, Workspace) {
    ensure_bubblewrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::create(dir.path().join("ws"), WorkspaceOptions::default()).unwrap();
    (dir, ws)
}

pub(super) async fn run(ws: &Workspace, command: &str) -> CommandOutput {
    ws.run(command, Duration::from_secs(20), &mut |_| {})
        .await
        .unwrap()
}

pub(super) fn is_escape<T: std::fmt::Debug>(r: Result<T, SandboxError>) -> bool {
    matches!(r, Err(SandboxError::Escape(_)))
}
