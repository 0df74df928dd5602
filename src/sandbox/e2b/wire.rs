//! The control plane's JSON records, as the official SDK (`e2b` 2.63.0,
//! `e2b/api/client/models/`) writes and reads them: `NewSandboxV2`,
//! `Sandbox`, `ListedSandbox`, `SandboxDetail`, `SandboxNetworkConfig` (with
//! its `SandboxNetworkRule`s), `SandboxTimeoutRequest` and
//! `ConnectSandboxV2` (the same `{timeout}`). Fields agentform does not use are left out;
//! unknown fields of answers are ignored. No behaviour here.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// `POST /v2/sandboxes` (`NewSandboxV2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds to live without a new timeout.
    pub timeout: u64,
    pub auto_pause: bool,
    /// The SDK always sends it, empty or not.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Environment variables of every process in the sandbox.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
}

/// `SandboxNetworkConfig`: egress rules (CIDR blocks, addresses or domain
/// names in `allowOut`; `denyOut` takes no domain names) and whether the
/// sandbox's ports take traffic without its traffic token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_public_traffic: Option<bool>,
    /// Per host (a DNS name or `*.domain`), transforms E2B's egress proxy
    /// applies to the sandbox's HTTPS requests there; they grant no access.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, Vec<NetworkRule>>,
}

impl NetworkConfig {
    /// Everything out is denied but `hosts`.
    pub fn only(hosts: Vec<String>) -> Self {
        NetworkConfig {
            allow_out: (!hosts.is_empty()).then_some(hosts),
            deny_out: Some(vec![ALL_TRAFFIC.to_owned()]),
            allow_public_traffic: None,
            rules: BTreeMap::new(),
        }
    }
}

/// `SandboxNetworkRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<NetworkTransform>,
}

/// `SandboxNetworkTransform`: headers set on the request (overriding the
/// request's own), e.g. a credential the sandbox never sees. `Debug`
/// shows the header names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkTransform {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl fmt::Debug for NetworkTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkTransform")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl NetworkRule {
    /// A rule that sets `headers`.
    pub fn headers(headers: BTreeMap<String, String>) -> Self {
        NetworkRule {
            transform: Some(NetworkTransform { headers }),
        }
    }
}

/// The CIDR block of every IPv4 address: `denyOut` with it blocks egress.
pub const ALL_TRAFFIC: &str = "0.0.0.0/0";

/// The 201 of `POST /v2/sandboxes` (`Sandbox`): how to reach the sandbox.
/// The tokens are secrets; `Debug` leaves them out.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    pub envd_version: String,
    #[serde(default)]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub traffic_access_token: Option<String>,
    /// Where the sandbox's traffic goes, when not the client's domain.
    #[serde(default)]
    pub domain: Option<String>,
}

impl fmt::Debug for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Created")
            .field("sandbox_id", &self.sandbox_id)
            .field("envd_version", &self.envd_version)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// One item of `GET /v2/sandboxes` (`ListedSandbox`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    /// RFC 3339.
    #[serde(default)]
    pub started_at: String,
    /// `running` or `paused`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `GET /sandboxes/{id}` (`SandboxDetail`), as far as reattaching needs it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    pub envd_version: String,
    #[serde(default)]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detail")
            .field("sandbox_id", &self.sandbox_id)
            .field("envd_version", &self.envd_version)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// `POST /sandboxes/{id}/timeout` (`SandboxTimeoutRequest`): seconds from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutRequest {
    pub timeout: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_create_body_has_the_sdks_field_names() {
        let body = NewSandbox {
            template_id: "base".into(),
            timeout: 3600,
            auto_pause: false,
            metadata: BTreeMap::from([("agentform.session".into(), "sesn_1".into())]),
            env_vars: BTreeMap::new(),
            network: Some(NetworkConfig::only(vec!["pypi.org".into()])),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "templateID": "base", "timeout": 3600, "autoPause": false,
                "metadata": {"agentform.session": "sesn_1"}, "envVars": {},
                "network": {"allowOut": ["pypi.org"], "denyOut": ["0.0.0.0/0"]}
            })
        );
        let closed = serde_json::to_value(NetworkConfig::only(Vec::new())).unwrap();
        assert_eq!(closed, json!({"denyOut": ["0.0.0.0/0"]}));
        // An egress header rule, as the SDK's `_build_client_rules` writes it.
        let mut injecting = NetworkConfig {
            allow_public_traffic: Some(false),
            ..NetworkConfig::default()
        };
        let headers = BTreeMap::from([("x-api-key".to_owned(), "sk-secret-1".to_owned())]);
        injecting.rules.insert(
            "api.anthropic.com".into(),
            vec![NetworkRule::headers(headers)],
        );
        assert_eq!(
            serde_json::to_value(&injecting).unwrap(),
            json!({"allowPublicTraffic": false, "rules": {"api.anthropic.com": [
                {"transform": {"headers": {"x-api-key": "sk-secret-1"}}}
            ]}})
        );
        assert!(!format!("{injecting:?}").contains("sk-secret-1"));
    }

    #[test]
    fn answers_read_without_the_fields_agentform_ignores() {
        let created: Created = serde_json::from_value(json!({
            "templateID": "base", "sandboxID": "sbx1", "clientID": "c", "envdVersion": "0.5.7",
            "envdAccessToken": "tok-secret-1", "trafficAccessToken": null, "domain": null
        }))
        .unwrap();
        assert_eq!(created.sandbox_id, "sbx1");
        assert_eq!(created.envd_access_token.as_deref(), Some("tok-secret-1"));
        assert!(!format!("{created:?}").contains("tok-secret-1"));
        let listed: Listed = serde_json::from_value(json!({
            "templateID": "base", "sandboxID": "sbx1", "clientID": "c",
            "startedAt": "2026-01-01T00:00:00Z", "endAt": "2026-01-01T01:00:00Z",
            "cpuCount": 2, "memoryMB": 512, "diskSizeMB": 1024, "state": "running",
            "envdVersion": "0.5.7", "metadata": {"a": "b"}
        }))
        .unwrap();
        assert_eq!(listed.metadata["a"], "b");
        assert_eq!(listed.state, "running");
    }
}
