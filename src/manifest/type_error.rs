//! Turning a serde error on a file's JSON into a diagnostic that points at the
//! right place in the YAML and says what was expected. Only wording and
//! positions: which shapes are valid is decided by the types in `spec`.
//!
//! A value that came from `env()` is a secret: an error about it names the
//! field and the problem, and shows `(sensitive)` instead of the value.

use marked_yaml::Node;

use super::diagnostic::{Diagnostic, Span};
use super::yaml::{self, locate, Found, Seg};
use crate::redact::SENSITIVE;

/// The error serde reports when reading a file's JSON into its spec.
pub(super) type SerdeError = serde_path_to_error::Error<serde_json::Error>;

/// A value read with `env()`: where it is in the file, and what it is.
pub(super) type Secret = (yaml::Path, String);

/// A diagnostic for `e`, located in the file whose nodes are `root`;
/// `secrets` are the file's `env()` values.
pub(super) fn type_error(root: &Node, e: &SerdeError, secrets: &[Secret]) -> Diagnostic {
    let path = serde_path(e);
    let raw = e.inner().to_string();
    let raw = raw.split(" at line ").next().unwrap_or(&raw).to_string();
    if let Some((key, rest)) = raw
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
    {
        return unknown_field(root, &path, key, rest);
    }
    if let Some(secret) = secret_quoted(&path, &raw, secrets) {
        return sensitive_mismatch(root, secret, &raw);
    }
    mismatch(root, &path, &raw)
}

/// The value a message quotes: an unknown variant, or a string where
/// something else was expected.
fn quoted(raw: &str) -> Option<&str> {
    raw.strip_prefix("unknown variant `")
        .and_then(|r| r.split_once('`'))
        .or_else(|| {
            raw.strip_prefix("invalid type: string \"")
                .and_then(|r| r.split_once('"'))
        })
        .map(|(v, _)| v)
}

/// The secret at or below `path` whose value the message quotes, as serde
/// quotes values: in backticks, or as a Rust string literal. Inside enums
/// serde's path stops at the enum, so the secret may lie deeper.
fn secret_quoted<'a>(path: &[Seg], raw: &str, secrets: &'a [Secret]) -> Option<&'a Secret> {
    secrets.iter().find(|(at, value)| {
        at.starts_with(path)
            && (raw.contains(&format!("`{value}`")) || raw.contains(&format!("{value:?}")))
    })
}

/// An error about a secret: the field it is in and the problem, never the value.
fn sensitive_mismatch(root: &Node, (path, value): &Secret, raw: &str) -> Diagnostic {
    let raw = raw
        .replace(&format!("`{value}`"), SENSITIVE)
        .replace(&format!("{value:?}"), SENSITIVE);
    let span = locate(root, path, None);
    Diagnostic::new(format!("`{}`: {raw}", yaml::path_string(path)), span).help(help(&raw))
}

/// The path serde followed, as far as it knows it.
fn serde_path(e: &SerdeError) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    let mut path = Vec::new();
    for seg in e.path().iter() {
        match seg {
            Segment::Seq { index } => path.push(Seg::Index(*index)),
            Segment::Map { key } => path.push(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    path
}

/// Inside enums serde buffers the value and the path stops at the enum; the
/// first node below `subtree` that `hit` accepts is then the place.
fn search(subtree: Option<&Node>, hit: &dyn Fn(Found<'_>) -> bool) -> Option<Span> {
    subtree.and_then(|n| yaml::find(n, hit))
}

/// `unknown field `key``, with the fields serde expected listed in `rest`.
fn unknown_field(root: &Node, path: &[Seg], key: &str, rest: &str) -> Diagnostic {
    let subtree = yaml::node_at(root, path);
    // For plain structs the path already ends with the unknown key.
    let path = match path.split_last() {
        Some((Seg::Key(k), parent)) if k == key => parent,
        _ => path,
    };
    let span = yaml::node_at(root, path)
        .and_then(|n| match n {
            Node::Mapping(m) => yaml::key_span(m, key),
            _ => None,
        })
        .or_else(|| search(subtree, &|f| matches!(f, Found::Key(k) if k == key)))
        .or_else(|| locate(root, path, None));
    let expected = rest
        .trim_start_matches(", ")
        .replace("expected one of ", "")
        .replace("expected ", "");
    let where_ = yaml::path_string(path);
    let within = if where_.is_empty() {
        "the top level".to_string()
    } else {
        format!("`{where_}`")
    };
    Diagnostic::new(format!("unknown field `{key}` in {within}"), span)
        .help(format!("expected one of: {expected}"))
}

/// Every other error: a wrong type, a missing field, an unknown variant.
fn mismatch(root: &Node, path: &[Seg], raw: &str) -> Diagnostic {
    let subtree = yaml::node_at(root, path);
    let mut span = quoted_value(subtree, raw);
    let message = message(root, path, raw, subtree, &mut span);
    let span = span.or_else(|| locate(root, path, None));
    Diagnostic::new(message, span).help(help(raw))
}

/// Where the value a message quotes is.
fn quoted_value(subtree: Option<&Node>, raw: &str) -> Option<Span> {
    let quoted = quoted(raw)?;
    search(subtree, &|f| matches!(f, Found::Scalar(x) if x == quoted))
}

/// The sentence for `raw`; may move `span` to a better place.
fn message(
    root: &Node,
    path: &[Seg],
    raw: &str,
    subtree: Option<&Node>,
    span: &mut Option<Span>,
) -> String {
    let where_ = yaml::path_string(path);
    let message = if raw.contains("untagged enum ModelSpec") {
        "`model` must be a model id string or an object with `id`".to_string()
    } else if raw.contains("untagged enum AgentRefSpec") {
        agent_ref_problem(subtree, span)
    } else if let Some(f) = raw.strip_prefix("missing field ") {
        // Point at the key that names the incomplete mapping.
        if let Some((Seg::Key(k), parent)) = path.split_last() {
            *span = locate(root, parent, Some(k));
        }
        if where_.is_empty() {
            format!("missing field {f}")
        } else {
            format!("`{where_}` is missing the field {f}")
        }
    } else if where_.is_empty() {
        raw.to_string()
    } else {
        format!("`{where_}`: {raw}")
    };
    if message.is_empty() {
        raw.to_string()
    } else {
        message
    }
}

fn help(raw: &str) -> &'static str {
    if raw.contains("unknown variant") {
        "use one of the values listed above"
    } else if raw.starts_with("missing field") {
        "add the field; see schemas/agentform.schema.json for every field"
    } else if raw.contains("untagged enum AgentRefSpec") {
        "write `agent: NAME` for the latest version or `agent: { name: NAME, version: N }` to pin one"
    } else {
        "see schemas/agentform.schema.json for the expected shape"
    }
}

/// Says what is wrong with a session's `agent` when it is neither a name nor
/// `{name, version}`, and where.
fn agent_ref_problem(node: Option<&Node>, span: &mut Option<Span>) -> String {
    let Some(Node::Mapping(m)) = node else {
        return "`agent` must be an agent name or `{ name: NAME, version: N }`".into();
    };
    for (k, v) in m.iter() {
        match k.as_str() {
            "name" => {}
            "version" => {
                let ok = v
                    .as_scalar()
                    .is_some_and(|s| s.as_str().parse::<u64>().is_ok());
                if !ok {
                    *span = yaml::span_of(v);
                    return "the pinned agent `version` must be a whole number such as `3`".into();
                }
            }
            other => {
                *span = Span::from_marked(k.span());
                return format!(
                    "unknown field `{other}` in a pinned agent; expected `name` and `version`"
                );
            }
        }
    }
    for required in ["name", "version"] {
        if m.get_node(required).is_none() {
            *span = yaml::span_of(&Node::Mapping(m.clone()));
            return format!("a pinned agent needs `{required}`");
        }
    }
    "`agent` must be an agent name or `{ name: NAME, version: N }`".into()
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{at, help, refusal};

    const AGENT: &str = "version: 1\nagents:\n  a:\n    model: m\n";

    #[test]
    fn an_unknown_field_lists_the_expected_ones() {
        let d = refusal(&format!("{AGENT}    sytem: x\n"));
        assert_eq!(d.message, "unknown field `sytem` in `agents.a`");
        assert_eq!(at(&d), (5, 5));
        assert!(help(&d).starts_with("expected one of: `provider`, `depends_on`, `name`"));
        let d = refusal("version: 1\nagent: {}\n");
        assert_eq!(d.message, "unknown field `agent` in the top level");
        assert_eq!(at(&d), (2, 1));
    }

    #[test]
    fn an_unknown_field_inside_an_enum_is_found_below_it() {
        let d = refusal(
            "version: 1\nenvironments:\n  e:\n    config:\n      type: cloud\n      packges: {}\n",
        );
        assert_eq!(
            d.message,
            "unknown field `packges` in `environments.e.config`"
        );
        assert_eq!(at(&d), (6, 7));
    }

    #[test]
    fn an_unknown_variant_points_at_the_value() {
        let d = refusal(&format!("{AGENT}    tools: [{{ type: agent_toolset }}]\n"));
        assert!(
            d.message.contains("unknown variant `agent_toolset`"),
            "{}",
            d.message
        );
        assert_eq!(at(&d), (5, 21));
        assert_eq!(help(&d), "use one of the values listed above");
    }

    #[test]
    fn a_missing_field_points_at_the_incomplete_mapping() {
        let d = refusal("version: 1\nagents:\n  a:\n    system: x\n");
        assert_eq!(d.message, "`agents.a` is missing the field `model`");
        assert_eq!(at(&d), (3, 3));
        assert!(help(&d).starts_with("add the field"));
    }

    #[test]
    fn a_wrong_type_names_the_path() {
        let d = refusal(&format!("{AGENT}    tools: bash\n"));
        assert!(
            d.message
                .starts_with("`agents.a.tools`: invalid type: string \"bash\""),
            "{}",
            d.message
        );
        assert_eq!(at(&d), (5, 12));
        assert!(help(&d).contains("schemas/agentform.schema.json"));
    }

    #[test]
    fn a_pinned_agent_says_which_part_is_wrong() {
        let session = "environments:\n  e: {}\nsessions:\n  s:\n    environment: e\n";
        let cases = [
            (
                "{ name: a, version: three }",
                "the pinned agent `version` must be a whole number such as `3`",
                (10, 32),
            ),
            (
                "{ name: a, vers: 3 }",
                "unknown field `vers` in a pinned agent; expected `name` and `version`",
                (10, 23),
            ),
            ("{ name: a }", "a pinned agent needs `version`", (10, 14)),
        ];
        for (agent, message, position) in cases {
            let d = refusal(&format!("{AGENT}{session}    agent: {agent}\n"));
            assert_eq!(d.message, message);
            assert_eq!(at(&d), position, "{agent}");
            assert!(help(&d).starts_with("write `agent: NAME`"));
        }
    }

    /// Sets `name` for this test process; each test uses its own names.
    fn set_env(name: &str, value: &str) {
        std::env::set_var(name, value);
    }

    #[test]
    fn a_bad_variant_from_env_names_the_field_but_not_the_value() {
        set_env("AF_TYPE_ERROR_NET", "NETSECRET-zz");
        let d = refusal(
            "version: 1\nenvironments:\n  e:\n    config:\n      type: cloud\n\
             \x20     networking:\n        type: \"{{ env('AF_TYPE_ERROR_NET') }}\"\n",
        );
        assert!(!format!("{d:?}").contains("NETSECRET"), "{d:?}");
        assert!(
            d.message.starts_with(
                "`environments.e.config.networking.type`: unknown variant (sensitive), expected"
            ),
            "{}",
            d.message
        );
        assert_eq!(at(&d), (7, 15));
        assert_eq!(help(&d), "use one of the values listed above");
    }

    #[test]
    fn a_bad_number_or_duration_from_env_is_not_shown() {
        set_env("AF_TYPE_ERROR_NUM", "NUMSECRET-1");
        let d = refusal(
            "version: 1\nproviders:\n  local:\n    latency_ms: \"{{ env('AF_TYPE_ERROR_NUM') }}\"\n",
        );
        assert_eq!(
            d.message,
            "`providers.local.latency_ms`: invalid type: string (sensitive), expected u64"
        );
        assert_eq!(at(&d), (4, 17));
        // Found by a later pass: the value is still never shown.
        set_env("AF_TYPE_ERROR_TIMEOUT", "TIMEOUTSECRET-9");
        let d = refusal(&format!(
            "{AGENT}environments:\n  e: {{}}\nsessions:\n  s:\n    agent: a\n    environment: e\n\
             \x20   timeout: \"{{{{ env('AF_TYPE_ERROR_TIMEOUT') }}}}\"\n"
        ));
        assert_eq!(
            d.message,
            "`sessions.s.timeout`: (sensitive) is not a duration"
        );
        assert_eq!(at(&d), (11, 14));
    }

    #[test]
    fn a_value_typed_in_the_file_is_still_quoted() {
        let d = refusal(
            "version: 1\nenvironments:\n  e:\n    config:\n      type: cloud\n\
             \x20     networking: { type: open }\n",
        );
        assert!(
            d.message.contains("unknown variant `open`"),
            "{}",
            d.message
        );
    }
}
