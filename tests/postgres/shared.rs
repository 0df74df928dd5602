//! Two checkouts in different directories share one state: what one
//! applies, the other plans against; what one runs, the other reads.

use super::{checkout, cluster, fresh_state, manifest};

const SCRIPTED: &str = r#"version: 1
name: team
providers:
  local:
    models:
      scripted:
        backend: scripted
        turns:
          - text: hello from the CI runner
environments:
  box:
    config: { type: cloud }
agents:
  bot:
    model: scripted
    system: test bot
sessions:
  chat:
    agent: bot
    environment: box
    steps:
      - send: hi
        expect: [{ contains: hello from the CI runner }]
"#;

#[test]
fn a_second_checkout_sees_what_the_first_applied() {
    let url = fresh_state();
    let laptop = checkout(&url);
    let ci = checkout(&url);
    laptop.write("agentform.yaml", &manifest(2));
    ci.write("agentform.yaml", &manifest(2));
    laptop.run(&["apply", "--auto-approve"]).success();
    ci.run(&["plan", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes");
    ci.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success();
    assert!(
        !ci.path("state").exists(),
        "a PostgreSQL state writes no state directory"
    );
    // A change from the second checkout is seen by the first.
    ci.write("agentform.yaml", &manifest(3));
    ci.run(&["apply", "--auto-approve"]).success();
    laptop.write("agentform.yaml", &manifest(3));
    laptop.run(&["plan", "--detailed-exitcode"]).success();
    let listed = laptop.run(&["state", "list"]).success().stdout;
    assert_eq!(listed.lines().count(), 7, "{listed}");
    // The tables are agentform's own, in its schema.
    let c = cluster();
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    assert_eq!(
        c.psql(db, "SELECT max(version) FROM agentform.schema_version"),
        "1"
    );
}

#[test]
fn a_run_in_one_checkout_is_shown_in_the_other() {
    let url = fresh_state();
    let ci = checkout(&url);
    let laptop = checkout(&url);
    ci.write("agentform.yaml", SCRIPTED);
    laptop.write("agentform.yaml", SCRIPTED);
    ci.run(&["apply", "--auto-approve"]).success();
    ci.run(&["run"]).success().stdout_has("1 passed, 0 failed");
    // The transcript's contents went into the state, not only a file.
    let left: Vec<_> = crate::common::files_under(&ci.path(".agentform/transcripts"));
    assert!(left.is_empty(), "transcript files left behind: {left:?}");
    laptop
        .run(&["transcripts", "list"])
        .success()
        .stdout_has("/chat\tpassed");
    laptop
        .run(&["transcripts", "show", "latest/chat"])
        .success()
        .stdout_has("hello from the CI runner");
}

#[test]
fn projects_sharing_a_database_keep_to_their_schemas() {
    let c = cluster();
    let db = c.database();
    let a = checkout(&format!("{}&schema=project_a", c.url(&db)));
    let b = checkout(&format!("{}&schema=project_b", c.url(&db)));
    a.write("agentform.yaml", &manifest(1));
    b.write("agentform.yaml", &manifest(2));
    a.run(&["apply", "--auto-approve"]).success();
    b.run(&["apply", "--auto-approve"]).success();
    assert_eq!(
        a.run(&["state", "list"]).success().stdout.lines().count(),
        3
    );
    assert_eq!(
        b.run(&["state", "list"]).success().stdout.lines().count(),
        5
    );
    assert_eq!(
        c.psql(&db, "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname LIKE 'project_%'"),
        "project_a,project_b"
    );
}
