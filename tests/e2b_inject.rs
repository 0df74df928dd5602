//! `provider: e2b` with `model_key: inject`, against the fake E2B (whose
//! egress proxy applies the sandbox's `network.rules`) and the fake model
//! of `fake_model.rs` (401 without the right `x-api-key`): the session's
//! sandbox is made with a header rule for the model's host, the serve in it
//! holds a placeholder, and the model answers only because the egress set
//! the key; the key appears in no file of the sandbox, the serve's
//! environment, its log, the state, a transcript or an output. Without the
//! rule applied the same run gets the model's 401.

use std::path::PathBuf;

use crate::common::*;
use crate::fake_e2b::{FakeE2b, Options};
use crate::fake_model::{FakeModel, REPLY};

const MODEL_KEY: &str = "sk-ant-inject-secret-5d2c81e0";
const KEY_ENV: &str = "INJECT_MODEL_KEY";
/// What the serve holds instead (`ops::remote::INJECTED_KEY_PLACEHOLDER`).
const PLACEHOLDER: &str = agentform::ops::remote::INJECTED_KEY_PLACEHOLDER;

fn manifest(fake: &FakeE2b, model: &FakeModel, model_key: &str) -> String {
    format!(
        "version: 1
name: e2b-inject
provider: e2b

providers:
  local:
    models:
      claude-fake:
        backend: anthropic
        base_url: {model}
        api_key_env: {KEY_ENV}
  e2b:
    api_url: {api}
    sandbox_url: {sandboxes}
    timeout: 10m
    model_key: {model_key}

environments:
  box:
    config:
      type: cloud
      networking: {{ type: limited, allowed_hosts: [] }}

agents:
  greeter:
    model: claude-fake
    system: You greet.

sessions:
  chat:
    agent: greeter
    environment: box
    steps:
      - send: Say hello, please.
        timeout: 120s
        expect:
          - contains: fake model
",
        model = model.url,
        api = fake.api_url,
        sandboxes = fake.sandbox_url,
    )
}

fn test_with(fake: &FakeE2b, contents: &str) -> Test {
    let t = Test::new()
        .env("E2B_API_KEY", fake.key())
        .env(KEY_ENV, MODEL_KEY);
    t.write("agentform.yaml", contents);
    t
}

/// The text of every file under `dir` (the uploaded executable included).
fn text_under(dir: &std::path::Path) -> String {
    files_under(dir)
        .iter()
        .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned())
        .collect()
}

/// The environment of the serve the fake started in sandbox `id`.
fn serve_environ(fake: &FakeE2b, id: &str) -> String {
    let pid_file = fake.root(id).join("home/user/.agentform/serve.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let environ = PathBuf::from(format!("/proc/{}/environ", pid.trim()));
    let raw = std::fs::read(&environ).unwrap_or_else(|e| panic!("{}: {e}", environ.display()));
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

#[test]
fn inject_the_model_answers_through_the_egress_and_the_key_never_enters_the_sandbox() {
    let model = FakeModel::start(MODEL_KEY);
    let fake = FakeE2b::start(Options::default());
    let t = test_with(&fake, &manifest(&fake, &model, "inject"));
    let apply = t.run(&["apply", "--auto-approve"]).success();
    let run = t.run(&["run"]).success();
    let text = transcripts(&t);
    assert!(text.contains(REPLY), "{text}");
    let answered = model.answered();
    assert!(
        !answered.is_empty() && answered.iter().all(|right| *right),
        "{answered:?}"
    );

    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "{alive:?}");
    let id = alive[0].clone();
    // The sandbox was made with the rule; limited networking lets the
    // model's host out.
    let network = fake.request(&id).unwrap()["network"].clone();
    assert_eq!(
        network["rules"]["127.0.0.1"][0]["transform"]["headers"]["x-api-key"],
        MODEL_KEY
    );
    assert_eq!(network["denyOut"], serde_json::json!(["0.0.0.0/0"]));
    assert_eq!(network["allowOut"], serde_json::json!(["127.0.0.1"]));
    // The model was reached through the sandbox's egress, which set the key.
    let passed: Vec<_> = fake
        .egress()
        .into_iter()
        .filter(|p| p.sandbox == id)
        .collect();
    assert!(!passed.is_empty(), "the serve did not use its egress");
    assert!(
        passed
            .iter()
            .all(|p| p.host == "127.0.0.1" && p.set == ["x-api-key"] && p.status == 200),
        "{passed:?}"
    );

    // The serve holds the placeholder, never the key.
    let environ = serve_environ(&fake, &id);
    assert!(
        environ.contains(&format!("{KEY_ENV}={PLACEHOLDER}\n")),
        "{environ}"
    );
    assert!(environ.contains("HTTP_PROXY="), "{environ}");
    assert!(
        !environ.contains(MODEL_KEY),
        "the key is in the serve's environment"
    );
    assert!(fake
        .process_envs()
        .iter()
        .all(|(_, v)| !v.contains(MODEL_KEY)));
    let serve_log =
        std::fs::read_to_string(fake.root(&id).join("home/user/.agentform/serve.log")).unwrap();
    assert!(serve_log.contains("listening on "), "{serve_log}");
    let commands = fake.commands();
    assert!(commands.iter().all(|c| !c.contains(MODEL_KEY)));

    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
    let mut all = everything(&t, &[&apply, &run, &destroy]);
    for sandbox in fake.created() {
        all.push_str(&text_under(&fake.root(&sandbox)));
    }
    assert!(all.contains(PLACEHOLDER) || all.contains(REPLY));
    assert!(!all.contains(MODEL_KEY), "the model key leaked");
    assert!(
        !all.contains(&MODEL_KEY[7..]),
        "a part of the model key leaked"
    );
}

#[test]
fn without_the_rule_applied_the_same_run_gets_the_models_401() {
    let model = FakeModel::start(MODEL_KEY);
    let fake = FakeE2b::start(Options {
        apply_rules: false,
        ..Options::default()
    });
    let t = test_with(&fake, &manifest(&fake, &model, "inject"));
    t.run(&["apply", "--auto-approve"]).success();
    let run = t.run(&["run"]);
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let answered = model.answered();
    assert!(
        !answered.is_empty() && answered.iter().all(|right| !right),
        "{answered:?}"
    );
    let said = format!("{}{}{}", run.stdout, run.stderr, transcripts(&t));
    assert!(said.contains("401"), "{said}");
    assert!(!said.contains(REPLY));
    assert!(!said.contains(MODEL_KEY));
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}

#[test]
fn inject_without_the_key_stops_plan_before_any_call_naming_the_variable() {
    let model = FakeModel::start(MODEL_KEY);
    let fake = FakeE2b::start(Options::default());
    let t = Test::new().env("E2B_API_KEY", fake.key());
    t.write("agentform.yaml", &manifest(&fake, &model, "inject"));
    let out = t.run(&["plan"]).code(1);
    assert!(
        out.stderr
            .contains(&format!("`{KEY_ENV}`, which is not set")),
        "{}",
        out.stderr
    );
    assert!(fake.log().is_empty(), "{:?}", fake.log());
    assert!(model.answered().is_empty());
    assert!(!t.path("state/workspaces/e2b-locations.json").exists());
}
