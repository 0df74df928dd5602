//! Tests of the agent rules, through the runtime.

use serde_json::json;

use crate::api::limits::TOOLSET_TOOLS;
use crate::api::{ErrorKind, ListQuery};
use crate::runtime::local::tests::{agent_body, assert_kind, environment, fixture};
use crate::runtime::Runtime;

#[tokio::test]
async fn agent_create_resolves_fields() {
    let f = fixture();
    let agent =
        f.rt.create_agent(json!({
            "name": "coder",
            "model": {"id": "claude-opus-4-7", "effort": "high"},
            "skills": [{"type": "anthropic", "skill_id": "xlsx"}],
            "mcp_servers": [{"name": "docs", "type": "url", "url": "https://mcp.example.com"}],
            "tools": [
                {
                    "type": "agent_toolset_20260401",
                    "default_config": {"permission_policy": {"type": "always_ask"}},
                    "configs": [{"name": "bash", "enabled": false}],
                },
                {"type": "mcp_toolset", "mcp_server_name": "docs", "configs": [{"name": "search"}]},
                {
                    "type": "custom",
                    "name": "lookup",
                    "description": "Look something up",
                    "input_schema": {"type": "object", "properties": {}},
                },
            ],
            "metadata": {"team": "infra"},
        }))
        .await
        .expect("create");
    assert!(agent.id.starts_with("agent_01"));
    assert_eq!(agent.version, 1);
    assert_eq!(agent.kind, "agent");
    // The typed record, as the API's JSON.
    let wire = serde_json::to_value(&agent).expect("serialize");
    assert_eq!(
        wire["model"],
        json!({"id": "claude-opus-4-7", "effort": {"type": "high"}, "speed": "standard"})
    );
    assert_eq!(
        wire["execution_identity"],
        json!({"type": "service_account"})
    );
    assert_eq!(wire["skills"][0]["version"], "latest");

    let toolset = &wire["tools"][0];
    let configs = toolset["configs"].as_array().expect("configs");
    let names: Vec<&str> = configs.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, TOOLSET_TOOLS);
    assert_eq!(
        configs[0],
        json!({"name": "bash", "type": "bash", "enabled": false, "permission_policy": {"type": "always_ask"}})
    );
    assert_eq!(configs[1]["enabled"], true);
    assert_eq!(
        configs[1]["permission_policy"],
        json!({"type": "always_ask"})
    );
    assert_eq!(
        toolset["default_config"],
        json!({"enabled": true, "permission_policy": {"type": "always_ask"}})
    );
    let mcp = &wire["tools"][1];
    assert_eq!(
        mcp["configs"][0],
        json!({"name": "search", "enabled": true, "permission_policy": {"type": "always_ask"}})
    );
    assert_eq!(
        mcp["default_config"]["permission_policy"],
        json!({"type": "always_ask"})
    );
    assert_eq!(wire["tools"][2]["name"], "lookup");

    // Required response fields are all there.
    for key in [
        "id",
        "created_at",
        "execution_identity",
        "mcp_servers",
        "metadata",
        "model",
        "name",
        "skills",
        "tools",
        "type",
        "updated_at",
        "version",
    ] {
        assert!(wire.get(key).is_some(), "missing {key}");
    }

    // Resolving a resolved agent changes nothing.
    let again =
        f.rt.update_agent(
            &agent.id,
            json!({"tools": agent.tools, "model": agent.model, "skills": agent.skills}),
        )
        .await
        .expect("update");
    assert_eq!(again, agent);
}

#[tokio::test]
async fn agent_versions_and_updates() {
    let f = fixture();
    let rt = &f.rt;
    let v1 = rt
        .create_agent(json!({"name": "a", "model": "claude-sonnet-4-6", "system": "one", "metadata": {"k": "v", "x": "y"}}))
        .await
        .expect("create");
    assert_eq!(rt.retrieve_agent(&v1.id, None).await.expect("retrieve"), v1);

    let v2 = rt
        .update_agent(
            &v1.id,
            json!({"version": 1, "system": "two", "metadata": {"x": null, "z": "w"}}),
        )
        .await
        .expect("update");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.system.as_deref(), Some("two"));
    assert_eq!(v2.name, "a");
    assert_eq!(v2.created_at, v1.created_at);
    let metadata: Vec<(&str, &str)> = v2
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(metadata, [("k", "v"), ("z", "w")]);

    // A no-op update keeps the version.
    let same = rt
        .update_agent(&v1.id, json!({"system": "two", "name": "a"}))
        .await
        .expect("no-op update");
    assert_eq!(same, v2);

    let conflict = assert_kind(
        rt.update_agent(&v1.id, json!({"version": 1, "system": "three"}))
            .await,
        ErrorKind::Conflict,
    );
    assert!(
        conflict.message.contains("version mismatch"),
        "{}",
        conflict.message
    );

    assert_eq!(rt.retrieve_agent(&v1.id, Some(1)).await.expect("v1"), v1);
    assert_eq!(rt.retrieve_agent(&v1.id, Some(2)).await.expect("v2"), v2);
    assert_kind(
        rt.retrieve_agent(&v1.id, Some(3)).await,
        ErrorKind::NotFound,
    );

    let versions = rt
        .list_agent_versions(&v1.id, &ListQuery::default())
        .await
        .expect("versions");
    let numbers: Vec<u64> = versions.data.iter().map(|a| a.version).collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(versions.next_page, None);

    // Null clears what may be cleared, but not the name or model.
    let v3 = rt
        .update_agent(&v1.id, json!({"system": null, "metadata": {"k": null}}))
        .await
        .expect("clear");
    assert_eq!((v3.version, v3.system, v3.metadata.len()), (3, None, 1));
    assert_kind(
        rt.update_agent(&v1.id, json!({"name": null})).await,
        ErrorKind::InvalidRequest,
    );
    assert_kind(
        rt.update_agent(&v1.id, json!({"model": null})).await,
        ErrorKind::InvalidRequest,
    );
    assert_kind(
        rt.update_agent(&v1.id, json!({"name": ""})).await,
        ErrorKind::InvalidRequest,
    );
    assert_kind(
        rt.update_agent("agent_missing", json!({})).await,
        ErrorKind::NotFound,
    );
}

#[tokio::test]
async fn archived_agents_are_frozen() {
    let f = fixture();
    let rt = &f.rt;
    let agent = rt.create_agent(agent_body("a")).await.expect("create");
    let env = environment(rt, "env").await;

    let archived = rt.archive_agent(&agent.id).await.expect("archive");
    assert!(archived.archived_at.is_some());
    assert_eq!(archived.version, 1);
    // Archiving again is idempotent: same object, same timestamp.
    assert_eq!(
        rt.archive_agent(&agent.id).await.expect("archive again"),
        archived
    );
    assert!(rt
        .retrieve_agent(&agent.id, Some(1))
        .await
        .expect("v1")
        .archived_at
        .is_some());

    let e = assert_kind(
        rt.update_agent(&agent.id, json!({"system": "x"})).await,
        ErrorKind::InvalidRequest,
    );
    assert!(e.message.contains("archived"), "{}", e.message);
    assert_kind(
        rt.create_session(json!({"agent": agent.id, "environment_id": env.id}))
            .await,
        ErrorKind::InvalidRequest,
    );

    assert!(rt
        .list_agents(&ListQuery::default())
        .await
        .expect("list")
        .data
        .is_empty());
    let with_archived = ListQuery {
        include_archived: true,
        ..ListQuery::default()
    };
    assert_eq!(
        rt.list_agents(&with_archived)
            .await
            .expect("list")
            .data
            .len(),
        1
    );
}
