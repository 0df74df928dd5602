//! Events of a session's stream and history. Events stay the JSON the API
//! sent, so unknown types and fields pass through untouched; these read the
//! fields every event has.

use serde_json::Value;

pub fn id(e: &Value) -> &str {
    e.get("id").and_then(Value::as_str).unwrap_or_default()
}

pub fn kind(e: &Value) -> &str {
    e.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// The `type` of a `session.status_idle` event's stop reason.
pub fn stop_reason(e: &Value) -> Option<&str> {
    e.get("stop_reason")?.get("type")?.as_str()
}

/// The text of an event's `content` blocks, joined.
pub fn text(e: &Value) -> String {
    let mut out = String::new();
    if let Some(blocks) = e.get("content").and_then(Value::as_array) {
        for b in blocks {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                out.push_str(t);
            }
        }
    }
    out
}
