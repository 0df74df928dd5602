//! A sandbox's command router (`modal.task_command_router.TaskCommandRouter`
//! at the URL the control plane names), called with
//! `authorization: Bearer {jwt}` as the official client does
//! (`modal/sandbox/_task_command_router_client.py`): `TaskExecStart`,
//! `TaskExecStdioRead` (a stream per file descriptor, resumed from a byte
//! offset), `TaskExecWait`, `TaskExecPoll` and `TaskExecStdinWrite`
//! (offset-addressed, so a retry never writes twice). A refused JWT is
//! fetched again once. What runs is the caller's.

use std::sync::Arc;

use tokio::sync::Mutex;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::Channel;
use tonic::Code;

use super::control::{Access, ModalApi};
use super::error::{ModalError, ModalErrorKind};
use super::proto::task_command_router as tcr;
use super::proto::task_command_router::task_command_router_client::TaskCommandRouterClient;
use super::rpc::{self, Rpc};

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// As a shell reports it: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// A sandbox's command router.
pub struct Router {
    api: Arc<ModalApi>,
    rpc: Rpc,
    access: Access,
    jwt: Mutex<String>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(api: Arc<ModalApi>, access: Access) -> Result<Self, ModalError> {
        let url = super::config::check_url(&access.router_url).map_err(|why| {
            ModalError::new(
                ModalErrorKind::Protocol,
                format!(
                    "Modal sandbox `{}`: command router URL `{}`: {why}",
                    access.sandbox_id, access.router_url
                ),
            )
        })?;
        let channel =
            rpc::channel(&url).map_err(|e| ModalError::new(ModalErrorKind::Protocol, e))?;
        let base = api.rpc();
        let rpc = Rpc {
            channel,
            metadata: Vec::new(),
            retry: base.retry,
            timeout: base.timeout,
            token_vars: base.token_vars.clone(),
            redactor: base.redactor.clone(),
        };
        let jwt = Mutex::new(access.jwt.clone());
        Ok(Router {
            api,
            rpc,
            access,
            jwt,
        })
    }

    pub fn sandbox_id(&self) -> &str {
        &self.access.sandbox_id
    }

    pub fn task_id(&self) -> &str {
        &self.access.task_id
    }

    pub fn api(&self) -> &Arc<ModalApi> {
        &self.api
    }

    async fn bearer(&self) -> Result<Vec<(AsciiMetadataKey, AsciiMetadataValue)>, ModalError> {
        let jwt = self.jwt.lock().await.clone();
        let value = rpc::metadata_value(&format!("Bearer {jwt}"), "the command router JWT")
            .map_err(|e| ModalError::new(ModalErrorKind::Protocol, e))?;
        Ok(vec![(
            AsciiMetadataKey::from_static("authorization"),
            value,
        )])
    }

    /// A new JWT from the control plane, after the router refused one.
    async fn refresh(&self, refused: &str) -> Result<(), ModalError> {
        let mut jwt = self.jwt.lock().await;
        if *jwt != refused {
            return Ok(());
        }
        let (_, fresh) = self
            .api
            .router_access(
                &self.access.sandbox_id,
                self.access.sandbox_token.as_deref(),
            )
            .await?;
        *jwt = fresh;
        Ok(())
    }

    /// A unary call with retries; one JWT refresh when refused.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        label: &str,
        message: &Req,
        call: F,
    ) -> Result<Resp, ModalError>
    where
        Req: Clone,
        F: Fn(TaskCommandRouterClient<Channel>, tonic::Request<Req>) -> Fut + Clone,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let used = self.jwt.lock().await.clone();
        let run = |extra: Vec<(AsciiMetadataKey, AsciiMetadataValue)>, call: F| async move {
            self.rpc
                .unary(label, message, &extra, |channel, request| {
                    call(TaskCommandRouterClient::new(channel), request)
                })
                .await
        };
        match run(self.bearer().await?, call.clone()).await {
            Err(e) if e.code == Some(Code::Unauthenticated) => {
                self.refresh(&used).await?;
                run(self.bearer().await?, call).await
            }
            other => other,
        }
    }

    /// Starts `args` as exec `exec_id`; the id makes a retried start one
    /// start.
    pub async fn start(&self, request: tcr::TaskExecStartRequest) -> Result<(), ModalError> {
        self.unary(
            "TaskCommandRouter/TaskExecStart",
            &request,
            |mut c, r| async move { c.task_exec_start(r).await },
        )
        .await
        .map(|_| ())
    }

    /// Output of one file descriptor from byte `offset`, as a stream; the
    /// caller resumes a broken one from where it got.
    pub async fn read(
        &self,
        exec_id: &str,
        stderr: bool,
        offset: u64,
    ) -> Result<tonic::Streaming<tcr::TaskExecStdioReadResponse>, ModalError> {
        let label = "TaskCommandRouter/TaskExecStdioRead";
        let fd = if stderr {
            tcr::TaskExecStdioFileDescriptor::Stderr
        } else {
            tcr::TaskExecStdioFileDescriptor::Stdout
        };
        let message = tcr::TaskExecStdioReadRequest {
            task_id: self.access.task_id.clone(),
            exec_id: exec_id.to_owned(),
            offset,
            file_descriptor: fd as i32,
        };
        let mut refreshed = false;
        loop {
            let used = self.jwt.lock().await.clone();
            let request = self.rpc.request(message.clone(), &self.bearer().await?);
            let mut client = TaskCommandRouterClient::new(self.rpc.channel.clone());
            match client.task_exec_stdio_read(request).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(s) if s.code() == Code::Unauthenticated && !refreshed => {
                    refreshed = true;
                    self.refresh(&used).await?;
                }
                Err(s) => return Err(self.rpc.error(label, &s)),
            }
        }
    }

    /// The error of a stream that broke.
    pub fn stream_error(&self, status: &tonic::Status) -> ModalError {
        self.rpc
            .error("TaskCommandRouter/TaskExecStdioRead", status)
    }

    /// Writes `data` at `offset` of the command's stdin; `eof` closes it.
    pub async fn write_stdin(
        &self,
        exec_id: &str,
        offset: u64,
        data: bytes::Bytes,
        eof: bool,
    ) -> Result<(), ModalError> {
        let request = tcr::TaskExecStdinWriteRequest {
            task_id: self.access.task_id.clone(),
            exec_id: exec_id.to_owned(),
            offset,
            data,
            eof,
        };
        self.unary(
            "TaskCommandRouter/TaskExecStdinWrite",
            &request,
            |mut c, r| async move { c.task_exec_stdin_write(r).await },
        )
        .await
        .map(|_| ())
    }

    /// How the command ended, once it has (`TaskExecWait`).
    pub async fn wait(&self, exec_id: &str) -> Result<ExitStatus, ModalError> {
        let request = tcr::TaskExecWaitRequest {
            task_id: self.access.task_id.clone(),
            exec_id: exec_id.to_owned(),
        };
        let label = "TaskCommandRouter/TaskExecWait";
        let response = self
            .unary(label, &request, |mut c, r| async move {
                c.task_exec_wait(r).await
            })
            .await?;
        use tcr::task_exec_wait_response::ExitStatus as Wire;
        match response.exit_status {
            Some(Wire::Code(c)) => Ok(ExitStatus::Code(c)),
            Some(Wire::Signal(s)) => Ok(ExitStatus::Signal(s)),
            None => Err(ModalError::protocol(
                label,
                "no exit status",
                &self.rpc.redactor,
            )),
        }
    }
}
