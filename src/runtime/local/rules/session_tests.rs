//! Tests of the session rules, through the runtime.

use serde_json::{json, Value};

use crate::api::{ErrorKind, ListQuery};
use crate::runtime::local::tests::{agent_body, assert_kind, environment, fixture};
use crate::runtime::Runtime;

#[tokio::test]
async fn sessions_snapshot_the_agent() {
    let f = fixture();
    let rt = &f.rt;
    let agent = rt.create_agent(agent_body("a")).await.expect("create");
    rt.update_agent(&agent.id, json!({"system": "newer"}))
        .await
        .expect("update");
    let env = environment(rt, "env").await;

    let pinned = rt
        .create_session(json!({
            "agent": {"type": "agent", "id": agent.id, "version": 1},
            "environment_id": env.id,
            "title": "t",
            "metadata": {"k": "v"},
        }))
        .await
        .expect("pinned session");
    assert!(pinned.id.starts_with("sesn_01"));
    assert_eq!(pinned.agent_id(), Some(agent.id.as_str()));
    assert_eq!(pinned.agent_version(), Some(1));
    // The typed snapshot, as the API's JSON.
    let snapshot = serde_json::to_value(&pinned.agent).expect("serialize");
    assert_eq!(snapshot["system"], Value::Null);
    assert_eq!(snapshot["type"], "agent");
    assert!(snapshot.get("metadata").is_none());
    assert!(snapshot.get("created_at").is_none());
    assert_eq!(pinned.status, "idle");
    assert_eq!(pinned.kind, "session");
    assert!(pinned.vault_ids.is_empty() && pinned.resources.is_empty());

    let latest = rt
        .create_session(json!({"agent": agent.id, "environment_id": env.id}))
        .await
        .expect("latest session");
    assert_eq!(latest.agent_version(), Some(2));
    assert_eq!(latest.agent.system.as_deref(), Some("newer"));

    // Missing agent → 404, missing version → 400, archived environment → 400.
    assert_kind(
        rt.create_session(json!({"agent": "agent_01nope", "environment_id": env.id}))
            .await,
        ErrorKind::NotFound,
    );
    assert_kind(
        rt.create_session(json!({"agent": {"type": "agent", "id": agent.id, "version": 9}, "environment_id": env.id}))
            .await,
        ErrorKind::InvalidRequest,
    );
    assert_kind(
        rt.create_session(json!({"agent": agent.id, "environment_id": "env_01nope"}))
            .await,
        ErrorKind::NotFound,
    );
    rt.archive_environment(&env.id).await.expect("archive env");
    assert_kind(
        rt.create_session(json!({"agent": agent.id, "environment_id": env.id}))
            .await,
        ErrorKind::InvalidRequest,
    );

    // Update: title and metadata only.
    let updated = rt
        .update_session(
            &pinned.id,
            json!({"title": null, "metadata": {"k": null, "n": "1"}}),
        )
        .await
        .expect("update session");
    assert_eq!(updated.title, None);
    assert_eq!(updated.metadata.keys().collect::<Vec<_>>(), ["n"]);
    assert_kind(
        rt.update_session(&pinned.id, json!({"vault_ids": []}))
            .await,
        ErrorKind::InvalidRequest,
    );

    rt.archive_session(&pinned.id)
        .await
        .expect("archive session");
    assert_kind(
        rt.update_session(&pinned.id, json!({"title": "x"})).await,
        ErrorKind::InvalidRequest,
    );
    let listed = rt.list_sessions(&ListQuery::default()).await.expect("list");
    assert_eq!(listed.data.len(), 1);
    assert_eq!(listed.data[0].id, latest.id);

    let deleted = rt.delete_session(&pinned.id).await.expect("delete");
    assert_eq!(deleted.kind, "session_deleted");
    assert_kind(rt.retrieve_session(&pinned.id).await, ErrorKind::NotFound);
}
