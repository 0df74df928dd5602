//! Where tools run. The agent loop reaches files and commands only through
//! [`Sandbox`]; the local workspace is its first implementation, remote
//! sandboxes (E2B, Modal) can be more without changing the loop.

pub mod local;
pub mod tools;

use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The path leaves the workspace (`..`, absolute, or through a symlink).
    #[error("path `{0}` is outside the workspace")]
    Escape(String),
    #[error("`{path}`: {message}")]
    Io { path: String, message: String },
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
    #[error("provisioning failed: {0}")]
    Provision(String),
    #[error("{0}")]
    Other(String),
}

/// The result of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// stdout and stderr interleaved as they arrived.
    pub output: String,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
}

/// An environment's packages, installed once and reused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packages {
    pub pip: Vec<String>,
    pub npm: Vec<String>,
}

#[async_trait]
pub trait Sandbox: Send + Sync {
    /// Runs `command` with `bash -c` in the workspace; `on_output` sees output
    /// as it arrives. Past `deadline` the command is killed.
    async fn run(
        &self,
        command: &str,
        deadline: Duration,
        on_output: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<CommandOutput, SandboxError>;
    /// Paths are relative to the workspace root.
    async fn read_file(&self, path: &str) -> Result<Vec<u8>, SandboxError>;
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError>;
    /// Every file below `dir` (relative paths, sorted).
    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError>;
    /// Removes the workspace.
    async fn teardown(&self) -> Result<(), SandboxError>;
}
