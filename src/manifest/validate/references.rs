//! References between resources: `depends_on` addresses and the outputs
//! templates use (`{{ agent.coder.id }}`). Each valid one becomes a
//! dependency; each other one a problem.

use super::{Outcome, Scope};
use crate::graph::{Address, Kind};
use crate::manifest::declare::Declared;
use crate::manifest::diagnostic::Diagnostic;
use crate::manifest::suggest::not_declared;

/// The outputs each kind of resource has for templates.
fn outputs(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Agent => &["id", "version", "name"],
        Kind::Environment => &["id", "name"],
        Kind::Session => &["id"],
    }
}

pub(super) fn depends_on(scope: &Scope, addr: &Address, d: &Declared, out: &mut Outcome) {
    for (raw, span) in &d.depends_on_raw {
        match raw.parse::<Address>() {
            Ok(dep) if dep == *addr => out.problems.push(
                Diagnostic::at(*span, format!("`{addr}` depends on itself"))
                    .help("remove it from its own `depends_on`"),
            ),
            Ok(dep) if scope.declared.contains_key(&dep) => out.deps.push(dep),
            Ok(dep) => out.problems.push(not_declared(*span, &dep, &scope.names)),
            Err(e) => out
                .problems
                .push(Diagnostic::at(*span, e).help(
                    "write addresses as KIND.NAME, e.g. `environment.data` or `agent.coder`",
                )),
        }
    }
}

pub(super) fn templates(scope: &Scope, addr: &Address, d: &Declared, out: &mut Outcome) {
    for def in &d.resource.deferred {
        for r in &def.references {
            let attrs = outputs(r.address.kind);
            if r.address == *addr {
                out.problems.push(
                    Diagnostic::at(def.span, format!("`{addr}` refers to its own output `{r}`"))
                        .help("a resource's outputs are not known while it is being created"),
                );
            } else if !scope.declared.contains_key(&r.address) {
                out.problems
                    .push(not_declared(def.span, &r.address, &scope.names));
            } else if !attrs.contains(&r.attribute.as_str()) {
                let article = if r.address.kind == Kind::Agent {
                    "an"
                } else {
                    "a"
                };
                out.problems.push(
                    Diagnostic::at(
                        def.span,
                        format!("{} has no output `{}`", r.address, r.attribute),
                    )
                    .help(format!(
                        "outputs of {article} {}: {}",
                        r.address.kind,
                        attrs.join(", ")
                    )),
                );
            } else {
                out.deps.push(r.address.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{at, help, load, refusal, resource};

    const BASE: &str = "version: 1\nenvironments:\n  data:\n    config: { type: cloud }\n";

    #[test]
    fn references_and_depends_on_become_dependencies() {
        let m = load(&[(
            "a.yaml",
            &format!(
                "{BASE}agents:\n  coder:\n    model: m\n\
                 \x20 helper:\n    model: m\n    system: \"Ask {{{{ agent.coder.id }}}}\"\n\
                 \x20   depends_on: [environment.data, environment.data]\n"
            ),
        )])
        .unwrap();
        let helper = resource(&m, "agent.helper");
        let deps: Vec<String> = helper.depends_on.iter().map(|a| a.to_string()).collect();
        assert_eq!(deps, ["environment.data", "agent.coder"]);
        assert_eq!(
            m.graph.dependencies(&helper.address).len(),
            2,
            "the graph has the same edges"
        );
    }

    #[test]
    fn a_reference_to_an_undeclared_resource_suggests_a_name() {
        let d = refusal(&format!(
            "{BASE}agents:\n  coder:\n    model: m\n    system: \"{{{{ environment.dta.id }}}}\"\n"
        ));
        assert_eq!(d.message, "`environment.dta` is not declared");
        assert_eq!(at(&d), (8, 13));
        assert_eq!(help(&d), "did you mean `data`? declared environments: data");
    }

    #[test]
    fn an_unknown_output_lists_the_outputs() {
        let d = refusal(&format!(
            "{BASE}agents:\n  coder:\n    model: m\n    system: \"{{{{ environment.data.version }}}}\"\n"
        ));
        assert_eq!(d.message, "environment.data has no output `version`");
        assert_eq!(help(&d), "outputs of a environment: id, name");
    }

    #[test]
    fn a_resource_cannot_use_its_own_output() {
        let d = refusal(&format!(
            "{BASE}agents:\n  coder:\n    model: m\n    system: \"{{{{ agent.coder.id }}}}\"\n"
        ));
        assert_eq!(
            d.message,
            "`agent.coder` refers to its own output `agent.coder.id`"
        );
        assert_eq!(at(&d), (8, 13));
    }

    #[test]
    fn depends_on_must_name_another_declared_resource() {
        let agent =
            |deps: &str| format!("{BASE}agents:\n  a:\n    model: m\n    depends_on: [{deps}]\n");
        let d = refusal(&agent("agent.a"));
        assert_eq!(d.message, "`agent.a` depends on itself");
        assert_eq!(at(&d), (8, 18));
        let d = refusal(&agent("environment.dat"));
        assert_eq!(d.message, "`environment.dat` is not declared");
        let d = refusal(&agent("data"));
        assert!(help(&d).starts_with("write addresses as KIND.NAME"));
    }
}
