//! Where an E2B account's sandboxes are, without its key: the URLs, the
//! domain and the name of the variable holding the key. Kept in a small
//! file beside the workspaces once sessions open sandboxes there, so that
//! a later command without a manifest (`destroy` from the state alone)
//! still reaches and kills them. Never a secret: the key stays in its
//! variable.

use std::path::Path;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::config::{check_url, E2bConfig};

/// The file, in the directory of the local runtime's workspaces.
pub const LOCATIONS_FILE: &str = "e2b-locations.json";

/// One place sandboxes were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E2bLocation {
    pub api_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_url: Option<String>,
    pub domain: String,
    pub api_key_env: String,
}

impl E2bLocation {
    pub fn of(config: &E2bConfig) -> Self {
        E2bLocation {
            api_url: config.api_url.to_string(),
            sandbox_url: config.sandbox_url.as_ref().map(Url::to_string),
            domain: config.domain.clone(),
            api_key_env: config.api_key_env.clone(),
        }
    }

    /// The configuration of this place, with the key read by the caller.
    pub fn config(&self, api_key: String) -> Result<E2bConfig, String> {
        let mut config = E2bConfig::new(api_key, &self.api_key_env, &self.domain)?;
        config.api_url = check_url(&self.api_url)?;
        config.sandbox_url = self.sandbox_url.as_deref().map(check_url).transpose()?;
        Ok(config)
    }
}

/// The places recorded in `file`; none when it does not exist.
pub fn read(file: &Path) -> Result<Vec<E2bLocation>, String> {
    crate::sandbox::notes::read(file, "E2B locations")
}

/// Adds `location` to `file` unless it is there.
pub fn remember(file: &Path, location: &E2bLocation) -> Result<(), String> {
    crate::sandbox::notes::remember(file, "E2B locations", location)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_remembered_once_and_hold_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("workspaces").join(LOCATIONS_FILE);
        assert_eq!(read(&file).unwrap(), Vec::new());
        let mut config =
            E2bConfig::new("e2b_secret_key_0123".into(), "MY_E2B_KEY", "e2b.app").unwrap();
        config.sandbox_url = Some(check_url("http://127.0.0.1:9").unwrap());
        let here = E2bLocation::of(&config);
        remember(&file, &here).unwrap();
        remember(&file, &here).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("e2b_secret_key_0123"), "{text}");
        assert_eq!(read(&file).unwrap(), vec![here.clone()]);
        let again = here.config("k2".into()).unwrap();
        assert_eq!(again.api_url, config.api_url);
        assert_eq!(again.sandbox_url, config.sandbox_url);
        assert_eq!(again.api_key_env, "MY_E2B_KEY");
        std::fs::write(&file, "[").unwrap();
        assert!(read(&file)
            .unwrap_err()
            .contains("not a list of E2B locations"));
    }
}
