use crate::common::*;

#[test]
fn checked_in_schema_is_current() {
    let generated = agentform::manifest::schema_json();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/agentform.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "schemas/agentform.schema.json is stale; regenerate it with `cargo run -- schema > schemas/agentform.schema.json`"
    );
}

#[test]
fn schema_command_prints_the_same_schema() {
    let out = Test::new().run(&["schema"]).success();
    assert_eq!(
        out.stdout.trim_end(),
        agentform::manifest::schema_json().trim_end()
    );
}
