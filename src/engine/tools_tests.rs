//! Tools end to end through the engine: built-in tools in the session's
//! sandbox, packages, permission policies and confirmations, custom tools,
//! no sandbox at all, and a deleted session's sandbox.

use std::sync::Arc;

use serde_json::{json, Value};

use super::test_support::*;
use super::EngineOptions;
use crate::api::event;
use crate::api::tool::CustomTool;
use crate::api::Tool;
use crate::sandbox::local::{Installers, LocalSandboxes};

#[tokio::test(flavor = "multi_thread")]
async fn allowed_tools_run_in_the_session_workspace() {
    let f = Fixture::new(vec![
        tool(
            "write",
            json!({"file_path": "notes/a.txt", "content": "hello from the tool"}),
        ),
        tool("read", json!({"file_path": "notes/a.txt"})),
        text("done"),
    ]);
    let s = f.session(toolset(&[]));
    let events = f.exchange(&s.id, vec![message("write it")]).await;
    assert_eq!(
        kinds(&events),
        [
            "user.message",
            "session.status_running",
            "span.model_request_start",
            "span.model_request_end",
            "agent.tool_use",
            "agent.tool_result",
            "span.model_request_start",
            "span.model_request_end",
            "agent.tool_use",
            "agent.tool_result",
            "span.model_request_start",
            "span.model_request_end",
            "agent.message",
            "session.status_idle",
        ]
    );
    let uses = of_kind(&events, "agent.tool_use");
    assert_eq!(uses[0]["name"], "write");
    assert_eq!(uses[0]["evaluated_permission"], "allow");
    assert_eq!(uses[0]["evaluation"], json!({"type": "always_allow"}));
    let results = of_kind(&events, "agent.tool_result");
    for (tool_use, result) in uses.iter().zip(&results) {
        assert_eq!(result["tool_use_id"], tool_use["id"]);
        assert_eq!(result["is_error"], false, "{result}");
    }
    assert!(event::text(results[1]).contains("hello from the tool"));
    let file = f
        .workspaces()
        .join("sessions")
        .join(&s.id)
        .join("notes/a.txt");
    assert_eq!(
        std::fs::read_to_string(&file).expect("file"),
        "hello from the tool"
    );

    // The model saw the built-in tools and, later, the results.
    let requests = f.models.requests();
    let names: Vec<_> = requests[0]
        .tools
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["bash", "read", "write", "edit", "glob", "grep"]);
    let last = requests[2].messages.last().expect("messages");
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], uses[1]["id"]);
    assert_eq!(requests[2].messages.len(), 5);

    // Forgetting a deleted session ends its streams and removes its events
    // and workspace.
    let mut stream = f.stream(&s.id).await;
    f.store.remove_session(&s.id);
    f.engine.forget(&s.id).await.expect("forget");
    assert_eq!(event::kind(&next(&mut stream).await), "session.deleted");
    assert!(stream.next().await.is_none());
    assert!(!f.workspaces().join("sessions").join(&s.id).exists());
    assert!(f
        .send(&s.id, vec![message("hi")])
        .await
        .unwrap_err()
        .is_not_found());
    assert!(f.history(&s.id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_packages_are_installed_once_before_the_first_tool_call() {
    crate::sandbox::local::test_support::ensure_bubblewrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let models = Models::new();
    // A fake pip: records each run and leaves the package as a file.
    let fake = |manager: &str| {
        vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!("echo {manager} >> \"$0/../runs\" && touch \"$0/$1\""),
        ]
    };
    let options = EngineOptions {
        sandboxes: Arc::new(LocalSandboxes {
            root: dir.path().join("workspaces"),
            installers: Installers {
                pip: fake("pip"),
                npm: fake("npm"),
            },
            ..LocalSandboxes::new(dir.path().join("workspaces"))
        }),
        models: models.resolver(vec![
            tool("bash", json!({"command": "echo ran"})),
            text("ok"),
        ]),
        ..EngineOptions::default()
    };
    let f = Fixture::with(dir, models, options);
    let env = environment(json!({"pip": ["fakepkg"]}));
    f.store.put_environment(env.clone());
    let env_dir = f.workspaces().join("environments").join(&env.id);
    for _ in 0..2 {
        let s = session_record(&env.id, toolset(&[]));
        f.store.put_session(s.clone());
        let events = f.exchange(&s.id, vec![message("go")]).await;
        let result = of_kind(&events, "agent.tool_result")[0];
        assert_eq!(result["is_error"], false, "{result}");
        assert!(env_dir.join("pip/fakepkg").exists());
    }
    let runs = std::fs::read_to_string(env_dir.join("runs")).expect("runs");
    assert_eq!(runs, "pip\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn always_ask_waits_for_a_confirmation() {
    let f = Fixture::new(vec![
        tool("bash", json!({"command": "echo allowed-run"})),
        text("ran it"),
        tool("bash", json!({"command": "echo never"})),
        text("ok, not running it"),
    ]);
    let s = f.session(toolset(&[("bash", "always_ask")]));

    let events = f.exchange(&s.id, vec![message("run it")]).await;
    let tool_use = of_kind(&events, "agent.tool_use")[0].clone();
    assert_eq!(tool_use["evaluated_permission"], "ask");
    assert_eq!(tool_use["evaluation"], json!({"type": "always_ask"}));
    let idle = events.last().expect("idle");
    assert_eq!(
        idle["stop_reason"],
        json!({"type": "requires_action", "event_ids": [tool_use["id"]]})
    );
    assert!(of_kind(&events, "agent.tool_result").is_empty());
    assert_eq!(f.record(&s.id).await.status, "idle");

    // Only a tool use that waits can be confirmed.
    assert_invalid(
        f.send(
            &s.id,
            vec![json!({"type": "user.tool_confirmation", "tool_use_id": "sevt_nope", "result": "allow"})],
        )
        .await,
        "events[0].tool_use_id",
    );
    assert_invalid(
        f.send(
            &s.id,
            vec![json!({"type": "user.tool_confirmation", "tool_use_id": tool_use["id"], "result": "allow", "deny_message": "x"})],
        )
        .await,
        "events[0].deny_message",
    );

    let confirm =
        json!({"type": "user.tool_confirmation", "tool_use_id": tool_use["id"], "result": "allow"});
    let events = f.exchange(&s.id, vec![confirm.clone()]).await;
    assert_eq!(
        kinds(&events),
        [
            "user.tool_confirmation",
            "session.status_running",
            "agent.tool_result",
            "span.model_request_start",
            "span.model_request_end",
            "agent.message",
            "session.status_idle",
        ]
    );
    let result = of_kind(&events, "agent.tool_result")[0];
    assert_eq!(result["is_error"], false);
    assert!(event::text(result).contains("allowed-run"));
    assert_eq!(event::stop_reason(events.last().unwrap()), Some("end_turn"));
    // Confirming twice is refused.
    assert_invalid(
        f.send(&s.id, vec![confirm]).await,
        "not a tool use awaiting confirmation",
    );

    // Denied: an error result with the user's message, and the turn goes on.
    let events = f.exchange(&s.id, vec![message("and this")]).await;
    let tool_use = of_kind(&events, "agent.tool_use")[0].clone();
    let events = f
        .exchange(
            &s.id,
            vec![json!({"type": "user.tool_confirmation", "tool_use_id": tool_use["id"], "result": "deny", "deny_message": "not today"})],
        )
        .await;
    let result = of_kind(&events, "agent.tool_result")[0];
    assert_eq!(result["is_error"], true);
    assert_eq!(result["tool_use_id"], tool_use["id"]);
    assert_eq!(event::text(result), "not today");
    assert_eq!(event::stop_reason(events.last().unwrap()), Some("end_turn"));
    let last_request = f.models.requests().pop().expect("request");
    let results = &last_request.messages.last().unwrap()["content"];
    assert_eq!(results[0]["is_error"], true);
    assert_eq!(results[0]["content"][0]["text"], "not today");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_tools_round_trip_through_the_user() {
    let f = Fixture::new(vec![
        Turn::Reply(tool_uses(&[
            ("lookup", json!({"q": "a"})),
            ("lookup", json!({"q": "b"})),
        ])),
        text("the answers are 1 and 2"),
    ]);
    let schema = json!({"type": "object", "properties": {"q": {"type": "string"}}});
    let custom = Tool::Custom(CustomTool {
        name: "lookup".to_owned(),
        description: "Looks things up.".to_owned(),
        input_schema: schema.as_object().cloned().expect("schema"),
    });
    let s = f.session(vec![custom]);
    let events = f.exchange(&s.id, vec![message("look up a and b")]).await;
    let uses = of_kind(&events, "agent.custom_tool_use");
    assert_eq!(uses.len(), 2);
    assert_eq!(uses[0]["name"], "lookup");
    assert_eq!(uses[0]["input"], json!({"q": "a"}));
    let ids: Vec<Value> = uses.iter().map(|u| u["id"].clone()).collect();
    assert_eq!(
        events.last().unwrap()["stop_reason"],
        json!({"type": "requires_action", "event_ids": ids})
    );
    let request = &f.models.requests()[0];
    assert_eq!(
        request.tools,
        vec![json!({
            "name": "lookup",
            "description": "Looks things up.",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        })]
    );

    assert_invalid(
        f.send(
            &s.id,
            vec![json!({"type": "user.custom_tool_result", "custom_tool_use_id": "sevt_other"})],
        )
        .await,
        "events[0].custom_tool_use_id",
    );
    // Answering one of two: still waiting, for the other.
    let events = f
        .exchange(
            &s.id,
            vec![json!({"type": "user.custom_tool_result", "custom_tool_use_id": ids[0], "content": [{"type": "text", "text": "1"}]})],
        )
        .await;
    assert_eq!(
        kinds(&events),
        ["user.custom_tool_result", "session.status_idle"]
    );
    assert_eq!(
        events[1]["stop_reason"],
        json!({"type": "requires_action", "event_ids": [ids[1]]})
    );
    let events = f
        .exchange(
            &s.id,
            vec![json!({"type": "user.custom_tool_result", "custom_tool_use_id": ids[1], "content": [{"type": "text", "text": "2"}], "is_error": false})],
        )
        .await;
    assert_eq!(event::stop_reason(events.last().unwrap()), Some("end_turn"));
    assert_eq!(
        event::text(of_kind(&events, "agent.message")[0]),
        "the answers are 1 and 2"
    );
    let request = f.models.requests().pop().expect("request");
    let results = &request.messages.last().unwrap()["content"];
    assert_eq!(
        *results,
        json!([
            {"type": "tool_result", "tool_use_id": ids[0], "content": [{"type": "text", "text": "1"}], "is_error": false},
            {"type": "tool_result", "tool_use_id": ids[1], "content": [{"type": "text", "text": "2"}], "is_error": false},
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_without_a_workspace_root_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = Models::new();
    let options = EngineOptions {
        models: models.resolver(vec![tool("bash", json!({"command": "true"}))]),
        ..EngineOptions::default()
    };
    let f = Fixture::with(dir, models, options);
    let s = f.session(toolset(&[]));
    let events = f.exchange(&s.id, vec![message("run")]).await;
    let result = of_kind(&events, "agent.tool_result")[0];
    assert_eq!(result["is_error"], true);
    let error = &of_kind(&events, "session.error")[0]["error"];
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("no workspace directory"));
    assert_eq!(
        event::stop_reason(events.last().unwrap()),
        Some("retries_exhausted")
    );
}
