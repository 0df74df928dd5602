//! The `e2b` provider: the remote loop of `crate::runtime::remote` on E2B.
//! [`E2bHost`] is E2B's control plane as a [`SandboxHost`] (an
//! environment's template built at apply and deleted with it, create with
//! an idempotency key and from that template, connect, list by metadata,
//! kill, re-arm the timeout) and [`E2bRemote`] one sandbox's envd as a
//! [`RemoteSandbox`] (files, commands, the URL of a port). The client and
//! the templates are the ones of `crate::sandbox::e2b` (stage 1): the
//! packages sit in the template where its set-up put them, and the serve
//! starts with them on its paths. This module only adapts them, and must
//! not know what runs in the sandbox.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::remote::{
    Listed, NewSandbox, RemoteError, RemoteErrorKind, RemoteSandbox, Route, SandboxHost, Started,
    META_ENVIRONMENT,
};
use crate::sandbox::e2b::{
    self, Connection, E2bApi, E2bError, E2bErrorKind, Envd, Images, NetworkConfig, NetworkRule,
    ProcessSpec,
};
use crate::sandbox::local::PACKAGE_REGISTRIES;
use crate::sandbox::{CommandOutput, EnvironmentImage, Network, Packages, SandboxError};

/// The provider's name in manifests.
pub const PROVIDER_NAME: &str = "e2b";

/// How long installing packages in a sandbox without its template may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// E2B's control plane.
pub struct E2bHost {
    api: Arc<E2bApi>,
    /// The environments' templates; without a file none is built.
    images: Images,
}

impl E2bHost {
    /// A host that builds no template: sessions install their packages.
    pub fn new(api: Arc<E2bApi>) -> Self {
        E2bHost {
            api,
            images: Images { file: None },
        }
    }

    /// Environments' templates are built at apply and noted in `file`
    /// (the one `providers.local.sandbox: e2b` notes them in).
    pub fn noting_templates(mut self, file: PathBuf) -> Self {
        self.images.file = Some(file);
        self
    }

    /// `packages`: what the sandbox holds in its set-up's place.
    fn remote(&self, connection: &Connection, packages: Packages) -> E2bRemote {
        E2bRemote {
            envd: self.api.envd(connection),
            retry: self.api.config().retry,
            packages,
        }
    }

    /// Installs the packages in a sandbox made without its environment's
    /// template (none noted, e.g. an environment made before templates),
    /// where the template's set-up would have put them.
    async fn set_up(&self, remote: &E2bRemote) -> Result<(), RemoteError> {
        let mut spec = ProcessSpec::bash(&e2b::setup_script(&remote.packages));
        spec.cwd = Some(e2b::HOME.to_owned());
        let out = e2b::run_command(
            &remote.envd,
            spec,
            SETUP_DEADLINE,
            &remote.retry,
            &mut |_| {},
        )
        .await
        .map_err(remote_error)?;
        if out.exit_code == Some(0) && !out.timed_out {
            return Ok(());
        }
        let text = out.output.trim_end();
        let mut cut = text.len().saturating_sub(2000);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        Err(RemoteError::failed(format!(
            "installing packages in E2B sandbox `{}` failed (exit code {:?}{})\n{}",
            remote.id(),
            out.exit_code,
            if out.timed_out { ", timed out" } else { "" },
            &text[cut..]
        )))
    }
}

/// A failed template build or deletion, as the remote loop reports it.
fn template_error(e: SandboxError) -> RemoteError {
    match e {
        SandboxError::Provision(m) | SandboxError::Other(m) => RemoteError::failed(m),
        other => RemoteError::failed(other.to_string()),
    }
}

fn remote_error(e: E2bError) -> RemoteError {
    let kind = if e.is(E2bErrorKind::SandboxGone) || e.is(E2bErrorKind::NotFound) {
        RemoteErrorKind::Gone
    } else if e.is(E2bErrorKind::Auth) {
        RemoteErrorKind::Auth
    } else {
        RemoteErrorKind::Failed
    };
    RemoteError::new(kind, e.message)
}

#[async_trait]
impl SandboxHost for E2bHost {
    fn provider(&self) -> &str {
        PROVIDER_NAME
    }

    fn endpoint(&self) -> String {
        self.api.config().api_url.to_string()
    }

    async fn create(&self, new: &NewSandbox) -> Result<Arc<dyn RemoteSandbox>, RemoteError> {
        let config = self.api.config();
        let mut network = match &new.network {
            Network::Unrestricted => NetworkConfig::default(),
            Network::Limited {
                allowed_hosts,
                allow_package_managers,
            } => {
                let mut hosts = allowed_hosts.clone();
                hosts.extend(new.model_hosts.iter().cloned());
                if *allow_package_managers {
                    hosts.extend(PACKAGE_REGISTRIES.iter().map(|h| (*h).to_owned()));
                }
                NetworkConfig::only(hosts)
            }
        };
        // The serve's port answers only requests with the traffic token.
        network.allow_public_traffic = Some(false);
        for rule in &new.header_rules {
            let headers = BTreeMap::from([(rule.name.clone(), rule.value.clone())]);
            network
                .rules
                .entry(rule.host.clone())
                .or_default()
                .push(NetworkRule::headers(headers));
        }
        let mut metadata = new.metadata.clone();
        if let Some(project) = &config.project {
            metadata
                .entry(crate::api::META_MANIFEST.to_owned())
                .or_insert_with(|| project.clone());
        }
        let environment = new
            .metadata
            .get(META_ENVIRONMENT)
            .map_or("", String::as_str);
        let template_id = self
            .images
            .template_for(&self.api, environment, &new.packages);
        let body = e2b::NewSandbox {
            template_id: template_id.clone(),
            timeout: config.timeout.as_secs().max(1),
            auto_pause: false,
            metadata,
            env_vars: BTreeMap::new(),
            network: Some(network),
        };
        let connection = self
            .api
            .create(&body, &new.idempotency_key)
            .await
            .map_err(|e| {
                // An answer may echo the request: the rules' values are keys.
                let mut e = remote_error(e);
                let values = new.header_rules.iter().flat_map(|r| {
                    std::iter::once(r.value.clone())
                        .chain(r.value.split_whitespace().map(str::to_owned))
                });
                e.message = crate::redact::Redactor::new(values).text(e.message);
                e
            })?;
        // Without templates the serve installs the packages in its own place.
        let held = if self.preinstalls_packages() {
            new.packages.clone()
        } else {
            Packages::default()
        };
        let has_packages = !held.pip.is_empty() || !held.npm.is_empty();
        let remote = self.remote(&connection, held);
        if has_packages && template_id == config.template {
            // No template of the packages: they are installed here instead.
            if let Err(e) = self.set_up(&remote).await {
                if let Err(kill) = self.api.kill(remote.id()).await {
                    tracing::warn!(
                        sandbox = remote.id(),
                        "cannot kill a sandbox whose set-up failed: {}",
                        kill.message
                    );
                }
                return Err(e);
            }
        }
        Ok(Arc::new(remote))
    }

    async fn connect(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<dyn RemoteSandbox>, BTreeMap<String, String>)>, RemoteError> {
        let Some(detail) = self.api.get(id).await.map_err(remote_error)? else {
            return Ok(None);
        };
        if detail.state != "running" {
            return Ok(None);
        }
        let timeout = self.api.config().timeout;
        let Some(connection) = self.api.connect(id, timeout).await.map_err(remote_error)? else {
            return Ok(None);
        };
        let remote = self.remote(&connection, Packages::default());
        Ok(Some((Arc::new(remote), detail.metadata)))
    }

    async fn alive(&self, id: &str) -> Result<bool, RemoteError> {
        let detail = self.api.get(id).await.map_err(remote_error)?;
        Ok(detail.is_some_and(|d| d.state == "running"))
    }

    async fn kill(&self, id: &str) -> Result<bool, RemoteError> {
        self.api.kill(id).await.map_err(remote_error)
    }

    async fn list(&self, metadata: &[(&str, &str)]) -> Result<Vec<Listed>, RemoteError> {
        let found = self.api.list(metadata).await.map_err(remote_error)?;
        Ok(found
            .into_iter()
            .map(|l| Listed {
                id: l.sandbox_id,
                started_at: l.started_at,
                metadata: l.metadata,
            })
            .collect())
    }

    async fn keep_alive(&self, id: &str) -> Result<(), RemoteError> {
        self.api
            .set_timeout(id, self.api.config().timeout)
            .await
            .map_err(remote_error)
    }

    /// A third of the timeout: two re-arms may fail before it is reached.
    fn keep_alive_every(&self) -> Duration {
        (self.api.config().timeout / 3).max(Duration::from_secs(1))
    }

    /// With templates noted: sandboxes start from their environment's
    /// template (or install its packages in its place when made), and
    /// the serve installs nothing.
    fn preinstalls_packages(&self) -> bool {
        self.images.file.is_some()
    }

    /// Builds the environment's template unless it has one of the same
    /// packages (the one it replaces is deleted); without packages,
    /// deletes the one it had.
    async fn provision(&self, image: &EnvironmentImage) -> Result<(), RemoteError> {
        self.images
            .provision(&self.api, image)
            .await
            .map_err(template_error)
    }

    /// Deletes the environment's template.
    async fn retire(&self, environment_id: &str) -> Result<(), RemoteError> {
        self.images
            .retire(&self.api, environment_id)
            .await
            .map_err(template_error)
    }
}

/// One E2B sandbox, through its envd.
pub struct E2bRemote {
    envd: Envd,
    retry: crate::http::RetryPolicy,
    /// Installed where the template's set-up puts them: what is started
    /// here has them on its paths (none when only reconnected).
    packages: Packages,
}

impl E2bRemote {
    fn spec(&self, command: &str, envs: &BTreeMap<String, String>) -> ProcessSpec {
        let mut spec = ProcessSpec::bash(&e2b::with_packages(&self.packages, command));
        spec.cwd = Some(e2b::HOME.to_owned());
        spec.envs = envs.clone();
        spec
    }
}

#[async_trait]
impl RemoteSandbox for E2bRemote {
    fn id(&self) -> &str {
        self.envd.sandbox_id()
    }

    fn home(&self) -> &str {
        e2b::HOME
    }

    async fn read_file(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, RemoteError> {
        match self.envd.read_file(path, limit).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.is(E2bErrorKind::NotFound) => Ok(None),
            Err(e) => Err(remote_error(e)),
        }
    }

    async fn write_file(&self, path: &str, contents: Bytes) -> Result<(), RemoteError> {
        self.envd.upload(path, contents).await.map_err(remote_error)
    }

    async fn run(&self, command: &str, deadline: Duration) -> Result<CommandOutput, RemoteError> {
        let spec = self.spec(command, &BTreeMap::new());
        e2b::run_command(&self.envd, spec, deadline, &self.retry, &mut |_| {})
            .await
            .map_err(remote_error)
    }

    async fn start(
        &self,
        command: &str,
        envs: &BTreeMap<String, String>,
        ready: &str,
        deadline: Duration,
    ) -> Result<Started, RemoteError> {
        let spec = self.spec(command, envs);
        let started = e2b::start_command(&self.envd, spec, ready, deadline, &self.retry)
            .await
            .map_err(remote_error)?;
        Ok(match started {
            e2b::Started::Ready(line) => Started::Ready(line),
            e2b::Started::Ended(out) => Started::Ended(out),
            e2b::Started::Unknown(why) => Started::Unknown(why),
        })
    }

    fn route(&self, port: u16) -> Route {
        let route = self.envd.port(port);
        Route {
            url: route.url,
            headers: route.headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::http::test_server::{requests, serve_replies, Reply};
    use crate::runtime::remote::HeaderRule;

    #[tokio::test]
    async fn a_new_sandbox_is_private_limited_and_carries_its_header_rules() {
        let created = json!({
            "sandboxID": "sbx9", "templateID": "base", "clientID": "c", "envdVersion": "0.5.7",
            "envdAccessToken": "envd-secret-9", "trafficAccessToken": "traffic-secret-9"
        });
        let (base, log) = serve_replies(vec![Reply::json(201, created)]).await;
        let mut config =
            e2b::E2bConfig::new("e2b_k".into(), e2b::API_KEY_ENV, e2b::DEFAULT_DOMAIN).unwrap();
        config.api_url = e2b::check_url(&base).unwrap();
        config.sandbox_url = Some(e2b::check_url(&base).unwrap());
        config.project = Some("proj".into());
        let host = E2bHost::new(Arc::new(E2bApi::new(config).unwrap()));
        let new = NewSandbox {
            metadata: BTreeMap::from([("agentform.loop".into(), "remote".into())]),
            network: Network::Limited {
                allowed_hosts: vec!["api.example.com".into()],
                allow_package_managers: false,
            },
            model_hosts: vec!["api.anthropic.com".into()],
            header_rules: vec![HeaderRule {
                host: "api.anthropic.com".into(),
                name: "x-api-key".into(),
                value: "sk-rule-secret".into(),
            }],
            idempotency_key: "agentform-remote-1".into(),
            packages: Default::default(),
        };
        let sandbox = host.create(&new).await.unwrap();
        assert_eq!(sandbox.id(), "sbx9");
        let sent = &requests(&log)[0];
        assert_eq!(sent.headers["idempotency-key"], "agentform-remote-1");
        let network = &sent.body["network"];
        assert_eq!(network["allowPublicTraffic"], false);
        assert_eq!(network["denyOut"], json!(["0.0.0.0/0"]));
        assert_eq!(
            network["allowOut"],
            json!(["api.example.com", "api.anthropic.com"])
        );
        assert_eq!(
            network["rules"]["api.anthropic.com"][0]["transform"]["headers"]["x-api-key"],
            "sk-rule-secret"
        );
        assert_eq!(sent.body["metadata"]["agentform.manifest"], "proj");
        let route = sandbox.route(8080);
        assert_eq!(route.headers["e2b-sandbox-port"], "8080");
        assert_eq!(
            route.headers["e2b-traffic-access-token"],
            "traffic-secret-9"
        );
        assert!(route.headers["e2b-traffic-access-token"].is_sensitive());
        assert!(!format!("{route:?}").contains("traffic-secret-9"));
    }

    #[tokio::test]
    async fn a_refused_creation_never_shows_a_rules_key() {
        let echo =
            json!({"code": 400, "message": "bad rule: Bearer sk-rule-secret-2 / sk-rule-secret-2"});
        let (base, _log) = serve_replies(vec![Reply::json(400, echo)]).await;
        let mut config =
            e2b::E2bConfig::new("e2b_k".into(), e2b::API_KEY_ENV, e2b::DEFAULT_DOMAIN).unwrap();
        config.api_url = e2b::check_url(&base).unwrap();
        let host = E2bHost::new(Arc::new(E2bApi::new(config).unwrap()));
        let new = NewSandbox {
            metadata: BTreeMap::new(),
            network: Network::Unrestricted,
            model_hosts: Vec::new(),
            header_rules: vec![HeaderRule {
                host: "llm.internal".into(),
                name: "authorization".into(),
                value: "Bearer sk-rule-secret-2".into(),
            }],
            idempotency_key: "agentform-remote-2".into(),
            packages: Default::default(),
        };
        let e = host.create(&new).await.err().unwrap();
        assert!(e.message.contains("bad rule"), "{}", e.message);
        assert!(!e.message.contains("sk-rule-secret-2"), "{}", e.message);
        assert!(!format!("{new:?}").contains("sk-rule-secret-2"));
    }
}
