//! Keeping a retried request from taking effect twice: before resending a
//! request an earlier attempt of which may have gone through (a connection
//! broken after sending, a timeout, a 5xx), look for its effect — adopt the
//! object a create made (same `agentform.address` and `agentform.manifest`
//! metadata, created since), find sent events in the history, see the next
//! agent version, take a 404 after a delete as done.

use std::time::SystemTime;

use reqwest::Method;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::client::Http;
use super::request::Req;
use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::runtime::{ErrorKind, Result, RuntimeError};

/// Pages read when looking for an object an earlier attempt may have created.
const MAX_ADOPTION_PAGES: usize = 50;

/// What to check before resending a request an earlier attempt of which may
/// have taken effect (a connection broken after sending, a timeout, a 5xx).
#[derive(Debug, Clone)]
pub(crate) enum Dedup {
    /// Resend as is.
    None,
    /// A create: adopt a fresh object with the same `agentform.address` and
    /// `agentform.manifest` metadata instead of creating another.
    Create {
        /// The list endpoint (`["v1", "agents"]`).
        list: Vec<String>,
        address: String,
        manifest: String,
        /// The list endpoint takes `created_at[gte]`.
        time_filter: bool,
        /// Extra list filters (`agent_id` for sessions).
        filters: Vec<(String, String)>,
    },
    /// Sent events: return them as found in the history instead of sending
    /// them again.
    Events {
        session_id: String,
        events: Vec<Value>,
    },
    /// A delete: a 404 after an uncertain attempt means it went through.
    Delete { id: String, kind: &'static str },
    /// An agent update made against `version`: the next version, made after
    /// the first attempt, means it went through (resending would only meet
    /// a version conflict).
    AgentUpdate { id: String, version: u64 },
}

impl Dedup {
    /// The adoption check for a create body, when its metadata names the
    /// object; else [`Dedup::None`].
    pub fn create(body: &Value, list: &[&str], time_filter: bool) -> Self {
        let meta = |key: &str| {
            body.get("metadata")
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (Some(address), Some(manifest)) = (meta(META_ADDRESS), meta(META_MANIFEST)) else {
            return Dedup::None;
        };
        Dedup::Create {
            list: list.iter().map(|s| (*s).to_owned()).collect(),
            address,
            manifest,
            time_filter,
            filters: Vec::new(),
        }
    }

    /// Whether a retry first looks for what an uncertain attempt did.
    pub fn checks(&self) -> bool {
        matches!(
            self,
            Dedup::Create { .. } | Dedup::Events { .. } | Dedup::AgentUpdate { .. }
        )
    }

    /// Whether an uncertain earlier attempt, made after `started`, took
    /// effect: its result if so. Asks `http` without retrying.
    pub async fn already_done(&self, http: &Http, started: SystemTime) -> Result<Option<Value>> {
        let not_before = http.not_before(started);
        match self {
            Dedup::None | Dedup::Delete { .. } => Ok(None),
            Dedup::Create { .. } => self.created(http, not_before).await,
            Dedup::AgentUpdate { id, version } => {
                next_version(http, not_before, id, *version).await
            }
            Dedup::Events { session_id, events } => {
                sent_events(http, not_before, session_id, events).await
            }
        }
    }

    /// The newest object of the list with the create's metadata, made since
    /// `not_before`.
    async fn created(&self, http: &Http, not_before: OffsetDateTime) -> Result<Option<Value>> {
        let Dedup::Create {
            list,
            address,
            manifest,
            time_filter,
            filters,
        } = self
        else {
            return Ok(None);
        };
        let segments: Vec<&str> = list.iter().map(String::as_str).collect();
        let mut page: Option<String> = None;
        for _ in 0..MAX_ADOPTION_PAGES {
            let mut req = Req::new(Method::GET, &segments).query("limit", "100");
            for (k, v) in filters {
                req = req.query(k, v.as_str());
            }
            if *time_filter {
                if let Ok(ts) = not_before.format(&Rfc3339) {
                    req = req.query("created_at[gte]", ts);
                }
            }
            if let Some(p) = &page {
                req = req.query("page", p.as_str());
            }
            let reply = http.attempt_json(&req).await.map_err(|f| f.failure.error)?;
            let found = page_data(&req, &reply.value)?
                .iter()
                .filter(|o| {
                    let meta = |k: &str| o.get("metadata")?.get(k)?.as_str();
                    meta(META_ADDRESS) == Some(address.as_str())
                        && meta(META_MANIFEST) == Some(manifest.as_str())
                })
                .filter_map(|o| Some((created_at(o)?, o)))
                .filter(|(at, _)| *at >= not_before)
                .max_by_key(|(at, _)| *at);
            if let Some((_, object)) = found {
                return Ok(Some(object.clone()));
            }
            match reply.value.get("next_page").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => page = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(None)
    }
}

/// The agent, when its version is the one after `version` and was made
/// since `not_before`.
async fn next_version(
    http: &Http,
    not_before: OffsetDateTime,
    id: &str,
    version: u64,
) -> Result<Option<Value>> {
    let req = Req::new(Method::GET, &["v1", "agents", id]);
    let reply = http.attempt_json(&req).await.map_err(|f| f.failure.error)?;
    let newer = reply.value.get("version").and_then(Value::as_u64) == Some(version + 1);
    let since = reply
        .value
        .get("updated_at")
        .and_then(Value::as_str)
        .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
        .is_some_and(|at| at >= not_before);
    Ok((newer && since).then_some(reply.value))
}

/// `{data: [...]}` of the sent events as the history holds them, when every
/// one of them is there (in order, processed since `not_before`).
async fn sent_events(
    http: &Http,
    not_before: OffsetDateTime,
    session_id: &str,
    events: &[Value],
) -> Result<Option<Value>> {
    let req = Req::new(Method::GET, &["v1", "sessions", session_id, "events"])
        .query("order", "desc")
        .query("limit", "100");
    let reply = http.attempt_json(&req).await.map_err(|f| f.failure.error)?;
    // Oldest first, only what was processed after the first attempt.
    let recent: Vec<&Value> = page_data(&req, &reply.value)?
        .iter()
        .rev()
        .filter(|e| match e.get("processed_at").and_then(Value::as_str) {
            None => true,
            Some(at) => OffsetDateTime::parse(at, &Rfc3339)
                .map(|at| at >= not_before)
                .unwrap_or(true),
        })
        .collect();
    let mut matched = Vec::with_capacity(events.len());
    let mut rest = recent.into_iter();
    for sent in events {
        match rest.by_ref().find(|h| contains(h, sent)) {
            Some(found) => matched.push(found.clone()),
            None => return Ok(None),
        }
    }
    Ok(Some(json!({ "data": matched })))
}

/// The `data` of a page, or an error naming the request.
fn page_data<'a>(req: &Req, page: &'a Value) -> Result<&'a Vec<Value>> {
    page.get("data").and_then(Value::as_array).ok_or_else(|| {
        RuntimeError::new(
            ErrorKind::Api,
            format!("{}: the answer is not a page", req.label()),
        )
    })
}

/// Whether `have` holds everything `want` says (objects: every key of
/// `want`, a null matching an absent key; arrays: element by element).
pub(crate) fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| match h.get(k) {
            Some(hv) => contains(hv, wv),
            None => wv.is_null(),
        }),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        _ => have == want,
    }
}

fn created_at(object: &Value) -> Option<OffsetDateTime> {
    let at = object.get("created_at")?.as_str()?;
    OffsetDateTime::parse(at, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_for_event_matching() {
        let sent =
            json!({"type": "user.message", "content": [{"type": "text", "text": "hi"}], "x": null});
        let stored = json!({"id": "sevt_1", "type": "user.message", "processed_at": null,
            "content": [{"type": "text", "text": "hi", "citations": null}]});
        assert!(contains(&stored, &sent));
        let other = json!({"id": "sevt_2", "type": "user.message", "content": [{"type": "text", "text": "hello"}]});
        assert!(!contains(&other, &sent));
        let longer = json!({"type": "user.message", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "!"}]});
        assert!(!contains(&longer, &sent));
    }

    #[test]
    fn dedup_needs_both_metadata_keys() {
        let body =
            json!({"metadata": {"agentform.address": "agent.a", "agentform.manifest": "demo"}});
        assert!(matches!(
            Dedup::create(&body, &["v1", "agents"], true),
            Dedup::Create { .. }
        ));
        let body = json!({"metadata": {"agentform.address": "agent.a"}});
        assert!(matches!(
            Dedup::create(&body, &["v1", "agents"], true),
            Dedup::None
        ));
        assert!(matches!(
            Dedup::create(&json!({}), &["v1", "agents"], true),
            Dedup::None
        ));
    }
}
