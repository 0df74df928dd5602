//! Where Modal is and how agentform talks to it: the settings of
//! `providers.modal`, resolved (tokens read, URL checked), and the defaults
//! of the official client (`modal` 1.6.4: `config.py`, `client.py`). It
//! reads no variable itself: the caller passes the tokens in.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::http::RetryPolicy;

/// The variable holding the token id, unless the manifest names another.
pub const TOKEN_ID_ENV: &str = "MODAL_TOKEN_ID";
/// The variable holding the token secret, unless the manifest names another.
pub const TOKEN_SECRET_ENV: &str = "MODAL_TOKEN_SECRET";
/// The variable holding the server URL, unless the manifest sets one.
pub const SERVER_URL_ENV: &str = "MODAL_SERVER_URL";
/// The official client's default `server_url`.
pub const DEFAULT_SERVER_URL: &str = "https://api.modal.com:443";
/// The Modal app every sandbox of agentform belongs to.
pub const DEFAULT_APP: &str = "agentform";
/// A sandbox's lifetime, unless the manifest says: fixed at creation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest lifetime Modal grants a sandbox (no extension exists).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// One control-plane call may take this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A resolved Modal configuration. The tokens are secrets: `Debug` hides them.
#[derive(Clone)]
pub struct ModalConfig {
    pub token_id: String,
    pub token_secret: String,
    /// Where the tokens came from, named when Modal refuses them.
    pub token_id_env: String,
    pub token_secret_env: String,
    pub server_url: Url,
    /// The app sandboxes are created in (made when missing).
    pub app: String,
    /// Modal's environment (`""`: the workspace's default).
    pub environment: String,
    /// A sandbox's lifetime, fixed when it is created.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    /// Recorded on every sandbox as the `agentform.manifest` tag.
    pub project: Option<String>,
}

impl fmt::Debug for ModalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModalConfig")
            .field("token_id_env", &self.token_id_env)
            .field("token_secret_env", &self.token_secret_env)
            .field("server_url", &self.server_url.as_str())
            .field("app", &self.app)
            .field("environment", &self.environment)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ModalConfig {
    /// The defaults, with the tokens and where they came from.
    pub fn new(
        (token_id, token_id_env): (String, &str),
        (token_secret, token_secret_env): (String, &str),
        server_url: Url,
    ) -> Self {
        ModalConfig {
            token_id,
            token_secret,
            token_id_env: token_id_env.to_owned(),
            token_secret_env: token_secret_env.to_owned(),
            server_url,
            app: DEFAULT_APP.to_owned(),
            environment: String::new(),
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            request_timeout: REQUEST_TIMEOUT,
            project: None,
        }
    }

    /// The words that name both token variables.
    pub fn token_vars(&self) -> String {
        format!("`{}` and `{}`", self.token_id_env, self.token_secret_env)
    }
}

/// `raw` as Modal's server URL: `https`, or plain `http` (h2c) to a
/// loopback address only — a fake in tests, never the real service in
/// clear text.
pub fn check_url(raw: &str) -> Result<Url, String> {
    crate::sandbox::e2b::check_url(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_h2c() {
        assert!(check_url(DEFAULT_SERVER_URL).is_ok());
        assert!(check_url("http://127.0.0.1:50051").is_ok());
        assert!(check_url("http://api.modal.com")
            .unwrap_err()
            .contains("loopback"));
    }

    #[test]
    fn the_tokens_stay_out_of_debug() {
        let c = ModalConfig::new(
            ("ak-id-123".into(), TOKEN_ID_ENV),
            ("as-secret-456".into(), TOKEN_SECRET_ENV),
            check_url(DEFAULT_SERVER_URL).unwrap(),
        );
        let text = format!("{c:?}");
        assert!(!text.contains("ak-id-123") && !text.contains("as-secret-456"));
        assert_eq!(c.token_vars(), "`MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET`");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    }
}
