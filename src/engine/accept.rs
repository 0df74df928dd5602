//! The checks on what users send (`POST /v1/sessions/{id}/events`), in the
//! API's words: which event types the engine takes, their fields, and
//! whether a confirmation or custom tool result answers a tool use that
//! waits for it. Gives the events as accepted; queues nothing itself.

use serde_json::{json, Map, Value};

use super::open_uses::{OpenUses, UseState};
use crate::api::body::{
    as_object, check_keys, expected, field, invalid, one_of, present, required, string,
};
use crate::api::event::{
    Confirmation, ContentBlock, Event, UserCustomToolResult, UserInterrupt, UserMessage,
    UserToolConfirmation,
};
use crate::api::ids::{new_id, EVENT_PREFIX};
use crate::api::Result;

const SENDABLE: [&str; 4] = [
    "user.message",
    "user.interrupt",
    "user.tool_confirmation",
    "user.custom_tool_result",
];
/// Event params the API has that the engine does not take.
const UNSUPPORTED: [&str; 3] = ["user.define_outcome", "user.tool_result", "system.message"];

/// Checks `params` against the session's state as it will be once its inbox
/// is processed, and gives the events as accepted (with ids, not processed).
pub(super) fn accept(params: &[Value], mut open: OpenUses) -> Result<Vec<Event>> {
    if params.is_empty() {
        return Err(invalid("`events`: must contain at least one event"));
    }
    let mut accepted = Vec::with_capacity(params.len());
    for (i, param) in params.iter().enumerate() {
        let event = accept_one(param, &format!("events[{i}]"), &open)?;
        open.apply(&event);
        accepted.push(event);
    }
    Ok(accepted)
}

fn accept_one(param: &Value, path: &str, open: &OpenUses) -> Result<Event> {
    let map = as_object(param, path)?;
    let type_path = field(path, "type");
    let kind = string(required(map, path, "type")?, &type_path)?;
    if UNSUPPORTED.contains(&kind) {
        return Err(invalid(format!(
            "`{type_path}`: `{kind}` is not supported by the local runtime"
        )));
    }
    let kind = one_of(&json!(kind), &type_path, &SENDABLE)?.to_owned();
    if let Some(thread) = present(map, "session_thread_id") {
        string(thread, &field(path, "session_thread_id"))?;
        return Err(invalid(format!(
            "`{path}.session_thread_id`: the local runtime has no session threads"
        )));
    }
    let id = new_id(EVENT_PREFIX);
    match kind.as_str() {
        "user.message" => {
            check_keys(map, path, &["type", "content", "session_thread_id"])?;
            let content = content_blocks(
                required(map, path, "content")?,
                &field(path, "content"),
                &["text", "image", "document", "redacted"],
            )?;
            Ok(Event::UserMessage(UserMessage {
                id,
                content,
                processed_at: None,
            }))
        }
        "user.interrupt" => {
            check_keys(map, path, &["type", "session_thread_id"])?;
            Ok(Event::UserInterrupt(UserInterrupt {
                id,
                processed_at: None,
            }))
        }
        "user.tool_confirmation" => tool_confirmation(map, path, open, id),
        _ => custom_tool_result(map, path, open, id),
    }
}

fn tool_confirmation(
    map: &Map<String, Value>,
    path: &str,
    open: &OpenUses,
    id: String,
) -> Result<Event> {
    check_keys(
        map,
        path,
        &[
            "type",
            "result",
            "tool_use_id",
            "deny_message",
            "session_thread_id",
        ],
    )?;
    let result = one_of(
        required(map, path, "result")?,
        &field(path, "result"),
        &["allow", "deny"],
    )?;
    let id_path = field(path, "tool_use_id");
    let tool_use_id = string(required(map, path, "tool_use_id")?, &id_path)?;
    if !open
        .get(tool_use_id)
        .is_some_and(|u| u.state == UseState::Ask)
    {
        return Err(invalid(format!(
            "`{id_path}`: `{tool_use_id}` is not a tool use awaiting confirmation"
        )));
    }
    let deny_message = match present(map, "deny_message") {
        None => None,
        Some(message) => {
            let message_path = field(path, "deny_message");
            let message = string(message, &message_path)?;
            if result != "deny" {
                return Err(invalid(format!(
                    "`{message_path}`: only allowed when `result` is `deny`"
                )));
            }
            Some(message.to_owned())
        }
    };
    Ok(Event::UserToolConfirmation(UserToolConfirmation {
        id,
        result: if result == "allow" {
            Confirmation::Allow
        } else {
            Confirmation::Deny
        },
        tool_use_id: tool_use_id.to_owned(),
        deny_message,
        processed_at: None,
    }))
}

fn custom_tool_result(
    map: &Map<String, Value>,
    path: &str,
    open: &OpenUses,
    id: String,
) -> Result<Event> {
    check_keys(
        map,
        path,
        &[
            "type",
            "custom_tool_use_id",
            "content",
            "is_error",
            "session_thread_id",
        ],
    )?;
    let id_path = field(path, "custom_tool_use_id");
    let use_id = string(required(map, path, "custom_tool_use_id")?, &id_path)?;
    if !open
        .get(use_id)
        .is_some_and(|u| u.state == UseState::Custom)
    {
        return Err(invalid(format!(
            "`{id_path}`: `{use_id}` is not a custom tool use awaiting its result"
        )));
    }
    let content = match present(map, "content") {
        None => None,
        Some(content) => Some(content_blocks(
            content,
            &field(path, "content"),
            &["text", "image", "document", "search_result"],
        )?),
    };
    let is_error = match present(map, "is_error") {
        None => None,
        Some(is_error) => Some(
            is_error
                .as_bool()
                .ok_or_else(|| expected(&field(path, "is_error"), "a boolean", is_error))?,
        ),
    };
    Ok(Event::UserCustomToolResult(UserCustomToolResult {
        id,
        custom_tool_use_id: use_id.to_owned(),
        content,
        is_error,
        processed_at: None,
    }))
}

/// A non-empty array of content blocks of the `allowed` types, as given.
fn content_blocks(value: &Value, path: &str, allowed: &[&str]) -> Result<Vec<ContentBlock>> {
    let Some(blocks) = value.as_array() else {
        return Err(expected(path, "an array of content blocks", value));
    };
    if blocks.is_empty() {
        return Err(invalid(format!(
            "`{path}`: must contain at least one content block"
        )));
    }
    for (i, block) in blocks.iter().enumerate() {
        check_block(block, &format!("{path}[{i}]"), allowed)?;
    }
    Ok(blocks
        .iter()
        .cloned()
        .map(ContentBlock::from_value)
        .collect())
}

fn check_block(block: &Value, p: &str, allowed: &[&str]) -> Result<()> {
    let map = as_object(block, p)?;
    match one_of(required(map, p, "type")?, &field(p, "type"), allowed)? {
        "text" => {
            let text = string(required(map, p, "text")?, &field(p, "text"))?;
            if text.is_empty() {
                return Err(invalid(format!("`{p}.text`: must not be empty")));
            }
        }
        "image" | "document" => {
            let source = as_object(required(map, p, "source")?, &field(p, "source"))?;
            string(
                required(source, &field(p, "source"), "type")?,
                &field(p, "source.type"),
            )?;
        }
        "search_result" => {
            for key in ["source", "title"] {
                string(required(map, p, key)?, &field(p, key))?;
            }
            let content = required(map, p, "content")?;
            if !content.is_array() {
                return Err(expected(&field(p, "content"), "an array", content));
            }
        }
        _ => {}
    }
    Ok(())
}
