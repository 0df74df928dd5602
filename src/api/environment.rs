//! Environments: `BetaEnvironment` and its config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `BetaEnvironment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub id: String,
    pub archived_at: Option<String>,
    pub config: Value,
    pub created_at: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}
