//! The HTTP policy every client of agentform shares (the model backends and
//! the `anthropic` provider): base URLs, the request loop and its retries,
//! redaction of secrets (with [`crate::redact`]'s redactor), and the API's
//! error envelope.
//!
//! * [`retry`]: which failures are retried and how long to wait;
//! * [`client`]: the reqwest client and the one loop that applies the policy;
//! * [`error`]: the error envelope, status hints, excerpts of bodies.
//!
//! Imports `crate::api` (the API's errors) and `crate::redact`, nothing else:
//! what a request means and how its errors read is the caller's.

pub mod client;
pub mod error;
pub mod retry;
#[cfg(test)]
pub(crate) mod test_server;

use reqwest::Url;

pub use crate::redact::Redactor;
pub use client::{Attempt, Client, Failure, CONNECT_TIMEOUT};
pub use error::{describe_reqwest, snippet, Envelope};
pub use retry::RetryPolicy;

/// `raw` as a base URL (`scheme://host[:port][/prefix]`, http or https),
/// or why it cannot be one; manifest validation asks the same question.
pub fn check_base_url(raw: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be `http` or `https`".into());
    }
    if url.cannot_be_a_base() || url.query().is_some() || url.fragment().is_some() {
        return Err("expected scheme://host[:port][/prefix]".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it must not hold a user name or password".into());
    }
    Ok(url)
}
