//! An environment's Modal image, built at apply (`ImageGetOrCreate`, then
//! `ImageJoinStreaming` until built) from the Dockerfile commands of
//! `image.rs`, and used by every session of the environment without
//! building again. Which image an environment has is noted in
//! `modal-images.json` beside the workspaces, with the server and Modal
//! environment it lives in and a digest of the packages it was built
//! from, so that a later command opens sandboxes from it. An environment
//! without a note (made before images were built at apply, or noted for
//! another server) gets its image when its first sandbox opens.
//!
//! Retiring an environment forgets its note and deletes nothing: Modal
//! finds an image by its commands, so one image may serve other
//! environments or projects of the workspace, and the only delete call
//! (`ImageDelete`) is the official client's experimental interface.
//! Never a secret here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::control::ModalApi;
use super::image::dockerfile;
use crate::sandbox::{EnvironmentImage, Packages, SandboxError};

/// The file, beside the Modal locations.
pub const IMAGES_FILE: &str = "modal-images.json";

/// The image of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Built {
    pub image_id: String,
    /// Of the packages: what it was built from.
    pub digest: String,
    /// The server and Modal environment it lives in.
    pub server_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
}

impl Built {
    fn lives_on(&self, api: &ModalApi) -> bool {
        self.server_url == api.config().server_url.as_str()
            && self.environment == api.config().environment
    }
}

fn read(file: &Path) -> Result<BTreeMap<String, Built>, String> {
    crate::sandbox::notes::read(file, "Modal images")
}

/// Sets (or with `None` removes) the environment's entry.
fn write(file: &Path, environment_id: &str, built: Option<&Built>) -> Result<(), String> {
    crate::sandbox::notes::set_entry(file, "Modal images", environment_id, built)
}

/// What an image of `packages` is built from.
fn digest(packages: &Packages) -> String {
    crate::digest::digest(&json!({ "pip": packages.pip, "npm": packages.npm }))
}

/// The images of one Modal place, noted in a file.
#[derive(Debug)]
pub struct Images {
    /// `None`: nothing is noted; sandboxes get their image when they open.
    pub file: Option<PathBuf>,
}

impl Images {
    /// The image noted for `environment_id` when it was built from exactly
    /// `packages` on this server; `None` otherwise.
    pub fn image_for(
        &self,
        api: &ModalApi,
        environment_id: &str,
        packages: &Packages,
    ) -> Option<String> {
        let file = self.file.as_ref()?;
        match read(file).map(|mut all| all.remove(environment_id)) {
            Ok(Some(b)) if b.digest == digest(packages) && b.lives_on(api) => Some(b.image_id),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("{e}; the session's image is built when its sandbox opens");
                None
            }
        }
    }

    /// Builds the environment's image unless one is noted for the same
    /// packages, and notes it. A failed build names the environment and
    /// ends with the build's log.
    pub async fn provision(
        &self,
        api: &ModalApi,
        image: &EnvironmentImage,
    ) -> Result<(), SandboxError> {
        let id = &image.environment_id;
        if self.image_for(api, id, &image.packages).is_some() {
            return Ok(());
        }
        let name = image.environment_address.as_deref().unwrap_or(id);
        let failed = |message: String| {
            SandboxError::Provision(format!("the Modal image of `{name}`: {message}"))
        };
        let builder_version = api.builder_version().await.map_err(|e| failed(e.message))?;
        tracing::info!(environment = %id, "building the environment's Modal image");
        let image_id = api
            .image(dockerfile(&image.packages, &builder_version))
            .await
            .map_err(|e| failed(e.message))?;
        let Some(file) = &self.file else {
            return Ok(());
        };
        let built = Built {
            image_id,
            digest: digest(&image.packages),
            server_url: api.config().server_url.to_string(),
            environment: api.config().environment.clone(),
        };
        write(file, id, Some(&built)).map_err(SandboxError::Provision)
    }

    /// Forgets the environment's image (Modal keeps it: see above).
    pub fn retire(&self, environment_id: &str) -> Result<(), SandboxError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        write(file, environment_id, None).map_err(SandboxError::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_set_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(IMAGES_FILE);
        let b = Built {
            image_id: "im-1".into(),
            digest: digest(&Packages::default()),
            server_url: "http://127.0.0.1:1/".into(),
            environment: String::new(),
        };
        write(&file, "env_1", Some(&b)).unwrap();
        assert_eq!(read(&file).unwrap()["env_1"], b);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("environment"), "{text}");
        write(&file, "env_1", None).unwrap();
        assert!(read(&file).unwrap().is_empty());
        write(&file, "env_2", None).unwrap();
        std::fs::write(&file, "{").unwrap();
        assert!(read(&file)
            .unwrap_err()
            .contains("not a list of Modal images"));
    }

    #[test]
    fn digests_differ_by_packages() {
        let pip = Packages {
            pip: vec!["a".into()],
            npm: vec![],
        };
        let npm = Packages {
            pip: vec![],
            npm: vec!["a".into()],
        };
        assert_ne!(digest(&pip), digest(&npm));
        assert_ne!(digest(&pip), digest(&Packages::default()));
    }
}
