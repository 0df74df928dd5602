//! Agents: `BetaManagedAgentsAgent` and its parts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `BetaManagedAgentsAgent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub archived_at: Option<String>,
    pub created_at: String,
    pub description: Option<String>,
    pub execution_identity: Value,
    pub mcp_servers: Vec<Value>,
    pub metadata: BTreeMap<String, String>,
    pub model: Value,
    pub multiagent: Option<Value>,
    pub name: String,
    pub skills: Vec<Value>,
    pub system: Option<String>,
    pub tools: Vec<Value>,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: String,
    pub version: u64,
}
