//! The pass driver: discovers and reads the files, then runs the passes in
//! order (parse, vars, render, settings, declare, validate, graph), stopping
//! after a pass that found problems so that later passes never see a broken
//! input. Each pass lives in its own module; this one only sequences them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use marked_yaml::Node;
use serde_json::Value;

use super::declare::{self, Declared};
use super::diagnostic::{Diagnostic, Diagnostics, Sources};
use super::discover::{discover, root_dir};
use super::{render, settings, validate, vars, yaml};
use super::{LoadOptions, Manifest, Resource, Templater};
use crate::graph::{Address, ResourceGraph};

/// One file, parsed into nodes that keep their positions.
pub(super) struct ParsedFile {
    pub source: usize,
    pub node: Node,
}

/// The sources read so far and the problems found so far.
#[derive(Default)]
pub(super) struct Loader {
    sources: Sources,
    problems: Vec<Diagnostic>,
    /// See [`LoadOptions::allow_empty`].
    allow_empty: bool,
    /// Values read with `env()`: never shown in a problem.
    secrets: Vec<String>,
}

impl Loader {
    pub(super) fn load(mut self, options: &LoadOptions) -> Result<Manifest, Diagnostics> {
        self.allow_empty = options.allow_empty;
        let manifest = self.run(options);
        self.finish(manifest)
    }

    #[cfg(test)]
    pub(super) fn new(allow_empty: bool) -> Self {
        Loader {
            allow_empty,
            ..Loader::default()
        }
    }

    /// [`Loader::load`] over texts already in memory.
    #[cfg(test)]
    pub(super) fn load_texts(
        mut self,
        texts: Vec<(PathBuf, String)>,
        root: PathBuf,
        overrides: &[(String, String)],
    ) -> Result<Manifest, Diagnostics> {
        let texts = texts.into_iter().map(|(p, t)| (p, Ok(t)));
        let manifest = self.passes(texts, root, overrides);
        self.finish(manifest)
    }

    fn finish(self, manifest: Option<Manifest>) -> Result<Manifest, Diagnostics> {
        match manifest {
            Some(m) if self.problems.is_empty() => Ok(m),
            _ => Err(Diagnostics {
                sources: self.sources,
                items: self
                    .problems
                    .into_iter()
                    .map(|d| d.redacted(&self.secrets))
                    .collect(),
            }),
        }
    }

    fn run(&mut self, options: &LoadOptions) -> Option<Manifest> {
        let files = match discover(&options.files) {
            Ok(f) => f,
            Err(d) => {
                self.problems.push(d);
                return None;
            }
        };
        let first = options.files.first().map(PathBuf::as_path);
        let root = root_dir(first.unwrap_or(Path::new(".")));
        let texts = files.into_iter().map(|path| {
            let text = std::fs::read_to_string(&path);
            (path, text)
        });
        self.passes(texts, root, &options.vars)
    }

    /// Every pass after discovery, in order.
    fn passes(
        &mut self,
        texts: impl IntoIterator<Item = (PathBuf, std::io::Result<String>)>,
        root: PathBuf,
        overrides: &[(String, String)],
    ) -> Option<Manifest> {
        let parsed = self.parse(texts);
        if !self.problems.is_empty() {
            return None;
        }
        let vars = vars::collect(&mut self.problems, &parsed, overrides)?;
        let templater = Templater::new(Value::Object(vars));
        let typed = render::typed_files(&mut self.problems, &parsed, &templater);
        self.secrets = templater.secret_values();
        if !self.problems.is_empty() {
            return None;
        }
        let settings = settings::settle(&mut self.problems, &typed, &root, self.allow_empty);
        let retention = validate::settle_retention(&mut self.problems, &typed);
        let mut declared = declare::declare(&mut self.problems, typed, &settings.default_provider);
        validate::validate(&mut self.problems, &parsed, &mut declared);
        if !self.problems.is_empty() {
            return None;
        }
        let (resources, graph) = self.graph(declared)?;
        Some(Manifest {
            project: settings.project,
            root,
            sources: self.sources.clone(),
            providers: settings.providers,
            retention,
            resources,
            graph,
            templater,
        })
    }

    /// Records every readable file as a source and parses it.
    fn parse(
        &mut self,
        texts: impl IntoIterator<Item = (PathBuf, std::io::Result<String>)>,
    ) -> Vec<ParsedFile> {
        let mut parsed = Vec::new();
        for (path, text) in texts {
            let text = match text {
                Ok(t) => t,
                Err(e) => {
                    self.problems.push(Diagnostic::new(
                        format!("cannot read `{}`: {e}", path.display()),
                        None,
                    ));
                    continue;
                }
            };
            let source = self.sources.add(path, text.clone());
            match yaml::parse(source, &text) {
                Ok(node) => parsed.push(ParsedFile { source, node }),
                Err(d) => self.problems.push(d),
            }
        }
        parsed
    }

    /// The resources in address order and the graph of their dependencies.
    fn graph(
        &mut self,
        declared: BTreeMap<Address, Declared>,
    ) -> Option<(Vec<Resource>, ResourceGraph)> {
        let resources: Vec<Resource> = declared.into_values().map(|d| d.resource).collect();
        let nodes = resources
            .iter()
            .map(|r| (&r.address, r.depends_on.as_slice()));
        match ResourceGraph::build(nodes) {
            Ok(graph) => Some((resources, graph)),
            Err(cycle) => {
                let span = cycle
                    .0
                    .first()
                    .and_then(|first| resources.iter().find(|r| &r.address == first))
                    .map(|r| r.span);
                self.problems.push(Diagnostic::new(format!("dependency cycle: {cycle}"), span)
                    .help("a resource cannot depend on itself through references; remove one of the references"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{load, refusal};

    #[test]
    fn a_valid_manifest_loads_sorted_by_address() {
        let m = load(&[(
            "agentform.yaml",
            "version: 1\nname: demo\nvars: { model: claude-sonnet-4-6 }\n\
             environments:\n  data:\n    config: { type: cloud }\n\
             agents:\n  coder:\n    model: \"{{ vars.model }}\"\n\
             sessions:\n  smoke:\n    agent: coder\n    environment: data\n",
        )])
        .unwrap();
        assert_eq!(m.project, "demo");
        let addresses: Vec<String> = m.resources.iter().map(|r| r.address.to_string()).collect();
        // Environments sort first: they are created first.
        assert_eq!(
            addresses,
            ["environment.data", "agent.coder", "session.smoke"]
        );
        assert_eq!(m.graph.len(), 3);
        let coder = &m.resources[1];
        assert_eq!(coder.body["model"], "claude-sonnet-4-6");
        assert_eq!(coder.provider, "local");
    }

    #[test]
    fn a_reference_cycle_is_refused_at_the_first_resource() {
        let d = refusal(
            "version: 1\nagents:\n  a:\n    model: m\n    system: \"{{ agent.b.id }}\"\n\
             \x20 b:\n    model: m\n    system: \"{{ agent.a.id }}\"\n",
        );
        assert!(d.message.starts_with("dependency cycle: "), "{}", d.message);
        let span = d.span.unwrap();
        assert_eq!((span.line, span.column), (3, 3));
        assert!(d.help.unwrap().contains("remove one of the references"));
    }

    #[test]
    fn a_parse_error_stops_before_templates_are_rendered() {
        let err = load(&[
            (
                "a.yaml",
                "version: 1\nagents:\n  x:\n    model: m\n   bad: 1\n",
            ),
            ("b.yaml", "version: 1\nvars: 3\n"),
        ])
        .unwrap_err();
        assert_eq!(err.items.len(), 1, "{err}");
        assert!(err.items[0].message.starts_with("invalid YAML"));
    }
}
