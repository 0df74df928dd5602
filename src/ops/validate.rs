//! `validate`: what a loaded manifest declares, counted for a one-line summary.

use crate::graph::Kind;
use crate::manifest::Manifest;

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
