//! `validate`: what a loaded manifest declares, counted for a one-line
//! summary, and what it should know about its secrets.

use crate::graph::Kind;
use crate::manifest::Manifest;
use crate::redact::MIN_SECRET_LEN;

/// How many resources of each kind a manifest declares, in how many files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub resources: usize,
    pub environments: usize,
    pub agents: usize,
    pub sessions: usize,
    pub files: usize,
}

pub fn validate(manifest: &Manifest) -> Counts {
    let count = |kind: Kind| {
        manifest
            .resources
            .iter()
            .filter(|r| r.address.kind == kind)
            .count()
    };
    Counts {
        resources: manifest.resources.len(),
        environments: count(Kind::Environment),
        agents: count(Kind::Agent),
        sessions: count(Kind::Session),
        files: manifest.sources.files().count(),
    }
}

/// One warning per variable read with `env()` whose value is too short to
/// be masked: such a value shows wherever it appears.
pub fn secret_warnings(manifest: &Manifest) -> Vec<String> {
    manifest
        .secrets()
        .too_short()
        .into_iter()
        .map(|(name, len)| {
            format!(
                "the value of `{name}` (read with `env()`) has {len} character{}, too few to be masked: \
                 values shorter than {MIN_SECRET_LEN} characters may show in output, transcripts and the state",
                if len == 1 { "" } else { "s" }
            )
        })
        .collect()
}
