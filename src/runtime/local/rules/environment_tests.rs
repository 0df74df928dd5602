//! Tests of the environment rules, through the runtime.

use serde_json::json;

use super::environment::default_config;
use crate::api::limits::PACKAGE_MANAGERS;
use crate::api::{Deleted, ErrorKind};
use crate::runtime::local::tests::{assert_kind, environment, fixture};
use crate::runtime::Runtime;

#[tokio::test]
async fn environment_config_is_resolved() {
    let f = fixture();
    let rt = &f.rt;
    let plain = environment(rt, "plain").await;
    assert_eq!(plain.config, default_config());
    assert_eq!(plain.kind, "environment");

    let env = rt
        .create_environment(json!({
            "name": "limited",
            "config": {
                "type": "cloud",
                "networking": {"type": "limited", "allow_package_managers": true},
                "packages": {"pip": ["requests"]},
            },
            "scope": "organization",
        }))
        .await
        .expect("create");
    // The typed config, as the API's JSON.
    let config = serde_json::to_value(&env.config).expect("serialize");
    let packages = &config["packages"];
    for manager in PACKAGE_MANAGERS {
        assert!(packages[manager].is_array(), "{manager} missing");
    }
    assert_eq!(packages["pip"], json!(["requests"]));
    assert_eq!(packages["type"], "packages");
    assert_eq!(
        config["networking"],
        json!({"type": "limited", "allow_mcp_servers": false, "allow_package_managers": true, "allowed_hosts": []})
    );
    assert_eq!(env.scope.as_deref(), Some("organization"));

    // Packages under limited networking need package managers allowed.
    assert_kind(
        rt.create_environment(json!({
            "name": "bad",
            "config": {"type": "cloud", "networking": {"type": "limited"}, "packages": {"npm": ["x"]}},
        }))
        .await,
        ErrorKind::InvalidRequest,
    );

    // Update: omitted config fields persist, the type cannot change.
    let updated = rt
        .update_environment(
            &env.id,
            json!({"config": {"type": "cloud", "packages": {"npm": ["left-pad"]}}}),
        )
        .await
        .expect("update");
    let updated_config = serde_json::to_value(&updated.config).expect("serialize");
    assert_eq!(updated_config["packages"]["pip"], json!(["requests"]));
    assert_eq!(updated_config["packages"]["npm"], json!(["left-pad"]));
    assert_eq!(updated_config["networking"], config["networking"]);
    assert_kind(
        rt.update_environment(&env.id, json!({"config": {"type": "self_hosted"}}))
            .await,
        ErrorKind::InvalidRequest,
    );
}

#[tokio::test]
async fn environment_names_are_unique() {
    let f = fixture();
    let rt = &f.rt;
    let first = environment(rt, "prod").await;
    let other = environment(rt, "staging").await;
    assert_kind(
        rt.create_environment(json!({"name": "prod"})).await,
        ErrorKind::Conflict,
    );
    assert_kind(
        rt.update_environment(&other.id, json!({"name": "prod"}))
            .await,
        ErrorKind::Conflict,
    );
    // Renaming to its own name is fine; archived names are free again.
    rt.update_environment(&first.id, json!({"name": "prod"}))
        .await
        .expect("same name");
    rt.archive_environment(&first.id).await.expect("archive");
    environment(rt, "prod").await;
}

#[tokio::test]
async fn environment_update_archive_delete() {
    let f = fixture();
    let rt = &f.rt;
    let env = rt
        .create_environment(
            json!({"name": "e", "description": "d", "metadata": {"a": "1", "b": "2"}}),
        )
        .await
        .expect("create");
    let same = rt
        .update_environment(&env.id, json!({}))
        .await
        .expect("no-op");
    assert_eq!(same, env);
    let updated = rt
        .update_environment(
            &env.id,
            json!({"metadata": {"a": "", "b": null, "c": "3"}, "description": null}),
        )
        .await
        .expect("update");
    assert_eq!(updated.metadata.keys().collect::<Vec<_>>(), ["c"]);
    assert_eq!(updated.description, None);

    let archived = rt.archive_environment(&env.id).await.expect("archive");
    assert!(archived.archived_at.is_some());
    let e = assert_kind(
        rt.update_environment(&env.id, json!({"description": "x"}))
            .await,
        ErrorKind::InvalidRequest,
    );
    assert!(e.message.contains("is archived"), "{}", e.message);

    let deleted = rt.delete_environment(&env.id).await.expect("delete");
    assert_eq!(
        deleted,
        Deleted {
            id: env.id.clone(),
            kind: "environment_deleted".into()
        }
    );
    assert_kind(rt.retrieve_environment(&env.id).await, ErrorKind::NotFound);
    assert_kind(rt.delete_environment(&env.id).await, ErrorKind::NotFound);
}
