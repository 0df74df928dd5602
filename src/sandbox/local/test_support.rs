//! Helpers shared by the local sandbox's unit tests.

use std::time::Duration;

use super::{Workspace, WorkspaceOptions};
use crate::sandbox::{CommandOutput, Sandbox, SandboxError};

pub(super) fn workspace() -> (tempfile::TempDir, Workspace) {
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
