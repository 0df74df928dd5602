//! Tests of the multiagent rules, through the runtime.

use serde_json::json;

use crate::api::ErrorKind;
use crate::runtime::local::tests::{agent_body, assert_kind, environment, fixture};
use crate::runtime::Runtime;

#[tokio::test]
async fn multiagent_references_are_pinned_and_expanded() {
    let f = fixture();
    let rt = &f.rt;
    let helper = rt.create_agent(agent_body("helper")).await.expect("helper");
    let lead = rt
        .create_agent(json!({
            "name": "lead",
            "model": "claude-opus-4-7",
            "multiagent": {"type": "coordinator", "agents": [helper.id, {"type": "self"}]},
        }))
        .await
        .expect("lead");
    // The typed team, as the API's JSON.
    let team =
        serde_json::to_value(lead.multiagent.as_ref().expect("multiagent")).expect("serialize");
    let agents = &team["agents"];
    assert_eq!(
        agents[0],
        json!({"type": "agent", "id": helper.id, "version": 1})
    );
    assert_eq!(
        agents[1],
        json!({"type": "agent", "id": lead.id, "version": 1})
    );

    // Depth 1: a multiagent agent cannot be referenced.
    assert_kind(
        rt.create_agent(json!({
            "name": "boss", "model": "m",
            "multiagent": {"type": "coordinator", "agents": [lead.id]},
        }))
        .await,
        ErrorKind::InvalidRequest,
    );

    let env = environment(rt, "env").await;
    let session = rt
        .create_session(json!({"agent": lead.id, "environment_id": env.id}))
        .await
        .expect("session");
    let snapshot = serde_json::to_value(&session.agent).expect("serialize");
    let expanded = &snapshot["multiagent"]["agents"][0];
    assert_eq!(expanded["name"], "helper");
    assert_eq!(expanded["tools"], json!([]));
    assert!(expanded.get("multiagent").is_none());

    let modern = rt
        .create_agent(json!({
            "name": "modern", "model": "m",
            "multiagent": {"type": "multiagent_20261001", "subagents": {"type": "enabled", "predefined_agents": [helper.id]}},
        }))
        .await
        .expect("modern");
    let m = serde_json::to_value(modern.multiagent.expect("multiagent")).expect("serialize");
    assert_eq!(m["advisor"], json!({"type": "disabled"}));
    assert_eq!(m["workflows"]["inline_agents"], json!({"type": "enabled"}));
    assert_eq!(m["subagents"]["predefined_agents"][0]["version"], 1);
}
