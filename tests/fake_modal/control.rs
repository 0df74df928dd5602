//! The fake's control plane (`modal.client.ModalClient`): apps, the
//! environment's builder version, images (built at once: their commands
//! are recorded, a `WORKDIR` made; counted as builds), auth tokens and V2 sandboxes (create,
//! task id, command router access, tunnels, list by tag, tags, wait,
//! terminate; a create's mounts placed first), blobs and mounts (handled
//! in `blobs.rs` and `mounts.rs`). Every other method answers
//! `UNIMPLEMENTED`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentform::sandbox::modal::proto::client as pb;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::{finish, host_path, jwt, mounts, random_id, Sandbox, Shared};

#[allow(clippy::all, dead_code)]
mod server {
    include!(concat!(env!("OUT_DIR"), "/modal-servers/modal.client.rs"));
}

use server::modal_client_server::{ModalClient, ModalClientServer};

type Stream<T> = tonic::codegen::BoxStream<T>;
type Answer<T> = Result<Response<T>, Status>;

/// A package whose image never builds.
pub const FAILING_PACKAGE: &str = "agentform-fail-build";

impl super::FakeModal {
    /// Images built (or failed to build): one per distinct list of
    /// Dockerfile commands, as Modal builds an image once.
    pub fn builds(&self) -> usize {
        self.shared.lock().images.len()
    }
}

pub fn service(shared: Arc<Shared>) -> ModalClientServer<Control> {
    ModalClientServer::new(Control { shared })
}

pub struct Control {
    shared: Arc<Shared>,
}

impl Control {
    /// Logs, injects faults, checks the tokens (and the auth token of V2
    /// calls).
    fn enter<T>(&self, method: &str, request: &Request<T>, v2: bool) -> Result<(), Status> {
        self.shared.enter(&format!("ModalClient/{method}"))?;
        self.shared.check_token(request.metadata(), v2)
    }

    /// The sandbox `id`, through `f`; `NOT_FOUND` when there is none.
    fn with<R>(&self, id: &str, f: impl FnOnce(&mut Sandbox) -> R) -> Result<R, Status> {
        let mut inner = self.shared.lock();
        match inner.sandboxes.get_mut(id) {
            Some(s) => Ok(f(s)),
            None => Err(Status::not_found(format!("Sandbox {id} not found"))),
        }
    }
}

fn tag_map(tags: &[pb::SandboxTag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.tag_name.clone(), t.tag_value.clone()))
        .collect()
}

fn tag_list(tags: &BTreeMap<String, String>) -> Vec<pb::SandboxTag> {
    tags.iter()
        .map(|(k, v)| pb::SandboxTag {
            tag_name: k.clone(),
            tag_value: v.clone(),
        })
        .collect()
}

fn success() -> pb::GenericResult {
    pb::GenericResult {
        status: pb::generic_result::GenericStatus::Success as i32,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl ModalClient for Control {
    async fn app_get_or_create(
        &self,
        request: Request<pb::AppGetOrCreateRequest>,
    ) -> Answer<pb::AppGetOrCreateResponse> {
        self.enter("AppGetOrCreate", &request, false)?;
        let name = request.into_inner().app_name;
        if name.is_empty() {
            return Err(Status::invalid_argument("app_name is required"));
        }
        let mut inner = self.shared.lock();
        let id = inner
            .apps
            .entry(name)
            .or_insert_with(|| random_id("ap-", 22))
            .clone();
        Ok(Response::new(pb::AppGetOrCreateResponse {
            app_id: id,
            ..Default::default()
        }))
    }

    async fn auth_token_get(
        &self,
        request: Request<pb::AuthTokenGetRequest>,
    ) -> Answer<pb::AuthTokenGetResponse> {
        self.enter("AuthTokenGet", &request, false)?;
        let token = jwt("auth");
        self.shared.lock().auth_tokens.push(token.clone());
        Ok(Response::new(pb::AuthTokenGetResponse { token }))
    }

    async fn blob_create(
        &self,
        request: Request<pb::BlobCreateRequest>,
    ) -> Answer<pb::BlobCreateResponse> {
        self.enter("BlobCreate", &request, false)?;
        let message = request.into_inner();
        if message.content_length < 0 {
            return Err(Status::invalid_argument("content_length is negative"));
        }
        Ok(Response::new(
            self.shared.blobs.create(&self.shared.options, message),
        ))
    }

    async fn mount_batched_check_existence(
        &self,
        request: Request<pb::MountBatchedCheckExistenceRequest>,
    ) -> Answer<pb::MountBatchedCheckExistenceResponse> {
        self.enter("MountBatchedCheckExistence", &request, false)?;
        let message = request.into_inner();
        Ok(Response::new(mounts::check_existence(
            &self.shared,
            message,
        )))
    }

    async fn mount_put_file(
        &self,
        request: Request<pb::MountPutFileRequest>,
    ) -> Answer<pb::MountPutFileResponse> {
        self.enter("MountPutFile", &request, false)?;
        mounts::put_file(&self.shared, request.into_inner()).map(Response::new)
    }

    async fn mount_get_or_create(
        &self,
        request: Request<pb::MountGetOrCreateRequest>,
    ) -> Answer<pb::MountGetOrCreateResponse> {
        self.enter("MountGetOrCreate", &request, false)?;
        mounts::get_or_create(&self.shared, request.into_inner()).map(Response::new)
    }

    async fn environment_get_or_create(
        &self,
        request: Request<pb::EnvironmentGetOrCreateRequest>,
    ) -> Answer<pb::EnvironmentGetOrCreateResponse> {
        self.enter("EnvironmentGetOrCreate", &request, false)?;
        Ok(Response::new(pb::EnvironmentGetOrCreateResponse {
            environment_id: "en-fakeEnvironment0000000".into(),
            metadata: Some(pb::EnvironmentMetadata {
                name: "main".into(),
                settings: Some(pb::EnvironmentSettings {
                    image_builder_version: "2025.06".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }))
    }

    async fn image_get_or_create(
        &self,
        request: Request<pb::ImageGetOrCreateRequest>,
    ) -> Answer<pb::ImageGetOrCreateResponse> {
        self.enter("ImageGetOrCreate", &request, false)?;
        let message = request.into_inner();
        let commands = message.image.unwrap_or_default().dockerfile_commands;
        let mut inner = self.shared.lock();
        let known = inner
            .images
            .iter()
            .find(|(_, c)| **c == commands)
            .map(|(id, _)| id.clone());
        let (image_id, result) = match known {
            // A failed image fails again in the join.
            Some(id) if commands.iter().any(|c| c.contains(FAILING_PACKAGE)) => (id, None),
            Some(id) => (id, Some(success())),
            None => {
                let id = random_id("im-", 22);
                inner.images.insert(id.clone(), commands);
                // Built by the join that follows.
                (id, None)
            }
        };
        Ok(Response::new(pb::ImageGetOrCreateResponse {
            image_id,
            result,
            ..Default::default()
        }))
    }

    async fn image_join_streaming(
        &self,
        request: Request<pb::ImageJoinStreamingRequest>,
    ) -> Answer<Stream<pb::ImageJoinStreamingResponse>> {
        self.enter("ImageJoinStreaming", &request, false)?;
        let id = request.into_inner().image_id;
        let Some(commands) = self.shared.lock().images.get(&id).cloned() else {
            return Err(Status::not_found(format!("Image {id} not found")));
        };
        let logs: Vec<pb::TaskLogs> = commands
            .iter()
            .map(|c| pb::TaskLogs {
                data: format!("=> {c}\n"),
                ..Default::default()
            })
            .collect();
        // A package named `agentform-fail-build` fails the build, as pip
        // fails on a package that does not exist.
        let result = if commands.iter().any(|c| c.contains(FAILING_PACKAGE)) {
            pb::GenericResult {
                status: pb::generic_result::GenericStatus::Failure as i32,
                exception: "Image build failed: the RUN step exited with 1".into(),
                ..Default::default()
            }
        } else {
            success()
        };
        let mut logs = logs;
        if result.status != success().status {
            logs.push(pb::TaskLogs {
                data: format!("ERROR: No matching distribution found for {FAILING_PACKAGE}\n"),
                ..Default::default()
            });
        }
        let items = vec![
            Ok(pb::ImageJoinStreamingResponse {
                task_logs: logs,
                entry_id: "1-0".into(),
                ..Default::default()
            }),
            Ok(pb::ImageJoinStreamingResponse {
                result: Some(result),
                entry_id: "2-0".into(),
                eof: true,
                ..Default::default()
            }),
        ];
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn sandbox_create_v2(
        &self,
        request: Request<pb::SandboxCreateV2Request>,
    ) -> Answer<pb::SandboxCreateV2Response> {
        self.enter("SandboxCreateV2", &request, true)?;
        let message = request.into_inner();
        let definition = message.definition.unwrap_or_default();
        let mut inner = self.shared.lock();
        if !inner.apps.values().any(|a| *a == message.app_id) {
            return Err(Status::not_found(format!(
                "App {} not found",
                message.app_id
            )));
        }
        let Some(commands) = inner.images.get(&definition.image_id).cloned() else {
            return Err(Status::failed_precondition(format!(
                "Image {} not found",
                definition.image_id
            )));
        };
        let mounted = mounts::files_of(&inner, &definition.mount_ids)?;
        let mut env = BTreeMap::new();
        for source in &message.secret_sources {
            if let Some(pb::secret_source::Source::Env(map)) = &source.source {
                env.extend(map.contents.clone());
            }
        }
        // The official client takes `sb-` and 22 letters or digits for a V1
        // sandbox (`_is_v1_sandbox_id`) and any other shape for V2.
        let id = random_id("sb-", 26).to_lowercase();
        let root = self.shared.dir.join(&id);
        std::fs::create_dir_all(root.join("tmp"))
            .and_then(|()| std::fs::create_dir_all(root.join("root")))
            .map_err(|e| Status::internal(e.to_string()))?;
        let workdirs = commands
            .iter()
            .filter_map(|c| c.strip_prefix("WORKDIR "))
            .map(str::to_owned)
            .chain(definition.workdir.clone());
        for dir in workdirs {
            if let Some(path) = host_path(&root, dir.trim()) {
                std::fs::create_dir_all(path).map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        if let Err(e) = mounts::place(&self.shared, &root, &mounted) {
            let _ = std::fs::remove_dir_all(&root);
            return Err(e);
        }
        let created_at = self.shared.created_at(&mut inner);
        let timeout = if definition.timeout_secs == 0 {
            300
        } else {
            definition.timeout_secs
        };
        let (finished, _) = watch::channel(false);
        let sandbox = Sandbox {
            id: id.clone(),
            task_id: format!("{}V", random_id("ta-", 21)),
            app_id: message.app_id.clone(),
            tags: tag_map(&message.tags),
            definition,
            env,
            sandbox_token: random_id("st-", 32),
            router_jwt: jwt(&id),
            root,
            created_at,
            end_at: Instant::now() + Duration::from_secs(u64::from(timeout)),
            result: None,
            execs: Default::default(),
            polls_left: self.shared.options.scheduling_polls,
            finished,
            tunnel_ports: BTreeMap::new(),
        };
        let mut sandbox = sandbox;
        for port in sandbox.declared_ports() {
            let local = super::tunnel::open(&self.shared, &id, port);
            sandbox.tunnel_ports.insert(port, local);
        }
        let scheduled = sandbox.polls_left == 0;
        let url = self.shared.router_url.lock().unwrap().clone();
        let response = pb::SandboxCreateV2Response {
            sandbox_id: id.clone(),
            tunnels: sandbox.tunnels(),
            // Not scheduled yet: the client asks for its task and router.
            task_id: if scheduled {
                sandbox.task_id.clone()
            } else {
                String::new()
            },
            metadata: Some(pb::SandboxHandleMetadata {
                result: None,
                app_id: message.app_id,
            }),
            command_router_access: scheduled.then(|| pb::CommandRouterAccess {
                jwt: sandbox.router_jwt.clone(),
                url,
            }),
            sandbox_token: sandbox.sandbox_token.clone(),
        };
        inner.sandboxes.insert(id.clone(), sandbox);
        inner.created.push(id);
        if inner.creates_to_lose > 0 {
            inner.creates_to_lose -= 1;
            return Err(Status::unavailable(
                "connection reset (injected: answer lost)",
            ));
        }
        Ok(Response::new(response))
    }

    async fn sandbox_get_command_router_access(
        &self,
        request: Request<pb::SandboxGetCommandRouterAccessRequest>,
    ) -> Answer<pb::SandboxGetCommandRouterAccessResponse> {
        self.enter("SandboxGetCommandRouterAccess", &request, true)?;
        use pb::sandbox_get_command_router_access_request::Target;
        let id = match request.into_inner().target {
            Some(Target::SandboxId(id)) => id,
            Some(Target::TaskId(task)) => self
                .shared
                .lock()
                .sandboxes
                .values()
                .find(|s| s.task_id == task)
                .map(|s| s.id.clone())
                .unwrap_or(task),
            None => return Err(Status::invalid_argument("no target")),
        };
        let url = self.shared.router_url.lock().unwrap().clone();
        let jwt = self.with(&id, |s| {
            if s.running() {
                Ok(s.router_jwt.clone())
            } else {
                Err(Status::failed_precondition(format!(
                    "Sandbox {id} has finished"
                )))
            }
        })??;
        Ok(Response::new(pb::SandboxGetCommandRouterAccessResponse {
            jwt,
            url,
            worker_ipv4_address: "127.0.0.1".into(),
        }))
    }

    async fn sandbox_get_task_id_v2(
        &self,
        request: Request<pb::SandboxGetTaskIdRequest>,
    ) -> Answer<pb::SandboxGetTaskIdResponse> {
        self.enter("SandboxGetTaskIdV2", &request, true)?;
        let id = request.into_inner().sandbox_id;
        self.with(&id, |s| {
            Response::new(match &s.result {
                None if s.polls_left > 0 => {
                    s.polls_left -= 1;
                    pb::SandboxGetTaskIdResponse::default()
                }
                None => pb::SandboxGetTaskIdResponse {
                    task_id: Some(s.task_id.clone()),
                    task_result: None,
                },
                Some(r) => pb::SandboxGetTaskIdResponse {
                    task_id: None,
                    task_result: Some(r.clone()),
                },
            })
        })
    }

    async fn sandbox_get_tunnels_v2(
        &self,
        request: Request<pb::SandboxGetTunnelsRequest>,
    ) -> Answer<pb::SandboxGetTunnelsResponse> {
        self.enter("SandboxGetTunnelsV2", &request, true)?;
        let id = request.into_inner().sandbox_id;
        self.with(&id, |s| {
            Response::new(pb::SandboxGetTunnelsResponse {
                result: Some(success()),
                tunnels: s.tunnels(),
            })
        })
    }

    async fn sandbox_list_v2(
        &self,
        request: Request<pb::SandboxListRequest>,
    ) -> Answer<pb::SandboxListResponse> {
        self.enter("SandboxListV2", &request, true)?;
        let message = request.into_inner();
        let wanted = tag_map(&message.tags);
        let inner = self.shared.lock();
        let mut found: Vec<&Sandbox> = inner
            .sandboxes
            .values()
            .filter(|s| message.app_id.is_empty() || s.app_id == message.app_id)
            .filter(|s| message.include_finished || s.running())
            .filter(|s| message.before_timestamp == 0.0 || s.created_at < message.before_timestamp)
            .filter(|s| wanted.iter().all(|(k, v)| s.tags.get(k) == Some(v)))
            .collect();
        found.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
        found.truncate(self.shared.options.page_size.max(1));
        let sandboxes = found
            .into_iter()
            .map(|s| pb::SandboxInfo {
                id: s.id.clone(),
                created_at: s.created_at,
                task_info: Some(pb::TaskInfo {
                    id: s.task_id.clone(),
                    started_at: s.created_at,
                    result: s.result.clone(),
                    sandbox_id: s.id.clone(),
                    ..Default::default()
                }),
                app_id: s.app_id.clone(),
                tags: tag_list(&s.tags),
                image_id: s.definition.image_id.clone(),
                timeout_secs: s.definition.timeout_secs,
                tunnels: s.tunnels(),
                metadata: Some(pb::SandboxHandleMetadata {
                    result: s.result.clone(),
                    app_id: s.app_id.clone(),
                }),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::SandboxListResponse { sandboxes }))
    }

    async fn sandbox_tags_get_v2(
        &self,
        request: Request<pb::SandboxTagsGetRequest>,
    ) -> Answer<pb::SandboxTagsGetResponse> {
        self.enter("SandboxTagsGetV2", &request, true)?;
        let id = request.into_inner().sandbox_id;
        self.with(&id, |s| {
            Response::new(pb::SandboxTagsGetResponse {
                tags: tag_list(&s.tags),
            })
        })
    }

    async fn sandbox_tags_set_v2(&self, request: Request<pb::SandboxTagsSetRequest>) -> Answer<()> {
        self.enter("SandboxTagsSetV2", &request, true)?;
        let message = request.into_inner();
        self.with(&message.sandbox_id, |s| {
            s.tags = tag_map(&message.tags);
            Response::new(())
        })
    }

    async fn sandbox_terminate_v2(
        &self,
        request: Request<pb::SandboxTerminateRequest>,
    ) -> Answer<pb::SandboxTerminateResponse> {
        self.enter("SandboxTerminateV2", &request, true)?;
        let id = request.into_inner().sandbox_id;
        let mut inner = self.shared.lock();
        let Some(existing) = inner.sandboxes.get(&id).map(|s| s.result.clone()) else {
            return Err(Status::not_found(format!("Sandbox {id} not found")));
        };
        finish(
            &mut inner,
            &id,
            pb::generic_result::GenericStatus::Terminated,
        );
        Ok(Response::new(pb::SandboxTerminateResponse {
            existing_result: existing,
        }))
    }

    async fn sandbox_wait_v2(
        &self,
        request: Request<pb::SandboxWaitRequest>,
    ) -> Answer<pb::SandboxWaitResponse> {
        self.enter("SandboxWaitV2", &request, true)?;
        let message = request.into_inner();
        let id = message.sandbox_id;
        let mut finished = self.with(&id, |s| s.finished.subscribe())?;
        let wait = Duration::from_secs_f32(message.timeout.clamp(0.0, 60.0));
        let _ = tokio::time::timeout(wait, finished.wait_for(|f| *f)).await;
        self.with(&id, |s| {
            Response::new(pb::SandboxWaitResponse {
                result: s.result.clone(),
                metadata: Some(pb::SandboxHandleMetadata {
                    result: s.result.clone(),
                    app_id: s.app_id.clone(),
                }),
            })
        })
    }
}
