//! Environments: the name's length and uniqueness (the API answers 409 on a
//! duplicate), and packages under `limited` networking.

use std::collections::HashMap;

use serde_json::Value;

use super::Fields;
use crate::api::limits::{MAX_NAME, PACKAGE_MANAGERS};
use crate::graph::Address;
use crate::manifest::declare::Declared;
use crate::manifest::diagnostic::Diagnostic;
use crate::manifest::spec::{EnvironmentConfigSpec, EnvironmentSpec, NetworkingSpec};

pub(crate) fn check(spec: &EnvironmentSpec, fields: &Fields, problems: &mut Vec<Diagnostic>) {
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
