//! What an environment's sessions start from, built by the sandbox
//! provider when the environment is created or updated
//! ([`SandboxProvider::provision`](crate::sandbox::SandboxProvider::provision))
//! and removed when it is deleted. A failed build undoes the record it
//! was for: the environment is not created, or keeps its previous config.
//! This module must not know which provider builds what.

use super::LocalRuntime;
use crate::api::environment::EnvironmentConfig;
use crate::api::{Environment, ErrorKind, Result, RuntimeError, META_ADDRESS};
use crate::sandbox::{EnvironmentImage, Packages};

/// The image of `environment`: its pip and npm packages.
pub fn image_of(environment: &Environment) -> EnvironmentImage {
    let cloud = match &environment.config {
        EnvironmentConfig::Cloud(cloud) => Some(cloud),
        _ => None,
    };
    let strings = |manager: &str| -> Vec<String> {
        cloud
            .and_then(|c| c.packages.list(manager))
            .cloned()
            .unwrap_or_default()
    };
    EnvironmentImage {
        environment_id: environment.id.clone(),
        environment_address: environment.metadata.get(META_ADDRESS).cloned(),
        packages: Packages {
            pip: strings("pip"),
            npm: strings("npm"),
        },
    }
}

fn failed(environment: &Environment, e: crate::sandbox::SandboxError) -> RuntimeError {
    RuntimeError::new(
        ErrorKind::InvalidRequest,
        format!(
            "environment `{}` cannot be provisioned: {e}",
            environment.name
        ),
    )
}

impl LocalRuntime {
    /// Builds the new environment's image; on failure its record is removed.
    pub(super) async fn provision_created(&self, created: Environment) -> Result<Environment> {
        match self.options.sandboxes.provision(&image_of(&created)).await {
            Ok(()) => Ok(created),
            Err(e) => {
                self.records.remove_environment(&created.id)?;
                Err(failed(&created, e))
            }
        }
    }

    /// Builds the updated environment's image when its packages changed; on
    /// failure the previous record is put back.
    pub(super) async fn provision_updated(
        &self,
        previous: &Environment,
        updated: Environment,
    ) -> Result<Environment> {
        let image = image_of(&updated);
        if image.packages == image_of(previous).packages {
            return Ok(updated);
        }
        match self.options.sandboxes.provision(&image).await {
            Ok(()) => Ok(updated),
            Err(e) => {
                self.records.put_environment(previous)?;
                Err(failed(&updated, e))
            }
        }
    }

    /// Removes what was built for a deleted environment; a failure is only
    /// logged (the environment is gone either way).
    pub(super) async fn retire(&self, environment_id: &str) {
        if let Err(e) = self.options.sandboxes.retire(environment_id).await {
            tracing::warn!(
                environment = environment_id,
                "cannot remove the environment's image: {e}"
            );
        }
    }
}
