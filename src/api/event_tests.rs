//! Every event JSON → [`Event`] → the same JSON, byte for byte; which
//! variant each lands in; and what stays [`Event::Other`].

use serde_json::{json, Value};

use super::*;

const AT: &str = "2026-04-01T12:00:00.123456Z";

/// One event of every typed variant, as the engine and the API write them.
fn typed_events() -> Vec<(Value, &'static str)> {
    vec![
        (
            json!({"id": "sevt_1", "type": "user.message", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {"type": "url", "url": "https://x"}}], "processed_at": null}),
            "UserMessage",
        ),
        (
            json!({"id": "sevt_2", "type": "user.interrupt", "processed_at": AT}),
            "UserInterrupt",
        ),
        (
            json!({"id": "sevt_3", "type": "user.tool_confirmation", "result": "deny", "tool_use_id": "sevt_9", "deny_message": "no", "processed_at": null}),
            "UserToolConfirmation",
        ),
        (
            json!({"id": "sevt_4", "type": "user.tool_confirmation", "result": "allow", "tool_use_id": "sevt_9", "processed_at": AT}),
            "UserToolConfirmation",
        ),
        (
            json!({"id": "sevt_5", "type": "user.custom_tool_result", "custom_tool_use_id": "sevt_9", "content": [{"type": "text", "text": "1"}], "is_error": false, "processed_at": null}),
            "UserCustomToolResult",
        ),
        (
            json!({"id": "sevt_6", "type": "user.custom_tool_result", "custom_tool_use_id": "sevt_9", "processed_at": AT}),
            "UserCustomToolResult",
        ),
        (
            json!({"id": "sevt_7", "type": "agent.message", "content": [{"type": "text", "text": "Hello!"}], "processed_at": AT}),
            "AgentMessage",
        ),
        (
            json!({"id": "sevt_8", "type": "agent.thinking", "processed_at": AT}),
            "AgentThinking",
        ),
        (
            json!({"id": "sevt_9", "type": "agent.tool_use", "name": "bash", "input": {"command": "ls"}, "evaluated_permission": "allow", "evaluation": {"type": "always_allow"}, "processed_at": AT}),
            "AgentToolUse",
        ),
        (
            json!({"id": "sevt_10", "type": "agent.tool_use", "name": "bash", "input": {}, "evaluated_permission": "ask", "evaluation": {"type": "auto", "evaluated_permission": {"type": "ask", "reason_code": "indeterminate"}}, "processed_at": AT}),
            "AgentToolUse",
        ),
        (
            json!({"id": "sevt_11", "type": "agent.tool_use", "name": "nope", "input": {}, "evaluated_permission": "deny", "processed_at": AT}),
            "AgentToolUse",
        ),
        (
            json!({"id": "sevt_12", "type": "agent.tool_result", "tool_use_id": "sevt_9", "content": [], "is_error": true, "processed_at": AT}),
            "AgentToolResult",
        ),
        (
            json!({"id": "sevt_13", "type": "agent.custom_tool_use", "name": "lookup", "input": {"q": "a"}, "processed_at": AT}),
            "AgentCustomToolUse",
        ),
        (
            json!({"id": "sevt_14", "type": "session.status_running", "processed_at": AT}),
            "SessionStatusRunning",
        ),
        (
            json!({"id": "sevt_15", "type": "session.status_idle", "stop_reason": {"type": "end_turn"}, "processed_at": AT}),
            "SessionStatusIdle",
        ),
        (
            json!({"id": "sevt_16", "type": "session.status_idle", "stop_reason": {"type": "requires_action", "event_ids": ["sevt_9", "sevt_13"]}, "processed_at": AT}),
            "SessionStatusIdle",
        ),
        (
            json!({"id": "sevt_17", "type": "session.status_terminated", "processed_at": AT}),
            "SessionStatusTerminated",
        ),
        (
            json!({"id": "sevt_18", "type": "session.error", "error": {"type": "model_overloaded_error", "message": "overloaded", "retry_status": {"type": "terminal"}}, "processed_at": AT}),
            "SessionError",
        ),
        (
            json!({"id": "sevt_19", "type": "session.deleted", "processed_at": AT}),
            "SessionDeleted",
        ),
        (
            json!({"id": "sevt_20", "type": "span.model_request_start", "processed_at": AT}),
            "SpanModelRequestStart",
        ),
        (
            json!({"id": "sevt_21", "type": "span.model_request_end", "model_request_start_id": "sevt_20", "model_usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 1, "cache_read_input_tokens": 2}, "is_error": false, "processed_at": AT}),
            "SpanModelRequestEnd",
        ),
    ]
}

fn variant(e: &Event) -> &'static str {
    match e {
        Event::UserMessage(_) => "UserMessage",
        Event::UserInterrupt(_) => "UserInterrupt",
        Event::UserToolConfirmation(_) => "UserToolConfirmation",
        Event::UserCustomToolResult(_) => "UserCustomToolResult",
        Event::AgentMessage(_) => "AgentMessage",
        Event::AgentThinking(_) => "AgentThinking",
        Event::AgentToolUse(_) => "AgentToolUse",
        Event::AgentToolResult(_) => "AgentToolResult",
        Event::AgentCustomToolUse(_) => "AgentCustomToolUse",
        Event::SessionStatusRunning(_) => "SessionStatusRunning",
        Event::SessionStatusIdle(_) => "SessionStatusIdle",
        Event::SessionStatusTerminated(_) => "SessionStatusTerminated",
        Event::SessionError(_) => "SessionError",
        Event::SessionDeleted(_) => "SessionDeleted",
        Event::SpanModelRequestStart(_) => "SpanModelRequestStart",
        Event::SpanModelRequestEnd(_) => "SpanModelRequestEnd",
        Event::Other(_) => "Other",
    }
}

/// JSON text → [`Event`] → JSON text, compared with what a `Value` writes.
fn assert_round_trip(value: &Value) -> Event {
    let text = serde_json::to_string(value).expect("json");
    let event: Event = serde_json::from_str(&text).expect("event");
    assert_eq!(serde_json::to_string(&event).expect("write"), text);
    assert_eq!(event.to_value(), *value);
    assert_eq!(Event::from_value(value.clone()), event);
    assert_eq!(event.kind(), kind(value));
    assert_eq!(event.id(), id(value));
    event
}

#[test]
fn every_typed_variant_round_trips_exactly() {
    let cases = typed_events();
    let mut seen: Vec<&str> = cases.iter().map(|(_, v)| *v).collect();
    seen.dedup();
    assert_eq!(seen.len(), 16, "one case at least per typed variant");
    for (value, expected) in cases {
        let event = assert_round_trip(&value);
        assert_eq!(variant(&event), expected, "{value}");
    }
}

#[test]
fn typed_variants_read_their_fields() {
    let idle = Event::from_value(typed_events()[15].0.clone());
    let Event::SessionStatusIdle(idle) = idle else {
        panic!("not idle: {idle:?}")
    };
    assert_eq!(
        idle.stop_reason,
        StopReason::RequiresAction {
            event_ids: vec!["sevt_9".to_owned(), "sevt_13".to_owned()]
        }
    );
    assert_eq!(idle.stop_reason.kind(), "requires_action");
    let Event::UserMessage(message) = Event::from_value(typed_events()[0].0.clone()) else {
        panic!("not a message")
    };
    assert_eq!(message.content[0], ContentBlock::text("hi"));
    assert_eq!(message.content[1].kind(), "image");
    assert!(matches!(message.content[1], ContentBlock::Other(_)));
    assert_eq!(message.processed_at, None);
}

#[test]
fn unknown_types_stay_other_untouched() {
    for value in [
        json!({"id": "sevt_1", "type": "agent.mcp_tool_use", "name": "x", "mcp_server_name": "m", "input": {}, "processed_at": AT}),
        json!({"id": "sevt_2", "type": "session.thread_created", "processed_at": AT, "nested": {"b": [1, 2.5, null], "a": true}}),
        json!({"type": "span.outcome_evaluation_start"}),
        json!({"no": "type"}),
        json!(["not", "an", "object"]),
    ] {
        let event = assert_round_trip(&value);
        assert_eq!(event, Event::Other(value));
    }
}

/// A known type with a field this module does not model (a newer API's, or
/// the SDK's optional `session_thread_id`), or a `null` where the typed form
/// omits the field, is kept whole as `Other`: nothing is dropped or added.
#[test]
fn known_types_the_typed_form_would_change_stay_other() {
    for value in [
        json!({"id": "sevt_1", "type": "agent.message", "content": [{"type": "text", "text": "x"}], "processed_at": AT, "future_field": {"x": 1}}),
        json!({"id": "sevt_2", "type": "agent.tool_use", "name": "bash", "input": {}, "evaluated_permission": "allow", "session_thread_id": "sthr_1", "processed_at": AT}),
        json!({"id": "sevt_3", "type": "user.tool_confirmation", "result": "allow", "tool_use_id": "t", "deny_message": null, "processed_at": AT}),
        json!({"id": "sevt_4", "type": "user.message", "content": []}),
        json!({"id": "sevt_5", "type": "session.status_idle", "stop_reason": {"type": "end_turn"}, "stop_details": null, "processed_at": AT}),
        json!({"id": "sevt_6", "type": "session.status_idle", "stop_reason": {"type": "paused"}, "processed_at": AT}),
        json!({"id": "sevt_7", "type": "session.error", "error": {"type": "mcp_connection_failed_error", "mcp_server_name": "m", "message": "x", "retry_status": {"type": "terminal"}}, "processed_at": AT}),
        json!({"id": "sevt_8", "type": "span.model_request_end", "model_request_start_id": "s", "model_usage": {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "speed": "fast"}, "processed_at": AT}),
        json!({"id": 9, "type": "session.status_running", "processed_at": AT}),
    ] {
        let event = assert_round_trip(&value);
        assert_eq!(event, Event::Other(value));
    }
}

/// Content blocks are typed or kept the same way, inside a typed event.
#[test]
fn unknown_content_blocks_are_kept_inside_typed_events() {
    let value = json!({"id": "sevt_1", "type": "agent.message", "content": [{"type": "text", "text": "a", "citations": null}, {"type": "redacted"}], "processed_at": AT});
    let event = assert_round_trip(&value);
    let Event::AgentMessage(message) = event else {
        panic!("not a message: {event:?}")
    };
    assert!(matches!(message.content[0], ContentBlock::Other(_)));
    assert_eq!(message.content[1].kind(), "redacted");
}

#[test]
fn built_events_write_what_the_api_expects() {
    let mut event = Event::UserInterrupt(UserInterrupt {
        id: "sevt_1".to_owned(),
        processed_at: None,
    });
    assert_eq!(
        event.to_value(),
        json!({"id": "sevt_1", "type": "user.interrupt", "processed_at": null})
    );
    event.set_processed_at(AT.to_owned());
    assert_eq!(event.to_value()["processed_at"], AT);
    let mut other = Event::from_value(json!({"id": "e", "type": "x.y", "processed_at": null}));
    other.set_processed_at(AT.to_owned());
    assert_eq!(
        other.to_value(),
        json!({"id": "e", "type": "x.y", "processed_at": AT})
    );
    let result = Event::AgentToolResult(AgentToolResult {
        id: "sevt_2".to_owned(),
        tool_use_id: "sevt_1".to_owned(),
        content: Some(vec![ContentBlock::text("out")]),
        is_error: Some(false),
        processed_at: AT.to_owned(),
    });
    assert_eq!(
        serde_json::to_string(&result).expect("json"),
        r#"{"content":[{"text":"out","type":"text"}],"id":"sevt_2","is_error":false,"processed_at":"2026-04-01T12:00:00.123456Z","tool_use_id":"sevt_1","type":"agent.tool_result"}"#
    );
}

#[test]
fn accessors_read_raw_json() {
    let idle = &typed_events()[14].0;
    assert_eq!(stop_reason(idle), Some("end_turn"));
    assert_eq!(text(&typed_events()[6].0), "Hello!");
    assert_eq!(kind(&json!({})), "");
    assert_eq!(id(&json!({"id": 1})), "");
}
