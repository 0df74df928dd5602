//! The providers a command reaches: the embedded local runtime always (its
//! tools in the confined local sandbox, or on E2B or Modal), the
//! `anthropic` provider when the manifest or the state uses it, and `e2b`
//! likewise (built in `remote.rs`).

use std::sync::Arc;
use std::time::Duration;

use crate::manifest::spec::{
    AnthropicProviderSpec, E2bProviderSpec, LimitSpec, LimitsSpec, ModalProviderSpec, SandboxKind,
};
use crate::manifest::{parse_duration, parse_size, Manifest};
use crate::runtime::anthropic::{
    options_from, AnthropicOptions, AnthropicRuntime, RateLimits, API_KEY_ENV, AUTH_TOKEN_ENV,
    PROVIDER_NAME,
};
use crate::runtime::local::{LocalOptions, LocalRuntime};
use crate::runtime::{Providers, RuntimeError};
use crate::sandbox::e2b::location::{self, LOCATIONS_FILE};
use crate::sandbox::e2b::{self, E2bConfig, E2bSandboxes};
use crate::sandbox::leftovers::Leftovers;
use crate::sandbox::local::{Confinement, LocalSandboxes};
use crate::sandbox::modal::location::{self as modal_location, LOCATIONS_FILE as MODAL_LOCATIONS};
use crate::sandbox::modal::{self, ModalConfig, ModalSandboxes};
use crate::sandbox::{Limits, SandboxProvider};
use crate::state::StateStore;

use super::models::ManifestModels;

/// Overrides the local runtime's injected latency (milliseconds).
pub const LATENCY_ENV: &str = "AGENTFORM_LOCAL_LATENCY_MS";
/// Fault injection: the local runtime's event streams end after N events.
pub const DROP_STREAM_ENV: &str = "AGENTFORM_LOCAL_DROP_STREAM_AFTER";

#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("{0}")]
    Setting(String),
    #[error("cannot open the local runtime: {0}")]
    Local(RuntimeError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{}", .0.message)]
    Anthropic(RuntimeError),
}

/// The providers for a command over `state`, with the settings of `manifest`
/// (none: destroy from the state alone) and variables read with `var`.
pub fn providers(
    state: &StateStore,
    manifest: Option<&Manifest>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Providers, ProvidersError> {
    let latency_ms = match var(LATENCY_ENV) {
        Some(v) => v.parse::<u64>().map_err(|_| {
            ProvidersError::Setting(format!(
                "{LATENCY_ENV}=`{v}` is not a number of milliseconds"
            ))
        })?,
        None => manifest.map(Manifest::local_latency_ms).unwrap_or(0),
    };
    let mut options = LocalOptions {
        latency: Duration::from_millis(latency_ms),
        sandboxes: local_sandboxes(state.dir().join("workspaces"), manifest, &var)?,
        ..Default::default()
    };
    if let Some(v) = var(DROP_STREAM_ENV) {
        let n = v.parse::<usize>().ok().filter(|n| *n > 0);
        options.drop_stream_after = Some(n.ok_or_else(|| {
            ProvidersError::Setting(format!(
                "{DROP_STREAM_ENV}=`{v}` is not a positive number of events"
            ))
        })?);
    }
    if let Some(m) = manifest {
        options.models = Arc::new(ManifestModels::new(m));
        options.secrets = m.secrets();
    }
    let local = Arc::new(LocalRuntime::open(state.db(), options).map_err(ProvidersError::Local)?);
    let mut p = Providers::default();
    p.insert(local.clone());
    if let Some(remote) = super::remote::e2b_runtime(state, manifest, local.clone(), &var)? {
        p.insert(Arc::new(remote));
    }
    if let Some(remote) = super::remote::modal_runtime(state, manifest, local.clone(), &var)? {
        p.insert(Arc::new(remote));
    }
    // Built only when something uses it: credentials are needed then, not before.
    let declared =
        manifest.is_some_and(|m| m.resources.iter().any(|r| r.provider == PROVIDER_NAME));
    let recorded: Vec<Option<String>> = state
        .list()?
        .into_iter()
        .filter(|r| r.provider == PROVIDER_NAME)
        .map(|r| r.endpoint)
        .collect();
    if declared || !recorded.is_empty() {
        let settings = manifest.and_then(|m| m.providers.anthropic.as_ref());
        let options = anthropic_options(settings, &var).map_err(ProvidersError::Anthropic)?;
        let runtime =
            AnthropicRuntime::for_state(options, &recorded).map_err(ProvidersError::Anthropic)?;
        tracing::debug!(base_url = runtime.base_url(), "anthropic provider");
        p.insert(Arc::new(runtime));
    }
    Ok(p)
}

/// Where the local runtime's tools run: on E2B when the manifest says
/// `sandbox: e2b` (its API key read through `var`), else in sandboxes under
/// `root`, confined unless the manifest opts out, with the limits its
/// environments declare.
pub fn local_sandboxes(
    root: std::path::PathBuf,
    manifest: Option<&Manifest>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn SandboxProvider>, ProvidersError> {
    let locations = root.join(LOCATIONS_FILE);
    let modal_locations = root.join(MODAL_LOCATIONS);
    let mut sandboxes = LocalSandboxes::new(root);
    let Some(m) = manifest else {
        return noted_elsewhere(sandboxes, (&locations, &modal_locations), &var);
    };
    match m.providers.local.as_ref().map(|l| l.sandbox) {
        Some(SandboxKind::E2b) => {
            let config = e2b_config(m.providers.e2b.as_ref(), &m.project, var)?;
            tracing::debug!(?config, "E2B sandboxes");
            let e2b =
                E2bSandboxes::noting(config, Some(locations)).map_err(ProvidersError::Setting)?;
            return Ok(Arc::new(e2b));
        }
        Some(SandboxKind::Modal) => {
            let config = modal_config(m.providers.modal.as_ref(), &m.project, var)?;
            tracing::debug!(?config, "Modal sandboxes");
            let modal = ModalSandboxes::noting(config, Some(modal_locations))
                .map_err(ProvidersError::Setting)?;
            return Ok(Arc::new(modal));
        }
        Some(SandboxKind::None) => sandboxes.confinement = Confinement::None,
        _ => {}
    }
    for r in &m.resources {
        if let Some(spec) = &r.limits {
            sandboxes.limits.insert(r.address.to_string(), limits(spec));
        }
    }
    Ok(Arc::new(sandboxes))
}

/// Without a manifest: the local sandboxes, and the E2B and Modal places
/// noted in `locations` (see [`e2b::location`], [`modal::location`]) so
/// that removing a session also kills its E2B or Modal sandboxes. A place
/// whose key or token variables are not set cannot be reached: a warning
/// names them, and its sandboxes expire.
fn noted_elsewhere(
    local: LocalSandboxes,
    (locations, modal_locations): (&std::path::Path, &std::path::Path),
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn SandboxProvider>, ProvidersError> {
    let mut others: Vec<Arc<dyn SandboxProvider>> = Vec::new();
    for place in location::read(locations).map_err(ProvidersError::Setting)? {
        let Some(key) = var(&place.api_key_env).filter(|k| !k.trim().is_empty()) else {
            tracing::warn!(
                api_url = %place.api_url,
                "E2B sandboxes may be left to expire: their API key is read from `{}`, which is not set",
                place.api_key_env
            );
            continue;
        };
        let config = place.config(key).map_err(ProvidersError::Setting)?;
        others.push(Arc::new(
            E2bSandboxes::noting(config, Some(locations.to_path_buf()))
                .map_err(ProvidersError::Setting)?,
        ));
    }
    for place in modal_location::read(modal_locations).map_err(ProvidersError::Setting)? {
        let read = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let (Some(id), Some(secret)) = (read(&place.token_id_env), read(&place.token_secret_env))
        else {
            tracing::warn!(
                server_url = %place.server_url,
                "Modal sandboxes may be left to their timeout: their token is read from `{}` and `{}`, which are not both set",
                place.token_id_env,
                place.token_secret_env
            );
            continue;
        };
        let config = place.config(id, secret).map_err(ProvidersError::Setting)?;
        others.push(Arc::new(
            ModalSandboxes::noting(config, Some(modal_locations.to_path_buf()))
                .map_err(ProvidersError::Setting)?,
        ));
    }
    if others.is_empty() {
        return Ok(Arc::new(local));
    }
    Ok(Arc::new(Leftovers {
        primary: Arc::new(local),
        others,
    }))
}

/// The E2B settings of `providers.e2b` (none: the defaults), with the API
/// key and the default domain read through `var`. Without a key nothing is
/// built: the message names the variable.
pub fn e2b_config(
    spec: Option<&E2bProviderSpec>,
    project: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<E2bConfig, ProvidersError> {
    e2b_config_for("`providers.local.sandbox` is `e2b`", spec, project, var)
}

/// [`e2b_config`] for a use of E2B that `user` names in messages.
pub fn e2b_config_for(
    user: &str,
    spec: Option<&E2bProviderSpec>,
    project: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<E2bConfig, ProvidersError> {
    let default = E2bProviderSpec::default();
    let spec = spec.unwrap_or(&default);
    let key_env = spec.api_key_env.as_deref().unwrap_or(e2b::API_KEY_ENV);
    let key = var(key_env)
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            ProvidersError::Setting(format!(
                "{user}, and the E2B API key is read from `{key_env}`, which is not set"
            ))
        })?;
    let domain = spec
        .domain
        .clone()
        .or_else(|| var(e2b::DOMAIN_ENV).filter(|d| !d.trim().is_empty()))
        .unwrap_or_else(|| e2b::DEFAULT_DOMAIN.to_owned());
    let setting =
        |what: &str, why: String| ProvidersError::Setting(format!("providers.e2b.{what}: {why}"));
    let mut config =
        E2bConfig::new(key, key_env, domain.trim()).map_err(|why| setting("domain", why))?;
    if let Some(url) = &spec.api_url {
        config.api_url = e2b::check_url(url).map_err(|why| setting("api_url", why))?;
    }
    if let Some(url) = &spec.sandbox_url {
        config.sandbox_url = Some(e2b::check_url(url).map_err(|why| setting("sandbox_url", why))?);
    }
    if let Some(template) = &spec.template {
        config.template = template.clone();
    }
    if let Some(raw) = &spec.timeout {
        let timeout = parse_duration(raw)
            .filter(|d| d.as_secs() >= 1 && *d <= e2b::MAX_TIMEOUT)
            .ok_or_else(|| {
                setting(
                    "timeout",
                    format!("`{raw}` is not a duration between 1s and 24h"),
                )
            })?;
        config.timeout = timeout;
    }
    config.project = Some(project.to_owned());
    Ok(config)
}

/// The Modal settings of `providers.modal` (none: the defaults), with the
/// token and the default server URL read through `var`. Without both token
/// variables nothing is built: the message names them.
pub fn modal_config(
    spec: Option<&ModalProviderSpec>,
    project: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<ModalConfig, ProvidersError> {
    modal_config_for("`providers.local.sandbox` is `modal`", spec, project, var)
}

/// [`modal_config`] for a use of Modal that `user` names in messages.
pub fn modal_config_for(
    user: &str,
    spec: Option<&ModalProviderSpec>,
    project: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<ModalConfig, ProvidersError> {
    let default = ModalProviderSpec::default();
    let spec = spec.unwrap_or(&default);
    let id_env = spec.token_id_env.as_deref().unwrap_or(modal::TOKEN_ID_ENV);
    let secret_env = spec
        .token_secret_env
        .as_deref()
        .unwrap_or(modal::TOKEN_SECRET_ENV);
    let read = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let (id, secret) = (read(id_env), read(secret_env));
    let missing: Vec<String> = [(id_env, &id), (secret_env, &secret)]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| format!("`{n}`"))
        .collect();
    if !missing.is_empty() {
        return Err(ProvidersError::Setting(format!(
            "{user}, and the Modal token is read from `{id_env}` and \
             `{secret_env}`; {} {} not set (`modal token new` makes a token)",
            missing.join(" and "),
            if missing.len() == 1 { "is" } else { "are" }
        )));
    }
    let setting =
        |what: &str, why: String| ProvidersError::Setting(format!("providers.modal.{what}: {why}"));
    let raw_url = spec
        .server_url
        .clone()
        .or_else(|| read(modal::SERVER_URL_ENV))
        .unwrap_or_else(|| modal::DEFAULT_SERVER_URL.to_owned());
    let url = modal::check_url(raw_url.trim()).map_err(|why| setting("server_url", why))?;
    let mut config = ModalConfig::new(
        (id.unwrap_or_default(), id_env),
        (secret.unwrap_or_default(), secret_env),
        url,
    );
    if let Some(app) = &spec.app {
        config.app = app.clone();
    }
    if let Some(raw) = &spec.timeout {
        config.timeout = parse_duration(raw)
            .filter(|d| d.as_secs() >= 1 && *d <= modal::MAX_TIMEOUT)
            .ok_or_else(|| {
                setting(
                    "timeout",
                    format!("`{raw}` is not a duration between 1s and 24h"),
                )
            })?;
    }
    config.project = Some(project.to_owned());
    Ok(config)
}

/// Limits from their (validated) manifest form; what is not given keeps
/// its default.
fn limits(spec: &LimitsSpec) -> Limits {
    let mut limits = Limits::default();
    if let Some(n) = spec.memory.as_deref().and_then(parse_size) {
        limits.memory_bytes = n;
    }
    if let Some(n) = spec.processes {
        limits.processes = n;
    }
    if let Some(n) = spec.file_size.as_deref().and_then(parse_size) {
        limits.file_size_bytes = n;
    }
    if let Some(d) = spec.cpu_time.as_deref().and_then(parse_duration) {
        limits.cpu_seconds = d.as_secs().max(1);
    }
    limits
}

/// Whether the manifest runs the local runtime's tools unconfined: plan,
/// apply and run say so.
pub fn unconfined_warning(manifest: &Manifest) -> Option<&'static str> {
    let unconfined =
        manifest.providers.local.as_ref().map(|l| l.sandbox) == Some(SandboxKind::None);
    let uses_local = manifest.resources.iter().any(|r| r.provider == "local");
    (unconfined && uses_local).then_some(
        "`providers.local.sandbox: none`: the local runtime's tools run commands unconfined, \
         with your rights (your files, your network, your environment variables)",
    )
}

/// The options a manifest's `providers.anthropic` block asks for (none: the
/// defaults), with credentials and the default base URL read through `var`
/// (the process environment, in the CLI).
pub fn anthropic_options(
    spec: Option<&AnthropicProviderSpec>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<AnthropicOptions, RuntimeError> {
    let default = AnthropicProviderSpec::default();
    let spec = spec.unwrap_or(&default);
    let (r, d) = (&spec.rate_limits, RateLimits::default());
    let limits = RateLimits {
        environments_per_minute: r
            .environments_per_minute
            .map_or(d.environments_per_minute, LimitSpec::get),
        environments_concurrency: r
            .environments_concurrency
            .map_or(d.environments_concurrency, |l| l.get().map(|n| n as usize)),
        creates_per_minute: r
            .creates_per_minute
            .map_or(d.creates_per_minute, LimitSpec::get),
        other_per_minute: r
            .other_per_minute
            .map_or(d.other_per_minute, LimitSpec::get),
    };
    let duration = |field: &str, v: &Option<String>| -> Result<Option<Duration>, RuntimeError> {
        v.as_deref()
            .map(|raw| {
                parse_duration(raw).ok_or_else(|| {
                    RuntimeError::invalid(format!(
                        "providers.anthropic.{field}: `{raw}` is not a duration"
                    ))
                })
            })
            .transpose()
    };
    let key_env = spec.api_key_env.as_deref().unwrap_or(API_KEY_ENV);
    let token_env = spec.auth_token_env.as_deref().unwrap_or(AUTH_TOKEN_ENV);
    let mut options = options_from(spec.base_url.clone(), limits, (key_env, token_env), var);
    if let Some(n) = spec.max_retries {
        options.max_retries = n;
    }
    options.retry_backoff = duration("retry_backoff", &spec.retry_backoff)?;
    if let Some(t) = duration("timeout", &spec.timeout)? {
        options.timeout = t;
    }
    Ok(options)
}

#[cfg(test)]
mod e2b_tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn without_the_key_nothing_is_built_and_the_variable_is_named() {
        let e = e2b_config(None, "p", vars(&[])).unwrap_err().to_string();
        assert_eq!(
            e,
            "`providers.local.sandbox` is `e2b`, and the E2B API key is read from `E2B_API_KEY`, which is not set"
        );
        let spec = E2bProviderSpec {
            api_key_env: Some("MY_KEY".into()),
            ..Default::default()
        };
        let e = e2b_config(Some(&spec), "p", vars(&[("E2B_API_KEY", "k")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`MY_KEY`"), "{e}");
    }

    #[test]
    fn settings_override_the_defaults_and_the_domain_variable() {
        let c = e2b_config(
            None,
            "proj",
            vars(&[("E2B_API_KEY", "e2b_k"), ("E2B_DOMAIN", "e2b.example.com")]),
        )
        .unwrap();
        assert_eq!(c.api_url.as_str(), "https://api.e2b.example.com/");
        assert_eq!(
            (c.template.as_str(), c.timeout),
            ("base", e2b::DEFAULT_TIMEOUT)
        );
        assert_eq!(c.project.as_deref(), Some("proj"));
        let spec = E2bProviderSpec {
            domain: Some("e2b.dev".into()),
            api_url: Some("http://127.0.0.1:9".into()),
            sandbox_url: Some("http://127.0.0.1:10".into()),
            template: Some("mine".into()),
            timeout: Some("90s".into()),
            ..Default::default()
        };
        let c = e2b_config(Some(&spec), "p", vars(&[("E2B_API_KEY", "e2b_k")])).unwrap();
        assert_eq!(c.domain, "e2b.dev");
        assert_eq!(c.api_url.as_str(), "http://127.0.0.1:9/");
        assert_eq!(c.sandbox_url.unwrap().as_str(), "http://127.0.0.1:10/");
        assert_eq!(
            (c.template.as_str(), c.timeout),
            ("mine", Duration::from_secs(90))
        );
        let remote = E2bProviderSpec {
            api_url: Some("http://api.example.com".into()),
            ..Default::default()
        };
        let e = e2b_config(Some(&remote), "p", vars(&[("E2B_API_KEY", "e2b_k")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("providers.e2b.api_url: plain `http`"), "{e}");
    }
}

#[cfg(test)]
mod modal_tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn missing_tokens_are_named_before_anything_is_built() {
        let e = modal_config(None, "p", vars(&[])).unwrap_err().to_string();
        assert_eq!(
            e,
            "`providers.local.sandbox` is `modal`, and the Modal token is read from `MODAL_TOKEN_ID` \
             and `MODAL_TOKEN_SECRET`; `MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET` are not set \
             (`modal token new` makes a token)"
        );
        let spec = ModalProviderSpec {
            token_secret_env: Some("MY_SECRET".into()),
            ..Default::default()
        };
        let e = modal_config(Some(&spec), "p", vars(&[("MODAL_TOKEN_ID", "ak-1")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("`MY_SECRET` is not set (`modal token new` makes a token)"),
            "{e}"
        );
    }

    #[test]
    fn defaults_and_overrides() {
        let both = &[("MODAL_TOKEN_ID", "ak-1"), ("MODAL_TOKEN_SECRET", "as-2")];
        let c = modal_config(None, "proj", vars(both)).unwrap();
        assert_eq!(c.server_url.as_str(), "https://api.modal.com/");
        assert_eq!(
            (c.app.as_str(), c.timeout),
            ("agentform", modal::DEFAULT_TIMEOUT)
        );
        assert_eq!(c.project.as_deref(), Some("proj"));
        let env_url = &[
            ("MODAL_TOKEN_ID", "ak-1"),
            ("MODAL_TOKEN_SECRET", "as-2"),
            ("MODAL_SERVER_URL", "http://127.0.0.1:7000"),
        ];
        let c = modal_config(None, "p", vars(env_url)).unwrap();
        assert_eq!(c.server_url.as_str(), "http://127.0.0.1:7000/");
        let spec = ModalProviderSpec {
            app: Some("mine".into()),
            timeout: Some("24h".into()),
            server_url: Some("http://modal.example.com".into()),
            ..Default::default()
        };
        let e = modal_config(Some(&spec), "p", vars(both))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("providers.modal.server_url: plain `http`"),
            "{e}"
        );
        let spec = ModalProviderSpec {
            server_url: None,
            ..spec
        };
        let c = modal_config(Some(&spec), "p", vars(both)).unwrap();
        assert_eq!((c.app.as_str(), c.timeout), ("mine", modal::MAX_TIMEOUT));
    }
}
