//! Validation: the API's rules and limits on each entry (called by `declare`
//! while the typed spec is at hand), then the pass over all declared
//! resources that resolves references into dependencies. One file per
//! concern; every refusal carries a position and a help line. Nothing here
//! changes a body; it only decides and explains.

mod agents;
mod environments;
mod metadata;
mod providers;
mod references;
mod retention;
mod scripts;
mod sessions;

use std::collections::{BTreeMap, HashMap};

use marked_yaml::Node;

use super::declare::Declared;
use super::diagnostic::{Diagnostic, Span};
use super::loader::ParsedFile;
use super::suggest::Names;
use super::yaml::{locate, path_string, Seg};
use crate::graph::{Address, Kind};

pub(super) use agents::check as check_agent;
pub(super) use environments::check as check_environment;
pub(super) use metadata::check as check_metadata;
pub(super) use providers::{unknown_provider, validate_anthropic, validate_e2b, validate_modal};
pub(super) use retention::settle as settle_retention;

/// Finds the position of a field of one resource, or falls back to a place
/// that is always known.
pub(super) struct Fields<'a> {
    node: Option<&'a Node>,
    base: [Seg; 2],
    fallback: Span,
}

impl<'a> Fields<'a> {
    pub(super) fn new(node: Option<&'a Node>, address: &Address, fallback: Span) -> Self {
        Fields {
            node,
            base: [
                Seg::Key(address.kind.section().into()),
                Seg::Key(address.name.clone()),
            ],
            fallback,
        }
    }

    /// `path` below the resource, written as messages name fields.
    pub(super) fn path(&self, path: &[&str]) -> String {
        let mut p = self.base.to_vec();
        p.extend(path.iter().map(|s| Seg::Key((*s).to_string())));
        path_string(&p)
    }

    /// The node at `path` below the resource; with `key`, that key of the
    /// mapping found there.
    pub(super) fn at(&self, path: &[&str], key: Option<&str>) -> Span {
        let mut p = self.base.to_vec();
        p.extend(path.iter().map(|s| Seg::Key((*s).to_string())));
        self.node
            .and_then(|n| locate(n, &p, key))
            .unwrap_or(self.fallback)
    }
}

/// What the checks of one resource may consult.
struct Scope<'a> {
    declared: &'a BTreeMap<Address, Declared>,
    names: Names,
}

/// What the checks of one resource found: its dependencies and its problems.
#[derive(Default)]
struct Outcome {
    deps: Vec<Address>,
    problems: Vec<Diagnostic>,
}

/// Resolves every resource's references into `depends_on`, and checks what
/// needs the other resources: providers, names unique across resources,
/// session targets.
pub(super) fn validate(
    problems: &mut Vec<Diagnostic>,
    files: &[ParsedFile],
    declared: &mut BTreeMap<Address, Declared>,
) {
    let scope = Scope {
        declared,
        names: Names::of(declared.keys()),
    };
    let mut env_names: HashMap<String, Address> = HashMap::new();
    let mut resolved = Vec::new();
    for (addr, d) in scope.declared {
        let node = files
            .iter()
            .find(|f| f.source == d.resource.span.source)
            .map(|f| &f.node);
        let fields = Fields::new(node, addr, d.resource.span);
        let mut out = Outcome::default();
        providers::check_resource(d, &mut out.problems);
        references::depends_on(&scope, addr, d, &mut out);
        references::templates(&scope, addr, d, &mut out);
        match addr.kind {
            Kind::Agent => {}
            Kind::Environment => {
                environments::unique_name(addr, d, &fields, &mut env_names, &mut out.problems)
            }
            Kind::Session => sessions::check(&scope, addr, d, &fields, &mut out),
        }
        out.deps.sort();
        out.deps.dedup();
        problems.extend(out.problems);
        resolved.push((addr.clone(), out.deps));
    }
    for (addr, deps) in resolved {
        if let Some(d) = declared.get_mut(&addr) {
            d.resource.depends_on = deps;
        }
    }
}
