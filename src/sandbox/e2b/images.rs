//! An environment's E2B template: built at apply when the environment has
//! packages (one `RUN` of the set-up script, so the packages sit where a
//! sandbox's set-up looks for them and its marker says they are there),
//! used by every session of the environment, deleted with it. Which
//! template an environment has is noted in `e2b-templates.json` beside
//! the workspaces (with the control plane it lives on), so that a later
//! command opens sandboxes from it and destroy without a manifest deletes
//! it. An environment without packages, or without a note, starts from
//! the configured base template and installs at open. Never a secret here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::E2bApi;
use super::provision::{self, shell_quote};
use crate::sandbox::{EnvironmentImage, Packages, SandboxError};

/// The file, beside the E2B locations.
pub const TEMPLATES_FILE: &str = "e2b-templates.json";
/// How long a template build may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(60 * 60);
/// The user the build's step runs as (the one sandboxes run commands as).
const USER: &str = "user";

/// The template of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Built {
    pub template_id: String,
    pub name: String,
    /// Of the base template and the packages: what it was built from.
    pub digest: String,
    /// The control plane it lives on.
    pub api_url: String,
}

fn read(file: &Path) -> Result<BTreeMap<String, Built>, String> {
    crate::sandbox::notes::read(file, "E2B templates")
}

/// Sets (or with `None` removes) the environment's entry.
fn write(file: &Path, environment_id: &str, built: Option<&Built>) -> Result<(), String> {
    crate::sandbox::notes::set_entry(file, "E2B templates", environment_id, built)
}

fn has_packages(packages: &Packages) -> bool {
    !packages.pip.is_empty() || !packages.npm.is_empty()
}

/// What a template of `packages` on `base` is built from.
fn digest(base: &str, packages: &Packages) -> String {
    crate::digest::digest(&json!({ "from": base, "pip": packages.pip, "npm": packages.npm }))
}

/// A template name (`[a-z0-9-]`) for the environment and digest.
fn name(environment_id: &str, digest: &str) -> String {
    let id: String = environment_id
        .chars()
        .take(64)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let hex = digest.trim_start_matches("sha256:");
    format!("agentform-{id}-{}", &hex[..hex.len().min(12)])
}

/// The build's one command: the set-up script, run in the user's home.
fn build_command(packages: &Packages) -> String {
    format!(
        "cd \"$HOME\" && bash -c {}",
        shell_quote(&provision::setup_script(packages))
    )
}

/// The templates of one E2B place, noted in a file.
#[derive(Debug)]
pub struct Images {
    /// `None`: nothing is noted, nothing built.
    pub file: Option<PathBuf>,
}

impl Images {
    /// The template a session of `environment_id` with `packages` starts
    /// from: its environment's, when one was built for exactly these, else
    /// the base template.
    pub fn template_for(&self, api: &E2bApi, environment_id: &str, packages: &Packages) -> String {
        let base = api.config().template.clone();
        let Some(file) = &self.file else {
            return base;
        };
        if !has_packages(packages) {
            return base;
        }
        let want = digest(&base, packages);
        match read(file).map(|mut all| all.remove(environment_id)) {
            Ok(Some(b)) if b.digest == want && b.api_url == api.config().api_url.as_str() => {
                b.template_id
            }
            Ok(_) => base,
            Err(e) => {
                tracing::warn!("{e}; sessions install their packages at open");
                base
            }
        }
    }

    /// Builds the environment's template unless it has one for the same
    /// packages; the one it replaces is deleted.
    pub async fn provision(
        &self,
        api: &E2bApi,
        image: &EnvironmentImage,
    ) -> Result<(), SandboxError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let id = &image.environment_id;
        let old = read(file).map_err(SandboxError::Provision)?.remove(id);
        let base = api.config().template.clone();
        if !has_packages(&image.packages) {
            return self.forget(api, file, id, old).await;
        }
        let digest = digest(&base, &image.packages);
        if old.as_ref().is_some_and(|b| b.digest == digest) {
            return Ok(());
        }
        let name = name(id, &digest);
        let command = build_command(&image.packages);
        tracing::info!(environment = %id, template = %name, "building an E2B template");
        let template_id = api
            .build_template(&name, &base, &command, USER, BUILD_DEADLINE)
            .await
            .map_err(|e| {
                SandboxError::Provision(format!("E2B template `{name}`: {}", e.message))
            })?;
        let built = Built {
            template_id,
            name,
            digest,
            api_url: api.config().api_url.to_string(),
        };
        write(file, id, Some(&built)).map_err(SandboxError::Provision)?;
        if let Some(old) = old {
            delete(api, &old).await;
        }
        Ok(())
    }

    /// Deletes the environment's template, when it has one here.
    pub async fn retire(&self, api: &E2bApi, environment_id: &str) -> Result<(), SandboxError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let old = read(file)
            .map_err(SandboxError::Provision)?
            .remove(environment_id);
        self.forget(api, file, environment_id, old).await
    }

    async fn forget(
        &self,
        api: &E2bApi,
        file: &Path,
        environment_id: &str,
        old: Option<Built>,
    ) -> Result<(), SandboxError> {
        let Some(old) = old.filter(|b| b.api_url == api.config().api_url.as_str()) else {
            return Ok(());
        };
        api.delete_template(&old.template_id)
            .await
            .map_err(|e| SandboxError::Other(e.message))?;
        tracing::info!(template = %old.name, "deleted the environment's E2B template");
        write(file, environment_id, None).map_err(SandboxError::Provision)
    }
}

/// Deletes a replaced template; a failure leaves it, logged.
async fn delete(api: &E2bApi, old: &Built) {
    if let Err(e) = api.delete_template(&old.template_id).await {
        tracing::warn!(template = %old.name, "cannot delete a replaced E2B template: {}", e.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_words_of_the_environment_and_digest() {
        let d = digest("base", &Packages::default());
        let n = name("env_01ABC", &d);
        assert!(n.starts_with("agentform-env-01abc-"), "{n}");
        assert_eq!(n.len(), "agentform-env-01abc-".len() + 12);
        assert_ne!(
            digest(
                "base",
                &Packages {
                    pip: vec!["a".into()],
                    npm: vec![]
                }
            ),
            digest(
                "other",
                &Packages {
                    pip: vec!["a".into()],
                    npm: vec![]
                }
            )
        );
    }

    #[test]
    fn entries_are_set_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(TEMPLATES_FILE);
        let b = Built {
            template_id: "t1".into(),
            name: "n".into(),
            digest: "d".into(),
            api_url: "http://127.0.0.1:1/".into(),
        };
        write(&file, "env_1", Some(&b)).unwrap();
        assert_eq!(read(&file).unwrap()["env_1"], b);
        write(&file, "env_1", None).unwrap();
        assert!(read(&file).unwrap().is_empty());
        assert!(build_command(&Packages::default()).starts_with("cd \"$HOME\" && bash -c 'set -e"));
    }
}
