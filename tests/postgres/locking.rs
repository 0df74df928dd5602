//! The lock across machines: an advisory lock held by the connection, its
//! holder named in the refusal; `--lock-timeout` waits instead.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use super::{assert_converged, checkout, fresh_state, manifest};

#[test]
fn a_second_process_is_refused_with_the_holder_named() {
    let url = fresh_state();
    let first = checkout(&url).env("AGENTFORM_LOCAL_LATENCY_MS", "200");
    let second = checkout(&url);
    first.write("agentform.yaml", &manifest(4));
    second.write("agentform.yaml", &manifest(4));
    let mut child = first
        .command(&["apply", "--auto-approve", "--parallelism", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first_line = lines.next().unwrap().unwrap();
    assert!(first_line.contains("creating"), "{first_line}");
    let out = second.run(&["plan"]).code(1);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for needle in [
        "is locked by pid",
        &child.id().to_string(),
        &format!("on {}", host.trim()),
        "`agentform apply`, since ",
        "postgres://postgres@127.0.0.1:",
    ] {
        assert!(out.stderr.contains(needle), "{needle:?} in {}", out.stderr);
    }
    for _ in lines {}
    assert!(child.wait().unwrap().success());
    second.run(&["plan", "--detailed-exitcode"]).success();
}

#[test]
fn lock_timeout_waits_for_the_holder() {
    let url = fresh_state();
    let first = checkout(&url).env("AGENTFORM_LOCAL_LATENCY_MS", "100");
    let second = checkout(&url);
    first.write("agentform.yaml", &manifest(3));
    second.write("agentform.yaml", &manifest(3));
    let mut child = first
        .command(&["apply", "--auto-approve", "--parallelism", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("creating"));
    // Too short a wait is refused, saying how long it waited.
    second
        .run(&["plan", "--lock-timeout", "300ms"])
        .code(1)
        .stderr_has("after waiting 300ms");
    // A long enough one gets the lock once the apply is done.
    let waited = second.run(&["plan", "--lock-timeout", "60s", "--detailed-exitcode"]);
    for _ in lines {}
    assert!(child.wait().unwrap().success());
    waited.success();
}

#[test]
fn two_concurrent_applies_one_refused_and_the_state_converges() {
    let url = fresh_state();
    let a = checkout(&url).env("AGENTFORM_LOCAL_LATENCY_MS", "20");
    let b = checkout(&url).env("AGENTFORM_LOCAL_LATENCY_MS", "20");
    a.write("agentform.yaml", &manifest(5));
    b.write("agentform.yaml", &manifest(5));
    let spawn = |t: &crate::common::Test| {
        t.command(&["apply", "--auto-approve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    let ok = [oa.status.success(), ob.status.success()];
    let refused = [&oa, &ob]
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stderr).contains("is locked by pid"))
        .count();
    assert!(
        ok.iter().filter(|s| **s).count() >= 1 && (refused == 1 || ok == [true, true]),
        "a: {}\nb: {}",
        String::from_utf8_lossy(&oa.stderr),
        String::from_utf8_lossy(&ob.stderr)
    );
    // Whichever went second (or was refused), the state is whole.
    b.run(&["apply", "--auto-approve"]).success();
    assert_converged(&a, &url, 5);
}
