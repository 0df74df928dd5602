//! `environments.NAME`: the body of `POST /v1/environments`: the sandbox
//! template, its packages and its networking.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /v1/environments`, as a manifest entry.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    #[serde(skip_serializing)]
    pub provider: Option<String>,
    #[serde(default, skip_serializing)]
    pub depends_on: Vec<String>,
    /// Environment name, unique per organization; defaults to the key.
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<EnvironmentConfigSpec>,
    /// `organization` or `account`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Limits of every process the local runtime's sandbox starts for this
    /// environment's sessions; agentform's own setting, not sent to the API.
    #[serde(default, skip_serializing)]
    pub limits: Option<LimitsSpec>,
}

/// Resource limits of sandboxed commands; each is optional and defaults to
/// what keeps a 2-core CI machine alive (2GiB, 256, 1GiB, 5m).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Address space of one process: `2GiB`, `512MiB`, or a number of bytes.
    pub memory: Option<String>,
    /// Processes and threads running at once.
    pub processes: Option<u64>,
    /// Largest file a process may write: `1GiB`, `100MiB`, or bytes.
    pub file_size: Option<String>,
    /// CPU time of one process: `30s`, `5m`.
    pub cpu_time: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Organization,
    Account,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnvironmentConfigSpec {
    /// A sandbox in the provider's cloud (or on this machine, for `local`).
    Cloud {
        #[serde(skip_serializing_if = "Option::is_none")]
        packages: Option<PackagesSpec>,
        #[serde(skip_serializing_if = "Option::is_none")]
        networking: Option<NetworkingSpec>,
    },
}

/// Packages installed once per environment, by package manager.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackagesSpec {
    /// Always `packages`; may be omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<PackagesType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apt: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cargo: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gem: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npm: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pip: Option<Vec<String>>,
}

impl PackagesSpec {
    /// The list of one package manager, by its name in
    /// [`PACKAGE_MANAGERS`](crate::api::limits::PACKAGE_MANAGERS).
    pub fn list(&self, manager: &str) -> Option<&[String]> {
        match manager {
            "apt" => self.apt.as_deref(),
            "cargo" => self.cargo.as_deref(),
            "gem" => self.gem.as_deref(),
            "go" => self.go.as_deref(),
            "npm" => self.npm.as_deref(),
            "pip" => self.pip.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PackagesType {
    Packages,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkingSpec {
    Unrestricted,
    Limited {
        #[serde(skip_serializing_if = "Option::is_none")]
        allowed_hosts: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        allow_mcp_servers: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        allow_package_managers: Option<bool>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::limits::PACKAGE_MANAGERS;

    #[test]
    fn every_package_manager_is_a_field_with_a_list() {
        for manager in PACKAGE_MANAGERS {
            let spec: PackagesSpec =
                serde_json::from_value(serde_json::json!({ manager: ["x"] })).unwrap();
            assert_eq!(
                spec.list(manager),
                Some(&["x".to_string()][..]),
                "{manager}"
            );
            let others = PACKAGE_MANAGERS.iter().filter(|m| **m != manager);
            assert!(others.clone().all(|m| spec.list(m).is_none()), "{manager}");
        }
    }
}
