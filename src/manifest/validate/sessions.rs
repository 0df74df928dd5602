//! Sessions: the agent and environment they run (declared, on the same
//! provider), the pinned version, the title, the instructions of memory
//! stores, metadata and the script.

use super::{metadata, scripts, Fields, Outcome, Scope};
use crate::api::limits::{MAX_MEMORY_INSTRUCTIONS, MAX_TITLE};
use crate::graph::Address;
use crate::manifest::declare::Declared;
use crate::manifest::diagnostic::Diagnostic;
use crate::manifest::spec::{AgentRefSpec, SessionResourceSpec, SessionSpec};
use crate::manifest::suggest::not_declared;
use crate::manifest::SessionTarget;

pub(super) fn check(
    scope: &Scope,
    addr: &Address,
    d: &Declared,
    fields: &Fields,
    out: &mut Outcome,
) {
    let (Some(target), Some(spec)) = (&d.resource.session, &d.resource.script) else {
        return;
    };
    check_targets(scope, addr, d, target, spec, fields, out);
    if target.version == Some(0) {
        out.problems.push(Diagnostic::at(fields.at(&["agent", "version"], None), "agent versions start at 1")
            .help("pin an existing version, e.g. `version: 1`, or write the agent name alone for the latest"));
    }
    if let Some(title) = &spec.title {
        if title.chars().count() > MAX_TITLE {
            out.problems.push(
                Diagnostic::at(
                    fields.at(&["title"], None),
                    format!("session titles are at most {MAX_TITLE} characters"),
                )
                .help("shorten the title"),
            );
        }
    }
    for (i, resource) in spec.resources.iter().enumerate() {
        let SessionResourceSpec::MemoryStore {
            instructions: Some(text),
            ..
        } = resource
        else {
            continue;
        };
        if text.chars().count() > MAX_MEMORY_INSTRUCTIONS {
            out.problems.push(
                Diagnostic::at(
                    fields.at(&["resources", &i.to_string(), "instructions"], None),
                    format!(
                        "memory store instructions are at most {MAX_MEMORY_INSTRUCTIONS} characters"
                    ),
                )
                .help("shorten the instructions"),
            );
        }
    }
    metadata::check(&spec.metadata, fields, &mut out.problems);
    scripts::check(spec, fields, &mut out.problems);
}

/// The agent and the environment must be declared, on the session's provider.
fn check_targets(
    scope: &Scope,
    addr: &Address,
    d: &Declared,
    target: &SessionTarget,
    spec: &SessionSpec,
    fields: &Fields,
    out: &mut Outcome,
) {
    for (dep, path) in [
        (&target.agent, "agent"),
        (&target.environment, "environment"),
    ] {
        let span = match (path, &spec.agent) {
            ("agent", AgentRefSpec::Pinned(_)) => fields.at(&["agent", "name"], None),
            _ => fields.at(&[path], None),
        };
        let Some(other) = scope.declared.get(dep) else {
            out.problems.push(not_declared(span, dep, &scope.names));
            continue;
        };
        if other.resource.provider != d.resource.provider {
            out.problems.push(
                Diagnostic::at(
                    span,
                    format!(
                        "`{addr}` uses provider `{}` but `{dep}` uses `{}`",
                        d.resource.provider, other.resource.provider
                    ),
                )
                .help("a session runs on the provider of its agent and environment"),
            );
        }
        out.deps.push(dep.clone());
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::test_support::{at, help, load, refusal, refusals, resource};

    const BASE: &str = "version: 1\nenvironments:\n  data: {}\nagents:\n  coder:\n    model: m\n";

    fn session(body: &str) -> String {
        format!("{BASE}sessions:\n  s:\n{body}")
    }

    #[test]
    fn a_session_depends_on_its_agent_and_environment() {
        let m = load(&[(
            "a.yaml",
            &session(
                "    agent: { name: coder, version: 2 }\n    environment: data\n    title: t\n",
            ),
        )])
        .unwrap();
        let s = resource(&m, "session.s");
        let target = s.session.as_ref().unwrap();
        assert_eq!(target.agent.to_string(), "agent.coder");
        assert_eq!(target.version, Some(2));
        let deps: Vec<String> = s.depends_on.iter().map(|a| a.to_string()).collect();
        assert_eq!(deps, ["environment.data", "agent.coder"]);
        assert_eq!(s.body["title"], "t");
        assert_eq!(s.body["agent"]["version"], 2);
    }

    #[test]
    fn an_undeclared_agent_is_refused_at_its_name() {
        let d = refusal(&session(
            "    agent: { name: codr, version: 1 }\n    environment: data\n",
        ));
        assert_eq!(d.message, "`agent.codr` is not declared");
        assert_eq!(at(&d), (9, 20));
        assert_eq!(help(&d), "did you mean `coder`? declared agents: coder");
        let d = refusal(&session("    agent: coder\n    environment: dat\n"));
        assert_eq!(d.message, "`environment.dat` is not declared");
        assert_eq!(at(&d), (10, 18));
    }

    #[test]
    fn a_session_runs_on_the_provider_of_its_agent() {
        let d = refusals(&[(
            "a.yaml",
            &session("    provider: anthropic\n    agent: coder\n    environment: data\n"),
        )]);
        let found: Vec<(&str, (usize, usize))> =
            d.iter().map(|d| (d.message.as_str(), at(d))).collect();
        assert_eq!(
            found,
            [
                (
                    "`session.s` uses provider `anthropic` but `agent.coder` uses `local`",
                    (10, 12)
                ),
                (
                    "`session.s` uses provider `anthropic` but `environment.data` uses `local`",
                    (11, 18)
                ),
            ]
        );
        assert_eq!(
            help(&d[0]),
            "a session runs on the provider of its agent and environment"
        );
    }

    #[test]
    fn pinned_versions_start_at_1_and_titles_are_bounded() {
        let d = refusal(&session(
            "    agent: { name: coder, version: 0 }\n    environment: data\n",
        ));
        assert_eq!(d.message, "agent versions start at 1");
        assert_eq!(at(&d), (9, 36));
        let title = "t".repeat(crate::api::limits::MAX_TITLE + 1);
        let d = refusal(&session(&format!(
            "    agent: coder\n    environment: data\n    title: {title}\n"
        )));
        assert_eq!(d.message, "session titles are at most 512 characters");
        assert_eq!(at(&d), (11, 12));
        assert_eq!(help(&d), "shorten the title");
    }

    #[test]
    fn memory_store_instructions_are_bounded() {
        let long = "i".repeat(crate::api::limits::MAX_MEMORY_INSTRUCTIONS + 1);
        let d = refusal(&session(&format!(
            "    agent: coder
    environment: data
    resources:
\
             \x20     - {{ type: memory_store, memory_store_id: m, instructions: {long} }}
"
        )));
        assert_eq!(
            d.message,
            "memory store instructions are at most 4096 characters"
        );
        assert_eq!(at(&d), (12, 65));
    }
}
