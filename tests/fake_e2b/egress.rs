//! The fake's egress: one plain-HTTP forward proxy per sandbox on a
//! loopback port, which the sandbox's processes get as `HTTP_PROXY` and
//! `http_proxy` (reqwest and curl honour them). As E2B's egress proxy
//! does, it applies the sandbox's `network`: a request to a host that
//! `rules` names gets the rules' headers (replacing the request's own, in
//! rule order), and with `denyOut: ["0.0.0.0/0"]` only hosts in
//! `allowOut` are reached (403 otherwise; rules grant no access). HTTPS
//! (`CONNECT`) is refused: the tests' endpoints are plain HTTP, and setting
//! headers inside TLS would need a man in the middle. Every request is
//! noted in [`super::Inner::egress`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::sync::watch;

use super::{error, Shared};

/// One request through a sandbox's egress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub sandbox: String,
    pub host: String,
    /// The names of the headers a rule set (values are secrets).
    pub set: Vec<String>,
    /// The answer's status (403: denied, 502: not reached).
    pub status: u16,
}

/// Starts the sandbox's egress proxy; its URL (`http://127.0.0.1:PORT`).
/// It stops when the sandbox dies.
pub fn start(
    shared: Arc<Shared>,
    sandbox: String,
    mut killed: watch::Receiver<bool>,
) -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new().fallback(proxy).with_state((shared, sandbox));
    tokio::spawn(async move {
        let dead = async move {
            let _ = killed.wait_for(|k| *k).await;
        };
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(dead)
            .await;
    });
    Ok(url)
}

/// Whether `pattern` (a host, or `*.domain`) covers `host`.
fn matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => pattern == host,
    }
}

/// The headers the rules of `network` set on requests to `host`, in order.
fn rule_headers(network: &Value, host: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(rules) = network["rules"].as_object() else {
        return out;
    };
    for (pattern, list) in rules {
        if !matches(pattern, host) {
            continue;
        }
        for rule in list.as_array().into_iter().flatten() {
            if let Some(headers) = rule["transform"]["headers"].as_object() {
                for (name, value) in headers {
                    out.push((name.clone(), value.as_str().unwrap_or_default().to_owned()));
                }
            }
        }
    }
    out
}

/// Whether `network` lets the sandbox reach `host`.
fn allowed(network: &Value, host: &str) -> bool {
    let listed = |key: &str| -> Vec<String> {
        network[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    if listed("allowOut").iter().any(|p| matches(p, host)) {
        return true;
    }
    !listed("denyOut")
        .iter()
        .any(|p| p == "0.0.0.0/0" || matches(p, host))
}

async fn proxy(
    State((shared, sandbox)): State<(Arc<Shared>, String)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let host = parts
        .uri
        .host()
        .map(str::to_owned)
        .or_else(|| {
            parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_owned())
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    let note = |set: Vec<String>, status: StatusCode| {
        shared.lock().egress.push(Passed {
            sandbox: sandbox.clone(),
            host: host.clone(),
            set,
            status: status.as_u16(),
        });
    };
    if parts.method == Method::CONNECT {
        note(Vec::new(), StatusCode::NOT_IMPLEMENTED);
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "the fake egress proxies plain HTTP only",
        );
    }
    let network = match shared.lock().sandboxes.get(&sandbox) {
        Some(s) => s.request["network"].clone(),
        None => return error(StatusCode::BAD_GATEWAY, "the sandbox is gone"),
    };
    if !allowed(&network, &host) {
        note(Vec::new(), StatusCode::FORBIDDEN);
        return error(
            StatusCode::FORBIDDEN,
            &format!("egress to {host} is denied"),
        );
    }
    let url = match parts.uri.scheme_str() {
        Some(_) => parts.uri.to_string(),
        None => {
            let authority = parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            format!("http://{authority}{}", parts.uri)
        }
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if matches!(
            n,
            "host" | "content-length" | "connection" | "proxy-connection" | "proxy-authorization"
        ) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let mut set = Vec::new();
    let rules = match shared.options.apply_rules {
        true => rule_headers(&network, &host),
        false => Vec::new(),
    };
    for (name, value) in rules {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        set.push(name.as_str().to_owned());
        headers.insert(name, value);
    }
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return error(StatusCode::BAD_REQUEST, "a broken body");
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let answer = client
        .request(parts.method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(_) => {
            note(set, StatusCode::BAD_GATEWAY);
            return error(StatusCode::BAD_GATEWAY, &format!("cannot reach {host}"));
        }
    };
    let status = answer.status();
    note(set, status);
    let mut response = Response::builder().status(status);
    for (name, value) in answer.headers() {
        let n = name.as_str();
        if n == "content-length" || n == "transfer-encoding" || n == "connection" {
            continue;
        }
        response = response.header(name, value);
    }
    let bytes: Bytes = answer.bytes().await.unwrap_or_default();
    response
        .body(axum::body::Body::from(bytes))
        .unwrap_or_else(|_| error(StatusCode::BAD_GATEWAY, "a broken answer").into_response())
}

/// The variables that send a sandbox's processes through its egress.
pub fn envs(url: &str) -> [(String, String); 2] {
    [
        ("HTTP_PROXY".to_owned(), url.to_owned()),
        ("http_proxy".to_owned(), url.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rules_match_hosts_and_wildcards_in_order() {
        let network = json!({"rules": {
            "api.example.com": [
                {"transform": {"headers": {"x-api-key": "one"}}},
                {"transform": {"headers": {"x-api-key": "two"}}}
            ],
            "*.models.test": [{"transform": {"headers": {"authorization": "Bearer k"}}}]
        }});
        assert_eq!(
            rule_headers(&network, "api.example.com"),
            vec![
                ("x-api-key".to_owned(), "one".to_owned()),
                ("x-api-key".to_owned(), "two".to_owned())
            ]
        );
        assert_eq!(rule_headers(&network, "eu.models.test").len(), 1);
        assert!(rule_headers(&network, "models.test").is_empty());
        assert!(rule_headers(&network, "example.com").is_empty());
    }

    #[test]
    fn deny_all_lets_only_allowed_hosts_out() {
        let limited = json!({"denyOut": ["0.0.0.0/0"], "allowOut": ["127.0.0.1"]});
        assert!(allowed(&limited, "127.0.0.1"));
        assert!(!allowed(&limited, "example.com"));
        assert!(allowed(&json!({}), "example.com"));
    }
}
