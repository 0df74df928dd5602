//! minijinja templating of manifest strings.
//!
//! A string that uses only `vars` and `env()` is rendered while loading. A string
//! that refers to another resource's outputs (`{{ agent.coder.id }}`) is kept and
//! rendered when those outputs are known: at plan time from the state, at apply
//! time from the action that produced them.
//!
//! Every evaluation runs on a fuel budget and an output cap, so a template
//! that loops for ever or builds gigabytes stops with an error instead.
//! (minijinja bounds a single string repetition at 100 MB itself; values
//! built by a few deliberate operations are not otherwise bounded.)

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use minijinja::{Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use serde_json::Value;

use crate::graph::{Address, Kind};
use crate::redact::Secrets;

/// Steps (minijinja instructions) one evaluation may take. A loop over a
/// manifest's own lists takes thousands; three nested `range(10000)` loops
/// would take 10^12.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// Steps all the templates of one manifest may take while it loads, so
/// that many templates that each stay within [`TEMPLATE_FUEL`] cannot add
/// up to minutes.
pub const MANIFEST_FUEL: u64 = 20 * TEMPLATE_FUEL;

/// Bytes one evaluation may produce: far above any field the API takes
/// (the largest, a system prompt, is 100,000 characters).
pub const MAX_TEMPLATE_OUTPUT: usize = 1 << 20;

thread_local! {
    static READ_ENV: Cell<bool> = const { Cell::new(false) };
    /// Bytes the current evaluation has written to its output.
    static OUTPUT_BYTES: Cell<usize> = const { Cell::new(0) };
    /// Bytes of `{{ }}` values the current evaluation has formatted, also
    /// into `{% set %}` blocks, which never reach the output.
    static FORMATTED_BYTES: Cell<usize> = const { Cell::new(0) };
    /// Fuel the current evaluation used.
    static FUEL_USED: Cell<u64> = const { Cell::new(0) };
}

const FUEL_HELP: &str = "templates fill in values; loop over `vars` lists, not over large ranges";
const OUTPUT_HELP: &str =
    "keep long text out of loops; the API takes at most 100000 characters of system prompt";

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
    /// How to fix it, when the failure is one of the limits.
    pub help: Option<&'static str>,
}

impl TemplateError {
    fn new(message: String) -> Self {
        TemplateError {
            message,
            line: None,
            help: None,
        }
    }
}

pub struct Templater {
    env: Environment<'static>,
    vars: Value,
    /// Load-time results by source: manifests repeat the same templates
    /// (`{{ vars.model }}`) many times, and vars and the environment do not
    /// change while a manifest loads.
    cache: Mutex<std::collections::HashMap<String, Rendered>>,
    /// Every value `env()` returned, while loading and since.
    secrets: Secrets,
    /// Fuel used so far, held to [`MANIFEST_FUEL`] while loading.
    spent: AtomicU64,
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
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_formatter(capped_formatter);
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
            spent: AtomicU64::new(0),
        }
    }

    /// The values `env()` returned so far; grows as templates render.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn vars(&self) -> &Value {
        &self.vars
    }

    /// Every value `env()` has returned so far, to keep out of messages.
    pub fn secret_values(&self) -> Vec<String> {
        self.secrets.values()
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
                return Err(TemplateError::new(format!(
                    "`{name}` is not an output; refer to one as `{head}.NAME.ATTRIBUTE`, e.g. `{head}.NAME.id`"
                )));
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
        if self.spent.load(Ordering::Relaxed) >= MANIFEST_FUEL {
            return Err(TemplateError {
                message: format!(
                    "the manifest's templates together took more than {MANIFEST_FUEL} steps; this one was not run"
                ),
                line: None,
                help: Some(FUEL_HELP),
            });
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

    /// Evaluates `source`, then records what `env()` returned, also when
    /// the evaluation failed: its message may quote the value.
    fn evaluate(&self, source: &str, context: &Value) -> Result<(Value, bool), TemplateError> {
        READ_ENV.with(|c| c.set(false));
        OUTPUT_BYTES.with(|c| c.set(0));
        FORMATTED_BYTES.with(|c| c.set(0));
        FUEL_USED.with(|c| c.set(1));
        let result = self.evaluate_inner(source, context);
        self.spent
            .fetch_add(FUEL_USED.with(Cell::get), Ordering::Relaxed);
        Ok((result?, READ_ENV.with(|c| c.get())))
    }

    fn evaluate_inner(&self, source: &str, context: &Value) -> Result<Value, TemplateError> {
        let ctx = minijinja::Value::from_serialize(context);
        match single_expression(source) {
            // A scalar that is one expression keeps the expression's type, so
            // `version: "{{ vars.pin }}"` can be a number.
            Some(expr) => {
                let compiled = self.env.compile_expression(expr).map_err(convert)?;
                let v = compiled.eval(ctx).map_err(convert)?;
                if v.is_undefined() {
                    return Err(TemplateError::new(format!(
                        "`{}` is undefined",
                        expr.trim()
                    )));
                }
                let value = serde_json::to_value(&v).map_err(|e| {
                    TemplateError::new(format!(
                        "the value of `{}` cannot be used here: {e}",
                        expr.trim()
                    ))
                })?;
                check_size(&value)?;
                Ok(value)
            }
            None => {
                let template = self.env.template_from_str(source).map_err(convert)?;
                let mut out = CappedWriter::default();
                let rendered = template.render_captured_to(ctx, &mut out);
                let used = match &rendered {
                    Ok(captured) => captured.state().fuel_levels().map_or(1, |(used, _)| used),
                    Err(e) if e.kind() == ErrorKind::OutOfFuel => TEMPLATE_FUEL,
                    Err(_) => 1,
                };
                FUEL_USED.with(|c| c.set(used));
                if let Err(e) = rendered {
                    let mut err = convert(e);
                    if err.message.starts_with("undefined value") {
                        if let Some(name) = self.first_undefined(source, context) {
                            err.message = format!("`{name}` is undefined");
                        }
                    }
                    return Err(err);
                }
                if OUTPUT_BYTES.with(Cell::get) > MAX_TEMPLATE_OUTPUT {
                    return Err(too_large(None));
                }
                Ok(Value::String(String::from_utf8_lossy(&out.0).into_owned()))
            }
        }
    }
}

/// Collects a template's output up to [`MAX_TEMPLATE_OUTPUT`] and drops the
/// rest, counting it: text outside `{{ }}` never reaches the formatter, so
/// the writer is what keeps memory bounded; the formatter reports the line.
#[derive(Default)]
struct CappedWriter(Vec<u8>);

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let total = OUTPUT_BYTES.with(|c| {
            let total = c.get().saturating_add(buf.len());
            c.set(total);
            total
        });
        if total <= MAX_TEMPLATE_OUTPUT {
            self.0.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a `{{ }}` value as minijinja would, unless the values formatted
/// or the output written would pass the cap: then it fails at that line.
fn capped_formatter(
    out: &mut Output<'_>,
    state: &State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), Error> {
    let size = value
        .as_str()
        .map_or_else(|| value.to_string().len(), str::len);
    let formatted = FORMATTED_BYTES.with(|c| {
        let total = c.get().saturating_add(size);
        c.set(total);
        total
    });
    if formatted > MAX_TEMPLATE_OUTPUT || OUTPUT_BYTES.with(Cell::get) > MAX_TEMPLATE_OUTPUT {
        return Err(Error::new(ErrorKind::InvalidOperation, OUTPUT_LIMIT));
    }
    minijinja::escape_formatter(out, state, value)
}

/// The detail of the formatter's error, recognised again by [`convert`].
const OUTPUT_LIMIT: &str = "output limit";

fn too_large(line: Option<usize>) -> TemplateError {
    TemplateError {
        message: format!(
            "the template's output is larger than {MAX_TEMPLATE_OUTPUT} bytes; it was stopped"
        ),
        line,
        help: Some(OUTPUT_HELP),
    }
}

/// A single expression's value, held to the same cap as rendered text.
fn check_size(value: &Value) -> Result<(), TemplateError> {
    let size = match value {
        Value::String(s) => s.len(),
        Value::Array(_) | Value::Object(_) => serde_json::to_vec(value).map_or(0, |b| b.len()),
        _ => 0,
    };
    if size > MAX_TEMPLATE_OUTPUT {
        return Err(too_large(None));
    }
    Ok(())
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
    if e.kind() == ErrorKind::OutOfFuel {
        return TemplateError {
            message: format!(
                "the template did not finish within {TEMPLATE_FUEL} steps; it was stopped"
            ),
            line: e.line(),
            help: Some(FUEL_HELP),
        };
    }
    if e.kind() == ErrorKind::InvalidOperation && e.detail() == Some(OUTPUT_LIMIT) {
        return too_large(e.line());
    }
    let message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    TemplateError {
        message,
        line: e.line(),
        help: None,
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

    #[test]
    fn a_runaway_loop_runs_out_of_fuel_at_its_line() {
        let t = templater();
        let started = std::time::Instant::now();
        let err = t
            .render(
                "start\n{% for a in range(10000) %}{% for b in range(10000) %}\
                 {% for c in range(10000) %}{% set x = c %}{% endfor %}{% endfor %}{% endfor %}",
            )
            .unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(err.message.contains("did not finish"), "{}", err.message);
        assert_eq!(err.line, Some(2));
        assert_eq!(err.help, Some(FUEL_HELP));
    }

    #[test]
    fn many_long_templates_exhaust_the_manifest_budget() {
        let t = templater();
        let long = |i: u64| {
            format!("{{% for a in range(100000) %}}{{% for b in range(100) %}}{{% endfor %}}{{% endfor %}}{i}")
        };
        let mut stopped = None;
        for i in 0..MANIFEST_FUEL / TEMPLATE_FUEL + 2 {
            if let Err(e) = t.render(&long(i)) {
                if e.message.contains("together") {
                    stopped = Some(i);
                    break;
                }
            }
        }
        assert_eq!(stopped, Some(MANIFEST_FUEL / TEMPLATE_FUEL));
    }

    #[test]
    fn output_past_the_cap_stops_at_the_line_that_grows_it() {
        let t = templater();
        // A gigabyte if it ran to the end.
        let err = t
            .render("a\nb\n{% for i in range(10000) %}{{ 'x' * 100000 }}{% endfor %}")
            .unwrap_err();
        assert!(err.message.contains("larger than"), "{}", err.message);
        assert_eq!(err.line, Some(3));
        assert_eq!(err.help, Some(OUTPUT_HELP));
        // Text outside `{{ }}` is held to the cap too.
        let big = "y".repeat(1000);
        let err = t
            .render(&format!("{{% for i in range(10000) %}}{big}{{% endfor %}}"))
            .unwrap_err();
        assert!(err.message.contains("larger than"), "{}", err.message);
        // And a single expression.
        let err = t.render("{{ 'x' * 2000000 }}").unwrap_err();
        assert!(err.message.contains("larger than"), "{}", err.message);
    }

    #[test]
    fn values_captured_by_set_blocks_count_too() {
        let t = templater();
        let err = t
            .render(
                "{% set x %}{% for i in range(10000) %}{{ 'x' * 100000 }}{% endfor %}{% endset %}{{ x|length }}",
            )
            .unwrap_err();
        assert!(err.message.contains("larger than"), "{}", err.message);
    }

    #[test]
    fn templates_within_the_limits_render_as_before() {
        let t = Templater::new(json!({"items": (0..1000).collect::<Vec<_>>()}));
        let Rendered::Value { value, .. } = t
            .render("{% for i in vars.items %}{{ i }},{% endfor %}")
            .unwrap()
        else {
            panic!("expected a value")
        };
        assert!(value.as_str().unwrap().ends_with("998,999,"));
        let just_under = format!("{{{{ 'x' * {MAX_TEMPLATE_OUTPUT} }}}}");
        assert!(t.render(&just_under).is_ok());
    }

    #[test]
    fn values_read_from_the_environment_are_remembered_as_secrets() {
        let t = templater();
        let _ = t.render("{{ env('PATH') }}").unwrap();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(t.secret_values(), vec![path]);
        // A failed evaluation still records what it read.
        let t = templater();
        let _ = t.render("{{ env('PATH') + 1 }}").unwrap_err();
        assert_eq!(t.secret_values().len(), 1);
    }
}
