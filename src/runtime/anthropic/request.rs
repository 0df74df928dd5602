//! One request of the `anthropic` provider, before it is sent: method, path
//! segments, query and body; and the JSON answer it gets back.

use reqwest::Method;
use serde_json::Value;

use super::limiter::RequestClass;

/// One API request.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    /// Path segments after the base URL, unescaped (`["v1", "agents", id]`).
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Req {
    pub fn new(method: Method, segments: &[&str]) -> Self {
        Req {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// `POST /v1/agents/agent_01…`, for messages.
    pub fn label(&self) -> String {
        format!("{} /{}", self.method, self.segments.join("/"))
    }

    /// What the rate limiter counts it as.
    pub fn class(&self) -> RequestClass {
        RequestClass {
            environment: self.segments.get(1).map(String::as_str) == Some("environments"),
            create: self.method == Method::POST && self.segments.len() == 2,
        }
    }
}

/// A successful JSON answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub value: Value,
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_classes() {
        let class = |m: Method, s: &[&str]| Req::new(m, s).class();
        assert_eq!(
            class(Method::POST, &["v1", "environments"]),
            RequestClass {
                environment: true,
                create: true
            }
        );
        assert_eq!(
            class(Method::GET, &["v1", "environments", "env_1"]),
            RequestClass {
                environment: true,
                create: false
            }
        );
        assert_eq!(
            class(Method::POST, &["v1", "sessions"]),
            RequestClass {
                environment: false,
                create: true
            }
        );
        assert_eq!(
            class(Method::POST, &["v1", "agents", "agent_1"]),
            RequestClass {
                environment: false,
                create: false
            }
        );
        assert_eq!(
            class(Method::GET, &["v1", "agents"]),
            RequestClass {
                environment: false,
                create: false
            }
        );
    }
}
