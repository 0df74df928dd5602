//! The control plane (`https://api.{domain}`, header `X-API-Key`), as the
//! official SDK calls it (`e2b/api/client/api/sandboxes/`): create a
//! sandbox (`POST /v2/sandboxes` with an `Idempotency-Key`), list sandboxes
//! by metadata (`GET /v2/sandboxes`, pages through `X-Next-Token`), get one,
//! kill one (`DELETE /sandboxes/{id}`, 404: gone already), reconnect to
//! one (`POST /v2/sandboxes/{id}/connect`) and set its timeout; templates
//! are `template.rs`'s. It also
//! hands out the [`Envd`] of a sandbox. What a sandbox is for is the
//! caller's.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use super::config::{E2bConfig, PROXIED_DOMAINS};
use super::envd::Envd;
use super::error::{E2bError, E2bErrorKind};
use super::request::{Answer, Call};
use super::wire::{Created, Detail, Listed, NewSandbox, TimeoutRequest};
use crate::http::{Client, Redactor};

/// Pages of a sandbox list read at most.
const MAX_PAGES: usize = 100;
/// Items per page asked for (the API's default and maximum).
const PAGE_LIMIT: &str = "100";

/// What a sandbox is reached with: its id, envd's version and token, and
/// where its traffic goes. The tokens are secrets: `Debug` hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub sandbox_id: String,
    pub envd_version: String,
    pub envd_access_token: Option<String>,
    pub traffic_access_token: Option<String>,
    /// The sandbox's domain, when E2B named one.
    pub domain: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("sandbox_id", &self.sandbox_id)
            .field("envd_version", &self.envd_version)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl From<Created> for Connection {
    fn from(c: Created) -> Self {
        Connection {
            sandbox_id: c.sandbox_id,
            envd_version: c.envd_version,
            envd_access_token: c.envd_access_token,
            traffic_access_token: c.traffic_access_token,
            domain: c.domain,
        }
    }
}

impl From<Detail> for Connection {
    fn from(d: Detail) -> Self {
        Connection {
            sandbox_id: d.sandbox_id,
            envd_version: d.envd_version,
            envd_access_token: d.envd_access_token,
            traffic_access_token: None,
            domain: d.domain,
        }
    }
}

/// A client of E2B: the control plane and the sandboxes' envd.
pub struct E2bApi {
    control: Client,
    /// No fixed headers: the API key never goes to a sandbox.
    pub(super) envd: Client,
    pub(super) config: E2bConfig,
    pub(super) redactor: Redactor,
}

impl std::fmt::Debug for E2bApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2bApi")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `User-Agent` of every request.
const USER_AGENT: &str = concat!("agentform/", env!("CARGO_PKG_VERSION"));

impl E2bApi {
    pub fn new(config: E2bConfig) -> Result<Self, String> {
        let redactor = Redactor::new([config.api_key.clone()]);
        let mut key = HeaderValue::from_str(&config.api_key).map_err(|_| {
            format!(
                "the value of `{}` cannot be an API key (it holds characters an HTTP header cannot)",
                config.api_key_env
            )
        })?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-api-key"), key);
        let timeout = config.request_timeout;
        let control = Client::new(
            headers,
            redactor.clone(),
            config.retry,
            timeout,
            Some(USER_AGENT),
        )?;
        let envd = Client::new(
            HeaderMap::new(),
            redactor.clone(),
            config.retry,
            timeout,
            Some(USER_AGENT),
        )?;
        Ok(E2bApi {
            control,
            envd,
            config,
            redactor,
        })
    }

    pub fn config(&self) -> &E2bConfig {
        &self.config
    }

    /// The control plane's URL of `segments` (ids percent-encoded).
    pub(super) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.config.api_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    pub(super) fn call(&self, method: Method, url: Url, label: String) -> Call<'_> {
        Call {
            client: &self.control,
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            label,
            accept: &[],
            idempotent: true,
            timeout: Some(self.config.request_timeout),
            key_env: &self.config.api_key_env,
            redactor: &self.redactor,
        }
    }

    pub(super) fn parse<T: DeserializeOwned>(
        &self,
        label: &str,
        answer: &Answer,
    ) -> Result<T, E2bError> {
        serde_json::from_slice(&answer.body)
            .map_err(|e| E2bError::protocol(label, e, &self.redactor))
    }

    /// `body` as a JSON request body.
    pub(super) fn json(
        &self,
        label: &str,
        body: &impl serde::Serialize,
    ) -> Result<bytes::Bytes, E2bError> {
        serde_json::to_vec(body)
            .map(Into::into)
            .map_err(|e| E2bError::protocol(label, e, &self.redactor))
    }

    /// Creates a sandbox. Retries send the same `idempotency_key`, so E2B
    /// makes at most one sandbox for it.
    pub async fn create(
        &self,
        body: &NewSandbox,
        idempotency_key: &str,
    ) -> Result<Connection, E2bError> {
        let label = "POST /v2/sandboxes".to_owned();
        let mut call = self.call(
            Method::POST,
            self.url(&["v2", "sandboxes"], &[]),
            label.clone(),
        );
        let key = HeaderValue::from_str(idempotency_key)
            .map_err(|e| E2bError::new(E2bErrorKind::Rejected, format!("idempotency key: {e}")))?;
        call.headers
            .insert(HeaderName::from_static("idempotency-key"), key);
        let json =
            serde_json::to_vec(body).map_err(|e| E2bError::protocol(&label, e, &self.redactor))?;
        call.body = Some(("application/json", json.into()));
        let answer = call.whole().await?;
        let created: Created = self.parse(&label, &answer)?;
        Ok(created.into())
    }

    /// Every sandbox (running or paused) whose metadata holds all of
    /// `metadata`, across pages.
    pub async fn list(&self, metadata: &[(&str, &str)]) -> Result<Vec<Listed>, E2bError> {
        let label = "GET /v2/sandboxes".to_owned();
        let filter = metadata_query(metadata);
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("metadata", filter.as_str()), ("limit", PAGE_LIMIT)];
            if let Some(token) = &next {
                query.push(("nextToken", token.as_str()));
            }
            let url = self.url(&["v2", "sandboxes"], &query);
            let answer = self.call(Method::GET, url, label.clone()).whole().await?;
            let page: Vec<Listed> = self.parse(&label, &answer)?;
            out.extend(page);
            next = answer
                .headers
                .get("x-next-token")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next.is_none() {
                return Ok(out);
            }
        }
        Err(E2bError::protocol(
            &label,
            format!("more than {MAX_PAGES} pages"),
            &self.redactor,
        ))
    }

    /// The sandbox, or `None` when it does not exist (any more).
    pub async fn get(&self, sandbox_id: &str) -> Result<Option<Detail>, E2bError> {
        let label = format!("GET /sandboxes/{sandbox_id}");
        let mut call = self.call(
            Method::GET,
            self.url(&["sandboxes", sandbox_id], &[]),
            label.clone(),
        );
        call.accept = &[404];
        let answer = call.whole().await?;
        if answer.status.as_u16() == 404 {
            return Ok(None);
        }
        self.parse(&label, &answer).map(Some)
    }

    /// Kills the sandbox; `false` when it was gone already.
    pub async fn kill(&self, sandbox_id: &str) -> Result<bool, E2bError> {
        let label = format!("DELETE /sandboxes/{sandbox_id}");
        let mut call = self.call(
            Method::DELETE,
            self.url(&["sandboxes", sandbox_id], &[]),
            label,
        );
        call.accept = &[404];
        let answer = call.whole().await?;
        Ok(answer.status.as_u16() != 404)
    }

    /// Reconnects to a running sandbox (`POST /v2/sandboxes/{id}/connect`,
    /// as the SDK's `Sandbox.connect`): its tokens, the traffic token
    /// included, which only creating and connecting give; its lifetime is
    /// extended to `timeout` from now, never shortened. `None` when the
    /// sandbox is gone.
    pub async fn connect(
        &self,
        sandbox_id: &str,
        timeout: Duration,
    ) -> Result<Option<Connection>, E2bError> {
        let label = format!("POST /v2/sandboxes/{sandbox_id}/connect");
        let url = self.url(&["v2", "sandboxes", sandbox_id, "connect"], &[]);
        let mut call = self.call(Method::POST, url, label.clone());
        let body = TimeoutRequest {
            timeout: seconds(timeout),
        };
        let json =
            serde_json::to_vec(&body).map_err(|e| E2bError::protocol(&label, e, &self.redactor))?;
        call.body = Some(("application/json", json.into()));
        call.accept = &[404];
        let answer = call.whole().await?;
        if answer.status.as_u16() == 404 {
            return Ok(None);
        }
        let created: Created = self.parse(&label, &answer)?;
        Ok(Some(created.into()))
    }

    /// The sandbox lives `timeout` from now (rounded up to a second).
    pub async fn set_timeout(&self, sandbox_id: &str, timeout: Duration) -> Result<(), E2bError> {
        let label = format!("POST /sandboxes/{sandbox_id}/timeout");
        let url = self.url(&["sandboxes", sandbox_id, "timeout"], &[]);
        let mut call = self.call(Method::POST, url, label.clone());
        let body = TimeoutRequest {
            timeout: seconds(timeout),
        };
        let json =
            serde_json::to_vec(&body).map_err(|e| E2bError::protocol(&label, e, &self.redactor))?;
        call.body = Some(("application/json", json.into()));
        call.accept = &[404];
        let answer = call.whole().await?;
        if answer.status.as_u16() == 404 {
            return Err(E2bError {
                kind: E2bErrorKind::SandboxGone,
                status: Some(404),
                message: format!("E2B {label}: the sandbox is gone (killed or past its timeout)"),
            });
        }
        Ok(())
    }

    /// The envd of a sandbox: processes and files.
    pub fn envd(self: &Arc<Self>, connection: &Connection) -> Envd {
        Envd::new(
            Arc::clone(self),
            connection.clone(),
            self.envd_url(connection),
        )
    }

    /// Where a sandbox's envd is: the override, else E2B's proxy for its
    /// domains (`https://sandbox.{domain}`, routed by headers), else the
    /// sandbox's own host (`https://49983-{id}.{domain}`), as the SDK's
    /// `get_sandbox_url`.
    fn envd_url(&self, connection: &Connection) -> Url {
        if let Some(url) = &self.config.sandbox_url {
            return url.clone();
        }
        let domain = connection.domain.as_deref().unwrap_or(&self.config.domain);
        let raw = if PROXIED_DOMAINS.contains(&domain) {
            format!("https://sandbox.{domain}")
        } else {
            format!(
                "https://{}-{}.{domain}",
                super::config::ENVD_PORT,
                connection.sandbox_id
            )
        };
        Url::parse(&raw).unwrap_or_else(|_| self.config.api_url.clone())
    }
}

/// Whole seconds, at least one.
pub(super) fn seconds(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

/// The `metadata` filter as the SDK writes it (`SandboxPaginator`): pairs
/// `key=value` joined by `&`, keys and values percent-encoded
/// (`urllib.parse.quote`, then `urlencode`); the query string encodes the
/// whole once more.
pub fn metadata_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", quote_plus(&quote(k)), quote_plus(&quote(v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// Python's `urllib.parse.quote` (`/` kept).
fn quote(s: &str) -> String {
    percent_encode(s, |b| b == b'/')
}

/// Python's `urllib.parse.quote_plus` (space as `+`).
fn quote_plus(s: &str) -> String {
    percent_encode(s, |b| b == b' ').replace(' ', "+")
}

fn percent_encode(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_are_encoded_as_the_sdk_does() {
        assert_eq!(
            metadata_query(&[("agentform.session", "sesn_01AB"), ("k", "a b/c&d")]),
            "agentform.session=sesn_01AB&k=a%2520b%2Fc%2526d"
        );
    }

    #[test]
    fn urls_keep_a_prefix_and_encode_ids() {
        let mut config = E2bConfig::new("k".repeat(12), "E2B_API_KEY", "e2b.app").unwrap();
        config.api_url = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        let api = E2bApi::new(config).unwrap();
        assert_eq!(
            api.url(&["sandboxes", "a/b"], &[("x", "1 2")]).as_str(),
            "http://127.0.0.1:9/prefix/sandboxes/a%2Fb?x=1+2"
        );
    }

    #[test]
    fn envd_is_reached_through_the_proxy_of_e2b_domains() {
        let config = E2bConfig::new("k".repeat(12), "E2B_API_KEY", "e2b.app").unwrap();
        let api = E2bApi::new(config).unwrap();
        let mut c = Connection {
            sandbox_id: "sbx1".into(),
            envd_version: "0.5.7".into(),
            envd_access_token: None,
            traffic_access_token: None,
            domain: None,
        };
        assert_eq!(api.envd_url(&c).as_str(), "https://sandbox.e2b.app/");
        c.domain = Some("example.com".into());
        assert_eq!(api.envd_url(&c).as_str(), "https://49983-sbx1.example.com/");
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_secs(3600)), 3600);
    }
}
