//! A second process on the same state fails at once, naming the holder.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::*;

#[test]
fn a_second_process_is_refused_while_apply_runs() {
    let t = Test::new().env("AGENTFORM_LOCAL_LATENCY_MS", "200");
    let mut m = String::from("version: 1\nagents:\n");
    for i in 0..8 {
        m.push_str(&format!("  a{i}:\n    model: claude-sonnet-4-6\n"));
    }
    t.write("agentform.yaml", &m);
    let mut child = t
        .command(&["apply", "--auto-approve", "--parallelism", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    // The first progress line means the lock is held and work is under way.
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("creating"), "{first}");
    let out = t.run(&["plan"]).code(1);
    assert!(out.stderr.contains("is locked by pid"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&child.id().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("agentform apply"), "{}", out.stderr);
    for _ in lines {}
    assert!(child.wait().unwrap().success());
    // The refused process changed nothing: the apply completed normally.
    t.run(&["plan", "--detailed-exitcode"]).success();
}
