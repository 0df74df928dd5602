//! Environments: the name's length and uniqueness (the API answers 409 on a
//! duplicate), packages under `limited` networking, and the sandbox's
//! `limits`.

use std::collections::HashMap;

use serde_json::Value;

use super::Fields;
use crate::api::limits::{MAX_NAME, PACKAGE_MANAGERS};
use crate::graph::Address;
use crate::manifest::declare::Declared;
use crate::manifest::diagnostic::Diagnostic;
use crate::manifest::spec::{EnvironmentConfigSpec, EnvironmentSpec, LimitsSpec, NetworkingSpec};
use crate::manifest::{parse_duration, parse_size};

pub(crate) fn check(spec: &EnvironmentSpec, fields: &Fields, problems: &mut Vec<Diagnostic>) {
    if let Some(limits) = &spec.limits {
        check_limits(limits, fields, problems);
    }
    let name = spec.name.as_deref().unwrap_or_default();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        problems.push(
            Diagnostic::at(
                fields.at(&[], Some("name")),
                format!("environment names are 1 to {MAX_NAME} characters"),
            )
            .help(format!(
                "give the environment a `name` of at most {MAX_NAME} characters"
            )),
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
        let any = PACKAGE_MANAGERS
            .iter()
            .any(|m| p.list(m).is_some_and(|l| !l.is_empty()));
        if any && *allow_package_managers != Some(true) {
            problems.push(
                Diagnostic::at(
                    fields.at(&["config", "networking"], None),
                    "packages need `allow_package_managers: true` under `limited` networking",
                )
                .help("set `networking.allow_package_managers: true`, or remove `packages`"),
            );
        }
    }
}

/// The smallest limits that still let a shell start.
const MIN_MEMORY: u64 = 32 << 20;
const MIN_PROCESSES: u64 = 4;
const MIN_FILE_SIZE: u64 = 1 << 10;

/// `limits`: each value parses and is large enough for a shell to start.
fn check_limits(spec: &LimitsSpec, fields: &Fields, problems: &mut Vec<Diagnostic>) {
    let mut refuse = |key: &str, message: String, help: &str| {
        problems.push(
            Diagnostic::at(fields.at(&["limits"], Some(key)), message).help(help.to_string()),
        );
    };
    let size_help = "write a size such as `512MiB` or `2GiB`";
    if let Some(memory) = &spec.memory {
        match parse_size(memory) {
            None => refuse("memory", format!("`{memory}` is not a size"), size_help),
            Some(n) if n < MIN_MEMORY => refuse(
                "memory",
                format!("a memory limit of `{memory}` is too small for a shell"),
                "give processes at least 32MiB",
            ),
            Some(_) => {}
        }
    }
    if let Some(size) = &spec.file_size {
        match parse_size(size) {
            None => refuse("file_size", format!("`{size}` is not a size"), size_help),
            Some(n) if n < MIN_FILE_SIZE => refuse(
                "file_size",
                format!("a file size limit of `{size}` is too small"),
                "allow files of at least 1KiB",
            ),
            Some(_) => {}
        }
    }
    if let Some(n) = spec.processes.filter(|n| *n < MIN_PROCESSES) {
        refuse(
            "processes",
            format!("a limit of {n} processes is too small for a shell and its commands"),
            "allow at least 4 processes",
        );
    }
    if let Some(cpu) = &spec.cpu_time {
        match parse_duration(cpu) {
            Some(d) if d.as_secs() >= 1 => {}
            Some(_) => refuse(
                "cpu_time",
                format!("a CPU time limit of `{cpu}` is too small"),
                "allow at least `1s`",
            ),
            None => refuse(
                "cpu_time",
                format!("`{cpu}` is not a duration"),
                "write a duration such as `30s` or `5m`",
            ),
        }
    }
}

/// The first environment with a name keeps it; a later one is refused.
pub(super) fn unique_name(
    addr: &Address,
    d: &Declared,
    fields: &Fields,
    seen: &mut HashMap<String, Address>,
    problems: &mut Vec<Diagnostic>,
) {
    let name = d
        .resource
        .body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(other) = seen.get(&name) {
        problems.push(
            Diagnostic::at(
                fields.at(&[], Some("name")),
                format!("environment name `{name}` is also used by `{other}`"),
            )
            .help("environment names are unique per organization; give one of them another `name`"),
        );
    } else {
        seen.insert(name, addr.clone());
    }
}

#[cfg(test)]
mod tests {
    use crate::api::limits::MAX_NAME;
    use crate::manifest::test_support::{at, help, load, refusal, refusals};

    #[test]
    fn the_name_defaults_to_the_key_and_must_be_unique() {
        let m = load(&[("a.yaml", "version: 1\nenvironments:\n  data: {}\n")]).unwrap();
        assert_eq!(m.resources[0].body["name"], "data");

        let d = refusals(&[
            ("a.yaml", "version: 1\nenvironments:\n  data: {}\n"),
            (
                "b.yaml",
                "version: 1\nenvironments:\n  other:\n    name: data\n",
            ),
        ]);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].message,
            "environment name `data` is also used by `environment.data`"
        );
        assert_eq!((d[0].span.unwrap().source, at(&d[0])), (1, (4, 5)));
        assert!(help(&d[0]).starts_with("environment names are unique per organization"));
    }

    #[test]
    fn an_overlong_name_is_refused() {
        let name = "n".repeat(MAX_NAME + 1);
        let d = refusal(&format!(
            "version: 1\nenvironments:\n  e:\n    name: {name}\n"
        ));
        assert_eq!(d.message, "environment names are 1 to 256 characters");
        assert_eq!(at(&d), (4, 5));
        assert_eq!(
            help(&d),
            "give the environment a `name` of at most 256 characters"
        );
    }

    #[test]
    fn packages_under_limited_networking_need_package_managers() {
        let env = |allow: &str| {
            format!(
                "version: 1\nenvironments:\n  e:\n    config:\n      type: cloud\n\
                 \x20     packages: {{ cargo: [ripgrep] }}\n\
                 \x20     networking: {{ type: limited{allow} }}\n"
            )
        };
        let d = refusal(&env(""));
        assert_eq!(
            d.message,
            "packages need `allow_package_managers: true` under `limited` networking"
        );
        assert_eq!(at(&d), (7, 21));
        load(&[("a.yaml", &env(", allow_package_managers: true"))]).unwrap();
        let empty = env("").replace("[ripgrep]", "[]");
        load(&[("a.yaml", &empty)]).unwrap();
    }
}
