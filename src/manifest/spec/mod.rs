//! The manifest as written: serde types with no logic, one per YAML construct.
//!
//! Agent and environment bodies use the Managed Agents API's own field names, so
//! the body of `agents.NAME` is the body `POST /v1/agents` takes (with `name`
//! defaulting to the key).
//!
//! These types are also the committed JSON Schema: their names, doc comments
//! and field order are its text. Rules beyond the shapes belong in `validate`.

mod agent;
mod environment;
mod providers;
mod retention;
mod session;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use agent::*;
pub use environment::*;
pub use providers::*;
pub use retention::*;
pub use session::*;

/// One manifest file. Several files combine into one manifest.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "agentform manifest")]
pub struct FileSpec {
    /// Manifest format version: `1`, required in every file.
    // Optional to serde only, so that a missing version gets its own message.
    #[schemars(required, with = "u32", range(min = 1, max = 1))]
    pub version: Option<u32>,
    /// Project name, recorded on every created object as `agentform.manifest`.
    /// Defaults to the name of the manifest's directory.
    pub name: Option<String>,
    /// Template variables, available as `{{ vars.NAME }}`; `-var NAME=VALUE` overrides them.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Default provider for every resource: `local` (embedded, the default) or
    /// `anthropic` (the Managed Agents API).
    pub provider: Option<String>,
    /// Settings per provider.
    #[serde(default)]
    pub providers: ProvidersSpec,
    /// Sandbox templates, keyed by name.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentSpec>,
    /// Agents, keyed by name. Every change makes a new immutable version.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSpec>,
    /// Sessions: an agent running in an environment.
    #[serde(default)]
    pub sessions: BTreeMap<String, SessionSpec>,
    /// What `agentform run` keeps after each run: transcripts and archived
    /// sessions. Unset: everything.
    pub retention: Option<RetentionSpec>,
}
