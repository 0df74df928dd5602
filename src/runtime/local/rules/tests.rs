//! Bad request bodies of every object are refused with an
//! `invalid_request_error`, never a panic; records of the previous version
//! resolve unchanged.

use serde_json::{json, Map, Value};

use crate::api::ErrorKind;
use crate::runtime::local::store::{
    version_key, AGENTS_TREE, ENVIRONMENTS_TREE, SESSIONS_TREE, VERSIONS_TREE,
};
use crate::runtime::local::tests::{agent_body, assert_kind, environment, fixture};
use crate::runtime::Runtime;

#[tokio::test]
async fn bad_bodies_are_rejected_not_panicked_on() {
    let f = fixture();
    let rt = &f.rt;
    let long_key = "k".repeat(65);
    let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let bad_agents = [
        json!(null),
        json!([1, 2]),
        json!({"name": "a"}),
        json!({"model": "m"}),
        json!({"name": "", "model": "m"}),
        json!({"name": 7, "model": "m"}),
        json!({"name": "a", "model": 3}),
        json!({"name": "a", "model": {"speed": "fast"}}),
        json!({"name": "a", "model": {"id": "m", "effort": "extreme"}}),
        json!({"name": "a", "model": "m", "metadata": many}),
        json!({"name": "a", "model": "m", "metadata": {long_key: "v"}}),
        json!({"name": "a", "model": "m", "metadata": {"k": "v".repeat(513)}}),
        json!({"name": "a", "model": "m", "metadata": {"k": 1}}),
        json!({"name": "a", "model": "m", "tools": "bash"}),
        json!({"name": "a", "model": "m", "tools": vec![json!({"type": "custom", "name": "t", "description": "", "input_schema": {"type": "object"}}); 257]}),
        json!({"name": "a", "model": "m", "tools": [{"type": "agent_toolset_20260401", "configs": [{"name": "rm"}]}]}),
        json!({"name": "a", "model": "m", "tools": [{"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": "yes"}]}]}),
        json!({"name": "a", "model": "m", "tools": [{"type": "nope"}]}),
        json!({"name": "a", "model": "m", "mcp_servers": [
            {"name": "x", "type": "url", "url": "u"}, {"name": "x", "type": "url", "url": "v"}]}),
        json!({"name": "a", "model": "m", "mcp_servers": [{"name": "x", "type": "url", "url": "u"}]}),
        json!({"name": "a", "model": "m", "tools": [{"type": "mcp_toolset", "mcp_server_name": "ghost"}]}),
        json!({"name": "a", "model": "m", "skills": [{"type": "anthropic"}]}),
        json!({"name": "a", "model": "m", "execution_identity": {"type": "aws_role"}}),
        json!({"name": "a", "model": "m", "unexpected": true}),
    ];
    for body in bad_agents {
        let e = assert_kind(
            rt.create_agent(body.clone()).await,
            ErrorKind::InvalidRequest,
        );
        assert!(!e.message.is_empty(), "{body}");
    }
    let e = assert_kind(
        rt.create_agent(json!({"name": "a", "model": "m", "tools": [{"type": "custom", "name": "t", "description": 5}]}))
            .await,
        ErrorKind::InvalidRequest,
    );
    assert!(e.message.contains("tools[0].description"), "{}", e.message);

    let agent = rt.create_agent(agent_body("ok")).await.expect("create");
    for body in [
        json!({"version": "1"}),
        json!({"version": 0}),
        json!({"metadata": {"k": 5}}),
        json!("x"),
    ] {
        assert_kind(
            rt.update_agent(&agent.id, body).await,
            ErrorKind::InvalidRequest,
        );
    }
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "e", "config": {"type": "moon"}}),
        json!({"name": "e", "config": {"type": "cloud", "packages": {"pip": "requests"}}}),
        json!({"name": "e", "config": {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": [1]}}}),
        json!({"name": "e", "metadata": []}),
    ] {
        assert_kind(rt.create_environment(body).await, ErrorKind::InvalidRequest);
    }
    let env = environment(rt, "env").await;
    for body in [
        json!({}),
        json!({"agent": agent.id}),
        json!({"agent": 5, "environment_id": env.id}),
        json!({"agent": {"type": "robot", "id": agent.id}, "environment_id": env.id}),
        json!({"agent": agent.id, "environment_id": env.id, "vault_ids": [3]}),
        json!({"agent": agent.id, "environment_id": env.id, "budget": {"type": "limit"}}),
    ] {
        assert_kind(rt.create_session(body).await, ErrorKind::InvalidRequest);
    }
}

/// The records the previous version stored (`api/testdata`), by name.
fn stored(name: &str) -> Value {
    let all: Value =
        serde_json::from_str(include_str!("../../../api/testdata/stored_records.json"))
            .expect("stored records");
    all[name].clone()
}

/// Records written by the version before the records were typed are read
/// as they were written, and resolving what they hold again gives the same
/// records: an update with their own fields makes no new version, and a
/// session made as theirs were gets the same agent snapshot and resources.
#[tokio::test]
async fn records_of_the_previous_version_resolve_unchanged() {
    let f = fixture();
    let rt = &f.rt;
    let tree = |name: &str| f.db.open_tree(name).expect("tree");
    let (agents, versions) = (tree(AGENTS_TREE), tree(VERSIONS_TREE));
    for name in ["helper", "full", "modern"] {
        let agent = stored(name);
        let id = agent["id"].as_str().expect("id");
        let bytes = serde_json::to_vec(&agent).expect("bytes");
        agents.insert(id, bytes.as_slice()).expect("insert");
        versions.insert(version_key(id, 1), bytes).expect("insert");
    }
    for name in ["plain_env", "env", "selfhosted"] {
        let environment = stored(name);
        let id = environment["id"].as_str().expect("id");
        let bytes = serde_json::to_vec(&environment).expect("bytes");
        tree(ENVIRONMENTS_TREE).insert(id, bytes).expect("insert");
    }
    let sessions = tree(SESSIONS_TREE);
    for name in ["s1", "s2", "s3", "s4"] {
        let session = stored(name);
        let id = session["id"].as_str().expect("id");
        sessions
            .insert(id, serde_json::to_vec(&session).expect("bytes"))
            .expect("insert");
        let read = rt.retrieve_session(id).await.expect("session");
        assert_eq!(
            serde_json::to_value(read).expect("encode"),
            session,
            "{name}"
        );
    }

    let id = |name: &str| stored(name)["id"].as_str().expect("id").to_owned();
    for name in ["helper", "full", "modern"] {
        let agent = stored(name);
        let read = rt.retrieve_agent(&id(name), None).await.expect("agent");
        assert_eq!(
            serde_json::to_value(&read).expect("encode"),
            agent,
            "{name}"
        );
        let mut body = json!({});
        for key in [
            "name",
            "description",
            "system",
            "model",
            "execution_identity",
            "mcp_servers",
            "skills",
            "tools",
            "metadata",
        ] {
            body[key] = agent[key].clone();
        }
        let again = rt.update_agent(&id(name), body).await.expect("update");
        assert_eq!(again, read, "{name}");
    }
    let modern = stored("modern");
    let again = rt
        .update_agent(&id("modern"), json!({"multiagent": modern["multiagent"]}))
        .await
        .expect("update team");
    assert_eq!(serde_json::to_value(again).expect("encode"), modern);

    for name in ["plain_env", "env", "selfhosted"] {
        let environment = stored(name);
        let read = rt
            .retrieve_environment(&id(name))
            .await
            .expect("environment");
        assert_eq!(
            serde_json::to_value(&read).expect("encode"),
            environment,
            "{name}"
        );
        let again = rt
            .update_environment(&id(name), json!({"config": environment["config"]}))
            .await
            .expect("update");
        assert_eq!(again, read, "{name}");
    }

    // The sessions again, from the bodies that made them.
    let s1 = rt
        .create_session(json!({
            "agent": {"type": "agent", "id": id("full"), "version": 1}, "environment_id": id("env"),
            "title": "Resources", "metadata": {"run": "1"}, "vault_ids": ["vlt_01"],
            "resources": [
                {"type": "github_repository", "url": "https://github.com/example/app.git", "authorization_token": "ghp_x", "checkout": {"type": "branch", "name": "main"}},
                {"type": "github_repository", "url": "https://github.com/example/lib", "mount_path": "/src/lib", "checkout": {"type": "commit", "sha": "abc123"}},
                {"type": "file", "file_id": "file_01xyz"},
                {"type": "memory_store", "memory_store_id": "memstore_01", "access": "read_only", "instructions": "Remember things."},
                {"type": "memory_store", "memory_store_id": "memstore_02"},
            ],
        }))
        .await
        .expect("s1");
    let old = stored("s1");
    let new = serde_json::to_value(&s1).expect("encode");
    assert_eq!(new["agent"], old["agent"]);
    let volatile = ["id", "created_at", "updated_at"];
    let without = |resources: &Value| -> Value {
        let mut resources = resources.clone();
        for r in resources.as_array_mut().expect("resources") {
            for key in volatile {
                if let Some(map) = r.as_object_mut() {
                    map.remove(key);
                }
            }
        }
        resources
    };
    assert_eq!(without(&new["resources"]), without(&old["resources"]));
    for key in [
        "metadata",
        "vault_ids",
        "title",
        "stats",
        "usage",
        "status",
        "outcome_evaluations",
    ] {
        assert_eq!(new[key], old[key], "{key}");
    }

    let s2 = rt
        .create_session(json!({"agent": id("modern"), "environment_id": id("plain_env")}))
        .await
        .expect("s2");
    assert_eq!(
        serde_json::to_value(&s2.agent).expect("encode"),
        stored("s2")["agent"]
    );
    let s3 = rt
        .create_session(json!({
            "agent": {"type": "agent_with_overrides", "id": id("helper"), "system": "Overridden",
                      "model": {"id": "claude-sonnet-4-6", "effort": {"type": "low"}},
                      "tools": [{"type": "agent_toolset_20260401"}]},
            "environment_id": id("plain_env"),
        }))
        .await
        .expect("s3");
    assert_eq!(
        serde_json::to_value(&s3.agent).expect("encode"),
        stored("s3")["agent"]
    );
}
