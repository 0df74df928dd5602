//! Loading a manifest: files → YAML with positions → templates → typed specs →
//! one validated [`Manifest`]. Every problem found is reported with its file,
//! line and column; nothing here talks to a provider or the state.
//!
//! The passes, in order: [`discover`] (which files), [`loader`] (the driver:
//! read and parse), [`vars`], [`render`] (templates, then serde into
//! [`spec`]), [`settings`] (what every file must agree on), [`declare`] (one
//! [`Resource`] per entry), [`validate`] (references, names, limits) and the
//! dependency graph.

pub mod diagnostic;
pub mod spec;
pub mod template;
pub mod yaml;

mod declare;
mod discover;
mod duration;
mod loader;
mod render;
mod settings;
mod size;
mod suggest;
mod type_error;
mod validate;
mod vars;

#[cfg(test)]
mod test_support;

use std::path::PathBuf;

use serde_json::Value;

pub use diagnostic::{Diagnostic, Diagnostics, Sources, Span};
pub use discover::discover;
pub use duration::parse_duration;
pub use size::parse_size;
use spec::{FileSpec, SessionSpec};
pub use template::{Reference, Rendered, Templater};

use crate::graph::{Address, ResourceGraph};
use crate::redact::Secrets;

/// Providers this build can talk to.
pub const PROVIDERS: &[&str] = &["local", "anthropic", "e2b", "modal"];

/// The lock file `apply` writes beside the (first) manifest file.
pub const LOCK_FILE: &str = "agentform.lock";

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Files or directories; a directory means every `*.yaml`/`*.yml` in it.
    pub files: Vec<PathBuf>,
    /// `-var NAME=VALUE` overrides.
    pub vars: Vec<(String, String)>,
    /// Accept a file that declares nothing at all (not even `version`):
    /// `destroy`, and `plan`/`apply --allow-empty`, which mean it.
    pub allow_empty: bool,
}

/// A validated manifest.
#[derive(Debug)]
pub struct Manifest {
    /// Recorded as `agentform.manifest` on every object.
    pub project: String,
    /// Directory that holds `agentform.lock`.
    pub root: PathBuf,
    pub sources: Sources,
    pub providers: spec::ProvidersSpec,
    /// What `run` keeps after each run.
    pub retention: spec::RetentionSpec,
    /// Resources sorted by address.
    pub resources: Vec<Resource>,
    pub graph: ResourceGraph,
    pub templater: Templater,
}

/// One declared resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub address: Address,
    pub provider: String,
    /// Where the resource is declared (its key).
    pub span: Span,
    /// The API body (agents, environments) or the session spec, rendered except
    /// for the strings listed in `deferred`.
    pub body: Value,
    pub deferred: Vec<Deferred>,
    /// JSON pointers into `body` of values that came from `env()`.
    pub sensitive: Vec<String>,
    pub depends_on: Vec<Address>,
    pub session: Option<SessionTarget>,
    /// Sessions: steps, tool handlers and confirmations for `agentform run`.
    pub script: Option<SessionSpec>,
    /// Environments: limits of the local sandbox's commands, validated.
    pub limits: Option<spec::LimitsSpec>,
}

/// A string in a body that refers to other resources' outputs.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub pointer: String,
    pub template: String,
    pub references: Vec<Reference>,
    pub span: Span,
}

/// Whom a session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTarget {
    pub agent: Address,
    pub version: Option<u64>,
    pub environment: Address,
}

impl Manifest {
    pub fn resource(&self, addr: &Address) -> Option<&Resource> {
        self.resources
            .binary_search_by(|r| r.address.cmp(addr))
            .ok()
            .map(|i| &self.resources[i])
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// sha256 over every manifest file's text, in load order.
    pub fn digest(&self) -> String {
        let texts: Vec<Value> = self
            .sources
            .files()
            .map(|f| Value::String(f.text.clone()))
            .collect();
        crate::digest::digest(&Value::Array(texts))
    }

    /// The secrets: every value `env()` returned (while loading, and later
    /// for step messages rendered while running) and every repository
    /// token. Shared: what templates read later shows up in every clone.
    pub fn secrets(&self) -> Secrets {
        let secrets = self.templater.secrets().clone();
        for r in &self.resources {
            let Some(items) = r.body.get("resources").and_then(Value::as_array) else {
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                if let Some(token) = item.get("authorization_token").and_then(Value::as_str) {
                    secrets.add(
                        &format!("{}.resources[{i}].authorization_token", r.address),
                        token,
                    );
                }
            }
        }
        secrets
    }

    pub fn local_latency_ms(&self) -> u64 {
        self.providers
            .local
            .as_ref()
            .and_then(|l| l.latency_ms)
            .unwrap_or(0)
    }
}

/// Loads, templates, validates and combines the manifest files.
pub fn load(options: &LoadOptions) -> Result<Manifest, Diagnostics> {
    loader::Loader::default().load(options)
}

/// The JSON Schema of a manifest file, as committed in `schemas/`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(FileSpec);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
