//! Where tools run. The agent loop reaches files and commands only through
//! [`Sandbox`], opened by a [`SandboxProvider`]; the local workspace
//! ([`local`]) is its first implementation, E2B ([`e2b`]) the second, Modal
//! ([`modal`]) the third; none changes the loop. [`tools`] holds the built-in tools
//! over any sandbox; [`leftovers`] removes a session's sandboxes wherever
//! they may be. This module must not know the agent loop, models or
//! runtimes, and must not trust the commands it runs.

pub mod e2b;
pub mod leftovers;
pub mod local;
pub mod modal;
pub mod notes;
pub mod tools;

use std::sync::Arc;
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
    /// Commands cannot be confined on this machine; says what is missing.
    #[error("{0}")]
    Unconfined(String),
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
    /// What the sandbox refused during the command (connections to hosts
    /// outside the allow-list), one sentence each.
    pub refusals: Vec<String>,
}

/// An environment's packages, installed once and reused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packages {
    pub pip: Vec<String>,
    pub npm: Vec<String>,
}

/// Network access of commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    #[default]
    Unrestricted,
    /// Only `allowed_hosts` (and the package registries when
    /// `allow_package_managers`), through an egress proxy.
    Limited {
        allowed_hosts: Vec<String>,
        allow_package_managers: bool,
    },
}

impl Network {
    /// Whether commands reach some host at all.
    pub fn reaches_anything(&self) -> bool {
        match self {
            Network::Unrestricted => true,
            Network::Limited {
                allowed_hosts,
                allow_package_managers,
            } => *allow_package_managers || !allowed_hosts.is_empty(),
        }
    }
}

/// Resource limits of every process a command starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Address space of one process, in bytes.
    pub memory_bytes: u64,
    /// Processes (and threads) in the sandbox at once.
    pub processes: u64,
    /// Largest file a process may write, in bytes.
    pub file_size_bytes: u64,
    /// CPU time of one process, in seconds.
    pub cpu_seconds: u64,
}

impl Default for Limits {
    /// Enough for package managers and test suites, small enough that a
    /// runaway command leaves a 2-core CI machine alive.
    fn default() -> Self {
        Limits {
            memory_bytes: 2 << 30,
            processes: 256,
            file_size_bytes: 1 << 30,
            cpu_seconds: 300,
        }
    }
}

/// What a session's sandbox is made of: its environment's packages and
/// networking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxSpec {
    pub session_id: String,
    /// The session's `agentform.address` metadata, when agentform made it:
    /// remote sandboxes carry it as a tag.
    pub session_address: Option<String>,
    pub environment_id: String,
    /// The environment's `agentform.address` metadata, when agentform made
    /// it: how providers find settings the manifest gives per environment.
    pub environment_address: Option<String>,
    pub packages: Packages,
    pub network: Network,
}

/// What every session of an environment starts from: the image a provider
/// may build once, when the environment is created or updated, instead of
/// installing its packages in each sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentImage {
    pub environment_id: String,
    /// The environment's `agentform.address` metadata, when agentform made it.
    pub environment_address: Option<String>,
    pub packages: Packages,
}

/// Makes sandboxes: provisions an environment once (its packages) and opens
/// one sandbox per session on it. The agent loop holds one of these and
/// never knows which kind it is.
#[async_trait]
pub trait SandboxProvider: Send + Sync + std::fmt::Debug {
    /// The session's sandbox, provisioned as `spec` says.
    async fn open(&self, spec: &SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError>;
    /// Removes what a session's sandbox left, open in this process or not.
    async fn remove(&self, session_id: &str) -> Result<(), SandboxError>;
    /// The session was archived: it runs no command any more, and what its
    /// sandbox holds may be kept. Providers whose sandboxes cost while they
    /// run stop them here (E2B kills the session's sandbox); the default
    /// keeps everything, as the local workspace stays until the session is
    /// deleted.
    async fn archive(&self, _session_id: &str) -> Result<(), SandboxError> {
        Ok(())
    }
    /// The environment was created or updated: build what its sessions
    /// start from (E2B builds a template; an image-based provider would
    /// build its image). An error fails the environment's create or
    /// update. The default builds nothing: sandboxes install packages when
    /// they open.
    async fn provision(&self, _image: &EnvironmentImage) -> Result<(), SandboxError> {
        Ok(())
    }
    /// The environment was deleted: remove what [`SandboxProvider::provision`]
    /// built for it.
    async fn retire(&self, _environment_id: &str) -> Result<(), SandboxError> {
        Ok(())
    }
    /// Whether provisioning, opening or removing reaches outside this
    /// machine (a provider's API), where a crash could leave something
    /// behind that only the state's intents lead back to.
    fn remote(&self) -> bool {
        true
    }
}

/// The provider of a runtime that has nowhere to run tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSandboxes;

#[async_trait]
impl SandboxProvider for NoSandboxes {
    async fn open(&self, _spec: &SandboxSpec) -> Result<Arc<dyn Sandbox>, SandboxError> {
        Err(SandboxError::Other(
            "the local runtime has no workspace directory (no sandbox provider is configured)"
                .into(),
        ))
    }

    async fn remove(&self, _session_id: &str) -> Result<(), SandboxError> {
        Ok(())
    }

    fn remote(&self) -> bool {
        false
    }
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
    /// At most `limit` bytes from the start of a regular file (ask for one
    /// more than needed to learn that a file is longer). Paths are relative
    /// to the workspace root.
    async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, SandboxError>;
    async fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), SandboxError>;
    /// Every file below `dir` (relative paths, sorted).
    async fn list_files(&self, dir: &str) -> Result<Vec<String>, SandboxError>;
    /// Removes the workspace.
    async fn teardown(&self) -> Result<(), SandboxError>;
}
