//! The Messages-API conversation a session's events tell, as the model is
//! asked it: user content, assistant text and tool uses, tool results. Pure:
//! it reads events and writes messages.

use serde_json::{json, Value};

use crate::api::event::{ContentBlock, Event, StopReason};

/// The conversation of `history`. Tool uses left without a result (dropped
/// by an interrupt, a new message or an error) get an error result, so the
/// conversation stays valid.
pub(super) fn conversation(history: &[Event]) -> Vec<Value> {
    let mut b = Conversation::default();
    for e in history {
        match e {
            Event::UserMessage(message) => {
                b.close("not run: the user sent a new message instead");
                for block in &message.content {
                    if block.kind() != "redacted" {
                        b.push("user", block.to_value());
                    }
                }
            }
            Event::UserInterrupt(_) => b.close("not run: interrupted by the user"),
            Event::SessionStatusIdle(idle)
                if !matches!(idle.stop_reason, StopReason::RequiresAction { .. }) =>
            {
                b.close("not run: the turn ended first")
            }
            Event::AgentMessage(message) => {
                for block in &message.content {
                    if block.kind() == "text" {
                        b.push("assistant", block.to_value());
                    }
                }
            }
            Event::AgentToolUse(u) => b.tool_use(&u.id, &u.name, &u.input),
            Event::AgentCustomToolUse(u) => b.tool_use(&u.id, &u.name, &u.input),
            Event::AgentToolResult(r) => b.result(&r.tool_use_id, r.content.as_deref(), r.is_error),
            Event::UserCustomToolResult(r) => {
                b.result(&r.custom_tool_use_id, r.content.as_deref(), r.is_error)
            }
            _ => {}
        }
    }
    b.close("not run");
    b.messages
}

#[derive(Default)]
struct Conversation {
    messages: Vec<Value>,
    /// Tool uses still without a result.
    open: Vec<String>,
}

impl Conversation {
    fn push(&mut self, role: &str, block: Value) {
        if let Some(last) = self.messages.last_mut() {
            if last["role"] == role {
                if let Some(content) = last["content"].as_array_mut() {
                    content.push(block);
                    return;
                }
            }
        }
        self.messages
            .push(json!({"role": role, "content": [block]}));
    }

    fn tool_use(&mut self, id: &str, name: &str, input: &serde_json::Map<String, Value>) {
        self.push(
            "assistant",
            json!({"type": "tool_use", "id": id, "name": name, "input": input}),
        );
        self.open.push(id.to_owned());
    }

    fn result(&mut self, id: &str, content: Option<&[ContentBlock]>, is_error: Option<bool>) {
        let Some(at) = self.open.iter().position(|open| open == id) else {
            return;
        };
        self.open.remove(at);
        let content: Vec<Value> = content
            .unwrap_or_default()
            .iter()
            .map(ContentBlock::to_value)
            .collect();
        self.push(
            "user",
            json!({"type": "tool_result", "tool_use_id": id, "content": content, "is_error": is_error.unwrap_or(false)}),
        );
    }

    fn close(&mut self, why: &str) {
        for id in std::mem::take(&mut self.open) {
            self.push(
                "user",
                json!({"type": "tool_result", "tool_use_id": id, "content": [{"type": "text", "text": why}], "is_error": true}),
            );
        }
    }
}
