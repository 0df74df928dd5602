//! Where a Modal account's sandboxes are, without its token: the server
//! URL, the app, Modal's environment and the names of the variables
//! holding the token. Kept in a small file beside the workspaces once an
//! environment's image is built or a session's sandbox is made there, so
//! that a later command without a manifest (`destroy` from the state
//! alone) still reaches and terminates them. Never a secret: the token
//! stays in its variables.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::{check_url, ModalConfig};

/// The file, in the directory of the local runtime's workspaces.
pub const LOCATIONS_FILE: &str = "modal-locations.json";

/// One place sandboxes were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModalLocation {
    pub server_url: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
    pub token_id_env: String,
    pub token_secret_env: String,
}

impl ModalLocation {
    pub fn of(config: &ModalConfig) -> Self {
        ModalLocation {
            server_url: config.server_url.to_string(),
            app: config.app.clone(),
            environment: config.environment.clone(),
            token_id_env: config.token_id_env.clone(),
            token_secret_env: config.token_secret_env.clone(),
        }
    }

    /// The configuration of this place, with the token read by the caller.
    pub fn config(&self, token_id: String, token_secret: String) -> Result<ModalConfig, String> {
        let mut config = ModalConfig::new(
            (token_id, &self.token_id_env),
            (token_secret, &self.token_secret_env),
            check_url(&self.server_url)?,
        );
        config.app = self.app.clone();
        config.environment = self.environment.clone();
        Ok(config)
    }
}

/// The places recorded in `file`; none when it does not exist.
pub fn read(file: &Path) -> Result<Vec<ModalLocation>, String> {
    crate::sandbox::notes::read(file, "Modal locations")
}

/// Adds `location` to `file` unless it is there.
pub fn remember(file: &Path, location: &ModalLocation) -> Result<(), String> {
    crate::sandbox::notes::remember(file, "Modal locations", location)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::modal::{DEFAULT_APP, TOKEN_ID_ENV};

    #[test]
    fn locations_are_remembered_once_and_hold_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("workspaces").join(LOCATIONS_FILE);
        assert_eq!(read(&file).unwrap(), Vec::new());
        let mut config = ModalConfig::new(
            ("ak-id-0123".into(), TOKEN_ID_ENV),
            ("as-secret-4567".into(), "MY_SECRET"),
            check_url("http://127.0.0.1:9").unwrap(),
        );
        config.app = "mine".into();
        let here = ModalLocation::of(&config);
        remember(&file, &here).unwrap();
        remember(&file, &here).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("ak-id-0123") && !text.contains("as-secret-4567"),
            "{text}"
        );
        assert_eq!(read(&file).unwrap(), vec![here.clone()]);
        let again = here.config("a".into(), "b".into()).unwrap();
        assert_eq!(again.server_url, config.server_url);
        assert_eq!(
            (again.app.as_str(), again.token_secret_env.as_str()),
            ("mine", "MY_SECRET")
        );
        assert_ne!(again.app, DEFAULT_APP);
        std::fs::write(&file, "[").unwrap();
        assert!(read(&file)
            .unwrap_err()
            .contains("not a list of Modal locations"));
    }
}
