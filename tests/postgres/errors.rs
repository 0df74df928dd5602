//! What a server refuses is one clear error naming the host and what to
//! check, before anything changes; the password is never shown.

use super::cluster::{NO_PERMISSION_USER, PASSWORD, PASSWORD_USER};
use super::{checkout, cluster, fresh_state, manifest};

#[test]
fn the_password_comes_from_the_url_pgpassword_or_pgpass_and_is_never_shown() {
    let c = cluster();
    let db = c.database_owned_by(PASSWORD_USER);
    let base = format!("127.0.0.1:{}/{db}?sslmode=disable", c.port);
    // Wrong: refused, naming the user and what to check, the password unsaid.
    let wrong = checkout(&format!(
        "postgres://{PASSWORD_USER}:not-the-password@{base}"
    ));
    wrong.write("agentform.yaml", &manifest(1));
    let out = wrong.run(&["plan"]).code(1);
    assert!(
        out.stderr
            .contains(&format!("refused user `{PASSWORD_USER}`"))
            && out.stderr.contains("PGPASSWORD")
            && out.stderr.contains(&format!("127.0.0.1:{}", c.port)),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("not-the-password") && !out.stdout.contains("not-the-password"));
    // In the URL.
    let in_url = checkout(&format!("postgres://{PASSWORD_USER}:{PASSWORD}@{base}"));
    in_url.write("agentform.yaml", &manifest(1));
    let out = in_url.run(&["apply", "--auto-approve", "-v"]).success();
    assert!(!out.stderr.contains(PASSWORD) && !out.stdout.contains(PASSWORD));
    // From PGPASSWORD.
    let url = format!("postgres://{PASSWORD_USER}@{base}");
    let from_env = checkout(&url).env("PGPASSWORD", PASSWORD);
    from_env.write("agentform.yaml", &manifest(1));
    from_env.run(&["plan", "--detailed-exitcode"]).success();
    // From a password file.
    let from_file = checkout(&url);
    from_file.write(
        "pgpass",
        &format!("127.0.0.1:{}:{db}:{PASSWORD_USER}:{PASSWORD}\n", c.port),
    );
    let file = from_file.path("pgpass").display().to_string();
    let from_file = from_file.env("PGPASSFILE", &file);
    from_file.write("agentform.yaml", &manifest(1));
    from_file.run(&["plan", "--detailed-exitcode"]).success();
    // Nothing stored holds it.
    let stored = c.psql(
        &db,
        &format!(
            "SELECT count(*) FROM agentform.entries WHERE position('{PASSWORD}'::bytea in value) > 0"
        ),
    );
    assert_eq!(stored, "0");
}

#[test]
fn a_missing_database_is_named_with_how_to_create_it() {
    let c = cluster();
    let t = checkout(&c.url("no_such_database"));
    t.write("agentform.yaml", &manifest(1));
    t.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has("the database `no_such_database` does not exist")
        .stderr_has(&format!(
            "createdb -h 127.0.0.1 -p {} no_such_database",
            c.port
        ));
    assert!(!t.path(".agentform").exists() && !t.path("state").exists());
}

#[test]
fn an_unreachable_server_is_named_with_what_to_check() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = checkout(&format!(
        "postgres://u:secret-pw@127.0.0.1:{port}/db?sslmode=disable&connect_timeout=2"
    ));
    t.write("agentform.yaml", &manifest(1));
    let out = t.run(&["plan"]).code(1);
    assert!(
        out.stderr
            .contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}"))
            && out.stderr.contains("listen_addresses"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("secret-pw"), "{}", out.stderr);
}

#[test]
fn a_missing_permission_is_named_before_anything_changes() {
    let c = cluster();
    let db = c.database();
    let t = checkout(&format!(
        "postgres://{NO_PERMISSION_USER}@127.0.0.1:{}/{db}?sslmode=disable",
        c.port
    ));
    t.write("agentform.yaml", &manifest(1));
    t.run(&["apply", "--auto-approve"])
        .code(1)
        .stderr_has(&format!("user `{NO_PERMISSION_USER}` lacks a permission"))
        .stderr_has("GRANT CREATE ON DATABASE");
    assert_eq!(
        c.psql(
            &db,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'agentform'"
        ),
        "0"
    );
}

#[test]
fn a_state_newer_than_the_binary_is_refused() {
    let url = fresh_state();
    let t = checkout(&url);
    t.write("agentform.yaml", &manifest(1));
    t.run(&["apply", "--auto-approve"]).success();
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    cluster().psql(
        db,
        "INSERT INTO agentform.schema_version (version) VALUES (99)",
    );
    t.run(&["plan"])
        .code(1)
        .stderr_has("at version 99, newer than this agentform knows (up to 1)")
        .stderr_has("upgrade agentform");
}
