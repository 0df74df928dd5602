//! Environments: `BetaEnvironment` and its config (cloud networking and
//! packages, self-hosted).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `BetaEnvironment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub id: String,
    pub archived_at: Option<String>,
    pub config: EnvironmentConfig,
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

/// `BetaCloudConfig` / `BetaSelfHostedConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EnvironmentConfig {
    Cloud(CloudConfig),
    SelfHosted,
    /// A newer API's config, or `null` from a server that left it out.
    #[serde(untagged)]
    Other(Value),
}

impl EnvironmentConfig {
    /// Its `type`; empty when it has none.
    pub fn kind(&self) -> &str {
        match self {
            EnvironmentConfig::Cloud(_) => "cloud",
            EnvironmentConfig::SelfHosted => "self_hosted",
            EnvironmentConfig::Other(v) => {
                v.get("type").and_then(Value::as_str).unwrap_or_default()
            }
        }
    }
}

/// `BetaCloudConfig` without its `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudConfig {
    pub networking: Networking,
    pub packages: Packages,
}

/// `BetaUnrestrictedNetwork` / `BetaLimitedNetwork`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Networking {
    Unrestricted,
    Limited(LimitedNetwork),
    #[serde(untagged)]
    Other(Value),
}

/// `BetaLimitedNetwork` without its `type`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitedNetwork {
    pub allow_mcp_servers: bool,
    pub allow_package_managers: bool,
    pub allowed_hosts: Vec<String>,
}

/// `BetaPackages`: every manager's list, empty when unused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "packages")]
pub struct Packages {
    pub apt: Vec<String>,
    pub cargo: Vec<String>,
    pub gem: Vec<String>,
    pub go: Vec<String>,
    pub npm: Vec<String>,
    pub pip: Vec<String>,
}

impl Packages {
    /// The list of a manager of [`crate::api::limits::PACKAGE_MANAGERS`].
    pub fn list(&self, manager: &str) -> Option<&Vec<String>> {
        Some(match manager {
            "apt" => &self.apt,
            "cargo" => &self.cargo,
            "gem" => &self.gem,
            "go" => &self.go,
            "npm" => &self.npm,
            "pip" => &self.pip,
            _ => return None,
        })
    }

    pub fn list_mut(&mut self, manager: &str) -> Option<&mut Vec<String>> {
        Some(match manager {
            "apt" => &mut self.apt,
            "cargo" => &mut self.cargo,
            "gem" => &mut self.gem,
            "go" => &mut self.go,
            "npm" => &mut self.npm,
            "pip" => &mut self.pip,
            _ => return None,
        })
    }
}
