//! `agentform.lock`: the agent versions an apply deployed, written beside the
//! manifest and meant to be committed, so a version is pinned through git.
//!
//! It reads, writes and compares the lock file; it must not decide what to
//! deploy (that is the plan's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::graph::Kind;
use crate::manifest::Manifest;
use crate::plan::{Action, Plan};
use crate::state::ResourceRecord;

pub use crate::manifest::LOCK_FILE;

const HEADER: &str = "# Written by `agentform apply`: the agent versions deployed from this manifest.\n# Commit it; `agentform plan --locked` fails when a deploy would differ from it.\n";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub version: u32,
    #[serde(default)]
    pub agents: BTreeMap<String, LockedAgent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedAgent {
    pub provider: String,
    pub id: String,
    pub version: u64,
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockFileError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a valid lock file: {message}")]
    Parse { path: String, message: String },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl LockFile {
    pub fn read(path: &Path) -> Result<Option<LockFile>, LockFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockFileError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        serde_norway::from_str(&text)
            .map(Some)
            .map_err(|e| LockFileError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            })
    }

    /// Writes atomically (temp file, then rename), so a crash never leaves half a lock file.
    pub fn write(&self, path: &Path) -> Result<(), LockFileError> {
        let err = |source| LockFileError::Write {
            path: path.display().to_string(),
            source,
        };
        let body = serde_norway::to_string(self).map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = path.with_extension("lock.tmp");
        std::fs::write(&tmp, format!("{HEADER}{body}")).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

impl LockFile {
    /// The lock for the agents of `manifest`, as the state records them.
    pub fn from_state(manifest: &Manifest, records: &[ResourceRecord]) -> LockFile {
        let mut lock = LockFile {
            version: 1,
            agents: BTreeMap::new(),
        };
        for r in records {
            if r.address.kind != Kind::Agent || manifest.resource(&r.address).is_none() {
                continue;
            }
            lock.agents.insert(
                r.address.name.clone(),
                LockedAgent {
                    provider: r.provider.clone(),
                    id: r.remote_id.clone(),
                    version: r.version.unwrap_or_default(),
                    digest: r.digest.clone(),
                },
            );
        }
        lock
    }

    /// Brings `manifest`'s lock file up to what `records` deployed; the path
    /// when it was written, `None` when it already said so.
    pub fn update(
        manifest: &Manifest,
        records: &[ResourceRecord],
    ) -> Result<Option<PathBuf>, LockFileError> {
        let path = manifest.lock_path();
        let lock = LockFile::from_state(manifest, records);
        if LockFile::read(&path).ok().flatten().as_ref() == Some(&lock) {
            return Ok(None);
        }
        lock.write(&path)?;
        Ok(Some(path))
    }

    /// Where a deploy of `plan` would differ from this lock; empty when it agrees.
    pub fn disagreements(
        &self,
        manifest: &Manifest,
        plan: &Plan,
        records: &[ResourceRecord],
    ) -> Vec<String> {
        let mut out = Vec::new();
        let expected = LockFile::from_state(manifest, records);
        for c in plan.pending().filter(|c| c.address.kind == Kind::Agent) {
            out.push(format!(
                "{} would be {}",
                c.address,
                match c.action {
                    Action::Create => "created",
                    Action::Update => "updated to a new version",
                    Action::Replace => "replaced",
                    Action::Archive => "archived",
                    Action::Delete => "deleted",
                    Action::NoOp => "kept",
                }
            ));
        }
        for r in manifest
            .resources
            .iter()
            .filter(|r| r.address.kind == Kind::Agent)
        {
            let name = &r.address.name;
            match (self.agents.get(name), expected.agents.get(name)) {
                (None, _) => out.push(format!("agent.{name} is not in {LOCK_FILE}")),
                (Some(_), None) => {}
                (Some(locked), Some(deployed)) if locked != deployed => out.push(format!(
                    "agent.{name}: {LOCK_FILE} pins {} version {} but the state has {} version {}",
                    locked.id, locked.version, deployed.id, deployed.version
                )),
                _ => {}
            }
        }
        for name in self.agents.keys() {
            if manifest
                .resource(&crate::graph::Address::new(Kind::Agent, name.clone()))
                .is_none()
            {
                out.push(format!(
                    "agent.{name} is in {LOCK_FILE} but not in the manifest"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        assert_eq!(LockFile::read(&path).unwrap(), None);
        let mut lock = LockFile {
            version: 1,
            ..Default::default()
        };
        lock.agents.insert(
            "analyst".into(),
            LockedAgent {
                provider: "local".into(),
                id: "agent_1".into(),
                version: 3,
                digest: "sha256:ab".into(),
            },
        );
        lock.write(&path).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("# Written by"));
        assert_eq!(LockFile::read(&path).unwrap(), Some(lock));
    }
}
