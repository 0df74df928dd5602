//! `destroy`: the plan that removes what the state records, executed like
//! an apply ([`Pending::execute`]). Works from the state alone when there is
//! no manifest; with one, the manifest supplies provider settings.

use crate::graph::Address;
use crate::manifest::{self, Diagnostics, LoadOptions, Manifest};
use crate::plan::{self, PlanError, PlanOptions};
use crate::runtime::Providers;
use crate::state::StateStore;

use super::apply::{Pending, Verb};

/// The manifest, or none when none of its files exist. An empty file is
/// accepted: destroying is what it asks for.
pub fn manifest(options: &LoadOptions) -> Result<Option<Manifest>, Diagnostics> {
    let allowing_empty = LoadOptions {
        allow_empty: true,
        ..options.clone()
    };
    match manifest::load(&allowing_empty) {
        Ok(m) => Ok(Some(m)),
        Err(e) if options.files.iter().all(|p| !p.exists()) => {
            tracing::info!("destroying from the state alone: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The plan that deletes sessions and environments and archives agents:
/// all of them, or `targets` and what depends on them.
pub async fn plan(
    manifest: Option<Manifest>,
    state: StateStore,
    providers: Providers,
    targets: &[Address],
    parallelism: usize,
) -> Result<Pending, PlanError> {
    let options = PlanOptions {
        refresh: false,
        destroy: true,
        targets: targets.to_vec(),
        parallelism,
    };
    let plan = plan::plan(manifest.as_ref(), &state, &providers, &options).await?;
    Ok(Pending {
        plan,
        manifest,
        state,
        providers,
        parallelism,
        verb: Verb::Destroy,
    })
}
