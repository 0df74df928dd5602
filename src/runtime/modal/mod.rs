//! The `modal` provider: the remote loop of `crate::runtime::remote` on
//! Modal. [`ModalHost`] is Modal's control plane as a [`SandboxHost`]
//! (an environment's image built at apply, the executable placed in every
//! sandbox by one mount, create with the serve's port declared and from
//! that image, find by tags, terminate) and
//! [`ModalRemote`] one sandbox's command router and tunnel as a
//! [`RemoteSandbox`] (files as commands' stdin and stdout, commands, the
//! URL of the serve's port). Modal reaches only the ports declared when a
//! sandbox is made and cannot extend its lifetime: the serve listens on
//! [`SERVE_PORT`], and "keeping alive" only checks that the sandbox still
//! runs. The client is the one of `crate::sandbox::modal`; this module only
//! adapts it, and must not know what runs in the sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Url;

use super::remote::{
    Listed, NewSandbox, RemoteError, RemoteErrorKind, RemoteSandbox, Route, SandboxHost, Started,
};
use crate::sandbox::e2b::output::{Output, Utf8};
use crate::sandbox::modal::proto::client as pb;
use crate::sandbox::modal::proto::task_command_router as tcr;
use crate::sandbox::modal::{
    self, dockerfile, Access, ExitStatus, Fd, ModalApi, ModalError, ModalErrorKind, Router, Spec,
};
use crate::sandbox::{CommandOutput, EnvironmentImage, Network, Packages};

/// The provider's name in manifests.
pub const PROVIDER_NAME: &str = "modal";
/// The port the serve listens on in every sandbox, declared (encrypted,
/// reached through a tunnel) when the sandbox is made.
pub const SERVE_PORT: u16 = 8000;
/// The tag naming one creation: a retry after a lost answer finds the
/// sandbox it made instead of making a second.
pub const TAG_CREATE: &str = "agentform.create";
/// The sandbox user's home; commands run there.
const HOME: &str = "/root";
/// How long one file operation may take (an upload is the executable).
const FILE_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// A file that is not there (the read script's exit code).
const MISSING: i32 = 3;
/// Resumptions of a server's output stream in a row.
const MAX_RESUMES: u32 = 10;
/// How often a used session's sandbox is checked to still run.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Modal's control plane.
pub struct ModalHost {
    api: Arc<ModalApi>,
    /// The mount every sandbox is made with: the executable, stored by
    /// Modal once instead of written into each sandbox.
    mount: tokio::sync::OnceCell<String>,
}

impl ModalHost {
    pub fn new(api: Arc<ModalApi>) -> Self {
        ModalHost {
            api,
            mount: tokio::sync::OnceCell::new(),
        }
    }

    /// The image of an environment's packages: built at apply
    /// ([`SandboxHost::provision`]), found built (`ImageGetOrCreate`
    /// answers at once) when a session's sandbox is made.
    async fn image(&self, packages: &Packages) -> Result<String, ModalError> {
        let builder = self.api.builder_version().await?;
        self.api.image(dockerfile(packages, &builder)).await
    }

    /// One sandbox reached through its command router and tunnels.
    async fn remote(&self, access: Access) -> Result<Arc<dyn RemoteSandbox>, ModalError> {
        let tunnels = self.api.tunnels(&access.sandbox_id).await?;
        self.reach(access, &tunnels)
    }

    /// One sandbox reached through its command router and `tunnels`.
    fn reach(
        &self,
        access: Access,
        tunnels: &[pb::TunnelData],
    ) -> Result<Arc<dyn RemoteSandbox>, ModalError> {
        let id = access.sandbox_id.clone();
        // A loopback control plane (a fake) serves its tunnels in clear too.
        let scheme = match self.api.config().server_url.scheme() {
            "http" => "http",
            _ => "https",
        };
        let mut routes = BTreeMap::new();
        for t in tunnels {
            let url = Url::parse(&format!("{scheme}://{}:{}/", t.host, t.port));
            if let (Ok(port), Ok(url)) = (u16::try_from(t.container_port), url) {
                routes.insert(port, url);
            }
        }
        let serve = routes.get(&SERVE_PORT).cloned().ok_or_else(|| {
            ModalError::new(
                ModalErrorKind::Protocol,
                format!("Modal sandbox `{id}` has no tunnel to port {SERVE_PORT}"),
            )
        })?;
        let router = Arc::new(Router::new(Arc::clone(&self.api), access)?);
        Ok(Arc::new(ModalRemote {
            router,
            routes,
            serve,
        }))
    }

    /// A running sandbox a lost creation answer made, by its tag.
    async fn made_by(&self, key: &str) -> Result<Option<Access>, ModalError> {
        let filter = BTreeMap::from([(TAG_CREATE.to_owned(), key.to_owned())]);
        let found = self.api.list(&filter).await?;
        let made = found
            .into_iter()
            .find(|l| !l.finished && l.tags.get(TAG_CREATE).map(String::as_str) == Some(key));
        match made {
            Some(l) => self.api.access(&l.sandbox_id).await.map(Some),
            None => Ok(None),
        }
    }
}

/// `path` relative to the home directory (where file commands run) when
/// it is below it: commands then never depend on where `/` is.
fn in_home(path: &str) -> String {
    match path.strip_prefix(HOME).and_then(|p| p.strip_prefix('/')) {
        Some(rest) => format!("./{rest}"),
        None => path.to_owned(),
    }
}

fn remote_error(e: ModalError) -> RemoteError {
    let kind = if e.is(ModalErrorKind::SandboxGone) || e.is(ModalErrorKind::NotFound) {
        RemoteErrorKind::Gone
    } else if e.is(ModalErrorKind::Auth) {
        RemoteErrorKind::Auth
    } else {
        RemoteErrorKind::Failed
    };
    RemoteError::new(kind, e.message)
}

/// Modal's network access for a remote loop: the environment's, with the
/// model hosts allowed under limited networking.
pub fn network_access(network: &Network, model_hosts: &[String]) -> pb::NetworkAccess {
    let network = match network {
        Network::Unrestricted => Network::Unrestricted,
        Network::Limited {
            allowed_hosts,
            allow_package_managers,
        } => {
            let mut hosts = allowed_hosts.clone();
            hosts.extend(model_hosts.iter().cloned());
            Network::Limited {
                allowed_hosts: hosts,
                allow_package_managers: *allow_package_managers,
            }
        }
    };
    modal::network_access(&network)
}

/// Seconds since the epoch as RFC 3339 (empty when out of range).
fn rfc3339(seconds: f64) -> String {
    let nanos = (seconds * 1e9) as i128;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[async_trait]
impl SandboxHost for ModalHost {
    fn provider(&self) -> &str {
        PROVIDER_NAME
    }

    fn endpoint(&self) -> String {
        self.api.config().server_url.to_string()
    }

    async fn create(&self, new: &NewSandbox) -> Result<Arc<dyn RemoteSandbox>, RemoteError> {
        if !new.header_rules.is_empty() {
            return Err(RemoteError::failed(
                "Modal cannot set headers on a sandbox's requests",
            ));
        }
        let config = self.api.config();
        let image_id = self.image(&new.packages).await.map_err(remote_error)?;
        let port = pb::PortSpec {
            port: u32::from(SERVE_PORT),
            unencrypted: false,
            tunnel_type: None,
        };
        let definition = pb::Sandbox {
            image_id,
            timeout_secs: u32::try_from(config.timeout.as_secs().max(1)).unwrap_or(u32::MAX),
            workdir: Some(HOME.to_owned()),
            network_access: Some(network_access(&new.network, &new.model_hosts)),
            open_ports_oneof: Some(pb::sandbox::OpenPortsOneof::OpenPorts(pb::PortSpecs {
                ports: vec![port],
            })),
            resources: Some(pb::Resources::default()),
            mount_ids: self.mount.get().cloned().into_iter().collect(),
            ..Default::default()
        };
        let mut tags = new.metadata.clone();
        if let Some(project) = &config.project {
            tags.entry(crate::api::META_MANIFEST.to_owned())
                .or_insert_with(|| project.clone());
        }
        tags.insert(TAG_CREATE.to_owned(), new.idempotency_key.clone());
        let mut attempt = 0;
        let access = loop {
            match self
                .api
                .create(definition.clone(), &tags, BTreeMap::new())
                .await
            {
                Ok(access) => break access,
                Err(e) if e.is_transient() && attempt < config.retry.max_retries => {
                    tracing::debug!("creating a Modal sandbox: {e}");
                    tokio::time::sleep(config.retry.delay(attempt, None)).await;
                    attempt += 1;
                    if let Some(access) = self
                        .made_by(&new.idempotency_key)
                        .await
                        .map_err(remote_error)?
                    {
                        break access;
                    }
                }
                Err(e) => return Err(remote_error(e)),
            }
        };
        tracing::info!(sandbox = %access.sandbox_id, "created a Modal sandbox");
        self.remote(access).await.map_err(remote_error)
    }

    async fn connect(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<dyn RemoteSandbox>, BTreeMap<String, String>)>, RemoteError> {
        // Asked for at once: one round trip rather than five in a row.
        let (tags, finished, access, tunnels) = tokio::join!(
            self.api.tags(id),
            self.api.finished(id),
            self.api.access(id),
            self.api.tunnels(id)
        );
        let found = async {
            if finished? {
                return Err(modal::gone(id));
            }
            Ok((tags?, access?, tunnels?))
        };
        let (tags, access, tunnels) = match found.await {
            Ok(found) => found,
            Err(e) if e.is(ModalErrorKind::SandboxGone) || e.is(ModalErrorKind::NotFound) => {
                return Ok(None)
            }
            Err(e) => return Err(remote_error(e)),
        };
        let remote = self.reach(access, &tunnels).map_err(remote_error)?;
        Ok(Some((remote, tags)))
    }

    async fn alive(&self, id: &str) -> Result<bool, RemoteError> {
        let finished = self.api.finished(id).await.map_err(remote_error)?;
        Ok(!finished)
    }

    async fn kill(&self, id: &str) -> Result<bool, RemoteError> {
        let was_running = self.alive(id).await?;
        self.api.terminate(id).await.map_err(remote_error)?;
        Ok(was_running)
    }

    async fn list(&self, metadata: &[(&str, &str)]) -> Result<Vec<Listed>, RemoteError> {
        let filter: BTreeMap<String, String> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found = self.api.list(&filter).await.map_err(remote_error)?;
        Ok(found
            .into_iter()
            .filter(|l| !l.finished)
            .filter(|l| filter.iter().all(|(k, v)| l.tags.get(k) == Some(v)))
            .map(|l| Listed {
                id: l.sandbox_id,
                started_at: rfc3339(l.created_at),
                metadata: l.tags,
            })
            .collect())
    }

    /// Modal cannot extend a sandbox's lifetime (fixed at creation): this
    /// only finds out whether it still runs.
    async fn keep_alive(&self, id: &str) -> Result<(), RemoteError> {
        if self.alive(id).await? {
            return Ok(());
        }
        Err(remote_error(modal::gone(id)))
    }

    /// A mount of the executable (`mount.rs` of the Modal client): Modal
    /// stores it once, digest-addressed, and places it in every sandbox
    /// made with the mount.
    async fn place_executable(&self, path: &str, binary: &Bytes) -> Result<bool, RemoteError> {
        let file = modal::MountFile {
            path: format!("{HOME}/{}", path.trim_start_matches('/')),
            content: binary.clone(),
            mode: 0o755,
        };
        let files = [file];
        self.mount
            .get_or_try_init(|| self.api.mount(&files))
            .await
            .map_err(|e| {
                let mut e = remote_error(e);
                e.message = format!("the mount of the agentform executable: {}", e.message);
                e
            })?;
        Ok(true)
    }

    /// Sandboxes start from their environment's image, its packages
    /// installed.
    fn preinstalls_packages(&self) -> bool {
        true
    }

    /// Builds the environment's image.
    async fn provision(&self, image: &EnvironmentImage) -> Result<(), RemoteError> {
        let name = image
            .environment_address
            .as_deref()
            .unwrap_or(&image.environment_id);
        self.image(&image.packages).await.map(drop).map_err(|e| {
            let mut e = remote_error(e);
            e.message = format!("the Modal image of `{name}`: {}", e.message);
            e
        })
    }

    fn keep_alive_every(&self) -> Duration {
        CHECK_EVERY
    }
}

/// One Modal sandbox, through its command router and tunnels.
pub struct ModalRemote {
    router: Arc<Router>,
    /// Tunnel URLs by container port.
    routes: BTreeMap<u16, Url>,
    serve: Url,
}

impl ModalRemote {
    /// Runs `script` with `path` as `$1` in the home directory, `stdin`
    /// written to it; its exit status and at most `limit` bytes of stdout.
    async fn file_script(
        &self,
        script: &str,
        path: &str,
        stdin: Bytes,
        limit: usize,
    ) -> Result<(Option<i32>, Vec<u8>), RemoteError> {
        let spec = Spec {
            args: vec![
                "bash".into(),
                "-c".into(),
                script.into(),
                "agentform".into(),
                in_home(path),
            ],
            workdir: Some(HOME.to_owned()),
            stdin,
        };
        let captured = modal::capture(&self.router, spec, limit, FILE_DEADLINE)
            .await
            .map_err(remote_error)?;
        let code = match captured.outcome.exit {
            Some(ExitStatus::Code(c)) => Some(c),
            _ => None,
        };
        if code != Some(0) && code != Some(MISSING) {
            return Err(RemoteError::failed(format!(
                "Modal sandbox `{}`: `{path}`: {} (exit {code:?})",
                self.router.sandbox_id(),
                captured.stderr.trim_end()
            )));
        }
        Ok((code, captured.stdout))
    }

    /// A server killed at its start's deadline.
    async fn timed_out(&self, exec_id: &str, seen: &[u8]) -> Started {
        modal::kill(&self.router, exec_id).await;
        Started::Ended(CommandOutput {
            output: String::from_utf8_lossy(seen).into_owned(),
            exit_code: None,
            timed_out: true,
            refusals: Vec::new(),
        })
    }

    /// A server that ended before it was ready.
    async fn ended(&self, exec_id: &str, seen: &[u8]) -> Started {
        let exit = self.router.wait(exec_id).await.ok();
        let mut output = String::from_utf8_lossy(seen).into_owned();
        output.push_str(&self.stderr_of(exec_id).await);
        Started::Ended(CommandOutput {
            output,
            exit_code: match exit {
                Some(ExitStatus::Code(c)) => Some(c),
                _ => None,
            },
            timed_out: false,
            refusals: Vec::new(),
        })
    }

    /// The rest of a command's stderr, best effort, once it has ended.
    async fn stderr_of(&self, exec_id: &str) -> String {
        let mut text = Vec::new();
        if let Ok(mut stream) = self.router.read(exec_id, true, 0).await {
            let read = async {
                while let Ok(Some(item)) = stream.message().await {
                    text.extend_from_slice(&item.data);
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

#[async_trait]
impl RemoteSandbox for ModalRemote {
    fn id(&self) -> &str {
        self.router.sandbox_id()
    }

    fn home(&self) -> &str {
        HOME
    }

    async fn read_file(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, RemoteError> {
        let script = format!("[ -f \"$1\" ] || exit {MISSING}; exec head -c {limit} -- \"$1\"");
        let (code, bytes) = self.file_script(&script, path, Bytes::new(), limit).await?;
        Ok((code == Some(0)).then_some(bytes))
    }

    async fn write_file(&self, path: &str, contents: Bytes) -> Result<(), RemoteError> {
        let script = "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\"";
        let (code, _) = self.file_script(script, path, contents, 0).await?;
        if code == Some(0) {
            return Ok(());
        }
        Err(RemoteError::failed(format!(
            "Modal sandbox `{}`: cannot write `{path}`",
            self.router.sandbox_id()
        )))
    }

    async fn run(&self, command: &str, deadline: Duration) -> Result<CommandOutput, RemoteError> {
        let exec_id = modal::uuid4();
        let spec = Spec {
            args: modal::shell(command, &exec_id),
            workdir: Some(HOME.to_owned()),
            stdin: Bytes::new(),
        };
        let mut output = Output::default();
        let (mut stdout, mut stderr) = (Utf8::default(), Utf8::default());
        let outcome = modal::run(
            &self.router,
            spec,
            Some(exec_id),
            deadline,
            &mut |fd, bytes| {
                let text = match fd {
                    Fd::Stdout => stdout.decode(bytes),
                    Fd::Stderr => stderr.decode(bytes),
                };
                output.push(&text);
            },
        )
        .await
        .map_err(remote_error)?;
        output.push(&stdout.finish());
        output.push(&stderr.finish());
        let exit_code = match outcome.exit {
            Some(ExitStatus::Code(c)) if !outcome.timed_out => Some(c),
            _ => None,
        };
        Ok(CommandOutput {
            output: output.finish(),
            exit_code,
            timed_out: outcome.timed_out,
            refusals: Vec::new(),
        })
    }

    async fn start(
        &self,
        command: &str,
        envs: &BTreeMap<String, String>,
        ready: &str,
        deadline: Duration,
    ) -> Result<Started, RemoteError> {
        let deadline_at = tokio::time::Instant::now() + deadline;
        let exec_id = modal::uuid4();
        let request = tcr::TaskExecStartRequest {
            task_id: self.router.task_id().to_owned(),
            exec_id: exec_id.clone(),
            command_args: modal::shell(command, &exec_id),
            stdout_config: tcr::TaskExecStdoutConfig::Pipe as i32,
            stderr_config: tcr::TaskExecStderrConfig::Pipe as i32,
            workdir: Some(HOME.to_owned()),
            env: envs.clone().into_iter().collect(),
            ..Default::default()
        };
        self.router.start(request).await.map_err(remote_error)?;
        let mut seen: Vec<u8> = Vec::new();
        let mut scanned = 0;
        let mut resumes = 0u32;
        loop {
            // The output from where it got: a broken stream resumes.
            let read = self.router.read(&exec_id, false, seen.len() as u64);
            let mut stream = match tokio::time::timeout_at(deadline_at, read).await {
                Err(_) => return Ok(self.timed_out(&exec_id, &seen).await),
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) if e.is_transient() && resumes < MAX_RESUMES => {
                    resumes += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(resumes))).await;
                    continue;
                }
                Ok(Err(e)) => return Ok(Started::Unknown(e.message)),
            };
            loop {
                let next = tokio::time::timeout_at(deadline_at, stream.message()).await;
                match next {
                    Err(_) => return Ok(self.timed_out(&exec_id, &seen).await),
                    Ok(Ok(Some(item))) => {
                        resumes = 0;
                        seen.extend_from_slice(&item.data);
                        while let Some(end) = seen[scanned..].iter().position(|b| *b == b'\n') {
                            let line = String::from_utf8_lossy(&seen[scanned..scanned + end])
                                .trim_end()
                                .to_owned();
                            scanned += end + 1;
                            if line.starts_with(ready) {
                                return Ok(Started::Ready(line));
                            }
                        }
                    }
                    Ok(Ok(None)) => return Ok(self.ended(&exec_id, &seen).await),
                    Ok(Err(status)) => {
                        let e = self.router.stream_error(&status);
                        if !e.is_transient() || resumes >= MAX_RESUMES {
                            return Ok(Started::Unknown(e.message));
                        }
                        resumes += 1;
                        break;
                    }
                }
            }
        }
    }

    fn route(&self, port: u16) -> Route {
        Route {
            url: self.routes.get(&port).unwrap_or(&self.serve).clone(),
            headers: HeaderMap::new(),
        }
    }

    fn serve_port(&self) -> u16 {
        SERVE_PORT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::network_access::NetworkAccessType;

    #[test]
    fn limited_networking_allows_the_model_hosts_too() {
        let limited = Network::Limited {
            allowed_hosts: vec!["api.example.com".into()],
            allow_package_managers: false,
        };
        let access = network_access(&limited, &["api.anthropic.com".to_owned()]);
        assert_eq!(
            access.network_access_type,
            NetworkAccessType::Allowlist as i32
        );
        assert_eq!(
            access.allowed_domains,
            vec!["api.example.com".to_owned(), "api.anthropic.com".to_owned()]
        );
        let open = network_access(&Network::Unrestricted, &["api.anthropic.com".to_owned()]);
        assert_eq!(open.network_access_type, NetworkAccessType::Open as i32);
    }

    #[test]
    fn creation_times_read_as_rfc3339() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert!(rfc3339(1.7e9).starts_with("2023-11-14T"));
    }
}
