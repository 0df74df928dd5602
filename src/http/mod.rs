//! The HTTP policy every client of agentform shares (the model backends and
//! the `anthropic` provider): base URLs, retries, redaction of secrets and
//! the API's error envelope.

use reqwest::Url;

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
