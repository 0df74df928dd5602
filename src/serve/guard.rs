//! What a request must look like before it reaches a route, against
//! browsers made to call the server by another site:
//!
//! * without an API key, the `Host` must name the loopback address the
//!   server listens on (a page on `evil.example` that rebinds its name to
//!   127.0.0.1 still sends `Host: evil.example`);
//! * a request with an `Origin` is refused unless that origin was allowed;
//!   allowed origins get CORS headers and their preflights are answered;
//! * a body must be declared as JSON (the types a browser sends cross-site
//!   without a preflight are not).
//!
//! It only decides; the middleware in `serve` orders the checks and writes
//! the envelope.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The longest header value quoted back in an error message.
const QUOTED: usize = 120;
/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: u32 = 600;
const ALLOWED_METHODS: &str = "GET, POST, DELETE";
const EXPOSED_HEADERS: &str = "request-id, retry-after";

/// The request policy of one bound server.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    /// The `Host` values answered; `None` answers any (an API key is the
    /// defence then).
    hosts: Option<Vec<String>>,
    /// Origins allowed to call, exactly as browsers send them.
    origins: Vec<String>,
}

impl Guard {
    /// For a server bound to `local`, with or without an API key.
    pub(crate) fn new(local: SocketAddr, keyed: bool, origins: &[String]) -> Self {
        Guard {
            hosts: (!keyed).then(|| loopback_hosts(local)),
            origins: origins.to_vec(),
        }
    }

    /// Refuses a `Host` that is not the server's own loopback address
    /// (without a key), and an `Origin` that was not allowed. Gives the
    /// allowed origin the request came from, if any.
    pub(crate) fn admit(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, ApiError> {
        if let Some(hosts) = &self.hosts {
            let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
            let known =
                host.is_some_and(|h| hosts.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(h)));
            if !known {
                return Err(ApiError::forbidden(format!(
                    "{} is not this server's address: without an API key the server answers only \
                     requests addressed to {} (a guard against DNS rebinding); use one of those in \
                     the URL, or start the server with --api-key",
                    host.map_or_else(
                        || "a request without `Host`".to_owned(),
                        |h| format!("host `{}`", quoted(h))
                    ),
                    hosts.join(", "),
                )));
            }
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        if self
            .origins
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
        {
            return Ok(Some(origin.clone()));
        }
        Err(ApiError::forbidden(format!(
            "origin `{shown}` is not allowed: the server refuses requests from web pages of other \
             sites; to let a web app at that origin call it, start the server with \
             --allow-origin {shown}",
            shown = quoted(origin.as_bytes()),
        )))
    }

    /// The answer to a CORS preflight from an allowed origin; `None` when
    /// the request is not one.
    pub(crate) fn preflight(
        method: &Method,
        headers: &HeaderMap,
        origin: &HeaderValue,
    ) -> Option<Response> {
        if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let out = response.headers_mut();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        // The origin is trusted; whatever headers its client sends
        // (the SDKs add their own) may come.
        if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE),
        );
        out.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        Some(response)
    }

    /// The CORS headers of a response to an allowed origin.
    pub(crate) fn allow(response: &mut Response, origin: HeaderValue) {
        let out = response.headers_mut();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        out.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT` and the bound address;
/// without the port too when it is HTTP's default.
fn loopback_hosts(local: SocketAddr) -> Vec<String> {
    let port = local.port();
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        local.to_string(),
    ];
    if port == 80 {
        let bare: Vec<String> = hosts
            .iter()
            .filter_map(|h| h.strip_suffix(":80").map(str::to_owned))
            .collect();
        hosts.extend(bare);
    }
    let mut seen = Vec::with_capacity(hosts.len());
    for h in hosts {
        if !seen.contains(&h) {
            seen.push(h);
        }
    }
    seen
}

/// Whether the request carries a body: a length above 0, or chunks.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// A body must be declared JSON: `application/json` (parameters allowed) or
/// an `application/…+json` type. `text/plain`, forms and an undeclared body —
/// what a page on another site can send without asking first — get 415.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers.get(header::CONTENT_TYPE);
    if declared.is_none() && !has_body(headers) {
        return Ok(());
    }
    let value = declared.map(HeaderValue::as_bytes).unwrap_or_default();
    let mime = String::from_utf8_lossy(value.split(|b| *b == b';').next().unwrap_or_default())
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        return Ok(());
    }
    let got = match declared {
        None => "none".to_owned(),
        Some(v) => format!("`{}`", quoted(v.as_bytes())),
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request_error",
        format!("a request body must be JSON: send `content-type: application/json` (got {got})"),
    ))
}

/// An origin for `--allow-origin`: `SCHEME://HOST[:PORT]`, as a browser
/// sends it (no path, no trailing slash), or `null`.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let refuse = || {
        format!(
            "`{s}` is not an origin; write SCHEME://HOST[:PORT] with no path, \
             e.g. `http://localhost:3000`"
        )
    };
    if s == "null" {
        return Ok(s.to_owned());
    }
    let (scheme, rest) = s.split_once("://").ok_or_else(refuse)?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let host_ok = !rest.is_empty()
        && !rest.starts_with(':')
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    if scheme_ok && host_ok && HeaderValue::from_str(s).is_ok() {
        Ok(s.to_owned())
    } else {
        Err(refuse())
    }
}

/// A header value as it may be quoted in a message: lossy, cut short.
fn quoted(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    match text.char_indices().nth(QUOTED) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn without_a_key_only_the_loopback_names_of_the_port_are_answered() {
        let guard = Guard::new("127.0.0.1:8787".parse().unwrap(), false, &[]);
        for host in [
            "127.0.0.1:8787",
            "localhost:8787",
            "LOCALHOST:8787",
            "[::1]:8787",
        ] {
            assert!(guard.admit(&headers(&[("host", host)])).is_ok(), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8787",
            "127.0.0.1:9999",
            "localhost",
            "127.0.0.1",
        ] {
            let e = guard.admit(&headers(&[("host", host)])).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{host}");
            assert_eq!(e.kind, "permission_error");
            assert!(e.message.contains("--api-key"), "{}", e.message);
        }
        assert!(guard.admit(&HeaderMap::new()).is_err());

        let other = Guard::new("127.0.0.7:80".parse().unwrap(), false, &[]);
        for host in ["127.0.0.7:80", "127.0.0.7", "localhost", "[::1]"] {
            assert!(other.admit(&headers(&[("host", host)])).is_ok(), "{host}");
        }
        let v6 = Guard::new("[::1]:81".parse().unwrap(), false, &[]);
        assert!(v6.admit(&headers(&[("host", "[::1]:81")])).is_ok());

        let keyed = Guard::new("127.0.0.1:8787".parse().unwrap(), true, &[]);
        assert!(keyed.admit(&headers(&[("host", "evil.example")])).is_ok());
    }

    #[test]
    fn origins_must_be_allowed_exactly() {
        let allowed = vec!["http://localhost:3000".to_owned()];
        for keyed in [false, true] {
            let guard = Guard::new("127.0.0.1:8787".parse().unwrap(), keyed, &allowed);
            let host = ("host", "127.0.0.1:8787");
            assert_eq!(guard.admit(&headers(&[host])).unwrap(), None);
            let ok = guard
                .admit(&headers(&[host, ("origin", "http://localhost:3000")]))
                .unwrap();
            assert_eq!(ok.unwrap(), "http://localhost:3000");
            for origin in [
                "http://evil.example",
                "http://localhost:3001",
                "null",
                "http://LOCALHOST:3000",
            ] {
                let e = guard
                    .admit(&headers(&[host, ("origin", origin)]))
                    .unwrap_err();
                assert_eq!(e.status, StatusCode::FORBIDDEN);
                assert!(e.message.contains("--allow-origin"), "{}", e.message);
            }
        }
    }

    #[test]
    fn bodies_must_be_declared_json() {
        let ok = [
            vec![
                ("content-type", "application/json"),
                ("content-length", "2"),
            ],
            vec![
                ("content-type", "application/json; charset=utf-8"),
                ("content-length", "2"),
            ],
            vec![("content-type", "Application/JSON")],
            vec![
                ("content-type", "application/merge-patch+json"),
                ("transfer-encoding", "chunked"),
            ],
            vec![],
            vec![("content-length", "0")],
        ];
        for h in ok {
            assert!(check_content_type(&headers(&h)).is_ok(), "{h:?}");
        }
        let refused = [
            vec![("content-length", "2")],
            vec![("transfer-encoding", "chunked")],
            vec![
                ("content-type", "text/plain;charset=UTF-8"),
                ("content-length", "2"),
            ],
            vec![
                ("content-type", "application/x-www-form-urlencoded"),
                ("content-length", "2"),
            ],
            vec![
                ("content-type", "multipart/form-data; boundary=x"),
                ("content-length", "2"),
            ],
            vec![("content-type", "text/plain"), ("content-length", "0")],
        ];
        for h in refused {
            let e = check_content_type(&headers(&h)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{h:?}");
            assert_eq!(e.kind, "invalid_request_error");
        }
    }

    #[test]
    fn preflights_of_allowed_origins_are_answered() {
        let origin = HeaderValue::from_static("http://localhost:3000");
        let asked = headers(&[
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-api-key"),
        ]);
        let r = Guard::preflight(&Method::OPTIONS, &asked, &origin).unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "http://localhost:3000"
        );
        assert_eq!(
            r.headers()["access-control-allow-headers"],
            "content-type, x-api-key"
        );
        assert!(Guard::preflight(&Method::GET, &asked, &origin).is_none());
        assert!(Guard::preflight(&Method::OPTIONS, &HeaderMap::new(), &origin).is_none());
    }

    #[test]
    fn origins_on_the_command_line() {
        for ok in [
            "http://localhost:3000",
            "https://app.example.com",
            "http://[::1]:8080",
            "null",
        ] {
            assert_eq!(parse_origin(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "localhost:3000",
            "http://localhost:3000/",
            "http://a/b",
            "*",
            "http://",
            "http://:80",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
