//! `metadata` of agents, environments and sessions: the API's limits on
//! pairs, keys and values, less the pairs agentform sets itself.

use std::collections::BTreeMap;

use super::Fields;
use crate::api::limits::{MAX_METADATA_KEY, MAX_METADATA_PAIRS, MAX_METADATA_VALUE};
use crate::api::{META_ADDRESS, META_MANIFEST};
use crate::manifest::diagnostic::Diagnostic;

/// The pairs agentform sets on every object it creates.
const RESERVED: [&str; 2] = [META_ADDRESS, META_MANIFEST];

/// Keys with this prefix are agentform's own.
const RESERVED_PREFIX: &str = "agentform.";

pub(crate) fn check(
    meta: &BTreeMap<String, String>,
    fields: &Fields,
    problems: &mut Vec<Diagnostic>,
) {
    let at = |key: Option<&str>| fields.at(&["metadata"], key);
    let allowed = MAX_METADATA_PAIRS - RESERVED.len();
    if meta.len() > allowed {
        problems.push(
            Diagnostic::at(
                at(None),
                format!("{} metadata pairs; at most {allowed} are allowed", meta.len()),
            )
            .help(format!(
                "the API allows {MAX_METADATA_PAIRS} pairs and agentform uses two (`{META_ADDRESS}`, `{META_MANIFEST}`)"
            )),
        );
    }
    for (k, v) in meta {
        if k.starts_with(RESERVED_PREFIX) {
            problems.push(
                Diagnostic::at(at(Some(k)), format!("metadata key `{k}` is reserved")).help(
                    format!("keys starting with `{RESERVED_PREFIX}` are set by agentform itself; rename the key"),
                ),
            );
        }
        if k.is_empty() || k.chars().count() > MAX_METADATA_KEY {
            problems.push(
                Diagnostic::at(
                    at(Some(k)),
                    format!("metadata key `{k}` must be 1 to {MAX_METADATA_KEY} characters"),
                )
                .help(format!(
                    "shorten the key; the API limits keys to {MAX_METADATA_KEY} characters"
                )),
            );
        }
        if v.chars().count() > MAX_METADATA_VALUE {
            problems.push(
                Diagnostic::at(
                    at(Some(k)),
                    format!(
                        "metadata value of `{k}` is longer than {MAX_METADATA_VALUE} characters"
                    ),
                )
                .help(format!(
                    "shorten the value; the API limits values to {MAX_METADATA_VALUE} characters"
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::test_support::{at, help, load, refusal, refusals};

    fn agent_with(metadata: &str) -> String {
        format!("version: 1\nagents:\n  a:\n    model: m\n    metadata:\n{metadata}")
    }

    fn pairs(n: usize) -> String {
        (0..n).map(|i| format!("      k{i}: v\n")).collect()
    }

    #[test]
    fn fourteen_pairs_of_full_length_load() {
        let mut text = agent_with(&pairs(13));
        let key = "k".repeat(MAX_METADATA_KEY);
        let value = "v".repeat(MAX_METADATA_VALUE);
        text.push_str(&format!("      {key}: {value}\n"));
        load(&[("a.yaml", &text)]).unwrap();
    }

    #[test]
    fn too_many_pairs_are_refused_at_the_mapping() {
        let d = refusal(&agent_with(&pairs(15)));
        assert_eq!(d.message, "15 metadata pairs; at most 14 are allowed");
        assert_eq!(at(&d), (6, 7));
        assert_eq!(
            help(&d),
            "the API allows 16 pairs and agentform uses two (`agentform.address`, `agentform.manifest`)"
        );
    }

    #[test]
    fn reserved_and_oversized_keys_and_values_are_refused_at_the_key_in_key_order() {
        let long_key = "k".repeat(MAX_METADATA_KEY + 1);
        let long_value = "v".repeat(MAX_METADATA_VALUE + 1);
        let text = agent_with(&format!(
            "      agentform.team: x\n      {long_key}: v\n      big: {long_value}\n"
        ));
        let d = refusals(&[("a.yaml", &text)]);
        let found: Vec<(&str, (usize, usize))> =
            d.iter().map(|d| (d.message.as_str(), at(d))).collect();
        assert_eq!(
            found,
            [
                ("metadata key `agentform.team` is reserved", (6, 7)),
                (
                    "metadata value of `big` is longer than 512 characters",
                    (8, 7)
                ),
                (
                    &format!("metadata key `{long_key}` must be 1 to 64 characters")[..],
                    (7, 7)
                ),
            ]
        );
        assert!(help(&d[0]).starts_with("keys starting with `agentform.` are set by agentform"));
        assert_eq!(
            help(&d[1]),
            "shorten the value; the API limits values to 512 characters"
        );
        assert_eq!(
            help(&d[2]),
            "shorten the key; the API limits keys to 64 characters"
        );
    }

    #[test]
    fn session_and_environment_metadata_are_checked_too() {
        let d = refusal("version: 1\nenvironments:\n  e:\n    metadata: { agentform.x: y }\n");
        assert_eq!(d.message, "metadata key `agentform.x` is reserved");
        let d = refusal(
            "version: 1\nenvironments:\n  e: {}\nagents:\n  a:\n    model: m\n\
             sessions:\n  s:\n    agent: a\n    environment: e\n    metadata: { agentform.x: y }\n",
        );
        assert_eq!(d.message, "metadata key `agentform.x` is reserved");
        assert_eq!(at(&d), (11, 17));
    }
}
