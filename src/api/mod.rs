//! The Managed Agents API's wire format: request and response bodies, the
//! event stream's events, errors, pagination and the API's documented
//! limits, as typed serde structs (source of truth: the official `anthropic`
//! Python SDK 2.10.0, `types/beta/`).
//!
//! A leaf: it imports nothing of the crate. The local runtime, the
//! `anthropic` client, `serve` and the manifest all speak these types.
//!
//! It must not hold behaviour of a provider: rules that decide what a request
//! means live with the runtime that enforces them (`runtime::local::rules`).

pub mod agent;
pub mod body;
pub mod environment;
pub mod error;
pub mod event;
pub mod ids;
pub mod limits;
pub mod list;
pub mod literal;
pub mod multiagent;
pub mod params;
pub mod resource;
pub mod session;
#[cfg(test)]
mod tests;
pub mod tool;

pub use agent::{Agent, ExecutionIdentity, McpServer, ModelConfig, Skill};
pub use environment::{Environment, EnvironmentConfig, Networking, Packages};
pub use error::{ErrorKind, Result, RuntimeError};
pub use list::{list_all, ListQuery, Page};
pub use multiagent::{AgentReference, Multiagent};
pub use resource::SessionResource;
pub use session::{Deleted, Session, SessionAgent, SessionStats, SessionUsage, ThreadAgent, Usage};
pub use tool::{PermissionPolicy, Tool};

/// `anthropic-beta` of every Managed Agents request.
pub const MANAGED_AGENTS_BETA: &str = "managed-agents-2026-04-01";

/// `anthropic-version` agentform sends (the API accepts any).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Metadata keys agentform sets on every object it creates.
pub const META_ADDRESS: &str = "agentform.address";
pub const META_MANIFEST: &str = "agentform.manifest";
