//! Loading a manifest: files → YAML with positions → templates → typed specs →
//! one validated [`Manifest`]. Every problem found is reported with its file,
//! line and column; nothing here talks to a provider or the state.

pub mod diagnostic;
pub mod spec;
pub mod template;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use marked_yaml::Node;
use serde_json::Value;

pub use diagnostic::{Diagnostic, Diagnostics, Sources, Span};
use spec::{
    AgentRefSpec, AgentSpec, EnvironmentConfigSpec, EnvironmentSpec, FileSpec, NetworkingSpec,
    SessionSpec, ToolSpec,
};
pub use template::{Reference, Rendered, Templater};
use yaml::{locate, Seg};

use crate::graph::{valid_name, Address, Kind, ResourceGraph};

/// Providers this build can talk to.
pub const PROVIDERS: &[&str] = &["local", "anthropic"];

/// The lock file `apply` writes beside the (first) manifest file.
pub const LOCK_FILE: &str = "agentform.lock";

use crate::api::limits::TOOLSET_TOOLS as BUILTIN_TOOLS;

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Files or directories; a directory means every `*.yaml`/`*.yml` in it.
    pub files: Vec<PathBuf>,
    /// `-var NAME=VALUE` overrides.
    pub vars: Vec<(String, String)>,
}

/// A validated manifest.
#[derive(Debug)]
pub struct Manifest {
    /// Recorded as `agentform.manifest` on every object.
    pub project: String,
    /// Directory that holds `agentform.lock`.
    pub root: PathBuf,
    pub sources: Sources,
    pub providers: spec::ProvidersSpec,
    /// Resources sorted by address.
    pub resources: Vec<Resource>,
    pub graph: ResourceGraph,
    pub templater: Templater,
}

/// One declared resource.
#[derive(Debug, Clone)]
pub struct Resource {
    pub address: Address,
    pub provider: String,
    /// Where the resource is declared (its key).
    pub span: Span,
    /// The API body (agents, environments) or the session spec, rendered except
    /// for the strings listed in `deferred`.
    pub body: Value,
    pub deferred: Vec<Deferred>,
    /// JSON pointers into `body` of values that came from `env()`.
    pub sensitive: Vec<String>,
    pub depends_on: Vec<Address>,
    pub session: Option<SessionTarget>,
    /// Sessions: steps, tool handlers and confirmations for `agentform run`.
    pub script: Option<SessionSpec>,
}

/// A string in a body that refers to other resources' outputs.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub pointer: String,
    pub template: String,
    pub references: Vec<Reference>,
    pub span: Span,
}

/// Whom a session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTarget {
    pub agent: Address,
    pub version: Option<u64>,
    pub environment: Address,
}

impl Manifest {
    pub fn resource(&self, addr: &Address) -> Option<&Resource> {
        self.resources
            .binary_search_by(|r| r.address.cmp(addr))
            .ok()
            .map(|i| &self.resources[i])
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// sha256 over every manifest file's text, in load order.
    pub fn digest(&self) -> String {
        let texts: Vec<Value> = self
            .sources
            .files()
            .map(|f| Value::String(f.text.clone()))
            .collect();
        crate::digest::digest(&Value::Array(texts))
    }

    pub fn local_latency_ms(&self) -> u64 {
        self.providers
            .local
            .as_ref()
            .and_then(|l| l.latency_ms)
            .unwrap_or(0)
    }
}

/// Loads, templates, validates and combines the manifest files.
pub fn load(options: &LoadOptions) -> Result<Manifest, Diagnostics> {
    let mut loader = Loader::default();
    let result = loader.run(options);
    match result {
        Some(m) if loader.problems.is_empty() => Ok(m),
        _ => Err(Diagnostics {
            sources: loader.sources,
            items: loader.problems,
        }),
    }
}

/// The files a list of `-f` arguments names, in order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostic> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| {
            Diagnostic::new(
                format!("cannot read manifest `{}`: {e}", path.display()),
                None,
            )
            .help("pass the manifest with `-f FILE` or `-f DIR`, or create `agentform.yaml` here")
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| {
                    Diagnostic::new(format!("cannot list `{}`: {e}", path.display()), None)
                })?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Diagnostic::new(
                    format!(
                        "directory `{}` holds no `*.yaml` manifest files",
                        path.display()
                    ),
                    None,
                ));
            }
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(out)
}

#[derive(Default)]
struct Loader {
    sources: Sources,
    problems: Vec<Diagnostic>,
    /// Each file's nodes, for field-level positions during validation.
    nodes: Vec<(usize, Node)>,
}

struct ParsedFile {
    source: usize,
    node: Node,
}

struct Declared {
    resource: Resource,
    spec_provider_span: Option<Span>,
    depends_on_raw: Vec<(String, Span)>,
    session_spec: Option<SessionSpec>,
}

impl Loader {
    fn err(&mut self, d: Diagnostic) {
        self.problems.push(d);
    }

    fn run(&mut self, options: &LoadOptions) -> Option<Manifest> {
        let files = match discover(&options.files) {
            Ok(f) => f,
            Err(d) => {
                self.err(d);
                return None;
            }
        };
        let root = root_dir(
            options
                .files
                .first()
                .map(PathBuf::as_path)
                .unwrap_or(Path::new(".")),
        );

        let mut parsed = Vec::new();
        for path in &files {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    self.err(Diagnostic::new(
                        format!("cannot read `{}`: {e}", path.display()),
                        None,
                    ));
                    continue;
                }
            };
            let source = self.sources.add(path.clone(), text.clone());
            match yaml::parse(source, &text) {
                Ok(node) => parsed.push(ParsedFile { source, node }),
                Err(d) => self.err(d),
            }
        }
        if !self.problems.is_empty() {
            return None;
        }

        let vars = self.collect_vars(&parsed, &options.vars)?;
        let templater = Templater::new(Value::Object(vars));

        let mut specs = Vec::new();
        for file in &parsed {
            let mut deferred = Vec::new();
            let mut sensitive = Vec::new();
            if let Some(spec) = self.typed(file, &templater, &mut deferred, &mut sensitive) {
                specs.push((file, spec, deferred, sensitive));
            }
        }
        if !self.problems.is_empty() {
            return None;
        }

        // File-level settings must agree across files.
        let mut project: Option<(String, Span)> = None;
        let mut provider: Option<(String, Span)> = None;
        let mut providers = spec::ProvidersSpec::default();
        for (file, spec, _, _) in &specs {
            if let Some(v) = spec.version {
                if v != 1 {
                    let span = locate(&file.node, &[Seg::Key("version".into())], None);
                    self.err(
                        Diagnostic::new(format!("unsupported manifest version {v}"), span)
                            .help("this agentform reads `version: 1`"),
                    );
                }
            }
            self.agree(file, "name", spec.name.clone(), &mut project);
            self.agree(file, "provider", spec.provider.clone(), &mut provider);
            if spec.providers != spec::ProvidersSpec::default() {
                if providers != spec::ProvidersSpec::default() && providers != spec.providers {
                    let span = locate(&file.node, &[Seg::Key("providers".into())], None);
                    self.err(
                        Diagnostic::new(
                            "`providers` is set differently in two manifest files",
                            span,
                        )
                        .help("declare provider settings in one file"),
                    );
                }
                providers = spec.providers.clone();
                if let Some(a) = &spec.providers.anthropic {
                    let at = |path: &[&str]| {
                        let mut segs =
                            vec![Seg::Key("providers".into()), Seg::Key("anthropic".into())];
                        segs.extend(path.iter().map(|p| Seg::Key((*p).into())));
                        locate(&file.node, &segs, None)
                    };
                    for d in validate_anthropic(a, &at) {
                        self.err(d);
                    }
                }
            }
        }
        let default_provider = provider
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_else(|| "local".into());
        if let Some((p, span)) = &provider {
            if !PROVIDERS.contains(&p.as_str()) {
                self.err(unknown_provider(p, Some(*span)));
            }
        }
        let project = project
            .map(|p| p.0)
            .unwrap_or_else(|| default_project(&root));

        // Declarations.
        let mut declared: BTreeMap<Address, Declared> = BTreeMap::new();
        for (file, spec, deferred, sensitive) in specs {
            self.declare_all(
                file,
                spec,
                deferred,
                sensitive,
                &default_provider,
                &mut declared,
            );
        }
        self.nodes = parsed.into_iter().map(|p| (p.source, p.node)).collect();
        self.validate(&mut declared);
        if !self.problems.is_empty() {
            return None;
        }

        let resources: Vec<Resource> = declared.into_values().map(|d| d.resource).collect();
        let deps: Vec<(Address, Vec<Address>)> = resources
            .iter()
            .map(|r| (r.address.clone(), r.depends_on.clone()))
            .collect();
        let graph = match ResourceGraph::build(deps.iter().map(|(a, d)| (a, d.as_slice()))) {
            Ok(g) => g,
            Err(cycle) => {
                let first = &cycle.0[0];
                let span = resources
                    .iter()
                    .find(|r| &r.address == first)
                    .map(|r| r.span);
                self.err(Diagnostic::new(format!("dependency cycle: {cycle}"), span)
                    .help("a resource cannot depend on itself through references; remove one of the references"));
                return None;
            }
        };
        Some(Manifest {
            project,
            root,
            sources: self.sources.clone(),
            providers,
            resources,
            graph,
            templater,
        })
    }

    fn agree(
        &mut self,
        file: &ParsedFile,
        key: &str,
        value: Option<String>,
        slot: &mut Option<(String, Span)>,
    ) {
        let Some(value) = value else { return };
        let span = locate(&file.node, &[Seg::Key(key.into())], None)
            .unwrap_or(Span::file_start(file.source));
        match slot {
            Some((existing, first)) if *existing != value => {
                let d = Diagnostic::at(
                    span,
                    format!("`{key}` is `{value}` here but `{existing}` in another file"),
                )
                .note(*first, format!("`{key}` first set here"))
                .help(format!(
                    "set `{key}` once, or to the same value in every file"
                ));
                self.err(d);
            }
            Some(_) => {}
            None => *slot = Some((value, span)),
        }
    }

    fn collect_vars(
        &mut self,
        files: &[ParsedFile],
        overrides: &[(String, String)],
    ) -> Option<serde_json::Map<String, Value>> {
        let mut vars = serde_json::Map::new();
        let mut first_seen: HashMap<String, Span> = HashMap::new();
        for file in files {
            let Some(map) = file.node.as_mapping() else {
                continue;
            };
            let Some(node) = map.get_node("vars") else {
                continue;
            };
            let Some(vmap) = node.as_mapping() else {
                let span = yaml::span_of(node);
                self.err(Diagnostic::new("`vars` must be a mapping of names to values", span)
                    .help("write `vars:` followed by `NAME: VALUE` lines, e.g. `vars: { model: claude-sonnet-4-6 }`"));
                continue;
            };
            for (key, value) in vmap.iter() {
                let name = key.as_str().to_string();
                let span = Span::from_marked(key.span()).unwrap_or(Span::file_start(file.source));
                if let Some(first) = first_seen.get(&name) {
                    self.err(
                        Diagnostic::at(span, format!("variable `{name}` is declared twice"))
                            .note(*first, "first declared here")
                            .help("declare each variable in one file"),
                    );
                    continue;
                }
                first_seen.insert(name.clone(), span);
                let value = yaml::to_json(value, &mut Vec::new(), &mut |s, _| {
                    Ok(yaml::scalar_value(s))
                });
                match value {
                    Ok(v) => {
                        vars.insert(name, v);
                    }
                    Err(d) => self.err(d),
                }
            }
        }
        for (name, raw) in overrides {
            if !vars.contains_key(name) {
                let known: Vec<&str> = vars.keys().map(String::as_str).collect();
                self.err(Diagnostic::new(format!("`-var {name}=…` sets a variable the manifest does not declare"), None)
                    .help(if known.is_empty() {
                        format!("declare it under `vars:` in the manifest, e.g. `vars: {{ {name}: default }}`")
                    } else {
                        format!("declared variables: {}", known.join(", "))
                    }));
                continue;
            }
            let node = marked_yaml::types::MarkedScalarNode::new(
                marked_yaml::Span::new_blank(),
                raw.as_str(),
            );
            vars.insert(name.clone(), yaml::scalar_value(&node));
        }
        if self.problems.is_empty() {
            Some(vars)
        } else {
            None
        }
    }

    /// Renders templates and deserializes one file into its spec.
    fn typed(
        &mut self,
        file: &ParsedFile,
        templater: &Templater,
        deferred: &mut Vec<(Vec<Seg>, Deferred)>,
        sensitive: &mut Vec<Vec<Seg>>,
    ) -> Option<FileSpec> {
        let mut render = |s: &marked_yaml::types::MarkedScalarNode,
                          path: &[Seg]|
         -> Result<Value, Diagnostic> {
            let text = s.as_str();
            let in_vars = matches!(path.first(), Some(Seg::Key(k)) if k == "vars");
            // A step's message may use earlier replies, known only while running.
            let step_send = matches!(path, [Seg::Key(a), _, Seg::Key(b), Seg::Index(_), Seg::Key(c)]
                if a == "sessions" && b == "steps" && c == "send");
            if in_vars || step_send || !template::is_template(text) {
                return Ok(yaml::scalar_value(s));
            }
            let span = Span::from_marked(s.span()).unwrap_or(Span::file_start(file.source));
            match templater.render(text) {
                Ok(Rendered::Value {
                    value,
                    sensitive: secret,
                }) => {
                    if secret {
                        sensitive.push(path.to_vec());
                    }
                    Ok(value)
                }
                Ok(Rendered::Deferred { references }) => {
                    deferred.push((
                        path.to_vec(),
                        Deferred {
                            pointer: String::new(),
                            template: text.to_string(),
                            references,
                            span,
                        },
                    ));
                    Ok(Value::String(text.to_string()))
                }
                Err(e) => {
                    let span = match e.line {
                        Some(l) if l > 1 => Span {
                            line: span.line + l - 1,
                            column: 1,
                            ..span
                        },
                        _ => span,
                    };
                    Err(Diagnostic::at(span, format!("template error in `{}`: {}", yaml::path_string(path), e.message))
                        .help("templates may use `vars.NAME`, `env(\"NAME\")` and outputs such as `agent.NAME.id`"))
                }
            }
        };
        let json = match yaml::to_json(&file.node, &mut Vec::new(), &mut render) {
            Ok(j) => j,
            Err(d) => {
                self.err(d);
                return None;
            }
        };
        match serde_path_to_error::deserialize::<_, FileSpec>(json) {
            Ok(spec) => Some(spec),
            Err(e) => {
                self.err(type_error(file, &e));
                None
            }
        }
    }

    fn declare_all(
        &mut self,
        file: &ParsedFile,
        spec: FileSpec,
        deferred: Vec<(Vec<Seg>, Deferred)>,
        sensitive: Vec<Vec<Seg>>,
        default_provider: &str,
        declared: &mut BTreeMap<Address, Declared>,
    ) {
        // One pass over each section's keys; looking each name up by scanning
        // would make large manifests quadratic.
        let mut key_spans: HashMap<(&str, &str), Span> = HashMap::new();
        for section in ["environments", "agents", "sessions"] {
            if let Some(marked_yaml::Node::Mapping(m)) =
                yaml::node_at(&file.node, &[Seg::Key(section.into())])
            {
                for k in m.keys() {
                    if let Some(span) = Span::from_marked(k.span()) {
                        key_spans.insert((section, k.as_str()), span);
                    }
                }
            }
        }
        let key_span = |section: &'static str, name: &str| {
            key_spans
                .get(&(section, name))
                .copied()
                .unwrap_or(Span::file_start(file.source))
        };
        // Templates and secrets grouped by resource, for the same reason.
        type ByResource<T> = HashMap<(String, String), Vec<T>>;
        let mut deferred_by: ByResource<(Vec<Seg>, Deferred)> = HashMap::new();
        for (path, d) in deferred {
            if let [Seg::Key(section), Seg::Key(name), ..] = path.as_slice() {
                deferred_by
                    .entry((section.clone(), name.clone()))
                    .or_default()
                    .push((path.clone(), d));
            }
        }
        let mut sensitive_by: ByResource<Vec<Seg>> = HashMap::new();
        for path in sensitive {
            if let [Seg::Key(section), Seg::Key(name), ..] = path.as_slice() {
                sensitive_by
                    .entry((section.clone(), name.clone()))
                    .or_default()
                    .push(path.clone());
            }
        }
        // (address, provider, depends_on, body, session spec)
        type Entry = (
            Address,
            Option<String>,
            Vec<String>,
            Value,
            Option<SessionSpec>,
        );
        let mut entries: Vec<Entry> = Vec::new();
        // Field-level checks while the typed spec is at hand.
        let mut problems = Vec::new();
        let field_in = |section: &str, name: &str, path: &[&str], key: Option<&str>| -> Span {
            let mut p = vec![Seg::Key(section.into()), Seg::Key(name.into())];
            p.extend(path.iter().map(|s| Seg::Key((*s).to_string())));
            locate(&file.node, &p, key).unwrap_or(Span::file_start(file.source))
        };
        for (name, mut env) in spec.environments {
            env.name.get_or_insert_with(|| name.clone());
            let field =
                |path: &[&str], key: Option<&str>| field_in("environments", &name, path, key);
            validate_environment(&env, &field, &mut problems);
            check_metadata(&env.metadata, &|k| field(&["metadata"], k), &mut problems);
            let body = serde_json::to_value(&env).unwrap_or(Value::Null);
            entries.push((
                Address::new(Kind::Environment, name),
                env.provider,
                env.depends_on,
                body,
                None,
            ));
        }
        for (name, mut agent) in spec.agents {
            agent.name.get_or_insert_with(|| name.clone());
            let field = |path: &[&str], key: Option<&str>| field_in("agents", &name, path, key);
            validate_agent(&agent, &field, &mut problems);
            check_metadata(&agent.metadata, &|k| field(&["metadata"], k), &mut problems);
            let body = serde_json::to_value(&agent).unwrap_or(Value::Null);
            entries.push((
                Address::new(Kind::Agent, name),
                agent.provider,
                agent.depends_on,
                body,
                None,
            ));
        }
        for (name, session) in spec.sessions {
            let body = session_body(&session);
            entries.push((
                Address::new(Kind::Session, name),
                session.provider.clone(),
                session.depends_on.clone(),
                body,
                Some(session),
            ));
        }
        self.problems.extend(problems);
        for (address, provider, depends_on, body, session_spec) in entries {
            let span = key_span(address.kind.section(), &address.name);
            if !valid_name(&address.name) {
                self.err(Diagnostic::at(span, format!("`{}` is not a valid {} name", address.name, address.kind))
                    .help("names start with a letter or `_` and use letters, digits, `_` and `-` (at most 128)"));
                continue;
            }
            let base = [
                Seg::Key(address.kind.section().into()),
                Seg::Key(address.name.clone()),
            ];
            if let Some(existing) = declared.get(&address) {
                self.err(Diagnostic::at(span, format!("`{address}` is declared twice"))
                    .note(existing.resource.span, "first declared here")
                    .help("rename one of them; names are unique per kind across all manifest files"));
                continue;
            }
            let group = (address.kind.section().to_string(), address.name.clone());
            let mut res_deferred = Vec::new();
            for (path, d) in deferred_by
                .get(&group)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                {
                    let rest = &path[2..];
                    let field = match rest.first() {
                        Some(Seg::Key(k)) => k.as_str(),
                        _ => "",
                    };
                    if matches!(field, "provider" | "depends_on" | "name")
                        || (address.kind == Kind::Session
                            && matches!(field, "agent" | "environment"))
                    {
                        self.err(
                            Diagnostic::at(
                                d.span,
                                format!("`{field}` cannot refer to other resources' outputs"),
                            )
                            .help("write the value literally, or use `vars`"),
                        );
                        continue;
                    }
                    res_deferred.push(Deferred {
                        pointer: pointer(rest),
                        ..d.clone()
                    });
                }
            }
            let res_sensitive = sensitive_by
                .get(&group)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|p| pointer(&p[2..]))
                .collect();
            let provider_span = provider
                .as_ref()
                .and_then(|_| locate(&file.node, &base, Some("provider")));
            let depends_on_raw = depends_on
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let mut p = base.to_vec();
                    p.push(Seg::Key("depends_on".into()));
                    p.push(Seg::Index(i));
                    (d.clone(), locate(&file.node, &p, None).unwrap_or(span))
                })
                .collect();
            let session = session_spec.as_ref().map(|s| {
                let (agent, version) = match &s.agent {
                    AgentRefSpec::Latest(n) => (n.clone(), None),
                    AgentRefSpec::Pinned(p) => (p.name.clone(), Some(p.version)),
                };
                SessionTarget {
                    agent: Address::new(Kind::Agent, agent),
                    version,
                    environment: Address::new(Kind::Environment, s.environment.clone()),
                }
            });
            let resource = Resource {
                address: address.clone(),
                provider: provider.unwrap_or_else(|| default_provider.to_string()),
                span,
                body,
                deferred: res_deferred,
                sensitive: res_sensitive,
                depends_on: Vec::new(),
                session,
                script: session_spec.clone(),
            };
            declared.insert(
                address,
                Declared {
                    resource,
                    spec_provider_span: provider_span,
                    depends_on_raw,
                    session_spec,
                },
            );
        }
    }

    fn validate(&mut self, declared: &mut BTreeMap<Address, Declared>) {
        let names: BTreeMap<Kind, Vec<String>> = Kind::ALL
            .iter()
            .map(|k| {
                (
                    *k,
                    declared
                        .keys()
                        .filter(|a| a.kind == *k)
                        .map(|a| a.name.clone())
                        .collect(),
                )
            })
            .collect();
        let providers: HashMap<Address, String> = declared
            .iter()
            .map(|(a, d)| (a.clone(), d.resource.provider.clone()))
            .collect();
        let mut env_names: HashMap<String, Address> = HashMap::new();

        let addresses: Vec<Address> = declared.keys().cloned().collect();
        for addr in addresses {
            let d = declared.get(&addr).expect("listed above");
            let mut problems = Vec::new();
            let mut deps: Vec<Address> = Vec::new();
            let node = self.node_of(&d.resource);
            let base = vec![
                Seg::Key(addr.kind.section().into()),
                Seg::Key(addr.name.clone()),
            ];
            let field = |path: &[&str], key: Option<&str>| -> Span {
                let mut p = base.clone();
                p.extend(path.iter().map(|s| Seg::Key((*s).to_string())));
                node.and_then(|n| locate(n, &p, key))
                    .unwrap_or(d.resource.span)
            };

            if !PROVIDERS.contains(&d.resource.provider.as_str()) {
                problems.push(unknown_provider(
                    &d.resource.provider,
                    d.spec_provider_span.or(Some(d.resource.span)),
                ));
            }
            for (raw, span) in &d.depends_on_raw {
                match raw.parse::<Address>() {
                    Ok(dep) if dep == addr => problems.push(
                        Diagnostic::at(*span, format!("`{addr}` depends on itself"))
                            .help("remove it from its own `depends_on`"),
                    ),
                    Ok(dep) if declared.contains_key(&dep) => deps.push(dep),
                    Ok(dep) => problems.push(dangling(*span, &dep, &names)),
                    Err(e) => problems.push(Diagnostic::at(*span, e).help(
                        "write addresses as KIND.NAME, e.g. `environment.data` or `agent.coder`",
                    )),
                }
            }
            for def in &d.resource.deferred {
                for r in &def.references {
                    let attrs: &[&str] = match r.address.kind {
                        Kind::Agent => &["id", "version", "name"],
                        Kind::Environment => &["id", "name"],
                        Kind::Session => &["id"],
                    };
                    if r.address == addr {
                        problems.push(
                            Diagnostic::at(
                                def.span,
                                format!("`{addr}` refers to its own output `{r}`"),
                            )
                            .help("a resource's outputs are not known while it is being created"),
                        );
                    } else if !declared.contains_key(&r.address) {
                        problems.push(dangling(def.span, &r.address, &names));
                    } else if !attrs.contains(&r.attribute.as_str()) {
                        problems.push(
                            Diagnostic::at(
                                def.span,
                                format!("{} has no output `{}`", r.address, r.attribute),
                            )
                            .help(format!(
                                "outputs of {} {}: {}",
                                if r.address.kind == Kind::Agent {
                                    "an"
                                } else {
                                    "a"
                                },
                                r.address.kind,
                                attrs.join(", ")
                            )),
                        );
                    } else {
                        deps.push(r.address.clone());
                    }
                }
            }

            match addr.kind {
                Kind::Agent => {}
                Kind::Environment => {
                    let name = d
                        .resource
                        .body
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    if let Some(other) = env_names.get(&name) {
                        problems.push(Diagnostic::at(field(&[], Some("name")), format!("environment name `{name}` is also used by `{other}`"))
                            .help("environment names are unique per organization; give one of them another `name`"));
                    } else {
                        env_names.insert(name, addr.clone());
                    }
                }
                Kind::Session => {
                    let target = d.resource.session.clone().expect("sessions have a target");
                    let spec = d.session_spec.as_ref().expect("sessions have a spec");
                    for (dep, path) in [
                        (&target.agent, "agent"),
                        (&target.environment, "environment"),
                    ] {
                        let span = match (path, &spec.agent) {
                            ("agent", AgentRefSpec::Pinned(_)) => field(&["agent", "name"], None),
                            _ => field(&[path], None),
                        };
                        if !declared.contains_key(dep) {
                            problems.push(dangling(span, dep, &names));
                        } else {
                            if providers.get(dep) != Some(&d.resource.provider) {
                                problems.push(Diagnostic::at(span, format!(
                                    "`{addr}` uses provider `{}` but `{dep}` uses `{}`",
                                    d.resource.provider, providers[dep]
                                )).help("a session runs on the provider of its agent and environment"));
                            }
                            deps.push(dep.clone());
                        }
                    }
                    if target.version == Some(0) {
                        problems.push(Diagnostic::at(field(&["agent", "version"], None), "agent versions start at 1")
                            .help("pin an existing version, e.g. `version: 1`, or write the agent name alone for the latest"));
                    }
                    if let Some(title) = &spec.title {
                        if title.chars().count() > 512 {
                            problems.push(
                                Diagnostic::at(
                                    field(&["title"], None),
                                    "session titles are at most 512 characters",
                                )
                                .help("shorten the title"),
                            );
                        }
                    }
                    check_metadata(&spec.metadata, &|k| field(&["metadata"], k), &mut problems);
                    validate_script(spec, &field, &mut problems);
                }
            }
            deps.sort();
            deps.dedup();
            self.problems.extend(problems);
            if let Some(d) = declared.get_mut(&addr) {
                d.resource.depends_on = deps;
            }
        }
    }

    fn node_of(&self, r: &Resource) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|(s, _)| *s == r.span.source)
            .map(|(_, n)| n)
    }
}

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

fn root_dir(first: &Path) -> PathBuf {
    if first.is_dir() {
        first.to_path_buf()
    } else {
        match first.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

fn default_project(root: &Path) -> String {
    std::fs::canonicalize(root)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "agentform".to_string())
}

fn unknown_provider(p: &str, span: Option<Span>) -> Diagnostic {
    Diagnostic::new(format!("unknown provider `{p}`"), span).help(format!(
        "this build of agentform provides: {}",
        PROVIDERS.join(", ")
    ))
}

fn dangling(span: Span, target: &Address, names: &BTreeMap<Kind, Vec<String>>) -> Diagnostic {
    let known = names.get(&target.kind).cloned().unwrap_or_default();
    let help = if known.is_empty() {
        format!("declare it under `{}:`", target.kind.section())
    } else {
        let close = known.iter().find(|n| similar(n, &target.name));
        match close {
            Some(n) => format!(
                "did you mean `{n}`? declared {}: {}",
                target.kind.section(),
                known.join(", ")
            ),
            None => format!("declared {}: {}", target.kind.section(), known.join(", ")),
        }
    };
    Diagnostic::at(span, format!("`{target}` is not declared")).help(help)
}

fn similar(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}

/// `field` locates a key below the metadata mapping.
fn check_metadata(
    meta: &BTreeMap<String, String>,
    field: &dyn Fn(Option<&str>) -> Span,
    problems: &mut Vec<Diagnostic>,
) {
    if meta.len() > 14 {
        problems.push(Diagnostic::at(field(None), format!("{} metadata pairs; at most 14 are allowed", meta.len()))
            .help("the API allows 16 pairs and agentform uses two (`agentform.address`, `agentform.manifest`)"));
    }
    for (k, v) in meta {
        if k.starts_with("agentform.") {
            problems.push(
                Diagnostic::at(field(Some(k)), format!("metadata key `{k}` is reserved")).help(
                    "keys starting with `agentform.` are set by agentform itself; rename the key",
                ),
            );
        }
        if k.is_empty() || k.chars().count() > 64 {
            problems.push(
                Diagnostic::at(
                    field(Some(k)),
                    format!("metadata key `{k}` must be 1 to 64 characters"),
                )
                .help("shorten the key; the API limits keys to 64 characters"),
            );
        }
        if v.chars().count() > 512 {
            problems.push(
                Diagnostic::at(
                    field(Some(k)),
                    format!("metadata value of `{k}` is longer than 512 characters"),
                )
                .help("shorten the value; the API limits values to 512 characters"),
            );
        }
    }
}

fn validate_agent(
    spec: &AgentSpec,
    field: &dyn Fn(&[&str], Option<&str>) -> Span,
    problems: &mut Vec<Diagnostic>,
) {
    let name = spec.name.as_deref().unwrap_or_default();
    if name.is_empty() || name.chars().count() > 256 {
        problems.push(
            Diagnostic::at(
                field(&[], Some("name")),
                "agent names are 1 to 256 characters",
            )
            .help("give the agent a `name` of at most 256 characters"),
        );
    }
    let model = match &spec.model {
        spec::ModelSpec::Id(id) => id.as_str(),
        spec::ModelSpec::Config(c) => c.id.as_str(),
    };
    if model.trim().is_empty() {
        problems.push(
            Diagnostic::at(field(&["model"], None), "`model` is empty")
                .help("name a model, e.g. `model: claude-sonnet-4-6`"),
        );
    }
    if spec.tools.len() > 256 {
        problems.push(
            Diagnostic::at(
                field(&["tools"], None),
                format!("{} tools; at most 256 are allowed", spec.tools.len()),
            )
            .help("the API allows at most 256 tools per agent; remove some"),
        );
    }
    if spec.mcp_servers.len() > 20 {
        problems.push(
            Diagnostic::at(
                field(&["mcp_servers"], None),
                "at most 20 MCP servers are allowed",
            )
            .help("the API allows at most 20 MCP servers per agent; remove some"),
        );
    }
    let servers: Vec<&str> = spec
        .mcp_servers
        .iter()
        .map(|s| match s {
            spec::McpServerSpec::Url { name, .. } => name.as_str(),
        })
        .collect();
    for (i, s) in servers.iter().enumerate() {
        if servers[..i].contains(s) {
            problems.push(
                Diagnostic::at(
                    field(&["mcp_servers", &i.to_string(), "name"], None),
                    format!("MCP server name `{s}` is used twice"),
                )
                .help("server names are unique within an agent; rename one"),
            );
        }
    }
    let mut used_servers = Vec::new();
    let mut custom_names: Vec<&str> = Vec::new();
    for (i, tool) in spec.tools.iter().enumerate() {
        let index = i.to_string();
        let span = field(&["tools", &index], None);
        let name_span = field(&["tools", &index, "name"], None);
        let server_span = field(&["tools", &index, "mcp_server_name"], None);
        match tool {
            ToolSpec::AgentToolset { configs, .. } => {
                for (j, c) in configs.iter().enumerate() {
                    if !BUILTIN_TOOLS.contains(&c.name.as_str()) {
                        problems.push(
                            Diagnostic::at(
                                field(&["tools", &index, "configs", &j.to_string(), "name"], None),
                                format!("tools[{i}]: `{}` is not a built-in tool", c.name),
                            )
                            .help(format!("built-in tools: {}", BUILTIN_TOOLS.join(", "))),
                        );
                    }
                }
            }
            ToolSpec::McpToolset {
                mcp_server_name, ..
            } => {
                used_servers.push(mcp_server_name.as_str());
                if !servers.contains(&mcp_server_name.as_str()) {
                    problems.push(Diagnostic::at(server_span, format!("tools[{i}]: MCP server `{mcp_server_name}` is not declared in `mcp_servers`"))
                        .help("add `{ type: url, name: ..., url: ... }` to `mcp_servers`"));
                }
            }
            ToolSpec::Custom {
                name, description, ..
            } => {
                let ok = !name.is_empty()
                    && name.len() <= 128
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    problems.push(
                        Diagnostic::at(
                            name_span,
                            format!("tools[{i}]: custom tool name `{name}` is invalid"),
                        )
                        .help("1 to 128 characters: letters, digits, `_` and `-`"),
                    );
                }
                if custom_names.contains(&name.as_str()) {
                    problems.push(
                        Diagnostic::at(
                            name_span,
                            format!("tools[{i}]: custom tool `{name}` is declared twice"),
                        )
                        .help("custom tool names are unique within an agent; rename one"),
                    );
                }
                custom_names.push(name);
                if description.trim().is_empty() {
                    problems.push(
                        Diagnostic::at(
                            span,
                            format!("tools[{i}]: custom tool `{name}` needs a description"),
                        )
                        .help("the description tells the model when to use the tool"),
                    );
                }
            }
        }
    }
    for (i, s) in servers.iter().enumerate() {
        if !used_servers.contains(s) {
            problems.push(Diagnostic::at(field(&["mcp_servers", &i.to_string(), "name"], None), format!("MCP server `{s}` is not used by any `mcp_toolset` tool"))
                .help("add `{ type: mcp_toolset, mcp_server_name: ... }` to `tools`, or remove the server"));
        }
    }
}

fn validate_environment(
    spec: &EnvironmentSpec,
    field: &dyn Fn(&[&str], Option<&str>) -> Span,
    problems: &mut Vec<Diagnostic>,
) {
    let name = spec.name.as_deref().unwrap_or_default();
    if name.is_empty() || name.chars().count() > 256 {
        problems.push(
            Diagnostic::at(
                field(&[], Some("name")),
                "environment names are 1 to 256 characters",
            )
            .help("give the environment a `name` of at most 256 characters"),
        );
    }
    if let Some(EnvironmentConfigSpec::Cloud {
        packages: Some(p),
        networking:
            Some(NetworkingSpec::Limited {
                allow_package_managers,
                ..
            }),
    }) = &spec.config
    {
        let any = [&p.apt, &p.cargo, &p.gem, &p.go, &p.npm, &p.pip]
            .iter()
            .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()));
        if any && *allow_package_managers != Some(true) {
            problems.push(
                Diagnostic::at(
                    field(&["config", "networking"], None),
                    "packages need `allow_package_managers: true` under `limited` networking",
                )
                .help("set `networking.allow_package_managers: true`, or remove `packages`"),
            );
        }
    }
}

/// Turns a serde error on a file's JSON into a diagnostic at the right place.
fn type_error(file: &ParsedFile, e: &serde_path_to_error::Error<serde_json::Error>) -> Diagnostic {
    let mut path = Vec::new();
    for seg in e.path().iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => path.push(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => path.push(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    let raw = e.inner().to_string();
    let raw = raw.split(" at line ").next().unwrap_or(&raw).to_string();
    // Inside enums serde buffers the value and the path stops at the enum;
    // search that subtree for what the message names.
    let subtree = yaml::node_at(&file.node, &path);
    let search = |hit: &dyn Fn(yaml::Found<'_>) -> bool| subtree.and_then(|n| yaml::find(n, hit));

    let unknown = raw
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
        .map(|(k, rest)| (k.to_string(), rest.to_string()));
    if let Some((key, rest)) = unknown {
        // For plain structs the path already ends with the unknown key.
        if matches!(path.last(), Some(Seg::Key(k)) if *k == key) {
            path.pop();
        }
        let where_ = yaml::path_string(&path);
        let span = yaml::node_at(&file.node, &path)
            .and_then(|n| match n {
                marked_yaml::Node::Mapping(m) => yaml::key_span(m, &key),
                _ => None,
            })
            .or_else(|| search(&|f| matches!(f, yaml::Found::Key(k) if k == key)))
            .or_else(|| locate(&file.node, &path, None));
        let expected = rest
            .trim_start_matches(", ")
            .replace("expected one of ", "")
            .replace("expected ", "");
        let within = if where_.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{where_}`")
        };
        return Diagnostic::new(format!("unknown field `{key}` in {within}"), span)
            .help(format!("expected one of: {expected}"));
    }
    let where_ = yaml::path_string(&path);
    let quoted = |prefix: &str| {
        raw.strip_prefix(prefix)
            .and_then(|r| r.split_once('`'))
            .map(|(v, _)| v.to_string())
    };
    let mut span = None;
    if let Some(variant) = quoted("unknown variant `") {
        span = search(&|f| matches!(f, yaml::Found::Scalar(v) if v == variant));
    } else if let Some(v) = raw
        .strip_prefix("invalid type: string \"")
        .and_then(|r| r.split_once('"'))
        .map(|(v, _)| v.to_string())
    {
        span = search(&|f| matches!(f, yaml::Found::Scalar(x) if x == v));
    }
    let mut message = if raw.contains("untagged enum ModelSpec") {
        "`model` must be a model id string or an object with `id`".to_string()
    } else if raw.contains("untagged enum AgentRefSpec") {
        agent_ref_problem(subtree, &mut span)
    } else if let Some(f) = raw.strip_prefix("missing field ") {
        // Point at the key that names the incomplete mapping.
        if let Some(Seg::Key(k)) = path.last() {
            span = locate(&file.node, &path[..path.len() - 1], Some(k));
        }
        if where_.is_empty() {
            format!("missing field {f}")
        } else {
            format!("`{where_}` is missing the field {f}")
        }
    } else if where_.is_empty() {
        raw.clone()
    } else {
        format!("`{where_}`: {raw}")
    };
    if message.is_empty() {
        message = raw.clone();
    }
    let span = span.or_else(|| locate(&file.node, &path, None));
    let help = if raw.contains("unknown variant") {
        "use one of the values listed above"
    } else if raw.starts_with("missing field") {
        "add the field; see schemas/agentform.schema.json for every field"
    } else if raw.contains("untagged enum AgentRefSpec") {
        "write `agent: NAME` for the latest version or `agent: { name: NAME, version: N }` to pin one"
    } else {
        "see schemas/agentform.schema.json for the expected shape"
    };
    Diagnostic::new(message, span).help(help)
}

/// Says what is wrong with a session's `agent` when it is neither a name nor
/// `{name, version}`, and where.
fn agent_ref_problem(node: Option<&marked_yaml::Node>, span: &mut Option<Span>) -> String {
    let Some(marked_yaml::Node::Mapping(m)) = node else {
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
            *span = yaml::span_of(&marked_yaml::Node::Mapping(m.clone()));
            return format!("a pinned agent needs `{required}`");
        }
    }
    "`agent` must be an agent name or `{ name: NAME, version: N }`".into()
}

/// The JSON Schema of a manifest file, as committed in `schemas/`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(FileSpec);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// Problems of a `providers.anthropic` block; `at` finds a field.
fn validate_anthropic(
    spec: &spec::AnthropicProviderSpec,
    at: &dyn Fn(&[&str]) -> Option<Span>,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    if let Some(url) = &spec.base_url {
        if let Err(why) = crate::http::check_base_url(url) {
            problems.push(
                Diagnostic::new(format!("`{url}` is not a usable base URL: {why}"), at(&["base_url"]))
                    .help("write scheme://host[:port][/prefix], e.g. `https://api.anthropic.com` or `http://127.0.0.1:8787`"),
            );
        }
    }
    for (field, value) in [
        ("api_key_env", &spec.api_key_env),
        ("auth_token_env", &spec.auth_token_env),
    ] {
        if let Some(name) = value {
            let ok = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                problems.push(
                    Diagnostic::new(
                        format!("`{name}` is not an environment variable name"),
                        at(&[field]),
                    )
                    .help("name the variable that holds the credential, e.g. `ANTHROPIC_API_KEY`; never write the credential itself here"),
                );
            }
        }
    }
    for (field, value) in [
        ("retry_backoff", &spec.retry_backoff),
        ("timeout", &spec.timeout),
    ] {
        if let Some(v) = value {
            match parse_duration(v) {
                None => problems.push(
                    Diagnostic::new(format!("`{v}` is not a duration"), at(&[field]))
                        .help("write a number and a unit: `500ms`, `30s`, `2m` or `1h`"),
                ),
                Some(d) if field == "timeout" && d.is_zero() => problems.push(
                    Diagnostic::new("the timeout must be longer than zero", at(&[field]))
                        .help("e.g. `2m`"),
                ),
                Some(_) => {}
            }
        }
    }
    let limits = &spec.rate_limits;
    for (field, value) in [
        ("environments_per_minute", limits.environments_per_minute),
        ("environments_concurrency", limits.environments_concurrency),
        ("creates_per_minute", limits.creates_per_minute),
        ("other_per_minute", limits.other_per_minute),
    ] {
        if value == Some(spec::LimitSpec::Count(0)) {
            problems.push(
                Diagnostic::new(
                    format!("`rate_limits.{field}` is 0, which would stop every request"),
                    at(&["rate_limits", field]),
                )
                .help("write a positive number, or `unlimited` to switch this limit off"),
            );
        }
    }
    problems
}

/// Parses `500ms`, `30s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(ms))
}

fn validate_script(
    spec: &SessionSpec,
    field: &dyn Fn(&[&str], Option<&str>) -> Span,
    problems: &mut Vec<Diagnostic>,
) {
    let bad_duration = |value: &str, span: Span| {
        Diagnostic::at(span, format!("`{value}` is not a duration"))
            .help("write a number and a unit: `500ms`, `30s`, `2m` or `1h`")
    };
    if let Some(t) = &spec.timeout {
        if parse_duration(t).is_none() {
            problems.push(bad_duration(t, field(&["timeout"], None)));
        }
    }
    for (i, step) in spec.steps.iter().enumerate() {
        let index = i.to_string();
        let at = |rest: &[&str]| {
            let mut p = vec!["steps", index.as_str()];
            p.extend_from_slice(rest);
            field(&p, None)
        };
        if let Some(t) = &step.timeout {
            if parse_duration(t).is_none() {
                problems.push(bad_duration(t, at(&["timeout"])));
            }
        }
        for e in &step.expect {
            if let spec::Expectation::Regex(r) = e {
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
        if let spec::ToolHandlerSpec::Run(cmd) = handler {
            if cmd.trim().is_empty() {
                problems.push(Diagnostic::at(
                    field(&["tools"], Some(tool)),
                    format!("the handler of `{tool}` has an empty command"),
                ));
            }
        }
    }
}
