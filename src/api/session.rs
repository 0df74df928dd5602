//! Sessions: `BetaManagedAgentsSession`, deletions and usage.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `BetaManagedAgentsSession`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    /// Snapshot of the agent version the session runs (`BetaManagedAgentsSessionAgent`).
    pub agent: Value,
    pub archived_at: Option<String>,
    pub created_at: String,
    pub environment_id: String,
    pub metadata: BTreeMap<String, String>,
    pub outcome_evaluations: Vec<Value>,
    pub resources: Vec<Value>,
    pub stats: Value,
    pub status: String,
    pub title: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: String,
    pub usage: Value,
    pub vault_ids: Vec<String>,
}

impl Session {
    pub fn agent_id(&self) -> Option<&str> {
        self.agent.get("id").and_then(Value::as_str)
    }

    pub fn agent_version(&self) -> Option<u64> {
        self.agent.get("version").and_then(Value::as_u64)
    }
}

/// `{id, type: "environment_deleted" | "session_deleted"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Token usage, as sessions and the Messages API count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}
