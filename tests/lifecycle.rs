//! The declarative core end to end: apply, no-op re-apply, edit, version bump,
//! lock file, drift, targeting, failures, import and destroy.

use crate::common::*;
use agentform::runtime::Runtime;

const MANIFEST: &str = r#"version: 1
name: lifecycle
vars:
  model: claude-sonnet-4-6
environments:
  data:
    config:
      type: cloud
      packages: { pip: [pandas] }
      networking: { type: unrestricted }
agents:
  analyst:
    model: "{{ vars.model }}"
    system: You are a data analysis expert.
    tools: [{ type: agent_toolset_20260401 }]
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

fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"agent_[0-9A-Za-z]+", "[AGENT_ID]"),
        (r"env_[0-9A-Za-z]+", "[ENV_ID]"),
        (r"sesn_[0-9A-Za-z]+", "[SESSION_ID]"),
        (r"sha256:[0-9a-f]{64}", "[DIGEST]"),
    ]
}

#[test]
fn apply_noop_edit_update_lock_destroy() {
    let t = Test::new();
    t.write("agentform.yaml", MANIFEST);
    t.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("Plan: 5 to add, 0 to change, 0 to destroy.")
        .stdout_has("Apply complete! 5 added");
    let before = live_objects(&t.path("state"));

    // Re-applying an unchanged manifest changes nothing remotely.
    t.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("No changes.");
    let after = live_objects(&t.path("state"));
    assert_eq!(before, after, "a no-op apply modified remote objects");

    // Edit the system prompt: one agent update with a version bump; the
    // unpinned session is replaced, the pinned one stays.
    t.write(
        "agentform.yaml",
        &MANIFEST.replace(
            "You are a data analysis expert.",
            "You are a careful analyst.",
        ),
    );
    let plan = t.run(&["plan", "--detailed-exitcode"]).code(2);
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("plan_after_edit", plan.stdout);
    });
    assert!(plan
        .stdout
        .contains("Plan: 1 to add, 1 to change, 1 to destroy."));
    assert!(
        !plan.stdout.contains("session.pinned"),
        "pinned session must not change"
    );

    t.run(&["apply", "--auto-approve"])
        .success()
        .stderr_has("version 1 → 2");
    let lock = t.read("agentform.lock");
    assert!(
        lock.contains("analyst:") && lock.contains("version: 2"),
        "{lock}"
    );
    t.run(&["plan", "--locked", "--detailed-exitcode"])
        .success();

    let (agents, _, sessions) = live_objects(&t.path("state"));
    let analyst = agents.iter().find(|a| a.name == "analyst").unwrap();
    assert_eq!(analyst.version, 2);
    let pinned = sessions
        .iter()
        .find(|s| s.metadata.get("agentform.address").map(String::as_str) == Some("session.pinned"))
        .unwrap();
    assert_eq!(pinned.agent_version(), Some(1));
    let smoke = sessions
        .iter()
        .find(|s| s.metadata.get("agentform.address").map(String::as_str) == Some("session.smoke"))
        .unwrap();
    assert_eq!(smoke.agent_version(), Some(2));

    t.run(&["destroy", "--auto-approve"])
        .success()
        .stdout_has("Destroy complete!");
    let (agents, envs, sessions) = live_objects(&t.path("state"));
    assert!(agents.iter().all(|a| a.archived_at.is_some()));
    assert!(envs.is_empty() && sessions.is_empty());
    assert_eq!(t.run(&["state", "list"]).success().stdout, "");
}

#[test]
fn locked_plan_fails_when_the_lock_disagrees() {
    let t = Test::new();
    t.write("agentform.yaml", MANIFEST);
    t.run(&["plan", "--locked"])
        .code(1)
        .stderr_has("does not exist");
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["plan", "--locked"]).success();
    t.write(
        "agentform.yaml",
        &MANIFEST.replace("claude-haiku-4-5", "claude-sonnet-4-6"),
    );
    t.run(&["plan", "--locked"])
        .code(1)
        .stderr_has("agent.helper would be updated");
}

#[test]
fn plan_json_is_machine_readable() {
    let t = Test::new();
    t.write("agentform.yaml", MANIFEST);
    let out = t.run(&["plan", "--json"]).success();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("plan --json prints JSON");
    assert_eq!(v["summary"]["add"], 5);
    let actions: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(actions.iter().all(|a| *a == "create"), "{actions:?}");
}

#[test]
fn target_limits_the_apply_to_a_resource_and_its_dependencies() {
    let t = Test::new();
    t.write("agentform.yaml", MANIFEST);
    t.run(&["apply", "--auto-approve", "--target", "session.smoke"])
        .success()
        .stdout_has("Plan: 3 to add");
    let listed = t.run(&["state", "list"]).success().stdout;
    assert!(
        listed.contains("session.smoke")
            && listed.contains("agent.analyst")
            && listed.contains("environment.data")
    );
    assert!(!listed.contains("agent.helper"), "{listed}");
    t.run(&["destroy", "--auto-approve", "--target", "environment.data"])
        .success()
        .stdout_has("Plan: 0 to add, 0 to change, 2 to destroy.");
    t.run(&["plan", "--target", "agent.nope"])
        .code(1)
        .stderr_has("neither in the manifest nor in the state");
}

#[test]
fn drift_is_reported_and_repaired() {
    let t = Test::new();
    t.write("agentform.yaml", MANIFEST);
    t.run(&["apply", "--auto-approve"]).success();
    let id = t.run(&["state", "show", "agent.helper"]).success().stdout;
    let id = id
        .lines()
        .find_map(|l| l.strip_prefix("remote_id: "))
        .unwrap()
        .trim()
        .to_string();
    let env_id = t
        .run(&["state", "show", "environment.data"])
        .success()
        .stdout;
    let env_id = env_id
        .lines()
        .find_map(|l| l.strip_prefix("remote_id: "))
        .unwrap()
        .trim()
        .to_string();
    with_local(&t.path("state"), |rt| async move {
        rt.update_agent(&id, serde_json::json!({"system": "changed in the console"}))
            .await
            .unwrap();
        rt.delete_session_by_address("session.pinned").await;
        let _ = env_id;
    });
    let out = t.run(&["plan", "--refresh"]).success();
    assert!(
        out.stdout
            .contains("agent.helper: version moved from 1 to 2"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("session.pinned: deleted outside agentform"),
        "{}",
        out.stdout
    );
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes.");
    let (agents, _, _) = live_objects(&t.path("state"));
    let helper = agents.iter().find(|a| a.name == "helper").unwrap();
    assert_eq!(
        helper
            .system
            .as_deref()
            .map(|s| s.starts_with("Ask agent_")),
        Some(true)
    );
    assert_eq!(helper.version, 3);
}

#[test]
fn a_failed_action_stops_dependents_and_a_rerun_converges() {
    let t = Test::new();
    t.write("agentform.yaml", MANIFEST);
    // An environment named `data` made outside agentform makes the create fail (409).
    let blocker = with_local(&t.path("state"), |rt| async move {
        rt.create_environment(serde_json::json!({"name": "data"}))
            .await
            .unwrap()
            .id
    });
    let out = t.run(&["apply", "--auto-approve"]).code(1);
    assert!(out.stderr.contains("environment.data:"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("session.smoke: skipped because environment.data failed"),
        "{}",
        out.stderr
    );
    let listed = t.run(&["state", "list"]).success().stdout;
    assert!(
        listed.contains("agent.analyst") && listed.contains("agent.helper"),
        "independent work must finish: {listed}"
    );
    assert!(!listed.contains("session."), "{listed}");
    with_local(&t.path("state"), |rt| async move {
        rt.delete_environment(&blocker).await.unwrap();
    });
    t.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("Plan: 3 to add, 0 to change");
    t.run(&["plan", "--detailed-exitcode"]).success();
}

#[test]
fn state_rm_and_import_round_trip() {
    let t = Test::new();
    t.write("agentform.yaml", MANIFEST);
    t.run(&["apply", "--auto-approve"]).success();
    let shown = t.run(&["state", "show", "agent.analyst"]).success().stdout;
    assert!(
        shown.contains("address: agent.analyst") && shown.contains("version: 1"),
        "{shown}"
    );
    let id = shown
        .lines()
        .find_map(|l| l.strip_prefix("remote_id: "))
        .unwrap()
        .trim()
        .to_string();
    t.run(&["state", "rm", "agent.analyst"])
        .success()
        .stdout_has("was not touched");
    t.run(&["state", "show", "agent.analyst"])
        .code(1)
        .stderr_has("not in the state");
    t.run(&["state", "import", "agent.analyst", &id])
        .success()
        .stdout_has("Imported agent.analyst");
    t.run(&["plan", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes.");
    t.run(&["state", "import", "agent.analyst", &id])
        .code(1)
        .stderr_has("already in the state");
    t.run(&["state", "import", "agent.ghost", &id])
        .code(1)
        .stderr_has("not declared");
}

#[test]
fn secrets_from_env_never_reach_state_lock_or_output() {
    let secret = "s3cr3t-value-4242";
    let t = Test::new().env("LIFECYCLE_TOKEN", secret);
    t.write(
        "agentform.yaml",
        "version: 1\nagents:\n  a:\n    model: claude-sonnet-4-6\n    system: \"token {{ env('LIFECYCLE_TOKEN') }}\"\n    metadata: { owner: \"{{ env('LIFECYCLE_TOKEN') }}\" }\n",
    );
    let plan = t.run(&["plan"]).success();
    assert!(
        plan.stdout.contains("(sensitive)") && !plan.stdout.contains(secret),
        "{}",
        plan.stdout
    );
    let apply = t.run(&["apply", "--auto-approve", "-vvv"]).success();
    assert!(!apply.stdout.contains(secret) && !apply.stderr.contains(secret));
    assert!(!t.read("agentform.lock").contains(secret));
    let show = t.run(&["state", "show", "agent.a"]).success();
    assert!(!show.stdout.contains(secret), "{}", show.stdout);
    let store = agentform::state::StateStore::open(&t.path("state"), "test").unwrap();
    let records = serde_json::to_string(&store.list().unwrap()).unwrap();
    assert!(!records.contains(secret));
    drop(store);
    // A changed secret is a change, shown without its value.
    let t = t.env("LIFECYCLE_TOKEN", "another-value-9999");
    let plan = t.run(&["plan", "--detailed-exitcode"]).code(2);
    assert!(
        plan.stdout.contains("~ system: (sensitive) → (sensitive)"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("another-value-9999"));
}

/// Runs `f` against the local runtime of a state directory no process holds.
fn with_local<F, Fut, T>(state: &std::path::Path, f: F) -> T
where
    F: FnOnce(std::sync::Arc<Local>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = agentform::state::StateStore::open(state, "test").unwrap();
        let local =
            agentform::runtime::local::LocalRuntime::open(store.db(), Default::default()).unwrap();
        let out = f(std::sync::Arc::new(Local(local))).await;
        store.db().flush().unwrap();
        out
    })
}

pub struct Local(agentform::runtime::local::LocalRuntime);

impl std::ops::Deref for Local {
    type Target = agentform::runtime::local::LocalRuntime;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Local {
    async fn delete_session_by_address(&self, address: &str) {
        use agentform::runtime::list_all;
        let sessions = list_all(|q| async move { self.0.list_sessions(&q).await })
            .await
            .unwrap();
        let s = sessions
            .iter()
            .find(|s| s.metadata.get("agentform.address").map(String::as_str) == Some(address))
            .unwrap();
        self.0.delete_session(&s.id).await.unwrap();
    }
}

#[test]
fn pinning_a_version_that_will_not_exist_fails_the_plan() {
    let t = Test::new();
    t.write(
        "agentform.yaml",
        &MANIFEST.replace("version: 1 }", "version: 3 }"),
    );
    t.run(&["plan"]).code(1).stderr_has(
        "session.pinned pins agent.analyst version 3, but agent.analyst will be at version 1",
    );
    t.write("agentform.yaml", MANIFEST);
    t.run(&["apply", "--auto-approve"]).success();
    t.write(
        "agentform.yaml",
        &MANIFEST
            .replace("version: 1 }", "version: 2 }")
            .replace("expert.", "expert!"),
    );
    // Version 2 is made by this very apply, so pinning it is fine.
    t.run(&["apply", "--auto-approve"]).success();
    let (_, _, sessions) = live_objects(&t.path("state"));
    assert!(sessions.iter().all(|s| s.agent_version() == Some(2)));
}

#[test]
fn repository_tokens_are_secrets_and_a_new_token_replaces_the_session() {
    const TOKEN: &str = "ghp_lifecycleToken000000000000000001";
    const OTHER: &str = "ghp_lifecycleToken000000000000000002";
    let t = Test::new().env("REPO_TOKEN", TOKEN);
    t.write(
        "agentform.yaml",
        r#"version: 1
environments:
  box: { config: { type: cloud } }
agents:
  a: { model: claude-sonnet-4-6 }
sessions:
  s:
    agent: a
    environment: box
    vault_ids: [vlt_team]
    resources:
      - type: github_repository
        url: https://github.com/example/app
        authorization_token: "{{ env('REPO_TOKEN') }}"
        checkout: { type: branch, name: main }
"#,
    );
    t.run(&["apply", "--auto-approve"])
        .success()
        .stdout_has("resources[0].authorization_token: (sensitive)")
        .stdout_has("vault_ids: [\"vlt_team\"]");
    let (_, _, sessions) = live_objects(&t.path("state"));
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].vault_ids, ["vlt_team"]);
    let resource = serde_json::to_value(&sessions[0].resources[0]).unwrap();
    assert_eq!(resource["url"], "https://github.com/example/app");
    t.run(&["plan", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes.");

    let t = t.env("REPO_TOKEN", OTHER);
    let out = t
        .run(&["plan", "--detailed-exitcode"])
        .code(2)
        .stdout_has("resources[0].authorization_token changed, which forces a new session");
    assert!(!out.stdout.contains(OTHER) && !out.stdout.contains(TOKEN));
    t.run(&["apply", "--auto-approve"]).success();
    let (_, _, sessions) = live_objects(&t.path("state"));
    assert_eq!(sessions.len(), 1, "the old session was deleted");
    for f in files_under(&t.path("state")) {
        let bytes = std::fs::read(&f).unwrap();
        for secret in [TOKEN, OTHER] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a token",
                f.display()
            );
        }
    }
}
