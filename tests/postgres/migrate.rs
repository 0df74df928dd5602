//! `agentform state migrate`: a directory's state copied to PostgreSQL and
//! back, exactly; a target that holds anything refused without `--force`.

use super::{checkout, fresh_state};
use crate::common::Test;

const SCRIPTED: &str = r#"version: 1
name: moving
providers:
  local:
    models:
      scripted:
        backend: scripted
        turns:
          - text: the answer is 42
environments:
  box:
    config: { type: cloud }
agents:
  bot:
    model: scripted
    system: test bot
  other:
    model: claude-sonnet-4-6
sessions:
  chat:
    agent: bot
    environment: box
    steps:
      - send: what is the answer?
        expect: [{ contains: the answer is 42 }]
"#;

fn shown(t: &Test, args: &[&str]) -> String {
    t.run(args).success().stdout
}

#[test]
fn a_state_goes_to_postgresql_and_back_unchanged() {
    let t = Test::new();
    t.write("agentform.yaml", SCRIPTED);
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    let list = shown(&t, &["state", "list"]);
    let transcripts = shown(&t, &["transcripts", "list"]);
    let transcript = shown(&t, &["transcripts", "show", "latest/chat"]);
    assert!(transcript.contains("the answer is 42"), "{transcript}");

    let url = fresh_state();
    t.run(&["state", "migrate", "--to", &url])
        .success()
        .stdout_has("the counts match");
    // The copy is a working state for another checkout.
    let other = checkout(&url);
    other.write("agentform.yaml", SCRIPTED);
    assert_eq!(shown(&other, &["state", "list"]), list);
    assert_eq!(shown(&other, &["transcripts", "list"]), transcripts);
    assert_eq!(
        shown(&other, &["transcripts", "show", "latest/chat"]),
        transcript
    );
    other
        .run(&["plan", "--refresh", "--detailed-exitcode"])
        .success();

    // Copying again over a state that holds something needs --force.
    t.run(&["state", "migrate", "--to", &url])
        .code(1)
        .stderr_has("is not empty")
        .stderr_has("--force");
    t.run(&["state", "migrate", "--to", &url, "--force"])
        .success();

    // And back into a directory.
    other
        .run(&["state", "migrate", "--to", "back"])
        .success()
        .stdout_has("the counts match");
    let back = Test::new();
    std::fs::rename(other.path("back"), back.path("state")).unwrap();
    back.write("agentform.yaml", SCRIPTED);
    assert_eq!(shown(&back, &["state", "list"]), list);
    assert_eq!(shown(&back, &["transcripts", "list"]), transcripts);
    assert_eq!(
        shown(&back, &["transcripts", "show", "latest/chat"]),
        transcript
    );
    back.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success();
    // The serial and lineage came along: the marker agrees with the database.
    let marker = back.read("state/marker.json");
    let original = t.read("state/marker.json");
    let lineage = |m: &str| {
        serde_json::from_str::<serde_json::Value>(m).unwrap()["lineage"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(lineage(&marker), lineage(&original));
}
