//! minijinja templating of manifest strings.
//!
//! A string that uses only `vars` and `env()` is rendered while loading. A string
//! that refers to another resource's outputs (`{{ agent.coder.id }}`) is kept and
//! rendered when those outputs are known: at plan time from the state, at apply
//! time from the action that produced them.

use std::cell::Cell;

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use crate::graph::{Address, Kind};
use crate::redact::Secrets;

thread_local! {
    static READ_ENV: Cell<bool> = const { Cell::new(false) };
}

/// An output of another resource used by a template, e.g. `agent.coder.id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub address: Address,
    pub attribute: String,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.address, self.attribute)
    }
}

/// What a template string became.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// Fully rendered; `sensitive` when it read an environment variable.
    Value { value: Value, sensitive: bool },
    /// Refers to other resources; rendered later.
    Deferred { references: Vec<Reference> },
}

/// A template failure, with the line inside the template when minijinja knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub line: Option<usize>,
}

pub struct Templater {
    env: Environment<'static>,
    vars: Value,
    /// Load-time results by source: manifests repeat the same templates
    /// (`{{ vars.model }}`) many times, and vars and the environment do not
    /// change while a manifest loads.
    cache: std::sync::Mutex<std::collections::HashMap<String, Rendered>>,
    /// Every value `env()` returned, while loading and since.
    secrets: Secrets,
}

impl std::fmt::Debug for Templater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templater")
            .field("vars", &self.vars)
            .finish()
    }
}

pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

impl Templater {
    pub fn new(vars: Value) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let secrets = Secrets::default();
        let read = secrets.clone();
        env.add_function("env", move |name: String, default: Option<String>| {
            let value = env_function(name.clone(), default)?;
            read.add_env(&name, &value);
            Ok::<_, Error>(value)
        });
        Templater {
            env,
            vars,
            cache: Default::default(),
            secrets,
        }
    }

    /// The values `env()` returned so far; grows as templates render.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn vars(&self) -> &Value {
        &self.vars
    }

    /// Renders `source` with `vars` and `env()`, or reports the references that
    /// defer it.
    pub fn render(&self, source: &str) -> Result<Rendered, TemplateError> {
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(source).cloned()) {
            return Ok(hit);
        }
        let rendered = self.render_uncached(source)?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(source.to_string(), rendered.clone());
        }
        Ok(rendered)
    }

    fn render_uncached(&self, source: &str) -> Result<Rendered, TemplateError> {
        let template = self.env.template_from_str(source).map_err(convert)?;
        let mut references = Vec::new();
        let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        names.sort();
        for name in names {
            let mut parts = name.split('.');
            let head = parts.next().unwrap_or_default();
            let Ok(kind) = head.parse::<Kind>() else {
                continue;
            };
            let (Some(resource), Some(attribute)) = (parts.next(), parts.next()) else {
                return Err(TemplateError {
                    message: format!(
                        "`{name}` is not an output; refer to one as `{head}.NAME.ATTRIBUTE`, e.g. `{head}.NAME.id`"
                    ),
                    line: None,
                });
            };
            references.push(Reference {
                address: Address::new(kind, resource),
                attribute: attribute.to_string(),
            });
        }
        if !references.is_empty() {
            references.dedup();
            return Ok(Rendered::Deferred { references });
        }
        let context = serde_json::json!({ "vars": self.vars });
        let (value, sensitive) = self.evaluate(source, &context)?;
        Ok(Rendered::Value { value, sensitive })
    }

    /// Renders a deferred template once the outputs it refers to are known.
    /// `outputs` maps `agent`/`environment`/`session` to `{NAME: {ATTR: VALUE}}`.
    pub fn render_with(
        &self,
        source: &str,
        outputs: &Value,
    ) -> Result<(Value, bool), TemplateError> {
        let mut context = outputs.clone();
        if let Value::Object(map) = &mut context {
            map.insert("vars".into(), self.vars.clone());
        }
        self.evaluate(source, &context)
    }

    fn evaluate(&self, source: &str, context: &Value) -> Result<(Value, bool), TemplateError> {
        READ_ENV.with(|c| c.set(false));
        let ctx = minijinja::Value::from_serialize(context);
        let value = match single_expression(source) {
            // A scalar that is one expression keeps the expression's type, so
            // `version: "{{ vars.pin }}"` can be a number.
            Some(expr) => {
                let compiled = self.env.compile_expression(expr).map_err(convert)?;
                let v = compiled.eval(ctx).map_err(convert)?;
                if v.is_undefined() {
                    return Err(TemplateError {
                        message: format!("`{}` is undefined", expr.trim()),
                        line: None,
                    });
                }
                serde_json::to_value(&v).map_err(|e| TemplateError {
                    message: format!("the value of `{}` cannot be used here: {e}", expr.trim()),
                    line: None,
                })?
            }
            None => Value::String(self.env.render_str(source, ctx).map_err(|e| {
                let mut err = convert(e);
                if err.message.starts_with("undefined value") {
                    if let Some(name) = self.first_undefined(source, context) {
                        err.message = format!("`{name}` is undefined");
                    }
                }
                err
            })?),
        };
        Ok((value, READ_ENV.with(|c| c.get())))
    }
}

impl Templater {
    /// The first variable path in `source` that `context` does not have.
    fn first_undefined(&self, source: &str, context: &Value) -> Option<String> {
        let template = self.env.template_from_str(source).ok()?;
        let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        names.sort();
        names.into_iter().find(|name| {
            let mut cur = context;
            for part in name.split('.') {
                match cur.get(part) {
                    Some(next) => cur = next,
                    None => return true,
                }
            }
            false
        })
    }
}

fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner)
}

fn env_function(name: String, default: Option<String>) -> Result<String, Error> {
    READ_ENV.with(|c| c.set(true));
    match std::env::var(&name) {
        Ok(v) => Ok(v),
        Err(_) => default.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "environment variable `{name}` is not set; set it, or give a default: env(\"{name}\", \"DEFAULT\")"
                ),
            )
        }),
    }
}

fn convert(e: Error) -> TemplateError {
    let message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    TemplateError {
        message,
        line: e.line(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn templater() -> Templater {
        Templater::new(json!({"model": "claude-sonnet-4-6", "pin": 3}))
    }

    #[test]
    fn renders_vars_and_keeps_expression_types() {
        let t = templater();
        assert_eq!(
            t.render("m={{ vars.model }}").unwrap(),
            Rendered::Value {
                value: json!("m=claude-sonnet-4-6"),
                sensitive: false
            }
        );
        assert_eq!(
            t.render("{{ vars.pin }}").unwrap(),
            Rendered::Value {
                value: json!(3),
                sensitive: false
            }
        );
    }

    #[test]
    fn defers_references_to_outputs() {
        let t = templater();
        let Rendered::Deferred { references } = t.render("id {{ agent.coder.id }}").unwrap() else {
            panic!("expected deferred");
        };
        assert_eq!(references[0].to_string(), "agent.coder.id");
        let out = t
            .render_with(
                "id {{ agent.coder.id }}",
                &json!({"agent": {"coder": {"id": "agent_1"}}}),
            )
            .unwrap();
        assert_eq!(out.0, json!("id agent_1"));
    }

    #[test]
    fn undefined_vars_and_env_are_errors() {
        let t = templater();
        assert!(t.render("{{ vars.nope }}").is_err());
        let err = t
            .render("{{ env('AGENTFORM_SURELY_UNSET_VAR') }}")
            .unwrap_err();
        assert!(
            err.message.contains("AGENTFORM_SURELY_UNSET_VAR"),
            "{}",
            err.message
        );
        let Rendered::Value { sensitive, .. } = t
            .render("{{ env('AGENTFORM_SURELY_UNSET_VAR', 'x') }}")
            .unwrap()
        else {
            panic!()
        };
        assert!(sensitive);
    }
}
