//! Faults in the middle of an apply on a PostgreSQL state: the connection
//! killed by the server, and the process killed (SIGKILL) twice during a
//! 300-resource apply with injected latency. Each stops the apply like a
//! failed action; the next apply converges with no duplicate.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use super::{assert_converged, checkout, cluster, fresh_state, manifest};
use crate::common::Test;

/// Starts `apply` and reads its progress until `created` resources are done.
fn apply_until(t: &Test, parallelism: &str, created: usize) -> (Child, Vec<String>) {
    let mut child = t
        .command(&["apply", "--auto-approve", "--parallelism", parallelism])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apply");
    let mut seen = Vec::new();
    let mut done = 0;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains(": created ") {
            done += 1;
        }
        seen.push(line);
        if done >= created {
            break;
        }
    }
    // Keep draining, so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, seen)
}

fn database_of(url: &str) -> String {
    url.rsplit('/')
        .next()
        .and_then(|s| s.split('?').next())
        .unwrap()
        .to_string()
}

#[test]
fn the_connection_killed_by_the_server_stops_the_apply_cleanly() {
    let n = 8;
    let url = fresh_state();
    let t = checkout(&url).env("AGENTFORM_LOCAL_LATENCY_MS", "150");
    t.write("agentform.yaml", &manifest(n));
    let mut child = t
        .command(&["apply", "--auto-approve", "--parallelism", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let created = line.contains(": created ");
        seen.push(line);
        if created {
            break;
        }
    }
    let db = database_of(&url);
    let killed = cluster().psql(
        "postgres",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{db}' AND application_name = 'agentform'"
        ),
    );
    assert_eq!(killed, "1", "one connection: the apply's");
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let stderr = seen.join("\n");
    assert!(
        !status.success(),
        "the apply went on without its state: {stderr}"
    );
    assert!(
        stderr.contains("the connection to PostgreSQL at 127.0.0.1:"),
        "{stderr}"
    );
    let recorded = t
        .run(&["state", "list", "--lock-timeout", "10s"])
        .success()
        .stdout
        .lines()
        .count();
    assert!(recorded < 1 + 2 * n, "the kill came too late: {stderr}");
    let t = t.env("AGENTFORM_LOCAL_LATENCY_MS", "0");
    t.run(&["apply", "--auto-approve"]).success();
    assert_converged(&t, &url, n);
    t.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success();
}

#[test]
fn sigkills_during_a_300_resource_apply_then_convergence() {
    let n = 150; // 150 agents, 150 sessions and one environment
    let url = fresh_state();
    let t = checkout(&url).env("AGENTFORM_LOCAL_LATENCY_MS", "20");
    t.write("agentform.yaml", &manifest(n));
    let mut recorded = Vec::new();
    for round in 0..2 {
        let (mut child, seen) = apply_until(&t, "16", 40);
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the apply finished before the kill: {:?}",
            seen.last()
        );
        // The server lets go of a killed process's lock once it sees the
        // connection closed: a moment's wait.
        let listed = t.run(&["state", "list", "--lock-timeout", "10s"]);
        recorded.push(listed.success().stdout.lines().count());
    }
    assert!(
        recorded[0] < 1 + 2 * n && recorded[1] < 1 + 2 * n && recorded[1] > recorded[0],
        "each kill landed mid-apply and the second apply went on: {recorded:?}"
    );
    let t = t.env("AGENTFORM_LOCAL_LATENCY_MS", "0");
    t.run(&["apply", "--auto-approve", "--parallelism", "16"])
        .success();
    assert_converged(&t, &url, n);
    t.run(&["plan", "--detailed-exitcode"]).success();
}

/// The intent of a create on the local runtime is not flushed on its own:
/// the runtime's objects are written after it to the same WAL and flushed
/// before each answer, so they are durable only with it. A server that
/// crashes mid-apply (its unwritten WAL lost) must therefore come back with
/// no object whose intent or record is missing: the next apply converges
/// with no duplicate.
#[test]
fn a_server_crash_mid_apply_loses_no_intent_and_duplicates_nothing() {
    let n = 60;
    let server = super::cluster::Cluster::start(false);
    let url = server.url(&server.database());
    let t = checkout(&url).env("AGENTFORM_LOCAL_LATENCY_MS", "20");
    t.write("agentform.yaml", &manifest(n));
    let (mut child, seen) = apply_until(&t, "16", 30);
    server.crash_and_restart();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the apply finished before the crash: {:?}",
        seen.last()
    );
    let recorded = t
        .run(&["state", "list", "--lock-timeout", "10s"])
        .success()
        .stdout
        .lines()
        .count();
    assert!(recorded < 1 + 2 * n, "the crash came too late");
    let t = t.env("AGENTFORM_LOCAL_LATENCY_MS", "0");
    t.run(&["apply", "--auto-approve", "--parallelism", "16"])
        .success();
    assert_converged(&t, &url, n);
    t.run(&["plan", "--detailed-exitcode"]).success();
}
