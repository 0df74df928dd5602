//! From a parsed file to its typed [`FileSpec`]: every templated string is
//! rendered with `vars` and `env()`, or kept for later when it refers to other
//! resources' outputs; then serde reads the result. Positions of problems come
//! from the parsed nodes; nothing here decides what is valid beyond the types.

use marked_yaml::types::MarkedScalarNode;
use serde_json::Value;

use super::diagnostic::{Diagnostic, Span};
use super::loader::ParsedFile;
use super::spec::FileSpec;
use super::template::{self, Rendered, TemplateError, Templater};
use super::type_error::{type_error, Secret};
use super::yaml::{self, Seg};
use super::Deferred;

/// One file as typed specs, with what its templates left to do.
pub(super) struct TypedFile<'a> {
    pub file: &'a ParsedFile,
    pub spec: FileSpec,
    /// Strings that refer to other resources, by path in the file.
    pub deferred: Vec<(yaml::Path, Deferred)>,
    /// Paths of values that came from `env()`.
    pub sensitive: Vec<yaml::Path>,
}

/// Every file that renders and types; the others' problems are reported.
pub(super) fn typed_files<'a>(
    problems: &mut Vec<Diagnostic>,
    files: &'a [ParsedFile],
    templater: &Templater,
) -> Vec<TypedFile<'a>> {
    let mut typed = Vec::new();
    for file in files {
        match typed_file(file, templater) {
            Ok(t) => typed.push(t),
            Err(d) => problems.push(d),
        }
    }
    typed
}

fn typed_file<'a>(
    file: &'a ParsedFile,
    templater: &Templater,
) -> Result<TypedFile<'a>, Diagnostic> {
    let mut deferred = Vec::new();
    let mut sensitive = Vec::new();
    let json = yaml::to_json(&file.node, &mut Vec::new(), &mut |s, path| {
        let rendered = render_scalar(templater, file.source, s, path)?;
        Ok(match rendered {
            Scalar::Plain(v) => v,
            Scalar::Sensitive(v) => {
                sensitive.push(path.to_vec());
                v
            }
            Scalar::Deferred(d) => {
                let text = Value::String(d.template.clone());
                deferred.push((path.to_vec(), d));
                text
            }
        })
    })?;
    let spec = serde_path_to_error::deserialize::<_, FileSpec>(&json).map_err(|e| {
        let secrets: Vec<Secret> = sensitive
            .iter()
            .filter_map(|path| Some((path.clone(), scalar_text(value_at(&json, path)?))))
            .collect();
        type_error(&file.node, &e, &secrets)
    })?;
    Ok(TypedFile {
        file,
        spec,
        deferred,
        sensitive,
    })
}

/// The rendered value at `path` of a file's JSON.
fn value_at<'a>(json: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(json, |v, seg| match seg {
        Seg::Key(k) => v.get(k.as_str()),
        Seg::Index(i) => v.get(*i),
    })
}

/// A scalar as serde quotes it in an error.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What one scalar became.
enum Scalar {
    Plain(Value),
    /// Read an environment variable.
    Sensitive(Value),
    /// Refers to other resources: the template string stays in the body.
    Deferred(Deferred),
}

fn render_scalar(
    templater: &Templater,
    source: usize,
    s: &MarkedScalarNode,
    path: &[Seg],
) -> Result<Scalar, Diagnostic> {
    let text = s.as_str();
    if !rendered_while_loading(path, text) {
        return Ok(Scalar::Plain(yaml::scalar_value(s)));
    }
    let span = Span::from_marked(s.span()).unwrap_or(Span::file_start(source));
    match templater.render(text) {
        Ok(Rendered::Value {
            value,
            sensitive: false,
        }) => Ok(Scalar::Plain(value)),
        Ok(Rendered::Value {
            value,
            sensitive: true,
        }) => Ok(Scalar::Sensitive(value)),
        Ok(Rendered::Deferred { references }) => Ok(Scalar::Deferred(Deferred {
            pointer: String::new(),
            template: text.to_string(),
            references,
            span,
        })),
        Err(e) => Err(template_error(span, path, e)),
    }
}

/// Templates outside `vars`, except a step's message: it may use earlier
/// replies, known only while running.
fn rendered_while_loading(path: &[Seg], text: &str) -> bool {
    let in_vars = matches!(path.first(), Some(Seg::Key(k)) if k == "vars");
    let step_send = matches!(path, [Seg::Key(a), _, Seg::Key(b), Seg::Index(_), Seg::Key(c)]
        if a == "sessions" && b == "steps" && c == "send");
    !in_vars && !step_send && template::is_template(text)
}

/// A template failure at its line inside a multi-line string.
fn template_error(span: Span, path: &[Seg], e: TemplateError) -> Diagnostic {
    let span = match e.line {
        Some(l) if l > 1 => Span {
            line: span.line + l - 1,
            column: 1,
            ..span
        },
        _ => span,
    };
    Diagnostic::at(
        span,
        format!(
            "template error in `{}`: {}",
            yaml::path_string(path),
            e.message
        ),
    )
    .help(e.help.unwrap_or(
        "templates may use `vars.NAME`, `env(\"NAME\")` and outputs such as `agent.NAME.id`",
    ))
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{at, help, load, refusal};

    #[test]
    fn vars_and_step_messages_are_not_rendered_while_loading() {
        let m = load(&[(
            "a.yaml",
            "version: 1\nvars: { greeting: \"{{ x }}\" }\n\
             environments:\n  e:\n    config: { type: cloud }\n\
             agents:\n  a:\n    model: m\n\
             sessions:\n  s:\n    agent: a\n    environment: e\n    steps:\n\
             \x20     - send: \"{{ replies[0] }}\"\n",
        )])
        .unwrap();
        assert_eq!(m.templater.vars()["greeting"], "{{ x }}");
        let script = m.resources[2].script.as_ref().unwrap();
        assert_eq!(script.steps[0].send, "{{ replies[0] }}");
    }

    #[test]
    fn a_template_error_points_at_its_line_inside_the_string() {
        let d = refusal(
            "version: 1\nagents:\n  a:\n    model: m\n    system: |\n      one\n      {{ nope }}\n",
        );
        assert!(
            d.message
                .starts_with("template error in `agents.a.system`: "),
            "{}",
            d.message
        );
        assert_eq!(at(&d).0, 7);
        assert!(help(&d).contains("vars.NAME"));
    }
}
