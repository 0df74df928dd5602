//! The `e2b` and `modal` providers of a command (the remote loop), built
//! when the manifest or the state uses them: their settings and keys, the executable
//! it uploads (a static x86_64 build against the real service; against a
//! loopback fake this executable as it is), the model backends its agents
//! use and their keys (with E2B's `model_key: inject`, turned into egress
//! header rules and placeholders), all checked here, before any call, so that a plan
//! with bad input stops naming the variable or file and leaves nothing
//! behind. Without a manifest (destroy from the state) the E2B location
//! noted beside the workspaces says where E2B sandboxes are, and the
//! recorded server URL where Modal's are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::providers::{e2b_config_for, modal_config_for, ProvidersError};
use crate::graph::Kind;
use crate::manifest::spec::{ModalProviderSpec, ModelBackendSpec, ModelKeySpec};
use crate::manifest::Manifest;
use crate::runtime::anthropic::Secret;
use crate::runtime::e2b::{E2bHost, PROVIDER_NAME};
use crate::runtime::modal::{self as modal_host, ModalHost};
use crate::runtime::remote::{HeaderRule, RemoteOptions, RemoteRuntime};
use crate::runtime::Runtime;
use crate::sandbox::e2b::location::{self, E2bLocation, LOCATIONS_FILE};
use crate::sandbox::e2b::{self, E2bApi, E2bConfig};
use crate::sandbox::modal::ModalApi;
use crate::state::StateStore;

/// How long the serve in a fresh sandbox may take to listen.
const READY_DEADLINE: Duration = Duration::from_secs(120);
const DEFAULT_MODEL_HOST: &str = "api.anthropic.com";
/// What the serve holds instead of a model key under `model_key: inject`:
/// the model client needs a value, and the egress replaces its header.
pub const INJECTED_KEY_PLACEHOLDER: &str = "not-a-key-set-by-the-sandbox-egress";

/// The endpoints recorded for the resources of `provider`.
fn recorded_endpoints(
    state: &StateStore,
    provider: &str,
) -> Result<Vec<Option<String>>, ProvidersError> {
    Ok(state
        .list()?
        .into_iter()
        .filter(|r| r.provider == provider)
        .map(|r| r.endpoint)
        .collect())
}

/// The executable to upload: the manifest's `agent_binary` (relative to
/// the manifest), else this one.
fn upload_binary(
    manifest: Option<&Manifest>,
    agent_binary: Option<String>,
) -> Result<PathBuf, ProvidersError> {
    match agent_binary {
        Some(path) => Ok(manifest
            .map(|m| m.root.join(&path))
            .unwrap_or_else(|| PathBuf::from(path))),
        None => std::env::current_exe().map_err(|e| {
            ProvidersError::Setting(format!("cannot find this executable to upload: {e}"))
        }),
    }
}

/// A remote loop's options: what it uploads, its models, and the secret
/// its serves' keys derive from.
fn remote_options(binary: PathBuf, models: Models, key: &str) -> RemoteOptions {
    RemoteOptions {
        binary,
        manifest: models.manifest,
        model_envs: models.envs,
        model_hosts: models.hosts,
        header_rules: models.rules,
        key: Secret::new(key.to_owned()),
        ready_deadline: READY_DEADLINE,
        max_retries: crate::http::retry::DEFAULT_MAX_RETRIES,
        retry_backoff: None,
    }
}

/// The `e2b` provider, when the manifest or the state uses it.
pub fn e2b_runtime(
    state: &StateStore,
    manifest: Option<&Manifest>,
    local: Arc<dyn Runtime>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RemoteRuntime>, ProvidersError> {
    let declared =
        manifest.is_some_and(|m| m.resources.iter().any(|r| r.provider == PROVIDER_NAME));
    let recorded = recorded_endpoints(state, PROVIDER_NAME)?;
    if !declared && recorded.is_empty() {
        return Ok(None);
    }
    let locations = state.dir().join("workspaces").join(LOCATIONS_FILE);
    let (config, models) = match manifest {
        Some(m) => {
            let config = e2b_config_for(
                &format!("`provider: {PROVIDER_NAME}` is used"),
                m.providers.e2b.as_ref(),
                &m.project,
                var,
            )?;
            let keys = m
                .providers
                .e2b
                .as_ref()
                .and_then(|e| e.model_key)
                .unwrap_or_default();
            (
                config,
                declared
                    .then(|| models_of(m, PROVIDER_NAME, keys, var))
                    .transpose()?,
            )
        }
        None => (config_from_state(&locations, &recorded, var)?, None),
    };
    let binary = upload_binary(
        manifest,
        manifest.and_then(|m| m.providers.e2b.as_ref()?.agent_binary.clone()),
    )?;
    if declared && !is_loopback(&config.api_url) {
        check_static(&binary).map_err(ProvidersError::Setting)?;
    }
    if manifest.is_some() {
        location::remember(&locations, &E2bLocation::of(&config)).map_err(|e| {
            ProvidersError::Setting(format!("cannot note where E2B sandboxes are: {e}"))
        })?;
    }
    let options = remote_options(binary, models.unwrap_or_default(), &config.api_key);
    let api = Arc::new(E2bApi::new(config).map_err(ProvidersError::Setting)?);
    let host = E2bHost::new(api).noting_templates(locations.with_file_name(e2b::TEMPLATES_FILE));
    Ok(Some(RemoteRuntime::new(Arc::new(host), local, options)))
}

/// The `modal` provider, when the manifest or the state uses it. Without
/// a manifest the recorded endpoint says where the sandboxes are, and the
/// token is read from the default variables.
pub fn modal_runtime(
    state: &StateStore,
    manifest: Option<&Manifest>,
    local: Arc<dyn Runtime>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RemoteRuntime>, ProvidersError> {
    let name = modal_host::PROVIDER_NAME;
    let declared = manifest.is_some_and(|m| m.resources.iter().any(|r| r.provider == name));
    let recorded = recorded_endpoints(state, name)?;
    if !declared && recorded.is_empty() {
        return Ok(None);
    }
    let user = format!("`provider: {name}` is used");
    let (config, models) = match manifest {
        Some(m) => {
            let spec = m.providers.modal.as_ref();
            let config = modal_config_for(&user, spec, &m.project, var)?;
            let models = declared
                .then(|| models_of(m, name, ModelKeySpec::Env, var))
                .transpose()?;
            (config, models)
        }
        None => {
            let spec = ModalProviderSpec {
                server_url: recorded.iter().flatten().next().cloned(),
                ..ModalProviderSpec::default()
            };
            let user = format!("the state holds `{name}` sessions");
            (modal_config_for(&user, Some(&spec), "", var)?, None)
        }
    };
    let binary = upload_binary(
        manifest,
        manifest.and_then(|m| m.providers.modal.as_ref()?.agent_binary.clone()),
    )?;
    if declared && !is_loopback(&config.server_url) {
        check_static_for(&binary, "a Modal", name).map_err(ProvidersError::Setting)?;
    }
    let options = remote_options(binary, models.unwrap_or_default(), &config.token_secret);
    let api = Arc::new(ModalApi::new(config).map_err(ProvidersError::Setting)?);
    Ok(Some(RemoteRuntime::new(
        Arc::new(ModalHost::new(api)),
        local,
        options,
    )))
}

/// Where the recorded sandboxes are, for a command without a manifest.
fn config_from_state(
    locations: &Path,
    recorded: &[Option<String>],
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<E2bConfig, ProvidersError> {
    let known = location::read(locations).map_err(ProvidersError::Setting)?;
    let endpoint = recorded.iter().flatten().next().cloned();
    let place = known
        .iter()
        .find(|l| Some(&l.api_url) == endpoint.as_ref())
        .cloned()
        .or_else(|| {
            endpoint.map(|api_url| E2bLocation {
                api_url,
                sandbox_url: None,
                domain: e2b::DEFAULT_DOMAIN.to_owned(),
                api_key_env: e2b::API_KEY_ENV.to_owned(),
            })
        })
        .ok_or_else(|| {
            ProvidersError::Setting(format!(
                "the state holds `{PROVIDER_NAME}` sessions but not where they live; pass the manifest (-f)"
            ))
        })?;
    let key = var(&place.api_key_env)
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            ProvidersError::Setting(format!(
                "the state holds `{PROVIDER_NAME}` sessions, and the E2B API key is read from `{}`, which is not set",
                place.api_key_env
            ))
        })?;
    place.config(key).map_err(ProvidersError::Setting)
}

/// The model side of the serve in each sandbox.
#[derive(Default)]
struct Models {
    manifest: String,
    /// The serve's variables: the keys, or placeholders under `inject`.
    envs: Vec<(String, Secret)>,
    hosts: Vec<String>,
    /// Under `inject`: the keys, as headers the egress sets per host.
    rules: Vec<HeaderRule>,
}

/// How one model backend is reached: its key (if it takes one) and its host.
struct Reach {
    key: Option<Key>,
    host: Option<String>,
}

/// A model's key: the variable holding it and how its client sends it.
struct Key {
    env: String,
    header: &'static str,
    /// Before the key in the header's value.
    prefix: &'static str,
}

/// The backends of the models the `provider` agents use, the keys they need
/// (each must be set) and the hosts they reach; under `inject` the keys
/// become header rules and the serve gets placeholders.
fn models_of(
    m: &Manifest,
    provider: &str,
    keys: ModelKeySpec,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Models, ProvidersError> {
    let specs = m
        .providers
        .local
        .as_ref()
        .map(|l| l.models.clone())
        .unwrap_or_default();
    let mut used: BTreeMap<String, ModelBackendSpec> = BTreeMap::new();
    let mut out = Models::default();
    for r in &m.resources {
        if r.provider != provider || r.address.kind != Kind::Agent {
            continue;
        }
        let model = match &r.body["model"] {
            Value::String(s) => s.clone(),
            other => match other.get("id").and_then(Value::as_str) {
                Some(s) => s.to_owned(),
                None => continue,
            },
        };
        let Some(spec) = specs.get(&model) else {
            return Err(ProvidersError::Setting(format!(
                "`{}` runs on `{provider}` with model `{model}`, which has no backend; \
                 declare one under `providers.local.models.{model}` (backend: anthropic, openai or scripted)",
                r.address
            )));
        };
        let reach = match spec {
            ModelBackendSpec::Anthropic {
                base_url,
                api_key_env,
                ..
            } => Reach {
                key: Some(Key {
                    env: api_key_env
                        .clone()
                        .unwrap_or_else(|| crate::model::anthropic::DEFAULT_API_KEY_ENV.to_owned()),
                    header: "x-api-key",
                    prefix: "",
                }),
                host: Some(
                    host_of(base_url.as_deref()).unwrap_or_else(|| DEFAULT_MODEL_HOST.into()),
                ),
            },
            ModelBackendSpec::Openai {
                base_url,
                api_key_env,
                ..
            } => Reach {
                key: api_key_env.clone().map(|env| Key {
                    env,
                    header: "authorization",
                    prefix: "Bearer ",
                }),
                host: host_of(Some(base_url)),
            },
            ModelBackendSpec::Scripted { transcript, .. } => {
                if let Some(t) = transcript {
                    return Err(ProvidersError::Setting(format!(
                        "model `{model}` of `{}` replays the transcript `{t}`, which the `{provider}` \
                         provider does not upload; write its `turns` instead",
                        r.address
                    )));
                }
                Reach {
                    key: None,
                    host: None,
                }
            }
        };
        if let Some(key) = &reach.key {
            let env = &key.env;
            let value = var(env).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                ProvidersError::Setting(format!(
                    "`{}` runs on `{provider}` with model `{model}`, whose key is read from `{env}`, which is not set",
                    r.address
                ))
            })?;
            let value = match keys {
                ModelKeySpec::Env => value,
                ModelKeySpec::Inject => {
                    inject(&mut out.rules, reach.host.as_deref(), key, value.trim()).map_err(|why| {
                        ProvidersError::Setting(format!(
                            "`{}` runs on `{provider}` with model `{model}` and `model_key: inject`, but {why}",
                            r.address
                        ))
                    })?;
                    INJECTED_KEY_PLACEHOLDER.to_owned()
                }
            };
            if !out.envs.iter().any(|(k, _)| k == env) {
                out.envs.push((env.clone(), Secret::new(value)));
            }
        }
        out.hosts
            .extend(reach.host.filter(|h| !out.hosts.contains(h)));
        used.insert(model, spec.clone());
    }
    out.manifest = json!({
        "version": 1,
        "providers": { "local": { "models": used } }
    })
    .to_string();
    Ok(out)
}

/// Adds the rule that sets `key` on the model's requests; a message (no
/// secret in it) when the host is unknown or already gets another key in
/// the same header.
fn inject(
    rules: &mut Vec<HeaderRule>,
    host: Option<&str>,
    key: &Key,
    value: &str,
) -> Result<(), String> {
    let Some(host) = host else {
        return Err("its `base_url` names no host to set the key for".to_owned());
    };
    let name = key.header;
    let rule = HeaderRule {
        host: host.to_owned(),
        name: name.to_owned(),
        value: format!("{}{value}", key.prefix),
    };
    match rules.iter().find(|r| r.host == rule.host && r.name == rule.name) {
        Some(r) if r.value == rule.value => Ok(()),
        Some(_) => Err(format!(
            "another model reaches `{host}` with a different key in `{name}`, and one egress rule per host cannot tell them apart"
        )),
        None => {
            rules.push(rule);
            Ok(())
        }
    }
}

fn host_of(url: Option<&str>) -> Option<String> {
    reqwest::Url::parse(url?)
        .ok()?
        .host_str()
        .map(str::to_owned)
}

/// Whether the control plane is on this machine (a fake, in tests).
fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// A static x86_64 Linux executable: ELF64, little-endian, machine 62, no
/// program interpreter.
pub fn check_static(path: &Path) -> Result<(), String> {
    check_static_for(path, "an E2B", "e2b")
}

/// [`check_static`] for a sandbox of `label` (`a Modal`), whose setting is
/// `providers.{provider}.agent_binary`.
fn check_static_for(path: &Path, label: &str, provider: &str) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let refuse = |why: &str| {
        format!(
            "`{}` cannot run in {label} sandbox: {why}\n\
             hint: build a static one with `scripts/build-static.sh` and set `providers.{provider}.agent_binary`",
            path.display()
        )
    };
    let mut file = std::fs::File::open(path).map_err(|e| refuse(&e.to_string()))?;
    let mut head = [0u8; 64];
    file.read_exact(&mut head)
        .map_err(|_| refuse("it is not an ELF executable"))?;
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Err(refuse("it is not a 64-bit little-endian ELF executable"));
    }
    let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    if u16_at(18) != 62 {
        return Err(refuse("it is not built for x86_64"));
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(&head[32..40]);
    let (phoff, phentsize, phnum) = (u64::from_le_bytes(off), u16_at(54), u16_at(56));
    let mut table = vec![0u8; usize::from(phentsize) * usize::from(phnum)];
    file.seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(|_| refuse("its program headers cannot be read"))?;
    let interp = table
        .chunks(usize::from(phentsize.max(4)))
        .any(|h| h.len() >= 4 && u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == 3);
    if interp {
        return Err(refuse(
            "it is linked dynamically (it names a program interpreter), and the sandbox's libraries may differ",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path, models: &str, agents: &str) -> Manifest {
        let path = dir.join("agentform.yaml");
        let yaml = format!(
            "version: 1\nname: m\nprovider: e2b\nproviders:\n  local:\n    models:\n{models}\
             environments:\n  box: {{ config: {{ type: cloud }} }}\nagents:\n{agents}"
        );
        std::fs::write(&path, yaml).unwrap();
        crate::manifest::load(&crate::manifest::LoadOptions {
            files: vec![path],
            vars: Vec::new(),
            allow_empty: false,
        })
        .unwrap_or_else(|d| panic!("{}", d.render(false)))
    }

    const TWO_MODELS: &str = "      claude: { backend: anthropic, api_key_env: A_KEY }\n      \
         local: { backend: openai, base_url: 'http://llm.internal:8000/v1', api_key_env: O_KEY }\n";

    fn var(name: &str) -> Option<String> {
        match name {
            "A_KEY" => Some("sk-a-secret ".into()),
            "O_KEY" => Some("sk-o-secret".into()),
            _ => None,
        }
    }

    #[test]
    fn inject_turns_the_keys_into_header_rules_and_the_serve_gets_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(
            dir.path(),
            TWO_MODELS,
            "  a: { model: claude }\n  b: { model: local }\n",
        );
        let models = models_of(&m, "e2b", ModelKeySpec::Inject, &var).unwrap();
        let rules: Vec<(&str, &str, &str)> = models
            .rules
            .iter()
            .map(|r| (r.host.as_str(), r.name.as_str(), r.value.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                ("api.anthropic.com", "x-api-key", "sk-a-secret"),
                ("llm.internal", "authorization", "Bearer sk-o-secret"),
            ]
        );
        assert_eq!(models.hosts, ["api.anthropic.com", "llm.internal"]);
        for (name, value) in &models.envs {
            assert_eq!(value.expose(), INJECTED_KEY_PLACEHOLDER, "{name}");
        }
        assert_eq!(models.envs.len(), 2);
        assert!(!models.manifest.contains("secret"), "{}", models.manifest);
        let shown = format!("{:?}", models.rules);
        assert!(!shown.contains("secret"), "{shown}");

        let env = models_of(&m, "e2b", ModelKeySpec::Env, &var).unwrap();
        assert!(env.rules.is_empty());
        assert!(env.envs.iter().any(|(_, v)| v.expose() == "sk-a-secret "));
    }

    #[test]
    fn inject_refuses_two_keys_for_one_host_and_header() {
        let dir = tempfile::tempdir().unwrap();
        let models = "      one: { backend: anthropic, api_key_env: A_KEY }\n      \
                      two: { backend: anthropic, api_key_env: O_KEY }\n";
        let m = manifest(
            dir.path(),
            models,
            "  a: { model: one }\n  b: { model: two }\n",
        );
        let e = models_of(&m, "e2b", ModelKeySpec::Inject, &var)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("`api.anthropic.com` with a different key"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        // The same key twice is one rule.
        let same = "      one: { backend: anthropic, api_key_env: A_KEY }\n      \
                    two: { backend: anthropic, api_key_env: A_KEY }\n";
        let m = manifest(
            dir.path(),
            same,
            "  a: { model: one }\n  b: { model: two }\n",
        );
        let models = models_of(&m, "e2b", ModelKeySpec::Inject, &var).unwrap();
        assert_eq!(models.rules.len(), 1);
    }

    #[test]
    fn a_dynamic_executable_is_refused_naming_the_file() {
        // The test binary itself is linked dynamically.
        let exe = std::env::current_exe().unwrap();
        let e = check_static(&exe).unwrap_err();
        assert!(e.contains(&exe.display().to_string()), "{e}");
        assert!(e.contains("dynamically"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        assert!(check_static(&text).unwrap_err().contains("not an ELF"));
    }

    #[test]
    fn a_static_x86_64_header_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentform");
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62;
        elf[32] = 64;
        elf[54] = 56;
        elf[56] = 1;
        elf[64] = 1; // PT_LOAD
        std::fs::write(&path, &elf).unwrap();
        assert_eq!(check_static(&path), Ok(()));
        elf[18] = 183; // aarch64
        std::fs::write(&path, &elf).unwrap();
        assert!(check_static(&path).unwrap_err().contains("x86_64"));
    }
}
