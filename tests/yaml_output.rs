//! The YAML agentform writes, byte for byte: the lock file and `state show`.
//! The values are chosen to exercise the emitter's quoting and block styles,
//! so a change of YAML library that changes the output fails here.

use crate::common::*;

const MANIFEST: &str = r##"version: 1
name: yaml-output
environments:
  data:
    config:
      type: cloud
      networking: { type: limited, allowed_hosts: [a.example.com, "*.example.org"] }
    metadata:
      bool_word: "yes"
      null_word: "~"
      octal: "007"
      float: "1e3"
      empty: ""
      spaces: " leading and trailing "
      colon: "key: value"
      dash: "- item"
      hash: "#not a comment"
      quotes: "it's \"quoted\""
      unicode: "café ✓"
      tab: "a\tb"
      long: "a long value that runs well past eighty characters so that any line folding the emitter might do shows up"
agents:
  writer:
    model: claude-sonnet-4-6
    system: "You write.\nTwo lines: yes\n"
    description: "no trailing newline\nsecond"
    tools:
      - type: agent_toolset_20260401
        configs: [{ name: bash, enabled: false }]
sessions:
  talk:
    agent: { name: writer, version: 1 }
    environment: data
    title: "on"
"##;

fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"agent_[0-9][0-9A-Za-z]+", "[AGENT_ID]"),
        (r"env_[0-9][0-9A-Za-z]+", "[ENV_ID]"),
        (r"sesn_[0-9][0-9A-Za-z]+", "[SESSION_ID]"),
        (r"sha256:[0-9a-f]{64}", "[DIGEST]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]"),
    ]
}

#[test]
fn lock_file_and_state_show_are_written_byte_for_byte() {
    let t = Test::new();
    t.write("agentform.yaml", MANIFEST);
    t.run(&["apply", "--auto-approve"]).success();
    let lock = t.read("agentform.lock");
    let shown: Vec<String> = ["environment.data", "agent.writer", "session.talk"]
        .iter()
        .map(|a| t.run(&["state", "show", a]).success().stdout)
        .collect();
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("lock_file", lock);
        insta::assert_snapshot!("state_show", shown.join("---\n"));
    });
}
