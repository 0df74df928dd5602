//! Declaration: one [`Resource`] per entry of `environments`, `agents` and
//! `sessions`, with its address, provider, body, templates left for later,
//! `env()` values and the raw `depends_on`. Checks that need only the entry
//! itself run here; references between resources are resolved by `validate`.

use std::collections::{BTreeMap, HashMap};

use marked_yaml::Node;
use serde_json::Value;

use super::diagnostic::{Diagnostic, Span};
use super::loader::ParsedFile;
use super::render::TypedFile;
use super::spec::{AgentRefSpec, FileSpec, LimitsSpec, SessionSpec};
use super::validate::{check_agent, check_environment, check_metadata, Fields};
use super::yaml::{self, locate, Seg};
use super::{Deferred, Resource, SessionTarget};
use crate::graph::{valid_name, Address, Kind};

/// A declared resource, with what `validate` needs to resolve its references.
pub(super) struct Declared {
    pub resource: Resource,
    /// Where the entry sets `provider`, if it does.
    pub spec_provider_span: Option<Span>,
    /// `depends_on` as written, each with its position.
    pub depends_on_raw: Vec<(String, Span)>,
}

/// Every file's resources by address; duplicates and bad names are refused.
pub(super) fn declare(
    problems: &mut Vec<Diagnostic>,
    files: Vec<TypedFile>,
    default_provider: &str,
) -> BTreeMap<Address, Declared> {
    let mut declared = BTreeMap::new();
    for typed in files {
        let TypedFile {
            file,
            spec,
            deferred,
            sensitive,
        } = typed;
        let context = FileContext {
            file,
            keys: KeySpans::index(file),
            deferred: by_resource(deferred, |(path, _)| path),
            sensitive: by_resource(sensitive, |path| path),
            default_provider,
        };
        for entry in entries(problems, file, spec) {
            context.declare(problems, entry, &mut declared);
        }
    }
    declared
}

/// One entry before it becomes a resource.
struct Entry {
    address: Address,
    provider: Option<String>,
    depends_on: Vec<String>,
    body: Value,
    session: Option<SessionSpec>,
    limits: Option<LimitsSpec>,
}

/// The entries of one file, in section order; the field-level problems of
/// agents and environments are reported while their typed spec is at hand.
fn entries(problems: &mut Vec<Diagnostic>, file: &ParsedFile, spec: FileSpec) -> Vec<Entry> {
    let mut entries = Vec::new();
    let fields =
        |address: &Address| Fields::new(Some(&file.node), address, Span::file_start(file.source));
    for (name, mut env) in spec.environments {
        env.name.get_or_insert_with(|| name.clone());
        let address = Address::new(Kind::Environment, name);
        check_environment(&env, &fields(&address), problems);
        check_metadata(&env.metadata, &fields(&address), problems);
        entries.push(Entry {
            body: serde_json::to_value(&env).unwrap_or(Value::Null),
            address,
            provider: env.provider,
            depends_on: env.depends_on,
            session: None,
            limits: env.limits,
        });
    }
    for (name, mut agent) in spec.agents {
        agent.name.get_or_insert_with(|| name.clone());
        let address = Address::new(Kind::Agent, name);
        check_agent(&agent, &fields(&address), problems);
        check_metadata(&agent.metadata, &fields(&address), problems);
        entries.push(Entry {
            body: serde_json::to_value(&agent).unwrap_or(Value::Null),
            address,
            provider: agent.provider,
            depends_on: agent.depends_on,
            session: None,
            limits: None,
        });
    }
    for (name, session) in spec.sessions {
        entries.push(Entry {
            address: Address::new(Kind::Session, name),
            provider: session.provider.clone(),
            depends_on: session.depends_on.clone(),
            body: session_body(&session),
            session: Some(session),
            limits: None,
        });
    }
    entries
}

/// Items grouped by the resource their path starts with: `(section, name)`.
type ByResource<T> = HashMap<(String, String), Vec<T>>;

fn by_resource<T>(items: Vec<T>, path: impl Fn(&T) -> &yaml::Path) -> ByResource<T> {
    let mut grouped: ByResource<T> = HashMap::new();
    for item in items {
        if let [Seg::Key(section), Seg::Key(name), ..] = path(&item).as_slice() {
            let key = (section.clone(), name.clone());
            grouped.entry(key).or_default().push(item);
        }
    }
    grouped
}

/// Where each entry's key is, indexed once: looking each name up by scanning
/// would make large manifests quadratic.
struct KeySpans<'a> {
    spans: HashMap<(&'static str, &'a str), Span>,
    fallback: Span,
}

impl<'a> KeySpans<'a> {
    fn index(file: &'a ParsedFile) -> Self {
        let mut spans = HashMap::new();
        for section in ["environments", "agents", "sessions"] {
            if let Some(Node::Mapping(m)) = yaml::node_at(&file.node, &[Seg::Key(section.into())]) {
                for k in m.keys() {
                    if let Some(span) = Span::from_marked(k.span()) {
                        spans.insert((section, k.as_str()), span);
                    }
                }
            }
        }
        KeySpans {
            spans,
            fallback: Span::file_start(file.source),
        }
    }

    fn get(&self, section: &'static str, name: &str) -> Span {
        self.spans
            .get(&(section, name))
            .copied()
            .unwrap_or(self.fallback)
    }
}

/// What declaring the entries of one file needs.
struct FileContext<'a> {
    file: &'a ParsedFile,
    keys: KeySpans<'a>,
    deferred: ByResource<(yaml::Path, Deferred)>,
    sensitive: ByResource<yaml::Path>,
    default_provider: &'a str,
}

impl FileContext<'_> {
    fn declare(
        &self,
        problems: &mut Vec<Diagnostic>,
        entry: Entry,
        declared: &mut BTreeMap<Address, Declared>,
    ) {
        let address = entry.address;
        let section = address.kind.section();
        let span = self.keys.get(section, &address.name);
        if !valid_name(&address.name) {
            problems.push(Diagnostic::at(span, format!("`{}` is not a valid {} name", address.name, address.kind))
                .help("names start with a letter or `_` and use letters, digits, `_` and `-` (at most 128)"));
            return;
        }
        if let Some(existing) = declared.get(&address) {
            problems.push(
                Diagnostic::at(span, format!("`{address}` is declared twice"))
                    .note(existing.resource.span, "first declared here")
                    .help(
                        "rename one of them; names are unique per kind across all manifest files",
                    ),
            );
            return;
        }
        let group = (section.to_string(), address.name.clone());
        let deferred = self.deferred(problems, &address, &group);
        let sensitive = self
            .sensitive
            .get(&group)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| pointer(&p[2..]))
            .collect();
        let base = [Seg::Key(section.into()), Seg::Key(address.name.clone())];
        let spec_provider_span = entry
            .provider
            .as_ref()
            .and_then(|_| locate(&self.file.node, &base, Some("provider")));
        let depends_on_raw = self.depends_on_spans(&base, &entry.depends_on, span);
        let resource = Resource {
            address: address.clone(),
            provider: entry
                .provider
                .unwrap_or_else(|| self.default_provider.to_string()),
            span,
            body: entry.body,
            deferred,
            sensitive,
            depends_on: Vec::new(),
            session: entry.session.as_ref().map(session_target),
            script: entry.session,
            limits: entry.limits,
        };
        declared.insert(
            address,
            Declared {
                resource,
                spec_provider_span,
                depends_on_raw,
            },
        );
    }

    /// The resource's templates that wait for other resources' outputs; the
    /// fields that decide the graph itself must be literal.
    fn deferred(
        &self,
        problems: &mut Vec<Diagnostic>,
        address: &Address,
        group: &(String, String),
    ) -> Vec<Deferred> {
        let mut out = Vec::new();
        for (path, d) in self
            .deferred
            .get(group)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let rest = &path[2..];
            let field = match rest.first() {
                Some(Seg::Key(k)) => k.as_str(),
                _ => "",
            };
            if matches!(field, "provider" | "depends_on" | "name")
                || (address.kind == Kind::Session && matches!(field, "agent" | "environment"))
            {
                problems.push(
                    Diagnostic::at(
                        d.span,
                        format!("`{field}` cannot refer to other resources' outputs"),
                    )
                    .help("write the value literally, or use `vars`"),
                );
                continue;
            }
            out.push(Deferred {
                pointer: pointer(rest),
                ..d.clone()
            });
        }
        out
    }

    /// Each `depends_on` item with its position (the entry's key if unknown).
    fn depends_on_spans(
        &self,
        base: &[Seg],
        depends_on: &[String],
        fallback: Span,
    ) -> Vec<(String, Span)> {
        depends_on
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut p = base.to_vec();
                p.push(Seg::Key("depends_on".into()));
                p.push(Seg::Index(i));
                (
                    d.clone(),
                    locate(&self.file.node, &p, None).unwrap_or(fallback),
                )
            })
            .collect()
    }
}

fn session_target(s: &SessionSpec) -> SessionTarget {
    let (agent, version) = match &s.agent {
        AgentRefSpec::Latest(n) => (n.clone(), None),
        AgentRefSpec::Pinned(p) => (p.name.clone(), Some(p.version)),
    };
    SessionTarget {
        agent: Address::new(Kind::Agent, agent),
        version,
        environment: Address::new(Kind::Environment, s.environment.clone()),
    }
}

/// The part of a session spec that `POST /v1/sessions` takes (by name).
fn session_body(s: &SessionSpec) -> Value {
    let mut body = serde_json::Map::new();
    body.insert(
        "agent".into(),
        serde_json::to_value(&s.agent).unwrap_or(Value::Null),
    );
    body.insert("environment".into(), Value::String(s.environment.clone()));
    if let Some(t) = &s.title {
        body.insert("title".into(), Value::String(t.clone()));
    }
    if !s.metadata.is_empty() {
        body.insert(
            "metadata".into(),
            serde_json::to_value(&s.metadata).unwrap_or(Value::Null),
        );
    }
    if !s.resources.is_empty() {
        body.insert(
            "resources".into(),
            serde_json::to_value(&s.resources).unwrap_or(Value::Null),
        );
    }
    if !s.vault_ids.is_empty() {
        body.insert(
            "vault_ids".into(),
            serde_json::to_value(&s.vault_ids).unwrap_or(Value::Null),
        );
    }
    Value::Object(body)
}

/// A JSON pointer (RFC 6901) to `path` inside a resource's body.
fn pointer(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        out.push('/');
        match seg {
            Seg::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            Seg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests;
