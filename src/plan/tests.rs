//! The plan's decisions against a recorded state and the live objects of the
//! local runtime: one temporary state per test.

use serde_json::json;

use super::diff::pointer_to_path;
use super::refresh::LIST_REFRESH_MIN;
use super::test_fixture::{addr, change, Fixture};
use super::*;
use crate::runtime::Runtime;
use crate::state::Intent;

const MANIFEST: &str = r#"version: 1
name: unit
environments:
  data:
    config: { type: cloud }
agents:
  analyst:
    model: claude-sonnet-4-6
    system: You are an analyst.
  helper:
    model: claude-haiku-4-5
    system: "Ask {{ agent.analyst.id }} for numbers."
sessions:
  smoke:
    agent: analyst
    environment: data
  pinned:
    agent: { name: analyst, version: 1 }
    environment: data
"#;

fn actions(plan: &Plan) -> Vec<(String, Action)> {
    plan.changes
        .iter()
        .map(|c| (c.address.to_string(), c.action))
        .collect()
}

fn addrs(list: &[&str]) -> Vec<Address> {
    list.iter().map(|a| addr(a)).collect()
}

fn refresh() -> PlanOptions {
    PlanOptions {
        refresh: true,
        parallelism: 4,
        ..Default::default()
    }
}

#[test]
fn pointers_become_dotted_paths() {
    assert_eq!(pointer_to_path("/metadata/team"), "metadata.team");
    assert_eq!(pointer_to_path("/tools/0/name"), "tools[0].name");
}

#[tokio::test]
async fn a_new_manifest_creates_everything_after_its_dependencies() {
    let fx = Fixture::new();
    let m = fx.manifest(MANIFEST);
    let plan = fx.plan(Some(&m), PlanOptions::default()).await;
    assert!(plan
        .changes
        .iter()
        .all(|c| c.action == Action::Create && c.reasons == [Reason::NotInState]));
    assert_eq!(
        plan.summary,
        Summary {
            add: 5,
            ..Default::default()
        }
    );
    assert_eq!(
        change(&plan, "session.smoke").after,
        addrs(&["environment.data", "agent.analyst"])
    );
    let helper = change(&plan, "agent.helper");
    assert_eq!(helper.after, addrs(&["agent.analyst"]));
    let system = helper.attributes.iter().find(|a| a.path == "system");
    assert!(system.is_some_and(|a| a.unknown && a.new.is_none()));
}

#[tokio::test]
async fn a_recorded_manifest_plans_no_change() {
    let fx = Fixture::new();
    let m = fx.manifest(MANIFEST);
    fx.deploy(&m).await;
    let plan = fx.plan(Some(&m), PlanOptions::default()).await;
    assert!(!plan.has_changes(), "{:#?}", plan.changes);
    assert_eq!(plan.changes.len(), 5);
    assert_eq!(plan.summary, Summary::default());
    assert!(render::render(&plan, render::Palette::PLAIN).starts_with("No changes."));
}

#[tokio::test]
async fn an_edited_prompt_updates_the_agent_and_replaces_its_unpinned_session() {
    let fx = Fixture::new();
    fx.deploy(&fx.manifest(MANIFEST)).await;
    let m = fx.manifest(&MANIFEST.replace("You are an analyst.", "You are careful."));
    let plan = fx.plan(Some(&m), PlanOptions::default()).await;
    let analyst = change(&plan, "agent.analyst");
    assert_eq!(analyst.action, Action::Update);
    assert_eq!(
        analyst.reasons,
        [Reason::ConfigChanged {
            attributes: vec!["system".into()]
        }]
    );
    assert_eq!(analyst.version, Some(1));
    let smoke = change(&plan, "session.smoke");
    assert_eq!(smoke.action, Action::Replace);
    assert_eq!(
        smoke.reasons,
        [
            Reason::TargetChanged {
                attributes: vec!["agent.version".into()]
            },
            Reason::DependsOnPending {
                references: vec!["agent.analyst.version".into()]
            }
        ]
    );
    assert_eq!(smoke.after, addrs(&["agent.analyst"]));
    // The helper refers to the analyst's id, which an update keeps.
    assert_eq!(change(&plan, "agent.helper").action, Action::NoOp);
    assert_eq!(change(&plan, "session.pinned").action, Action::NoOp);
    assert_eq!(
        plan.summary,
        Summary {
            add: 1,
            change: 1,
            destroy: 1,
            archive: 0
        }
    );
}

#[tokio::test]
async fn a_session_title_changes_in_place_and_its_vaults_replace_it() {
    let fx = Fixture::new();
    fx.deploy(&fx.manifest(MANIFEST)).await;
    let titled = MANIFEST.replace(
        "    agent: analyst\n",
        "    agent: analyst\n    title: Smoke test\n",
    );
    let plan = fx
        .plan(Some(&fx.manifest(&titled)), PlanOptions::default())
        .await;
    let smoke = change(&plan, "session.smoke");
    assert_eq!(smoke.action, Action::Update);
    assert_eq!(
        smoke.reasons,
        [Reason::ConfigChanged {
            attributes: vec!["title".into()]
        }]
    );
    let vaulted = MANIFEST.replace(
        "    agent: analyst\n",
        "    agent: analyst\n    vault_ids: [vlt_team]\n",
    );
    let plan = fx
        .plan(Some(&fx.manifest(&vaulted)), PlanOptions::default())
        .await;
    let smoke = change(&plan, "session.smoke");
    assert_eq!(smoke.action, Action::Replace);
    assert_eq!(
        smoke.reasons,
        [Reason::TargetChanged {
            attributes: vec!["vault_ids".into()]
        }]
    );
}

#[tokio::test]
async fn removed_resources_are_archived_or_deleted_after_their_dependents() {
    let fx = Fixture::new();
    fx.deploy(&fx.manifest(MANIFEST)).await;
    let agents_only = MANIFEST.split("environments:").next().unwrap().to_string()
        + "agents:\n  analyst:\n    model: claude-sonnet-4-6\n    system: You are an analyst.\n";
    let plan = fx
        .plan(Some(&fx.manifest(&agents_only)), PlanOptions::default())
        .await;
    assert_eq!(
        actions(&plan),
        [
            ("environment.data".to_string(), Action::Delete),
            ("agent.analyst".to_string(), Action::NoOp),
            ("agent.helper".to_string(), Action::Archive),
            ("session.pinned".to_string(), Action::Delete),
            ("session.smoke".to_string(), Action::Delete),
        ]
    );
    assert!(plan
        .pending()
        .all(|c| c.reasons == [Reason::RemovedFromManifest]));
    assert_eq!(
        change(&plan, "environment.data").after,
        addrs(&["session.pinned", "session.smoke"])
    );
    assert_eq!(
        plan.summary,
        Summary {
            destroy: 3,
            archive: 1,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn destroy_removes_every_record_dependents_first_with_or_without_a_manifest() {
    let fx = Fixture::new();
    let m = fx.manifest(MANIFEST);
    fx.deploy(&m).await;
    let destroy = PlanOptions {
        destroy: true,
        ..Default::default()
    };
    for manifest in [Some(&m), None] {
        let plan = fx.plan(manifest, destroy.clone()).await;
        assert!(plan.destroy);
        assert!(plan
            .changes
            .iter()
            .all(|c| c.reasons == [Reason::DestroyRequested]));
        assert_eq!(change(&plan, "agent.analyst").action, Action::Archive);
        assert_eq!(
            change(&plan, "agent.analyst").after,
            addrs(&["agent.helper", "session.pinned", "session.smoke"])
        );
        assert_eq!(
            change(&plan, "environment.data").after,
            addrs(&["session.pinned", "session.smoke"])
        );
        assert_eq!(
            plan.summary,
            Summary {
                destroy: 3,
                archive: 2,
                ..Default::default()
            }
        );
    }
}

#[tokio::test]
async fn a_provider_change_replaces_the_resource() {
    let fx = Fixture::new();
    let m = fx.manifest(MANIFEST);
    fx.deploy(&m).await;
    let mut record = fx.record("agent.helper");
    record.provider = "elsewhere".into();
    fx.state.put(&record).unwrap();
    let plan = fx.plan(Some(&m), PlanOptions::default()).await;
    let helper = change(&plan, "agent.helper");
    assert_eq!(helper.action, Action::Replace);
    assert_eq!(
        helper.reasons,
        [Reason::ProviderChanged {
            from: "elsewhere".into(),
            to: "local".into()
        }]
    );
}

#[tokio::test]
async fn an_interrupted_create_is_planned_as_an_adoption() {
    let fx = Fixture::new();
    let m = fx.manifest(MANIFEST);
    fx.state
        .put_intent(&Intent {
            address: addr("agent.analyst"),
            provider: "local".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            pid: 1,
        })
        .unwrap();
    let plan = fx.plan(Some(&m), PlanOptions::default()).await;
    let analyst = change(&plan, "agent.analyst");
    assert_eq!(analyst.action, Action::Create);
    assert!(analyst.adopt);
    assert_eq!(
        analyst.reasons,
        [Reason::InterruptedCreate {
            started_at: "2026-01-01T00:00:00Z".into()
        }]
    );
    assert!(!change(&plan, "agent.helper").adopt);
}

#[tokio::test]
async fn a_pinned_version_must_exist_after_the_apply() {
    let fx = Fixture::new();
    let providers = fx.providers();
    let pin = |v: u64| MANIFEST.replace("version: 1 }", &format!("version: {v} }}"));
    let err = super::plan(
        Some(&fx.manifest(&pin(2))),
        &fx.state,
        &providers,
        &PlanOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            PlanError::PinnedVersionMissing {
                pinned: 2,
                latest: 1,
                ..
            }
        ),
        "{err}"
    );
    fx.deploy(&fx.manifest(MANIFEST)).await;
    // The edit makes version 2, so a pin of 2 is fine and replaces the session.
    let edited = |v| pin(v).replace("You are an analyst.", "You are careful.");
    let plan = fx
        .plan(Some(&fx.manifest(&edited(2))), PlanOptions::default())
        .await;
    assert_eq!(change(&plan, "session.pinned").action, Action::Replace);
    let err = super::plan(
        Some(&fx.manifest(&edited(3))),
        &fx.state,
        &providers,
        &PlanOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string().lines().next(),
        Some("session.pinned pins agent.analyst version 3, but agent.analyst will be at version 2")
    );
}

#[tokio::test]
async fn targets_take_dependencies_when_applying_and_dependents_when_destroying() {
    let fx = Fixture::new();
    let m = fx.manifest(MANIFEST);
    let targeted = |targets: &[&str], destroy| PlanOptions {
        targets: addrs(targets),
        destroy,
        ..Default::default()
    };
    let plan = fx.plan(Some(&m), targeted(&["session.smoke"], false)).await;
    let planned: Vec<String> = plan.changes.iter().map(|c| c.address.to_string()).collect();
    assert_eq!(
        planned,
        ["environment.data", "agent.analyst", "session.smoke"]
    );
    fx.deploy(&m).await;
    let plan = fx
        .plan(Some(&m), targeted(&["environment.data"], true))
        .await;
    let planned: Vec<String> = plan.changes.iter().map(|c| c.address.to_string()).collect();
    assert_eq!(
        planned,
        ["environment.data", "session.pinned", "session.smoke"]
    );
    let err = super::plan(
        Some(&m),
        &fx.state,
        &fx.providers(),
        &targeted(&["agent.nope"], false),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PlanError::UnknownTarget(a) if a == addr("agent.nope")));
}

#[tokio::test]
async fn refresh_reports_objects_changed_outside_agentform() {
    let fx = Fixture::new();
    let m = fx.manifest(MANIFEST);
    fx.deploy(&m).await;
    fx.local
        .update_agent(
            &fx.id("agent.helper"),
            json!({"system": "edited in the console"}),
        )
        .await
        .unwrap();
    fx.local
        .update_environment(&fx.id("environment.data"), json!({"description": "edited"}))
        .await
        .unwrap();
    // Without refresh nothing is read.
    assert!(!fx
        .plan(Some(&m), PlanOptions::default())
        .await
        .has_changes());

    let plan = fx.plan(Some(&m), refresh()).await;
    assert!(plan.refreshed);
    let helper = change(&plan, "agent.helper");
    assert_eq!(helper.action, Action::Update);
    assert_eq!(
        helper.reasons,
        [Reason::Drifted {
            detail: "version moved from 1 to 2".into()
        }]
    );
    assert_eq!(helper.live_version, Some(2));
    let env = change(&plan, "environment.data");
    assert_eq!(env.action, Action::Update);
    assert!(
        matches!(&env.reasons[..], [Reason::Drifted { detail }] if detail.starts_with("updated at "))
    );
    let mut drifted: Vec<String> = plan.drift.iter().map(|d| d.address.to_string()).collect();
    drifted.sort();
    assert_eq!(drifted, ["agent.helper", "environment.data"]);
    assert_eq!(change(&plan, "agent.analyst").action, Action::NoOp);
}

#[tokio::test]
async fn refresh_recreates_what_was_deleted_or_archived_outside_agentform() {
    let fx = Fixture::new();
    let m = fx.manifest(MANIFEST);
    fx.deploy(&m).await;
    let smoke_id = fx.id("session.smoke");
    fx.local.delete_session(&smoke_id).await.unwrap();
    fx.local
        .archive_agent(&fx.id("agent.helper"))
        .await
        .unwrap();
    let plan = fx.plan(Some(&m), refresh()).await;
    let smoke = change(&plan, "session.smoke");
    assert_eq!(smoke.action, Action::Replace);
    assert_eq!(
        smoke.reasons,
        [Reason::Vanished {
            detail: "deleted".into()
        }]
    );
    assert_eq!(smoke.remote_id.as_deref(), Some(smoke_id.as_str()));
    let helper = change(&plan, "agent.helper");
    assert_eq!(helper.action, Action::Create);
    assert_eq!(
        helper.reasons,
        [Reason::Vanished {
            detail: "archived".into()
        }]
    );
    assert_eq!(helper.remote_id, None);
    let drift: Vec<String> = plan
        .drift
        .iter()
        .map(|d| format!("{}: {}", d.address, d.detail))
        .collect();
    assert_eq!(
        drift,
        [
            "agent.helper: archived outside agentform",
            "session.smoke: deleted outside agentform"
        ]
    );
}

#[tokio::test]
async fn refresh_of_many_records_lists_them_and_finds_the_same_drift() {
    let fx = Fixture::new();
    let mut yaml = String::from("version: 1\nagents:\n");
    for i in 0..LIST_REFRESH_MIN + 2 {
        yaml.push_str(&format!("  a{i:02}:\n    model: claude-sonnet-4-6\n"));
    }
    let m = fx.manifest(&yaml);
    fx.deploy(&m).await;
    fx.local
        .update_agent(&fx.id("agent.a03"), json!({"system": "edited"}))
        .await
        .unwrap();
    fx.local.archive_agent(&fx.id("agent.a07")).await.unwrap();
    let plan = fx.plan(Some(&m), refresh()).await;
    let pending: Vec<(String, Action)> = plan
        .pending()
        .map(|c| (c.address.to_string(), c.action))
        .collect();
    assert_eq!(
        pending,
        [
            ("agent.a03".to_string(), Action::Update),
            ("agent.a07".to_string(), Action::Create)
        ]
    );
    assert_eq!(plan.drift.len(), 2);
}

#[tokio::test]
async fn sensitive_values_are_compared_by_hash_and_never_shown() {
    const SECRET: &str = "first-secret-4242";
    const OTHER: &str = "second-secret-9999";
    let fx = Fixture::new();
    let yaml = |secret: &str| {
        format!(
            "version: 1\nagents:\n  a:\n    model: claude-sonnet-4-6\n    system: \"token {{{{ env('AGENTFORM_PLAN_UNIT_UNSET', '{secret}') }}}}\"\n"
        )
    };
    let m = fx.manifest(&yaml(SECRET));
    let plan = fx.plan(Some(&m), PlanOptions::default()).await;
    let system = change(&plan, "agent.a")
        .attributes
        .iter()
        .find(|a| a.path == "system");
    let system = system.expect("a system attribute");
    assert!(system.sensitive);
    assert_eq!(system.new, Some(json!(SENSITIVE)));
    let shown =
        serde_json::to_string(&plan).unwrap() + &render::render(&plan, render::Palette::PLAIN);
    assert!(!shown.contains(SECRET), "{shown}");

    fx.deploy(&m).await;
    assert!(!fx.record("agent.a").config.to_string().contains(SECRET));
    assert!(!fx
        .plan(Some(&m), PlanOptions::default())
        .await
        .has_changes());

    let plan = fx
        .plan(Some(&fx.manifest(&yaml(OTHER))), PlanOptions::default())
        .await;
    let a = change(&plan, "agent.a");
    assert_eq!(a.action, Action::Update);
    assert_eq!(a.attributes.len(), 1);
    assert_eq!(a.attributes[0].old, Some(json!(SENSITIVE)));
    assert_eq!(a.attributes[0].new, Some(json!(SENSITIVE)));
    let shown =
        serde_json::to_string(&plan).unwrap() + &render::render(&plan, render::Palette::PLAIN);
    assert!(!shown.contains(SECRET) && !shown.contains(OTHER), "{shown}");
}
