//! The tool uses of the current turn that have no result yet, and where
//! each stands (may run, waits for a confirmation or a custom tool result,
//! denied). Derived from the events alone, so that it can be rebuilt after
//! a restart; it changes nothing itself.

use serde_json::Value;

use crate::api::event::{Confirmation, Event, Permission, StopReason};

/// Where a tool use without a result stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UseState {
    /// Built-in tool allowed to run (by policy or by the user).
    Allowed,
    /// Built-in tool waiting for `user.tool_confirmation`.
    Ask,
    /// Denied; its error result follows at once.
    Denied,
    /// Custom tool waiting for `user.custom_tool_result`.
    Custom,
}

#[derive(Debug, Clone)]
pub(super) struct OpenUse {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) input: Value,
    pub(super) state: UseState,
    pub(super) deny_message: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct OpenUses {
    uses: Vec<OpenUse>,
}

impl OpenUses {
    pub(super) fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut open = OpenUses::default();
        for e in events {
            open.apply(e);
        }
        open
    }

    pub(super) fn apply(&mut self, e: &Event) {
        match e {
            Event::AgentToolUse(u) => {
                let state = match u.evaluated_permission {
                    Some(Permission::Allow) => UseState::Allowed,
                    Some(Permission::Ask) => UseState::Ask,
                    _ => UseState::Denied,
                };
                self.open(&u.id, &u.name, &u.input, state);
            }
            Event::AgentCustomToolUse(u) => self.open(&u.id, &u.name, &u.input, UseState::Custom),
            Event::UserToolConfirmation(c) => {
                if let Some(u) = self.get_mut(&c.tool_use_id, UseState::Ask) {
                    if c.result == Confirmation::Allow {
                        u.state = UseState::Allowed;
                    } else {
                        u.state = UseState::Denied;
                        u.deny_message.clone_from(&c.deny_message);
                    }
                }
            }
            Event::AgentToolResult(r) => self.uses.retain(|u| u.id != r.tool_use_id),
            Event::UserCustomToolResult(r) => self
                .uses
                .retain(|u| !(u.id == r.custom_tool_use_id && u.state == UseState::Custom)),
            Event::UserMessage(_) | Event::UserInterrupt(_) => self.uses.clear(),
            Event::SessionStatusIdle(idle)
                if !matches!(idle.stop_reason, StopReason::RequiresAction { .. }) =>
            {
                self.uses.clear()
            }
            _ => {}
        }
    }

    fn open(
        &mut self,
        id: &str,
        name: &str,
        input: &serde_json::Map<String, Value>,
        state: UseState,
    ) {
        self.uses.push(OpenUse {
            id: id.to_owned(),
            name: name.to_owned(),
            input: Value::Object(input.clone()),
            state,
            deny_message: None,
        });
    }

    fn get_mut(&mut self, id: &str, state: UseState) -> Option<&mut OpenUse> {
        self.uses
            .iter_mut()
            .find(|u| u.id == id && u.state == state)
    }

    pub(super) fn get(&self, id: &str) -> Option<&OpenUse> {
        self.uses.iter().find(|u| u.id == id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.uses.is_empty()
    }

    pub(super) fn in_state(&self, state: UseState) -> impl Iterator<Item = &OpenUse> {
        self.uses.iter().filter(move |u| u.state == state)
    }

    /// Ids of the uses waiting for the user, in order.
    pub(super) fn waiting(&self) -> Vec<String> {
        self.uses
            .iter()
            .filter(|u| matches!(u.state, UseState::Ask | UseState::Custom))
            .map(|u| u.id.clone())
            .collect()
    }
}
