//! What the engine refuses to queue: bad event params, sessions that are
//! gone or archived; nothing is kept of a refused send.

use serde_json::json;

use super::test_support::*;
use super::SessionStore;

#[tokio::test(flavor = "multi_thread")]
async fn bad_params_are_refused_and_nothing_is_kept() {
    let f = Fixture::new(vec![]);
    let s = f.session(vec![]);
    let cases = [
        (json!([]), "`events`"),
        (json!([{"content": []}]), "events[0].type"),
        (json!([{"type": "user.bogus"}]), "events[0].type"),
        (json!([{"type": "user.define_outcome"}]), "not supported"),
        (json!([{"type": "user.message"}]), "events[0].content"),
        (
            json!([{"type": "user.message", "content": []}]),
            "events[0].content",
        ),
        (
            json!([{"type": "user.message", "content": "hi"}]),
            "events[0].content",
        ),
        (
            json!([{"type": "user.message", "content": [{"type": "text", "text": ""}]}]),
            "events[0].content[0].text",
        ),
        (
            json!([{"type": "user.message", "content": [{"type": "video"}]}]),
            "events[0].content[0].type",
        ),
        (
            json!([{"type": "user.message", "content": [{"type": "text", "text": "x"}], "extra": 1}]),
            "events[0].extra",
        ),
        (
            json!([message("fine"), {"type": "user.interrupt", "session_thread_id": "sthr_1"}]),
            "events[1].session_thread_id",
        ),
        (
            json!([{"type": "user.tool_confirmation", "result": "maybe", "tool_use_id": "x"}]),
            "events[0].result",
        ),
        (
            json!([{"type": "user.tool_confirmation", "result": "allow"}]),
            "events[0].tool_use_id",
        ),
        (
            json!([{"type": "user.custom_tool_result", "custom_tool_use_id": "x"}]),
            "events[0].custom_tool_use_id",
        ),
        (json!(["user.interrupt"]), "events[0]"),
    ];
    for (events, needle) in cases {
        let events = events.as_array().unwrap().clone();
        assert_invalid(f.send(&s.id, events).await, needle);
    }
    assert!(f.history(&s.id).await.is_empty());
    assert!(f.store.inbox(&s.id).await.expect("inbox").is_empty());

    assert!(f
        .send("sesn_missing", vec![message("hi")])
        .await
        .unwrap_err()
        .is_not_found());
    assert!(f
        .engine
        .subscribe("sesn_missing")
        .await
        .err()
        .expect("404")
        .is_not_found());

    let mut archived = f.record(&s.id).await;
    archived.archived_at = Some(archived.updated_at.clone());
    f.store.put_session(archived);
    assert_invalid(f.send(&s.id, vec![message("hi")]).await, "archived");
}
