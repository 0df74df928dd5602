//! Declaration: addresses and key positions, defaults, session bodies,
//! deferred templates, `env()` values, duplicates across files.

use super::pointer;
use crate::manifest::test_support::{at, help, load, refusal, refusals, resource};
use crate::manifest::yaml::Seg;

const BASE: &str = "version: 1\nenvironments:\n  data: {}\n";

#[test]
fn every_entry_is_a_resource_at_its_address_with_its_key_position() {
    let m = load(&[(
        "a.yaml",
        &format!("{BASE}agents:\n  coder:\n    model: m\nsessions:\n  s:\n    agent: coder\n    environment: data\n"),
    )])
    .unwrap();
    let found: Vec<(String, (usize, usize))> = m
        .resources
        .iter()
        .map(|r| (r.address.to_string(), (r.span.line, r.span.column)))
        .collect();
    assert_eq!(
        found,
        [
            ("environment.data".to_string(), (3, 3)),
            ("agent.coder".to_string(), (5, 3)),
            ("session.s".to_string(), (8, 3)),
        ]
    );
}

#[test]
fn names_default_to_the_key_and_providers_to_the_file_default() {
    let m = load(&[(
        "a.yaml",
        "version: 1\nprovider: anthropic\nenvironments:\n  data: { name: shared, provider: local }\n\
         agents:\n  coder:\n    model: m\n",
    )])
    .unwrap();
    let coder = resource(&m, "agent.coder");
    assert_eq!(coder.body["name"], "coder");
    assert_eq!(coder.provider, "anthropic");
    let data = resource(&m, "environment.data");
    assert_eq!(data.body["name"], "shared");
    assert_eq!(data.provider, "local");
    assert!(data.body.get("provider").is_none());
}

#[test]
fn a_session_body_holds_what_the_api_takes() {
    let m = load(&[(
        "a.yaml",
        &format!(
            "{BASE}agents:\n  coder:\n    model: m\nsessions:\n  s:\n    agent: coder\n    environment: data\n\
             \x20   metadata: {{ team: core }}\n    vault_ids: [v1]\n    steps: [{{ send: hi }}]\n    timeout: 1m\n"
        ),
    )])
    .unwrap();
    let s = resource(&m, "session.s");
    assert_eq!(
        s.body,
        serde_json::json!({
            "agent": "coder",
            "environment": "data",
            "metadata": {"team": "core"},
            "vault_ids": ["v1"],
        })
    );
    assert_eq!(s.script.as_ref().unwrap().steps[0].send, "hi");
}

#[test]
fn references_wait_for_outputs_at_their_pointer() {
    let m = load(&[(
        "a.yaml",
        &format!(
            "{BASE}agents:\n  coder:\n    model: m\n    metadata: {{ env/id: \"{{{{ environment.data.id }}}}\" }}\n"
        ),
    )])
    .unwrap();
    let coder = resource(&m, "agent.coder");
    assert_eq!(coder.deferred.len(), 1);
    let d = &coder.deferred[0];
    assert_eq!(d.pointer, "/metadata/env~1id");
    assert_eq!(d.template, "{{ environment.data.id }}");
    assert_eq!(d.references[0].to_string(), "environment.data.id");
    assert_eq!((d.span.line, d.span.column), (7, 25));
    assert_eq!(coder.body["metadata"]["env/id"], d.template);
}

#[test]
fn env_values_are_marked_sensitive() {
    let m = load(&[(
        "a.yaml",
        &format!(
            "{BASE}agents:\n  coder:\n    model: m\n\
             \x20   system: \"key {{{{ env('AGENTFORM_UNIT_SURELY_UNSET', 'fallback') }}}}\"\n\
             \x20   description: plain\n"
        ),
    )])
    .unwrap();
    let coder = resource(&m, "agent.coder");
    assert_eq!(coder.sensitive, ["/system"]);
    assert_eq!(coder.body["system"], "key fallback");
}

#[test]
fn fields_that_shape_the_graph_cannot_wait_for_outputs() {
    let d = refusal(&format!(
        "{BASE}agents:\n  coder:\n    model: m\n    name: \"{{{{ environment.data.name }}}}\"\n"
    ));
    assert_eq!(d.message, "`name` cannot refer to other resources' outputs");
    assert_eq!(at(&d), (7, 11));
    assert_eq!(help(&d), "write the value literally, or use `vars`");
}

#[test]
fn invalid_names_are_refused_at_the_key() {
    let d = refusal("version: 1\nagents:\n  9lives:\n    model: m\n");
    assert_eq!(d.message, "`9lives` is not a valid agent name");
    assert_eq!(at(&d), (3, 3));
    assert!(help(&d).starts_with("names start with a letter or `_`"));
}

#[test]
fn a_resource_declared_in_two_files_is_refused_with_a_note() {
    let d = refusals(&[
        ("a.yaml", "version: 1\nagents:\n  writer:\n    model: m\n"),
        ("b.yaml", "version: 1\nagents:\n  writer:\n    model: n\n"),
    ]);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, "`agent.writer` is declared twice");
    assert_eq!((d[0].span.unwrap().source, at(&d[0])), (1, (3, 3)));
    let (first, note) = &d[0].notes[0];
    assert_eq!((first.source, first.line, first.column), (0, 3, 3));
    assert_eq!(note, "first declared here");
    assert!(help(&d[0]).starts_with("rename one of them"));
}

#[test]
fn pointers_escape_per_rfc_6901() {
    let path = [
        Seg::Key("a/b".into()),
        Seg::Index(2),
        Seg::Key("c~d".into()),
    ];
    assert_eq!(pointer(&path), "/a~1b/2/c~0d");
}
