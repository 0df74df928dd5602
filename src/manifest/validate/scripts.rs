//! A session's script for `agentform run`: durations, step messages,
//! regular expressions of expectations and tool handler commands.

use super::Fields;
use crate::manifest::diagnostic::{Diagnostic, Span};
use crate::manifest::parse_duration;
use crate::manifest::spec::{Expectation, SessionSpec, ToolHandlerSpec};

/// Names the field: when the value came from `env()` it is not shown.
pub(super) fn bad_duration(field: &str, value: &str, span: Option<Span>) -> Diagnostic {
    Diagnostic::new(format!("`{field}`: `{value}` is not a duration"), span)
        .help("write a number and a unit: `500ms`, `30s`, `2m` or `1h`")
}

pub(super) fn check(spec: &SessionSpec, fields: &Fields, problems: &mut Vec<Diagnostic>) {
    if let Some(t) = &spec.timeout {
        if parse_duration(t).is_none() {
            let field = fields.path(&["timeout"]);
            problems.push(bad_duration(&field, t, Some(fields.at(&["timeout"], None))));
        }
    }
    for (i, step) in spec.steps.iter().enumerate() {
        let index = i.to_string();
        let at = |rest: &[&str]| {
            let mut p = vec!["steps", index.as_str()];
            p.extend_from_slice(rest);
            fields.at(&p, None)
        };
        if let Some(t) = &step.timeout {
            if parse_duration(t).is_none() {
                let field = format!("{}[{i}].timeout", fields.path(&["steps"]));
                problems.push(bad_duration(&field, t, Some(at(&["timeout"]))));
            }
        }
        for e in &step.expect {
            if let Expectation::Regex(r) = e {
                if let Err(err) = regex::Regex::new(r) {
                    problems.push(
                        Diagnostic::at(
                            at(&["expect"]),
                            format!("invalid regular expression `{r}`: {err}"),
                        )
                        .help(
                            "the syntax is Rust's `regex` crate; escape `\\` in double-quoted YAML",
                        ),
                    );
                }
            }
        }
        if step.send.trim().is_empty() {
            problems.push(
                Diagnostic::at(at(&["send"]), "`send` is empty")
                    .help("write the user message to send"),
            );
        }
    }
    for (tool, handler) in &spec.tools {
        if let ToolHandlerSpec::Run(cmd) = handler {
            if cmd.trim().is_empty() {
                problems.push(Diagnostic::at(
                    fields.at(&["tools"], Some(tool)),
                    format!("the handler of `{tool}` has an empty command"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{at, help, load, refusal, refusals};

    fn session(body: &str) -> String {
        format!(
            "version: 1\nenvironments:\n  e: {{}}\nagents:\n  a:\n    model: m\n\
             sessions:\n  s:\n    agent: a\n    environment: e\n{body}"
        )
    }

    #[test]
    fn a_valid_script_loads() {
        let text = session(
            "    timeout: 5m\n    steps:\n      - send: hi\n        timeout: 30s\n\
             \x20       expect: [{ regex: \"^h.$\" }, { contains: hi }]\n\
             \x20   tools:\n      lookup: { run: \"cat\" }\n",
        );
        let m = load(&[("a.yaml", &text)]).unwrap();
        let script = m.resources[2].script.as_ref().unwrap();
        assert_eq!(script.steps.len(), 1);
    }

    #[test]
    fn bad_durations_are_refused_where_written() {
        let d = refusals(&[(
            "a.yaml",
            &session(
                "    timeout: forever\n    steps:\n      - send: hi\n        timeout: \"5\"\n",
            ),
        )]);
        let found: Vec<(&str, (usize, usize))> =
            d.iter().map(|d| (d.message.as_str(), at(d))).collect();
        assert_eq!(
            found,
            [
                (
                    "`sessions.s.timeout`: `forever` is not a duration",
                    (11, 14)
                ),
                (
                    "`sessions.s.steps[0].timeout`: `5` is not a duration",
                    (14, 18)
                )
            ]
        );
        assert_eq!(
            help(&d[0]),
            "write a number and a unit: `500ms`, `30s`, `2m` or `1h`"
        );
    }

    #[test]
    fn an_invalid_regex_and_an_empty_message_are_refused() {
        let d = refusal(&session(
            "    steps:\n      - send: hi\n        expect: [{ regex: \"(\" }]\n",
        ));
        assert!(d.message.starts_with("invalid regular expression `(`: "));
        assert_eq!(at(&d), (13, 17));
        assert!(help(&d).contains("Rust's `regex` crate"));
        let d = refusal(&session("    steps:\n      - send: \" \"\n"));
        assert_eq!(d.message, "`send` is empty");
        assert_eq!(at(&d), (12, 15));
    }

    #[test]
    fn a_handler_needs_a_command() {
        let d = refusal(&session("    tools:\n      lookup: { run: \"\" }\n"));
        assert_eq!(d.message, "the handler of `lookup` has an empty command");
        assert_eq!(at(&d), (12, 7));
    }
}
