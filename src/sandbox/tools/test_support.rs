//! Helpers shared by the tools' unit tests: a workspace and calls that
//! expect success or an error result.

use std::time::Duration;

use serde_json::Value;

use super::{run, ToolResult};
use crate::sandbox::local::{Workspace, WorkspaceOptions};

pub(super) fn workspace() -> (tempfile::TempDir, Workspace) {
    crate::sandbox::local::test_support::ensure_bubblewrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::create(dir.path().join("ws"), WorkspaceOptions::default()).unwrap();
    (dir, ws)
}

pub(super) async fn call(ws: &Workspace, name: &str, input: Value) -> ToolResult {
    run(ws, name, &input, Duration::from_secs(20)).await
}

pub(super) async fn ok(ws: &Workspace, name: &str, input: Value) -> String {
    let r = call(ws, name, input).await;
    assert!(!r.is_error, "{}", r.content);
    r.content
}

pub(super) async fn err(ws: &Workspace, name: &str, input: Value) -> String {
    let r = call(ws, name, input).await;
    assert!(r.is_error, "expected an error, got {}", r.content);
    r.content
}
