//! A state that notices what it lost and does not grow without bound: the
//! serial and lineage checked on opening, backups and `state restore`,
//! corruption reported once with advice, `transcripts prune` and the
//! manifest's `retention`.

use crate::common::*;

/// Two agents in an environment, and one scripted session per name in
/// `sessions` (its agent writes a file in its workspace, then answers);
/// `extra` is added at the top level.
fn manifest(system: &str, sessions: &[&str], extra: &str) -> String {
    let mut m = format!(
        r#"version: 1
name: statetest
{extra}providers:
  local:
    models:
      scripted:
        backend: scripted
        turns:
          - tool_use: [{{ name: write, input: {{ file_path: notes.txt, content: hi }} }}]
          - text: hello there
environments:
  box:
    config: {{ type: cloud }}
agents:
  bot:
    model: scripted
    system: {system}
    tools: [{{ type: agent_toolset_20260401 }}]
  other:
    model: scripted
    system: another bot
sessions:
"#
    );
    for s in sessions {
        m.push_str(&format!(
            "  {s}:\n    agent: bot\n    environment: box\n    steps:\n      - send: hi\n        expect: [{{ contains: hello }}]\n"
        ));
    }
    m
}

fn applied(contents: &str) -> Test {
    let t = Test::new();
    t.write("agentform.yaml", contents);
    t.run(&["apply", "--auto-approve"]).success();
    t
}

fn backups(t: &Test) -> Vec<std::path::PathBuf> {
    let mut files = files_under(&t.path("state/backups"));
    files.sort();
    files
}

fn marker(t: &Test) -> serde_json::Value {
    serde_json::from_str(&t.read("state/marker.json")).expect("marker.json is JSON")
}

/// Runs `f` on the state's sled database, opened directly while no
/// agentform process holds it, and returns once sled has let go of its
/// files (its I/O threads may hold them a moment after the last handle).
fn with_sled<T>(t: &Test, f: impl FnOnce(&sled::Db) -> T) -> T {
    let path = t.path("state/db");
    let db = sled::Config::new()
        .path(&path)
        .flush_every_ms(None)
        .open()
        .expect("open sled");
    let out = f(&db);
    db.flush().expect("flush");
    drop(db);
    sled_let_go(&path);
    out
}

#[test]
fn a_truncated_state_is_refused_and_restored_from_its_backup() {
    let v1 = manifest("test bot", &["chat"], "");
    let t = applied(&v1);
    let records = t.run(&["state", "list"]).success().stdout;
    // The second apply backs up the state as the first left it.
    t.write("agentform.yaml", &manifest("a changed bot", &["chat"], ""));
    let out = t.run(&["apply", "--auto-approve"]).success();
    assert!(
        out.stderr.contains("Backed up the state to"),
        "{}",
        out.stderr
    );
    assert_eq!(backups(&t).len(), 1);
    t.run(&["run"]).success();

    // sled's files go; the marker stays.
    std::fs::remove_dir_all(t.path("state/db")).unwrap();
    for args in [&["plan"][..], &["transcripts", "list"], &["state", "list"]] {
        let out = t.run(args).code(1);
        assert!(
            out.stderr.contains("lost its records")
                && out.stderr.contains("has no serial")
                && out.stderr.contains("agentform state restore")
                && out.stderr.contains("marker.json"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("to add"), "{}", out.stdout);
    }

    // Without a terminal, a restore needs `--auto-approve`.
    let out = t.run(&["state", "restore"]).code(1);
    assert!(
        out.stdout.contains("It replaces a state that was refused"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("--auto-approve"), "{}", out.stderr);

    let out = t.run(&["state", "restore", "--auto-approve"]).success();
    assert!(out.stdout.contains("Restored"), "{}", out.stdout);
    // The records and the local runtime's objects are as before the second apply.
    assert_eq!(t.run(&["state", "list"]).success().stdout, records);
    t.write("agentform.yaml", &v1);
    t.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes");
    assert!(marker(&t)["serial"].as_u64().unwrap() > 1);
}

#[test]
fn a_database_of_another_state_is_refused() {
    let t = applied(&manifest("test bot", &["chat"], ""));
    let other = Test::new();
    other.write("agentform.yaml", &manifest("test bot", &["chat"], ""));
    other.run(&["apply", "--auto-approve"]).success();
    let lineage = marker(&t)["lineage"].as_str().unwrap().to_owned();
    assert_ne!(lineage, marker(&other)["lineage"].as_str().unwrap());

    std::fs::remove_dir_all(t.path("state/db")).unwrap();
    copy_dir(&other.path("state/db"), &t.path("state/db"));
    let out = t.run(&["plan"]).code(1);
    assert!(
        out.stderr.contains("belongs to another state")
            && out.stderr.contains(&lineage)
            && out
                .stderr
                .contains("to adopt that database as this state on purpose, remove"),
        "{}",
        out.stderr
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_state_written_before_serials_opens_and_is_migrated() {
    let t = applied(&manifest("test bot", &["chat"], ""));
    let records = t.run(&["state", "list"]).success().stdout;
    // What the previous version left: the same trees and records, no serial, no marker.
    with_sled(&t, |db| {
        assert!(db.drop_tree("state.meta").unwrap());
    });
    std::fs::remove_file(t.path("state/marker.json")).unwrap();

    assert_eq!(t.run(&["state", "list"]).success().stdout, records);
    let m = marker(&t);
    assert_eq!(m["serial"], 1, "{m}");
    assert_eq!(m["resources"], 4, "{m}");
    assert_eq!(m["lineage"].as_str().unwrap().len(), 32, "{m}");
    t.run(&["plan", "--detailed-exitcode"]).success();

    // From now on the state is protected.
    std::fs::remove_dir_all(t.path("state/db")).unwrap();
    t.run(&["plan"]).code(1).stderr_has("lost its records");
}

#[test]
fn state_restore_round_trips_and_refuses_another_lineage() {
    let t = applied(&manifest("test bot", &["chat"], ""));
    t.write(
        "agentform.yaml",
        &manifest("test bot", &["chat", "extra"], ""),
    );
    t.run(&["apply", "--auto-approve"]).success();
    let before = t.run(&["state", "list"]).success().stdout;
    assert!(before.contains("session.extra"), "{before}");
    let serial = marker(&t)["serial"].as_u64().unwrap();

    // The newest backup is the state before the second apply.
    let out = t.run(&["state", "restore", "--auto-approve"]).success();
    assert!(
        out.stdout.contains("It replaces the state at serial"),
        "{}",
        out.stdout
    );
    let restored = t.run(&["state", "list"]).success().stdout;
    assert!(!restored.contains("session.extra"), "{restored}");
    assert!(marker(&t)["serial"].as_u64().unwrap() > serial);

    // The restore backed up the state it replaced: restoring that undoes it.
    let newest = backups(&t).pop().unwrap();
    let name = newest.file_name().unwrap().to_str().unwrap().to_owned();
    t.run(&["state", "restore", &name, "--auto-approve"])
        .success();
    assert_eq!(t.run(&["state", "list"]).success().stdout, before);
    let listed = t.run(&["state", "backups"]).success().stdout;
    assert!(
        listed.contains(&name) && listed.contains("5 resources"),
        "{listed}"
    );

    // Another state's backup needs `--force`.
    let other = applied(&manifest("test bot", &["chat"], ""));
    other.write("agentform.yaml", &manifest("test bot", &["chat", "x"], ""));
    other.run(&["apply", "--auto-approve"]).success();
    let foreign = backups(&other).pop().unwrap();
    let foreign = foreign.to_str().unwrap();
    t.run(&["state", "restore", foreign, "--auto-approve"])
        .code(1)
        .stderr_has("is of another state");
    assert_eq!(t.run(&["state", "list"]).success().stdout, before);
    t.run(&["state", "restore", foreign, "--auto-approve", "--force"])
        .success();
    assert_eq!(
        marker(&t)["lineage"],
        marker(&other)["lineage"],
        "the state now continues the other lineage"
    );
    t.run(&["state", "restore", "nonexistent.json", "--auto-approve"])
        .code(1)
        .stderr_has("there is no backup `nonexistent.json`");
}

#[test]
fn backups_rotate_and_can_be_turned_off() {
    let t = Test::new().env("AGENTFORM_STATE_BACKUPS", "3");
    for i in 0..6 {
        t.write(
            "agentform.yaml",
            &manifest(&format!("bot {i}"), &["chat"], ""),
        );
        t.run(&["apply", "--auto-approve"]).success();
    }
    let files = backups(&t);
    assert_eq!(files.len(), 3, "{files:?}");
    // The newest backups are kept: their serials are the highest written.
    let serials: Vec<u64> = files
        .iter()
        .map(|f| {
            let b: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            b["serial"].as_u64().unwrap()
        })
        .collect();
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "{serials:?}");
    assert!(serials[2] < marker(&t)["serial"].as_u64().unwrap());

    t.write("agentform.yaml", &manifest("bot off", &["chat"], ""));
    t.run(&["apply", "--auto-approve", "--state-backups", "0"])
        .success();
    assert_eq!(backups(&t), files, "no backup written, none removed");
    // A plan with no changes writes none either.
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(backups(&t), files);
}

#[test]
fn a_damaged_database_is_reported_once_with_advice_and_restored() {
    let t = applied(&manifest("test bot", &["chat"], ""));
    t.write("agentform.yaml", &manifest("test bot 2", &["chat"], ""));
    t.run(&["apply", "--auto-approve"]).success();
    let conf = t.path("state/db/conf");
    std::fs::remove_file(&conf).unwrap();
    std::fs::create_dir(&conf).unwrap();

    let out = t.run(&["plan"]).code(1);
    let err = out.stderr;
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    assert_eq!(err.matches("cannot open").count(), 1, "{err}");
    assert_eq!(err.matches("hint:").count(), 1, "{err}");
    assert!(
        err.contains("cannot open the state database `state/db`")
            && err.contains("damaged or unreadable")
            && err.contains("hint: `agentform state restore` moves the damaged database aside"),
        "{err}"
    );

    t.run(&["state", "restore", "--auto-approve"])
        .success()
        .stderr_has("Moved the damaged database to");
    assert_eq!(
        t.run(&["state", "list"]).success().stdout.lines().count(),
        4
    );
}

/// Transcripts of runs, oldest first, as `transcripts list` prints them.
fn listed(t: &Test) -> Vec<String> {
    t.run(&["transcripts", "list"])
        .success()
        .stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect()
}

fn archived_sessions(t: &Test) -> usize {
    let (_, _, sessions) = live_objects(&t.path("state"));
    sessions.iter().filter(|s| s.archived_at.is_some()).count()
}

/// Runs the sessions; the run id.
fn run(t: &Test) -> String {
    let out = t.run(&["run"]).success().stdout;
    out.lines()
        .find_map(|l| l.strip_prefix("run ")?.split(':').next())
        .unwrap_or_else(|| panic!("no run id in {out}"))
        .to_owned()
}

#[test]
fn transcripts_prune_keeps_runs_or_removes_old_ones() {
    let t = applied(&manifest("test bot", &["a", "b"], ""));
    let runs: Vec<String> = (0..3).map(|_| run(&t)).collect();
    assert_eq!(listed(&t).len(), 6);
    assert_eq!(files_under(&t.path("state/transcripts")).len(), 6);
    // Each run archived the two sessions before it: apply's, then the runs'.
    assert_eq!(archived_sessions(&t), 6);

    // A dry run says what would go and removes nothing.
    let out = t
        .run(&["transcripts", "prune", "--keep", "1", "--dry-run"])
        .success();
    assert!(
        out.stdout.contains(&format!("Would remove {}/a", runs[0]))
            && out.stdout.contains(&format!("Would remove {}/b", runs[1]))
            && out
                .stdout
                .contains("would remove 4 transcripts of 2 runs and 4 archived sessions"),
        "{}",
        out.stdout
    );
    assert_eq!(listed(&t).len(), 6);
    assert_eq!(archived_sessions(&t), 6);

    let out = t.run(&["transcripts", "prune", "--keep", "1"]).success();
    assert!(
        out.stdout
            .contains("Removed 4 transcripts of 2 runs and 4 archived sessions."),
        "{}",
        out.stdout
    );
    let kept = [format!("{}/a", runs[2]), format!("{}/b", runs[2])];
    assert_eq!(listed(&t), kept);
    assert_eq!(files_under(&t.path("state/transcripts")).len(), 2);
    assert_eq!(
        std::fs::read_dir(t.path("state/transcripts"))
            .unwrap()
            .count(),
        1,
        "the pruned runs' directories are gone"
    );
    assert_eq!(
        archived_sessions(&t),
        2,
        "apply's sessions have no transcript"
    );
    // The current sessions are untouched.
    t.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success();
    t.run(&["transcripts", "show", "latest/a"]).success();

    // By age: the run before the pause goes, the one after stays.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let last = run(&t);
    let out = t
        .run(&["transcripts", "prune", "--older-than", "3s"])
        .success();
    assert!(
        out.stdout.contains("Removed 2 transcripts of 1 run"),
        "{}",
        out.stdout
    );
    assert_eq!(listed(&t), [format!("{last}/a"), format!("{last}/b")]);
    t.run(&["transcripts", "prune", "--older-than", "1h"])
        .success()
        .stdout_has("Nothing to prune.");
    t.run(&["transcripts", "prune"])
        .code(2)
        .stderr_has("--keep");
}

/// Entries of the local runtime's event trees.
fn stored_events(t: &Test) -> usize {
    with_sled(t, |db| {
        ["local.events", "local.inbox"]
            .iter()
            .map(|name| db.open_tree(name).unwrap().len())
            .sum()
    })
}

#[test]
fn run_with_retention_keeps_the_state_bounded() {
    let retention = "retention: { transcripts: 2, archived_sessions: 1 }\n";
    let t = applied(&manifest("test bot", &["a", "b"], retention));
    let mut events = Vec::new();
    for round in 1..=5 {
        let out = t.run(&["run"]).success();
        if round > 2 {
            assert!(
                out.stderr
                    .contains("retention: 2 transcripts of 1 run and 2 archived sessions"),
                "round {round}: {}",
                out.stderr
            );
        }
        let runs = round.min(2);
        assert_eq!(listed(&t).len(), 2 * runs, "round {round}");
        assert_eq!(
            files_under(&t.path("state/transcripts")).len(),
            2 * runs,
            "round {round}"
        );
        assert!(archived_sessions(&t) <= 1, "round {round}");
        events.push(stored_events(&t));
    }
    // The events of two current sessions and at most one archived one.
    assert!(events[4] <= events[1], "events kept per round: {events:?}");
    let (_, _, sessions) = live_objects(&t.path("state"));
    assert_eq!(sessions.len(), 3, "two current, one archived");
    let mut workspaces: Vec<String> = std::fs::read_dir(t.path("state/workspaces/sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    workspaces.sort();
    let mut ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    assert_eq!(
        workspaces, ids,
        "a deleted session's workspace goes with it"
    );
}
