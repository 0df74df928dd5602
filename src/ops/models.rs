//! The model backends a manifest declares under `providers.local.models`,
//! resolved by model id for each session the local runtime runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::manifest::spec::ModelBackendSpec;
use crate::manifest::Manifest;
use crate::model::anthropic::{AnthropicConfig, AnthropicModel};
use crate::model::openai::{OpenAiConfig, OpenAiModel};
use crate::model::scripted::ScriptedModel;
use crate::model::{Model, ModelError};
use crate::runtime::local::ModelResolver;

pub struct ManifestModels {
    specs: BTreeMap<String, ModelBackendSpec>,
    /// Relative transcript paths are relative to the manifest.
    root: PathBuf,
}

impl ManifestModels {
    pub fn new(manifest: &Manifest) -> Self {
        ManifestModels {
            specs: manifest
                .providers
                .local
                .as_ref()
                .map(|l| l.models.clone())
                .unwrap_or_default(),
            root: manifest.root.clone(),
        }
    }
}

impl ModelResolver for ManifestModels {
    fn resolve(&self, model_id: &str) -> Result<Arc<dyn Model>, ModelError> {
        let spec = self.specs.get(model_id).ok_or_else(|| {
            ModelError::Config(format!(
                "no model backend is configured for model `{model_id}`; declare one under `providers.local.models.{model_id}` (backend: anthropic, openai or scripted)"
            ))
        })?;
        Ok(match spec {
            ModelBackendSpec::Anthropic {
                base_url,
                api_key_env,
                model,
            } => {
                let mut config = AnthropicConfig {
                    base_url: base_url.clone(),
                    model: model.clone(),
                    ..Default::default()
                };
                if let Some(env) = api_key_env {
                    config.api_key_env = env.clone();
                }
                Arc::new(AnthropicModel::new(config)?)
            }
            ModelBackendSpec::Openai {
                base_url,
                api_key_env,
                model,
            } => {
                let mut config = OpenAiConfig::new(base_url.clone());
                config.api_key_env = api_key_env.clone();
                config.model = model.clone();
                Arc::new(OpenAiModel::new(config)?)
            }
            ModelBackendSpec::Scripted { turns, transcript } => match transcript {
                Some(path) => Arc::new(ScriptedModel::from_transcript(&self.root.join(path))?),
                None => Arc::new(ScriptedModel::new(turns.clone())),
            },
        })
    }
}
