//! Template variables: the `vars:` of every file (each declared once) and the
//! `-var NAME=VALUE` overrides, which may only set declared variables.

use std::collections::HashMap;

use marked_yaml::types::MarkedScalarNode;
use serde_json::{Map, Value};

use super::diagnostic::{Diagnostic, Span};
use super::loader::ParsedFile;
use super::yaml;

/// The variables, or `None` when any problem was found.
pub(super) fn collect(
    problems: &mut Vec<Diagnostic>,
    files: &[ParsedFile],
    overrides: &[(String, String)],
) -> Option<Map<String, Value>> {
    let mut vars = declared(problems, files);
    apply_overrides(problems, &mut vars, overrides);
    problems.is_empty().then_some(vars)
}

/// The `vars:` mappings of all files, merged.
fn declared(problems: &mut Vec<Diagnostic>, files: &[ParsedFile]) -> Map<String, Value> {
    let mut vars = Map::new();
    let mut first_seen: HashMap<String, Span> = HashMap::new();
    for file in files {
        let Some(node) = file.node.as_mapping().and_then(|m| m.get_node("vars")) else {
            continue;
        };
        let Some(vmap) = node.as_mapping() else {
            problems.push(Diagnostic::new("`vars` must be a mapping of names to values", yaml::span_of(node))
                .help("write `vars:` followed by `NAME: VALUE` lines, e.g. `vars: { model: claude-sonnet-4-6 }`"));
            continue;
        };
        for (key, value) in vmap.iter() {
            let name = key.as_str().to_string();
            let span = Span::from_marked(key.span()).unwrap_or(Span::file_start(file.source));
            if let Some(first) = first_seen.get(&name) {
                problems.push(
                    Diagnostic::at(span, format!("variable `{name}` is declared twice"))
                        .note(*first, "first declared here")
                        .help("declare each variable in one file"),
                );
                continue;
            }
            first_seen.insert(name.clone(), span);
            match yaml::to_json(value, &mut Vec::new(), &mut |s, _| {
                Ok(yaml::scalar_value(s))
            }) {
                Ok(v) => {
                    vars.insert(name, v);
                }
                Err(d) => problems.push(d),
            }
        }
    }
    vars
}

/// `-var` values, typed as a plain YAML scalar would be.
fn apply_overrides(
    problems: &mut Vec<Diagnostic>,
    vars: &mut Map<String, Value>,
    overrides: &[(String, String)],
) {
    for (name, raw) in overrides {
        if !vars.contains_key(name) {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            problems.push(Diagnostic::new(format!("`-var {name}=…` sets a variable the manifest does not declare"), None)
                .help(if known.is_empty() {
                    format!("declare it under `vars:` in the manifest, e.g. `vars: {{ {name}: default }}`")
                } else {
                    format!("declared variables: {}", known.join(", "))
                }));
            continue;
        }
        let node = MarkedScalarNode::new(marked_yaml::Span::new_blank(), raw.as_str());
        vars.insert(name.clone(), yaml::scalar_value(&node));
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{at, help, load, load_with_vars, refusals};

    const USES_MODEL: &str = "agents:\n  a:\n    model: \"{{ vars.model }}\"\n";

    #[test]
    fn overrides_replace_declared_values_with_their_yaml_type() {
        let text = format!("version: 1\nvars: {{ model: m1, n: 1 }}\n{USES_MODEL}");
        let files = [("a.yaml", text.as_str())];
        let m = load_with_vars(&files, &[("model", "m2")]).unwrap();
        assert_eq!(m.resources[0].body["model"], "m2");
        assert_eq!(m.templater.vars()["n"], 1);
        let m = load_with_vars(&files, &[("n", "7")]).unwrap();
        assert_eq!(m.templater.vars()["n"], 7);
    }

    #[test]
    fn vars_from_several_files_combine() {
        let m = load(&[
            ("a.yaml", "version: 1\nvars: { model: m1 }\n"),
            (
                "b.yaml",
                &format!("version: 1\nvars: {{ team: core }}\n{USES_MODEL}"),
            ),
        ])
        .unwrap();
        assert_eq!(m.resources[0].body["model"], "m1");
    }

    #[test]
    fn a_variable_declared_in_two_files_is_refused_with_a_note() {
        let d = refusals(&[
            ("a.yaml", "version: 1\nvars:\n  model: m1\n"),
            ("b.yaml", "version: 1\nvars:\n  team: t\n  model: m2\n"),
        ]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].message, "variable `model` is declared twice");
        assert_eq!((d[0].span.unwrap().source, at(&d[0])), (1, (4, 3)));
        assert_eq!(d[0].notes[0].0.source, 0);
        assert_eq!(help(&d[0]), "declare each variable in one file");
    }

    #[test]
    fn vars_must_be_a_mapping() {
        let d = refusals(&[("a.yaml", "version: 1\nvars: [a, b]\n")]);
        assert_eq!(d[0].message, "`vars` must be a mapping of names to values");
        assert_eq!(at(&d[0]), (2, 7));
    }

    #[test]
    fn an_override_of_an_undeclared_variable_lists_the_declared_ones() {
        let text = "version: 1\nvars: { model: m, team: t }\n";
        let err = load_with_vars(&[("a.yaml", text)], &[("modle", "x")]).unwrap_err();
        let d = &err.items[0];
        assert_eq!(
            d.message,
            "`-var modle=…` sets a variable the manifest does not declare"
        );
        assert!(d.span.is_none());
        assert_eq!(help(d), "declared variables: model, team");
        let err = load_with_vars(&[("a.yaml", "version: 1\n")], &[("x", "1")]).unwrap_err();
        assert!(help(&err.items[0]).starts_with("declare it under `vars:`"));
    }
}
