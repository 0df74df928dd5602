//! A crash mid-apply loses at most the action in flight: the next apply adopts
//! what was created and converges without duplicates.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::*;

fn manifest(n: usize) -> String {
    let mut m = String::from(
        "version: 1\nname: crash\nenvironments:\n  box:\n    config: { type: cloud }\nagents:\n",
    );
    for i in 0..n {
        m.push_str(&format!(
            "  a{i}:\n    model: claude-sonnet-4-6\n    system: agent number {i}\n"
        ));
    }
    m.push_str("sessions:\n");
    for i in 0..n {
        m.push_str(&format!("  s{i}:\n    agent: a{i}\n    environment: box\n"));
    }
    m
}

/// Every declared address has exactly one live object tagged with it.
fn assert_converged(t: &Test, n: usize) {
    let (agents, envs, sessions) = live_objects(&t.path("state"));
    let tag = |m: &std::collections::BTreeMap<String, String>| {
        m.get("agentform.address").cloned().unwrap_or_default()
    };
    let mut tags: Vec<String> = agents
        .iter()
        .filter(|a| a.archived_at.is_none())
        .map(|a| tag(&a.metadata))
        .collect();
    tags.extend(envs.iter().map(|e| tag(&e.metadata)));
    tags.extend(sessions.iter().map(|s| tag(&s.metadata)));
    tags.sort();
    let mut expected: Vec<String> = vec!["environment.box".into()];
    for i in 0..n {
        expected.push(format!("agent.a{i}"));
        expected.push(format!("session.s{i}"));
    }
    expected.sort();
    assert_eq!(
        tags, expected,
        "live objects differ from the manifest (duplicates or missing)"
    );
    let listed = t.run(&["state", "list"]).success().stdout;
    assert_eq!(listed.lines().count(), expected.len(), "{listed}");
}

#[test]
fn crash_between_create_and_state_write_is_adopted() {
    let t = Test::new().env(agentform::apply::CRASH_AFTER_CREATE_ENV, "agent.a1");
    t.write("agentform.yaml", &manifest(3));
    let out = t.run(&["apply", "--auto-approve", "--parallelism", "1"]);
    assert_ne!(out.code, 0, "the crash hook must stop the process");
    // agent.a1 exists remotely but not in the state.
    assert!(!t
        .run(&["state", "list"])
        .success()
        .stdout
        .contains("agent.a1"));
    let t = t.env(agentform::apply::CRASH_AFTER_CREATE_ENV, "none");
    let plan = t.run(&["plan"]).success();
    assert!(
        plan.stdout
            .contains("an apply was interrupted while creating it"),
        "{}",
        plan.stdout
    );
    t.run(&["apply", "--auto-approve"])
        .success()
        .stderr_has("adopted");
    assert_converged(&t, 3);
    t.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success();
}

#[test]
fn killed_mid_apply_then_reapplied_converges() {
    let n = 6;
    let t = Test::new().env("AGENTFORM_LOCAL_LATENCY_MS", "150");
    t.write("agentform.yaml", &manifest(n));
    let mut child = t
        .command(&["apply", "--auto-approve", "--parallelism", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apply");
    // Wait for the first finished action, then kill while others are in flight.
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains(": created ") {
            break;
        }
    }
    child.kill().expect("kill");
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "apply finished before it was killed: {seen:?}"
    );
    let recorded = t.run(&["state", "list"]).success().stdout.lines().count();
    assert!(
        recorded < 1 + 2 * n,
        "everything was already recorded; the kill came too late"
    );
    let t = t.env("AGENTFORM_LOCAL_LATENCY_MS", "0");
    t.run(&["apply", "--auto-approve"]).success();
    assert_converged(&t, n);
    t.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success();
}
