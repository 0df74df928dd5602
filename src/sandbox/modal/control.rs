//! The control plane (`modal.client.ModalClient` at the server URL), called
//! as the official client calls it (`modal` 1.6.4): `AppGetOrCreate`,
//! `EnvironmentGetOrCreate` (the image builder version),
//! `ImageGetOrCreate` + `ImageJoinStreaming`, `AuthTokenGet` (a JWT sent as
//! `x-modal-auth-token` on the V2 calls), `SandboxCreateV2`,
//! `SandboxListV2`, `SandboxGetTaskIdV2`, `SandboxWaitV2`,
//! `SandboxTerminateV2`, `SandboxGetTunnelsV2`, `SandboxTagsGetV2` and
//! `SandboxGetCommandRouterAccess` (mounts are `mount.rs`'s). Every token,
//! JWT and sandbox token joins the redactor as it arrives. What a sandbox is
//! for is the caller's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use tokio::sync::{Mutex, OnceCell};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::Channel;

use super::config::ModalConfig;
use super::error::{ModalError, ModalErrorKind};
use super::proto::client as pb;
use super::proto::client::modal_client_client::ModalClientClient;
use super::rpc::{self, Rpc, CLIENT_HEADERS};
use crate::http::Redactor;

/// How long an image build is waited for.
const BUILD_DEADLINE: Duration = Duration::from_secs(60 * 60);
/// One `ImageJoinStreaming` call is held this long by the server (the
/// official client's value).
const JOIN_TIMEOUT_SECS: f32 = 55.0;
/// Sandbox list pages read at most.
const MAX_PAGES: usize = 100;
/// How long a new sandbox may take to be scheduled (get a task).
const SCHEDULE_DEADLINE: Duration = Duration::from_secs(21 * 60);
/// Lifetime assumed for an auth token without `exp` (the Go client's).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(20 * 60);

/// Where a sandbox's commands go: its task and its command router.
#[derive(Clone, PartialEq, Eq)]
pub struct Access {
    pub sandbox_id: String,
    pub task_id: String,
    pub router_url: String,
    pub jwt: String,
    /// Sent as `x-modal-sandbox-token` on calls about this sandbox.
    pub sandbox_token: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("sandbox_id", &self.sandbox_id)
            .field("task_id", &self.task_id)
            .field("router_url", &self.router_url)
            .finish_non_exhaustive()
    }
}

/// A listed sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub sandbox_id: String,
    /// Seconds since the epoch.
    pub created_at: f64,
    pub tags: BTreeMap<String, String>,
    /// Set once the sandbox has finished.
    pub finished: bool,
}

/// A client of Modal's control plane.
pub struct ModalApi {
    rpc: Rpc,
    config: ModalConfig,
    app_id: OnceCell<String>,
    builder_version: OnceCell<String>,
    /// The auth token and when to fetch a new one.
    auth: Mutex<Option<(String, SystemTime)>>,
    /// Image ids by their dockerfile commands: built once per process.
    /// One cell per image, so that different images build at once and one
    /// image builds once.
    images: Mutex<BTreeMap<Vec<String>, Arc<OnceCell<String>>>>,
    /// The blob store's HTTP client (`mount.rs`), made at its first use.
    blob_http: OnceCell<crate::http::Client>,
}

impl std::fmt::Debug for ModalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModalApi")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type Extra = Vec<(AsciiMetadataKey, AsciiMetadataValue)>;

impl ModalApi {
    pub fn new(config: ModalConfig) -> Result<Self, String> {
        let redactor = Redactor::new([config.token_id.clone(), config.token_secret.clone()]);
        let mut metadata = vec![
            (
                AsciiMetadataKey::from_static("x-modal-token-id"),
                rpc::metadata_value(&config.token_id, &format!("`{}`", config.token_id_env))?,
            ),
            (
                AsciiMetadataKey::from_static("x-modal-token-secret"),
                rpc::metadata_value(
                    &config.token_secret,
                    &format!("`{}`", config.token_secret_env),
                )?,
            ),
        ];
        for (k, v) in CLIENT_HEADERS {
            metadata.push((
                AsciiMetadataKey::from_static(k),
                AsciiMetadataValue::from_static(v),
            ));
        }
        let rpc = Rpc {
            channel: rpc::channel(&config.server_url)?,
            metadata,
            retry: config.retry,
            timeout: config.request_timeout,
            token_vars: config.token_vars(),
            redactor,
        };
        Ok(ModalApi {
            rpc,
            config,
            app_id: OnceCell::new(),
            builder_version: OnceCell::new(),
            auth: Mutex::new(None),
            images: Mutex::new(BTreeMap::new()),
            blob_http: OnceCell::new(),
        })
    }

    pub fn config(&self) -> &ModalConfig {
        &self.config
    }

    /// Every secret this client has seen; errors and logs go through it.
    pub fn redactor(&self) -> &Redactor {
        &self.rpc.redactor
    }

    /// The retry policy and the auth-refusal hint, for the command router.
    pub(super) fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// A secret that arrived in an answer: masked from now on.
    pub(super) fn learn(&self, label: &str, secret: &str) {
        self.rpc.redactor.secrets().add(label, secret);
    }

    pub(super) fn blob_http(&self) -> &OnceCell<crate::http::Client> {
        &self.blob_http
    }

    pub(super) async fn unary<Req, Resp, F, Fut>(
        &self,
        label: &str,
        message: &Req,
        extra: &[(AsciiMetadataKey, AsciiMetadataValue)],
        call: F,
    ) -> Result<Resp, ModalError>
    where
        Req: Clone,
        F: Fn(ModalClientClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.unary_on(&self.rpc, label, message, extra, call).await
    }

    async fn unary_on<Req, Resp, F, Fut>(
        &self,
        rpc: &Rpc,
        label: &str,
        message: &Req,
        extra: &[(AsciiMetadataKey, AsciiMetadataValue)],
        call: F,
    ) -> Result<Resp, ModalError>
    where
        Req: Clone,
        F: Fn(ModalClientClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        rpc.unary(label, message, extra, |channel, request| {
            call(ModalClientClient::new(channel), request)
        })
        .await
    }

    /// The app's id, made when missing (`AppGetOrCreate`).
    pub async fn app_id(&self) -> Result<String, ModalError> {
        let id = self
            .app_id
            .get_or_try_init(|| async {
                let request = pb::AppGetOrCreateRequest {
                    app_name: self.config.app.clone(),
                    environment_name: self.config.environment.clone(),
                    object_creation_type: pb::ObjectCreationType::CreateIfMissing as i32,
                };
                let response = self
                    .unary(
                        "ModalClient/AppGetOrCreate",
                        &request,
                        &[],
                        |mut c, r| async move { c.app_get_or_create(r).await },
                    )
                    .await?;
                Ok::<_, ModalError>(response.app_id)
            })
            .await?;
        Ok(id.clone())
    }

    /// The environment's image builder version (`EnvironmentGetOrCreate`).
    pub async fn builder_version(&self) -> Result<String, ModalError> {
        let version = self
            .builder_version
            .get_or_try_init(|| async {
                let request = pb::EnvironmentGetOrCreateRequest {
                    deployment_name: self.config.environment.clone(),
                    object_creation_type: pb::ObjectCreationType::Unspecified as i32,
                };
                let response = self
                    .unary(
                        "ModalClient/EnvironmentGetOrCreate",
                        &request,
                        &[],
                        |mut c, r| async move { c.environment_get_or_create(r).await },
                    )
                    .await?;
                let version = response
                    .metadata
                    .and_then(|m| m.settings)
                    .map(|s| s.image_builder_version)
                    .unwrap_or_default();
                Ok::<_, ModalError>(version)
            })
            .await?;
        Ok(version.clone())
    }

    /// `x-modal-auth-token` for the V2 calls (`AuthTokenGet`), fetched again
    /// half way through its lifetime.
    async fn auth(&self, sandbox_token: Option<&str>) -> Result<Extra, ModalError> {
        let mut auth = self.auth.lock().await;
        let now = SystemTime::now();
        let token = match &*auth {
            Some((token, refresh_at)) if now < *refresh_at => token.clone(),
            _ => {
                let response = self
                    .unary(
                        "ModalClient/AuthTokenGet",
                        &pb::AuthTokenGetRequest {},
                        &[],
                        |mut c, r| async move { c.auth_token_get(r).await },
                    )
                    .await?;
                let token = response.token;
                if token.is_empty() {
                    return Err(ModalError::protocol(
                        "ModalClient/AuthTokenGet",
                        "an empty token",
                        self.redactor(),
                    ));
                }
                self.learn("Modal auth token", &token);
                let lifetime = jwt_expiry(&token)
                    .and_then(|exp| exp.duration_since(now).ok())
                    .unwrap_or(DEFAULT_TOKEN_LIFETIME);
                *auth = Some((token.clone(), now + lifetime / 2));
                token
            }
        };
        drop(auth);
        let mut extra = vec![(
            AsciiMetadataKey::from_static("x-modal-auth-token"),
            rpc::metadata_value(&token, "the Modal auth token")
                .map_err(|e| ModalError::new(ModalErrorKind::Protocol, e))?,
        )];
        if let Some(t) = sandbox_token {
            extra.push((
                AsciiMetadataKey::from_static("x-modal-sandbox-token"),
                rpc::metadata_value(t, "the Modal sandbox token")
                    .map_err(|e| ModalError::new(ModalErrorKind::Protocol, e))?,
            ));
        }
        Ok(extra)
    }

    /// Forgets the auth token (refused): the next V2 call fetches another.
    async fn drop_auth(&self) {
        *self.auth.lock().await = None;
    }

    /// A V2 call with the auth token; a refused token is fetched again once.
    async fn v2<Req, Resp, F, Fut>(
        &self,
        label: &str,
        message: &Req,
        sandbox_token: Option<&str>,
        call: F,
    ) -> Result<Resp, ModalError>
    where
        Req: Clone,
        F: Fn(ModalClientClient<Channel>, tonic::Request<Req>) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.v2_on(&self.rpc, label, message, sandbox_token, call)
            .await
    }

    async fn v2_on<Req, Resp, F, Fut>(
        &self,
        rpc: &Rpc,
        label: &str,
        message: &Req,
        sandbox_token: Option<&str>,
        call: F,
    ) -> Result<Resp, ModalError>
    where
        Req: Clone,
        F: Fn(ModalClientClient<Channel>, tonic::Request<Req>) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let extra = self.auth(sandbox_token).await?;
        match self
            .unary_on(rpc, label, message, &extra, call.clone())
            .await
        {
            Err(e) if e.code == Some(tonic::Code::Unauthenticated) => {
                self.drop_auth().await;
                let extra = self.auth(sandbox_token).await?;
                self.unary_on(rpc, label, message, &extra, call).await
            }
            other => other,
        }
    }

    /// The image of `commands` (a Dockerfile's lines), built when Modal has
    /// none yet (`ImageGetOrCreate`, then `ImageJoinStreaming` until its
    /// result).
    pub async fn image(&self, commands: Vec<String>) -> Result<String, ModalError> {
        let cell = Arc::clone(
            self.images
                .lock()
                .await
                .entry(commands.clone())
                .or_default(),
        );
        let id = cell.get_or_try_init(|| self.build(commands)).await?;
        Ok(id.clone())
    }

    /// Builds the image of `commands` (or finds it built).
    async fn build(&self, commands: Vec<String>) -> Result<String, ModalError> {
        let app_id = self.app_id().await?;
        let builder_version = self.builder_version().await?;
        let request = pb::ImageGetOrCreateRequest {
            image: Some(pb::Image {
                dockerfile_commands: commands.clone(),
                ..Default::default()
            }),
            app_id,
            namespace: pb::DeploymentNamespace::Workspace as i32,
            builder_version,
            ..Default::default()
        };
        let label = "ModalClient/ImageGetOrCreate";
        let response = self
            .unary(label, &request, &[], |mut c, r| async move {
                c.image_get_or_create(r).await
            })
            .await?;
        let image_id = response.image_id;
        let (result, logs) = match response.result.filter(|r| r.status != 0) {
            Some(result) => (result, String::new()),
            None => self.join_build(&image_id).await?,
        };
        check_build(&image_id, &result, &logs)?;
        tracing::info!(image = %image_id, "Modal image ready");
        Ok(image_id)
    }

    /// Waits for an image build: its result and the end of its logs.
    async fn join_build(&self, image_id: &str) -> Result<(pb::GenericResult, String), ModalError> {
        let label = "ModalClient/ImageJoinStreaming";
        let deadline = tokio::time::Instant::now() + BUILD_DEADLINE;
        let mut last_entry_id = String::new();
        let mut logs = String::new();
        let mut failures = 0;
        while tokio::time::Instant::now() < deadline {
            let request = self.rpc.request(
                pb::ImageJoinStreamingRequest {
                    image_id: image_id.to_owned(),
                    timeout: JOIN_TIMEOUT_SECS,
                    last_entry_id: last_entry_id.clone(),
                    include_logs_for_finished: false,
                },
                &[],
            );
            let mut client = ModalClientClient::new(self.rpc.channel.clone());
            let mut result = None;
            let outcome = async {
                let mut stream = client.image_join_streaming(request).await?.into_inner();
                while let Some(item) = stream.message().await? {
                    if !item.entry_id.is_empty() {
                        last_entry_id = item.entry_id;
                    }
                    for log in item.task_logs {
                        logs.push_str(&log.data);
                    }
                    keep_tail(&mut logs);
                    if let Some(r) = item.result.filter(|r| r.status != 0) {
                        result = Some(r);
                    }
                }
                Ok::<_, tonic::Status>(())
            }
            .await;
            if let Some(r) = result {
                return Ok((r, logs));
            }
            if let Err(status) = outcome {
                let e = self.rpc.error(label, &status);
                failures += 1;
                if !e.is_transient() || failures > self.rpc.retry.max_retries {
                    return Err(e);
                }
                tokio::time::sleep(self.rpc.retry.delay(failures - 1, None)).await;
            }
        }
        Err(ModalError::new(
            ModalErrorKind::Transient,
            format!("Modal image `{image_id}`: not built within {BUILD_DEADLINE:?}"),
        ))
    }

    /// Creates a sandbox (`SandboxCreateV2`), one attempt: the caller looks
    /// for the sandbox by its tags before trying again.
    pub async fn create(
        &self,
        definition: pb::Sandbox,
        tags: &BTreeMap<String, String>,
        env: BTreeMap<String, String>,
    ) -> Result<Access, ModalError> {
        let label = "ModalClient/SandboxCreateV2";
        let mut secret_sources = Vec::new();
        if !env.is_empty() {
            secret_sources.push(pb::SecretSource {
                source: Some(pb::secret_source::Source::Env(pb::StringMap {
                    contents: env.into_iter().collect(),
                })),
            });
        }
        let request = pb::SandboxCreateV2Request {
            app_id: self.app_id().await?,
            definition: Some(definition),
            tags: tag_protos(tags),
            secret_sources,
            ..Default::default()
        };
        // Sent once: the caller looks for what a lost answer made.
        let mut once = self.rpc.clone();
        once.retry.max_retries = 0;
        let response = self
            .v2_on(&once, label, &request, None, |mut c, r| async move {
                c.sandbox_create_v2(r).await
            })
            .await?;
        let sandbox_token = Some(response.sandbox_token).filter(|t| !t.is_empty());
        if let Some(t) = &sandbox_token {
            self.learn("Modal sandbox token", t);
        }
        let sandbox_id = response.sandbox_id;
        let task_id = match response.task_id {
            id if !id.is_empty() => id,
            _ => self.task_id(&sandbox_id, sandbox_token.as_deref()).await?,
        };
        let (router_url, jwt) = match response.command_router_access {
            Some(a) if !a.url.is_empty() => (a.url, a.jwt),
            _ => {
                self.router_access(&sandbox_id, sandbox_token.as_deref())
                    .await?
            }
        };
        self.learn("Modal command router JWT", &jwt);
        Ok(Access {
            sandbox_id,
            task_id,
            router_url,
            jwt,
            sandbox_token,
        })
    }

    /// A running sandbox's access, for adopting it (its task and its
    /// command router asked for at once).
    pub async fn access(&self, sandbox_id: &str) -> Result<Access, ModalError> {
        let (task_id, (router_url, jwt)) = tokio::try_join!(
            self.task_id(sandbox_id, None),
            self.router_access(sandbox_id, None)
        )?;
        Ok(Access {
            sandbox_id: sandbox_id.to_owned(),
            task_id,
            router_url,
            jwt,
            sandbox_token: None,
        })
    }

    /// The sandbox's task, once scheduled (`SandboxGetTaskIdV2`).
    async fn task_id(&self, sandbox_id: &str, token: Option<&str>) -> Result<String, ModalError> {
        let label = "ModalClient/SandboxGetTaskIdV2";
        let deadline = tokio::time::Instant::now() + SCHEDULE_DEADLINE;
        loop {
            let request = pb::SandboxGetTaskIdRequest {
                sandbox_id: sandbox_id.to_owned(),
                timeout: Some(10.0),
                wait_until_ready: false,
            };
            let response = self
                .v2(label, &request, token, |mut c, r| async move {
                    c.sandbox_get_task_id_v2(r).await
                })
                .await?;
            if let Some(id) = response.task_id.filter(|id| !id.is_empty()) {
                return Ok(id);
            }
            if response.task_result.is_some_and(|r| r.status != 0) {
                return Err(gone(sandbox_id));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ModalError::new(
                    ModalErrorKind::Transient,
                    format!("Modal sandbox `{sandbox_id}` was not scheduled within {SCHEDULE_DEADLINE:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Where the sandbox's command router is, and a JWT for it
    /// (`SandboxGetCommandRouterAccess`).
    pub async fn router_access(
        &self,
        sandbox_id: &str,
        token: Option<&str>,
    ) -> Result<(String, String), ModalError> {
        let request = pb::SandboxGetCommandRouterAccessRequest {
            target: Some(
                pb::sandbox_get_command_router_access_request::Target::SandboxId(
                    sandbox_id.to_owned(),
                ),
            ),
        };
        let response = self
            .v2(
                "ModalClient/SandboxGetCommandRouterAccess",
                &request,
                token,
                |mut c, r| async move { c.sandbox_get_command_router_access(r).await },
            )
            .await?;
        self.learn("Modal command router JWT", &response.jwt);
        Ok((response.url, response.jwt))
    }

    /// The sandbox's tunnels (`SandboxGetTunnelsV2`): one per port declared
    /// at its creation.
    pub async fn tunnels(&self, sandbox_id: &str) -> Result<Vec<pb::TunnelData>, ModalError> {
        let request = pb::SandboxGetTunnelsRequest {
            sandbox_id: sandbox_id.to_owned(),
            timeout: 50.0,
        };
        let response = self
            .v2(
                "ModalClient/SandboxGetTunnelsV2",
                &request,
                None,
                |mut c, r| async move { c.sandbox_get_tunnels_v2(r).await },
            )
            .await?;
        if response
            .result
            .is_some_and(|r| r.status != 0 && r.status != 1)
        {
            return Err(gone(sandbox_id));
        }
        Ok(response.tunnels)
    }

    /// Every running sandbox of the app carrying all of `tags`, across pages
    /// (`SandboxListV2`).
    pub async fn list(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Listed>, ModalError> {
        let label = "ModalClient/SandboxListV2";
        let app_id = self.app_id().await?;
        let mut out = Vec::new();
        let mut before = 0.0;
        for _ in 0..MAX_PAGES {
            let request = pb::SandboxListRequest {
                app_id: app_id.clone(),
                before_timestamp: before,
                environment_name: String::new(),
                include_finished: false,
                tags: tag_protos(tags),
            };
            let page = self
                .v2(label, &request, None, |mut c, r| async move {
                    c.sandbox_list_v2(r).await
                })
                .await?;
            let Some(last) = page.sandboxes.last() else {
                return Ok(out);
            };
            before = last.created_at;
            out.extend(page.sandboxes.into_iter().map(|s| {
                Listed {
                    finished: s
                        .task_info
                        .as_ref()
                        .and_then(|t| t.result.as_ref())
                        .is_some_and(|r| r.status != 0),
                    sandbox_id: s.id,
                    created_at: s.created_at,
                    tags: s
                        .tags
                        .into_iter()
                        .map(|t| (t.tag_name, t.tag_value))
                        .collect(),
                }
            }));
        }
        Err(ModalError::protocol(
            label,
            format!("more than {MAX_PAGES} pages"),
            self.redactor(),
        ))
    }

    /// The sandbox's tags (`SandboxTagsGetV2`).
    pub async fn tags(&self, sandbox_id: &str) -> Result<BTreeMap<String, String>, ModalError> {
        let request = pb::SandboxTagsGetRequest {
            sandbox_id: sandbox_id.to_owned(),
        };
        let response = self
            .v2(
                "ModalClient/SandboxTagsGetV2",
                &request,
                None,
                |mut c, r| async move { c.sandbox_tags_get_v2(r).await },
            )
            .await?;
        Ok(response
            .tags
            .into_iter()
            .map(|t| (t.tag_name, t.tag_value))
            .collect())
    }

    /// Whether the sandbox has finished (`SandboxWaitV2` with no wait).
    pub async fn finished(&self, sandbox_id: &str) -> Result<bool, ModalError> {
        let request = pb::SandboxWaitRequest {
            sandbox_id: sandbox_id.to_owned(),
            timeout: 0.0,
        };
        match self
            .v2(
                "ModalClient/SandboxWaitV2",
                &request,
                None,
                |mut c, r| async move { c.sandbox_wait_v2(r).await },
            )
            .await
        {
            Ok(r) => Ok(r.result.is_some_and(|r| r.status != 0)),
            Err(e) if e.is(ModalErrorKind::NotFound) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Terminates the sandbox (`SandboxTerminateV2`); finished or unknown
    /// sandboxes are no error.
    pub async fn terminate(&self, sandbox_id: &str) -> Result<(), ModalError> {
        let request = pb::SandboxTerminateRequest {
            sandbox_id: sandbox_id.to_owned(),
        };
        match self
            .v2(
                "ModalClient/SandboxTerminateV2",
                &request,
                None,
                |mut c, r| async move { c.sandbox_terminate_v2(r).await },
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is(ModalErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The sandbox has finished: what callers see.
pub fn gone(sandbox_id: &str) -> ModalError {
    ModalError::new(
        ModalErrorKind::SandboxGone,
        format!("Modal sandbox `{sandbox_id}` has finished (terminated, or past its timeout)"),
    )
}

fn tag_protos(tags: &BTreeMap<String, String>) -> Vec<pb::SandboxTag> {
    tags.iter()
        .map(|(k, v)| pb::SandboxTag {
            tag_name: k.clone(),
            tag_value: v.clone(),
        })
        .collect()
}

/// A failed build as an error, with the end of its logs.
fn check_build(image_id: &str, result: &pb::GenericResult, logs: &str) -> Result<(), ModalError> {
    use pb::generic_result::GenericStatus;
    let status = GenericStatus::try_from(result.status).unwrap_or(GenericStatus::Unspecified);
    let why = match status {
        GenericStatus::Success => return Ok(()),
        GenericStatus::Timeout => "timed out".to_owned(),
        GenericStatus::Terminated => "was terminated".to_owned(),
        _ if !result.exception.is_empty() => format!("failed: {}", result.exception.trim()),
        _ => "failed".to_owned(),
    };
    let logs = logs.trim_end();
    let mut text = format!("Modal image build `{image_id}` {why}");
    if !logs.is_empty() {
        text.push_str(&format!("\n{logs}"));
    }
    Err(ModalError::new(ModalErrorKind::Rejected, text))
}

/// Keeps the last 4000 bytes of build logs.
fn keep_tail(logs: &mut String) {
    const TAIL: usize = 4000;
    if logs.len() > 2 * TAIL {
        let mut cut = logs.len() - TAIL;
        while !logs.is_char_boundary(cut) {
            cut += 1;
        }
        logs.drain(..cut);
    }
}

/// When a JWT expires (its `exp` claim), read without verifying it.
pub fn jwt_expiry(jwt: &str) -> Option<SystemTime> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    (exp > 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_expiry_reads_exp() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!("{}.{}.sig", b64("{}"), b64(r#"{"exp": 1700000000}"#));
        assert_eq!(
            jwt_expiry(&jwt),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        assert_eq!(jwt_expiry(&format!("a.{}.c", b64("{}"))), None);
    }

    #[test]
    fn failed_builds_say_why_with_their_logs() {
        let result = pb::GenericResult {
            status: pb::generic_result::GenericStatus::Failure as i32,
            exception: "pip failed".into(),
            ..Default::default()
        };
        let e = check_build("im-1", &result, "Collecting x\nERROR: no x\n").unwrap_err();
        assert_eq!(
            e.message,
            "Modal image build `im-1` failed: pip failed\nCollecting x\nERROR: no x"
        );
        let ok = pb::GenericResult {
            status: pb::generic_result::GenericStatus::Success as i32,
            ..Default::default()
        };
        assert!(check_build("im-1", &ok, "").is_ok());
        let mut logs = "é".repeat(5000);
        keep_tail(&mut logs);
        assert!(logs.len() <= 4001);
    }
}
