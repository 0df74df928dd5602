//! Where E2B is and how agentform talks to it: the settings of
//! `providers.e2b`, resolved (the API key read, URLs checked), and the
//! defaults the official SDK uses. It reads no variable itself: the caller
//! passes the key in.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::http::RetryPolicy;

/// The variable holding the API key, unless the manifest names another.
pub const API_KEY_ENV: &str = "E2B_API_KEY";
/// The variable holding the domain, unless the manifest sets one.
pub const DOMAIN_ENV: &str = "E2B_DOMAIN";
pub const DEFAULT_DOMAIN: &str = "e2b.app";
pub const DEFAULT_TEMPLATE: &str = "base";
/// How long a sandbox lives without activity, unless the manifest says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest lifetime E2B grants (Pro plans; Hobby: 1 h).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The port envd listens on in every sandbox.
pub const ENVD_PORT: u16 = 49983;
/// The oldest envd whose file upload takes a plain body (the SDK's
/// `ENVD_OCTET_STREAM_UPLOAD`).
pub const MIN_ENVD_VERSION: (u64, u64, u64) = (0, 5, 7);
/// The domains whose sandboxes are reached through `sandbox.{domain}` with
/// routing headers; others at `{port}-{id}.{domain}` (the SDK's
/// `SUPPORTED_SANDBOX_DOMAINS`).
pub const PROXIED_DOMAINS: [&str; 7] = [
    "e2b.app",
    "e2b.dev",
    "e2b.pro",
    "e2b-staging.dev",
    "e2b-tango.dev",
    "e2b-juliett.dev",
    "foxtrot-2.e2b.dev",
];
/// One control-plane request, or opening a stream, may take this long (the
/// SDK's `REQUEST_TIMEOUT`).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A resolved E2B configuration. The key is a secret: `Debug` hides it.
#[derive(Clone)]
pub struct E2bConfig {
    pub api_key: String,
    /// Where the key came from, named when E2B refuses it.
    pub api_key_env: String,
    pub domain: String,
    /// The control plane: `https://api.{domain}` unless overridden.
    pub api_url: Url,
    /// Where sandboxes are reached instead of E2B's proxy (tests).
    pub sandbox_url: Option<Url>,
    pub template: String,
    /// A sandbox's lifetime without activity; re-armed while it is used.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
    /// Recorded on every sandbox as `agentform.manifest`.
    pub project: Option<String>,
}

impl fmt::Debug for E2bConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("E2bConfig")
            .field("api_key_env", &self.api_key_env)
            .field("domain", &self.domain)
            .field("api_url", &self.api_url.as_str())
            .field("sandbox_url", &self.sandbox_url.as_ref().map(Url::as_str))
            .field("template", &self.template)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl E2bConfig {
    /// The defaults for `domain`, with the key read from `api_key_env`.
    pub fn new(api_key: String, api_key_env: &str, domain: &str) -> Result<Self, String> {
        let api_url = check_url(&format!("https://api.{domain}"))?;
        Ok(E2bConfig {
            api_key,
            api_key_env: api_key_env.to_owned(),
            domain: domain.to_owned(),
            api_url,
            sandbox_url: None,
            template: DEFAULT_TEMPLATE.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            request_timeout: REQUEST_TIMEOUT,
            project: None,
        })
    }
}

/// `raw` as an E2B base URL: `https`, or plain `http` to a loopback
/// address only (a fake in tests; never the real service in clear text).
pub fn check_url(raw: &str) -> Result<Url, String> {
    let url = crate::http::check_base_url(raw)?;
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err("plain `http` is allowed only to this machine (a loopback address)".into());
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `0.5.7` as numbers; `None` when it does not read so.
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.trim().trim_start_matches('v').split('.');
    let mut next = || -> Option<u64> {
        let part = parts.next()?;
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((next()?, next().unwrap_or(0), next().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(check_url("https://api.e2b.app").is_ok());
        assert!(check_url("http://127.0.0.1:3000").is_ok());
        assert!(check_url("http://localhost:3000/prefix").is_ok());
        assert!(check_url("http://[::1]:3000").is_ok());
        let refused = check_url("http://api.e2b.app").unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        assert!(check_url("http://10.0.0.1").is_err());
        assert!(check_url("ftp://x").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.5.7"), Some((0, 5, 7)));
        assert_eq!(parse_version("v0.6"), Some((0, 6, 0)));
        assert_eq!(parse_version("0.1.0-rc1"), Some((0, 1, 0)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("0.5.6").unwrap() < MIN_ENVD_VERSION);
    }

    #[test]
    fn the_key_stays_out_of_debug() {
        let c = E2bConfig::new("e2b_supersecret".into(), API_KEY_ENV, DEFAULT_DOMAIN).unwrap();
        assert_eq!(c.api_url.as_str(), "https://api.e2b.app/");
        assert!(!format!("{c:?}").contains("supersecret"));
    }
}
