//! The fake's task command router (`modal.task_command_router.TaskCommandRouter`,
//! `authorization: Bearer {jwt}` of the sandbox): commands run here in the
//! sandbox's directory (their own process group, a cleared environment
//! plus the sandbox's variables), stdout and stderr kept whole so that a
//! read resumes from any offset, stdin written at an offset (a repeated
//! write is no second write), the exit status waited for or polled. A
//! finished sandbox's task is `NOT_FOUND`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agentform::sandbox::modal::proto::client as pb;
use agentform::sandbox::modal::proto::task_command_router as tcr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::{host_path, Shared};

#[allow(clippy::all, dead_code)]
mod server {
    include!(concat!(
        env!("OUT_DIR"),
        "/modal-servers/modal.task_command_router.rs"
    ));
}

use server::task_command_router_server::{TaskCommandRouter, TaskCommandRouterServer};

type Stream<T> = tonic::codegen::BoxStream<T>;
type Answer<T> = Result<Response<T>, Status>;

pub fn service(shared: Arc<Shared>) -> TaskCommandRouterServer<Router> {
    // The official client writes stdin in pieces of up to 16 MiB.
    TaskCommandRouterServer::new(Router { shared }).max_decoding_message_size(32 << 20)
}

pub struct Router {
    shared: Arc<Shared>,
}

/// One output of a command, whole.
#[derive(Debug, Default)]
pub struct Pipe {
    pub data: Vec<u8>,
    pub eof: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

struct Stdin {
    pipe: Option<tokio::process::ChildStdin>,
    written: u64,
    closed: bool,
}

/// A command started by `TaskExecStart`.
pub struct Exec {
    pub pid: u32,
    pub args: Vec<String>,
    /// The declared port it listens for (see `tunnel.rs`).
    pub serves: Option<u32>,
    pub stdout: watch::Sender<Pipe>,
    pub stderr: watch::Sender<Pipe>,
    stdin: tokio::sync::Mutex<Stdin>,
    pub exit: watch::Sender<Option<Exit>>,
}

impl Exec {
    /// Everything the command started dies.
    pub fn kill_group(&self) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// What a call about a task's exec needs.
struct Target {
    exec: Option<Arc<Exec>>,
    finished: watch::Receiver<bool>,
}

impl Router {
    /// Logs, injects faults, checks the JWT; the task's exec (if any).
    fn enter<T>(
        &self,
        method: &str,
        request: &Request<T>,
        task_id: &str,
        exec_id: &str,
    ) -> Result<Target, Status> {
        self.shared.enter(&format!("TaskCommandRouter/{method}"))?;
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let inner = self.shared.lock();
        let Some(sandbox) = inner.sandboxes.values().find(|s| s.task_id == task_id) else {
            return Err(Status::not_found(format!("task {task_id} not found")));
        };
        if bearer != format!("Bearer {}", sandbox.router_jwt) {
            return Err(Status::unauthenticated("invalid or expired JWT"));
        }
        if !sandbox.running() {
            return Err(Status::not_found(format!("task {task_id} not found")));
        }
        Ok(Target {
            exec: sandbox.execs.get(exec_id).cloned(),
            finished: sandbox.finished.subscribe(),
        })
    }

    fn exec(target: &Target, exec_id: &str) -> Result<Arc<Exec>, Status> {
        target
            .exec
            .clone()
            .ok_or_else(|| Status::not_found(format!("exec {exec_id} not found")))
    }

    /// Spawns the command of `message` in the sandbox of its task.
    fn spawn(&self, message: &tcr::TaskExecStartRequest) -> Result<(), Status> {
        let mut inner = self.shared.lock();
        let Some(sandbox) = inner
            .sandboxes
            .values_mut()
            .find(|s| s.task_id == message.task_id)
        else {
            return Err(Status::not_found("task not found"));
        };
        if sandbox.execs.contains_key(&message.exec_id) {
            return Ok(());
        }
        let (command_args, serves) =
            super::tunnel::rewrite(&message.command_args, &sandbox.declared_ports());
        let Some((program, args)) = command_args.split_first() else {
            return Err(Status::invalid_argument("command_args is empty"));
        };
        let workdir = message
            .workdir
            .clone()
            .or_else(|| sandbox.definition.workdir.clone())
            .unwrap_or_else(|| "/".to_owned());
        let cwd = host_path(&sandbox.root, &workdir)
            .filter(|p| p.is_dir())
            .ok_or_else(|| Status::invalid_argument(format!("workdir {workdir} does not exist")))?;
        let mut env: BTreeMap<String, String> = sandbox.env.clone();
        env.extend(message.env.clone());
        for source in &message.secret_sources {
            if let Some(pb::secret_source::Source::Env(map)) = &source.source {
                env.extend(map.contents.clone());
            }
        }
        let output = |pipe: bool| if pipe { Stdio::piped() } else { Stdio::null() };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", sandbox.root.join("root"))
            // The sandbox's own `/tmp`, as a container has.
            .env("TMPDIR", sandbox.root.join("tmp"))
            .env("LANG", "C.UTF-8")
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(output(
                message.stdout_config == tcr::TaskExecStdoutConfig::Pipe as i32,
            ))
            .stderr(output(
                message.stderr_config == tcr::TaskExecStderrConfig::Pipe as i32,
            ))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| Status::invalid_argument(format!("cannot run {program}: {e}")))?;
        let exec = Arc::new(Exec {
            pid: child.id().unwrap_or(0),
            args: message.command_args.clone(),
            serves,
            stdout: watch::channel(Pipe::default()).0,
            stderr: watch::channel(Pipe::default()).0,
            stdin: tokio::sync::Mutex::new(Stdin {
                pipe: child.stdin.take(),
                written: 0,
                closed: false,
            }),
            exit: watch::channel(None).0,
        });
        sandbox
            .execs
            .insert(message.exec_id.clone(), Arc::clone(&exec));
        drop(inner);
        let readers = [
            (child.stdout.take().map(boxed), Arc::clone(&exec), false),
            (child.stderr.take().map(boxed), Arc::clone(&exec), true),
        ];
        for (pipe, exec, is_err) in readers {
            tokio::spawn(async move {
                let target = if is_err { &exec.stderr } else { &exec.stdout };
                if let Some(mut pipe) = pipe {
                    let mut buf = vec![0u8; 8192];
                    while let Ok(n) = pipe.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        target.send_modify(|p| p.data.extend_from_slice(&buf[..n]));
                    }
                }
                target.send_modify(|p| p.eof = true);
            });
        }
        if let Some(secs) = message.timeout_secs.filter(|s| *s > 0) {
            let exec = Arc::clone(&exec);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
                exec.kill_group();
            });
        }
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            let exit = match child.wait().await {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, signal) => Exit::Signal(signal.unwrap_or(9)),
                },
                Err(_) => Exit::Signal(9),
            };
            exec.exit.send_replace(Some(exit));
        });
        Ok(())
    }
}

fn boxed(
    r: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    Box::new(r)
}

/// How a stream of one output goes on.
struct Reading {
    rx: watch::Receiver<Pipe>,
    offset: usize,
    shared: Arc<Shared>,
    cut_next: bool,
    done: bool,
    /// The sandbox finishing breaks the stream.
    finished: watch::Receiver<bool>,
}

async fn next_chunk(
    mut st: Reading,
) -> Option<(Result<tcr::TaskExecStdioReadResponse, Status>, Reading)> {
    if st.done {
        return None;
    }
    if st.cut_next {
        st.done = true;
        return Some((Err(Status::unavailable("stream cut (injected)")), st));
    }
    loop {
        let (chunk, eof) = {
            let pipe = st.rx.borrow_and_update();
            let rest = pipe.data.get(st.offset..).unwrap_or_default();
            (rest[..rest.len().min(64 * 1024)].to_vec(), pipe.eof)
        };
        if !chunk.is_empty() {
            st.offset += chunk.len();
            let mut inner = st.shared.lock();
            if inner.cuts_left > 0 {
                inner.cuts_left -= 1;
                inner.streams_cut += 1;
                st.cut_next = true;
            }
            drop(inner);
            return Some((Ok(tcr::TaskExecStdioReadResponse { data: chunk }), st));
        }
        if eof {
            return None;
        }
        let finished = tokio::select! {
            changed = st.rx.changed() => changed.is_err(),
            _ = st.finished.wait_for(|f| *f) => true,
        };
        if finished {
            st.done = true;
            return Some((Err(Status::unavailable("the task is gone")), st));
        }
    }
}

fn exit_of(exit: Option<Exit>) -> Option<tcr::task_exec_wait_response::ExitStatus> {
    use tcr::task_exec_wait_response::ExitStatus;
    exit.map(|e| match e {
        Exit::Code(c) => ExitStatus::Code(c),
        Exit::Signal(s) => ExitStatus::Signal(s),
    })
}

#[tonic::async_trait]
impl TaskCommandRouter for Router {
    async fn task_exec_start(
        &self,
        request: Request<tcr::TaskExecStartRequest>,
    ) -> Answer<tcr::TaskExecStartResponse> {
        let m = request.get_ref();
        self.enter("TaskExecStart", &request, &m.task_id, &m.exec_id)?;
        self.spawn(request.get_ref())?;
        Ok(Response::new(tcr::TaskExecStartResponse {}))
    }

    async fn task_exec_stdio_read(
        &self,
        request: Request<tcr::TaskExecStdioReadRequest>,
    ) -> Answer<Stream<tcr::TaskExecStdioReadResponse>> {
        let m = request.get_ref();
        let target = self.enter("TaskExecStdioRead", &request, &m.task_id, &m.exec_id)?;
        let exec = Self::exec(&target, &m.exec_id)?;
        let stderr = m.file_descriptor == tcr::TaskExecStdioFileDescriptor::Stderr as i32;
        let rx = if stderr {
            exec.stderr.subscribe()
        } else {
            exec.stdout.subscribe()
        };
        let state = Reading {
            finished: target.finished.clone(),
            rx,
            offset: usize::try_from(m.offset).unwrap_or(usize::MAX),
            shared: Arc::clone(&self.shared),
            cut_next: false,
            done: false,
        };
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            state, next_chunk,
        ))))
    }

    async fn task_exec_stdin_write(
        &self,
        request: Request<tcr::TaskExecStdinWriteRequest>,
    ) -> Answer<tcr::TaskExecStdinWriteResponse> {
        let m = request.get_ref();
        let target = self.enter("TaskExecStdinWrite", &request, &m.task_id, &m.exec_id)?;
        let exec = Self::exec(&target, &m.exec_id)?;
        let m = request.into_inner();
        let mut stdin = exec.stdin.lock().await;
        let end = m.offset + m.data.len() as u64;
        if m.offset > stdin.written {
            return Err(Status::out_of_range(format!(
                "offset {} is past the {} bytes written",
                m.offset, stdin.written
            )));
        }
        if end > stdin.written {
            if stdin.closed {
                return Err(Status::failed_precondition("stdin is closed"));
            }
            let skip = usize::try_from(stdin.written - m.offset).unwrap_or(0);
            if let Some(pipe) = stdin.pipe.as_mut() {
                // A command that stopped reading is no error of the writer.
                let _ = pipe.write_all(&m.data[skip..]).await;
            }
            stdin.written = end;
        }
        if m.eof {
            stdin.closed = true;
            if let Some(mut pipe) = stdin.pipe.take() {
                let _ = pipe.shutdown().await;
            }
        }
        Ok(Response::new(tcr::TaskExecStdinWriteResponse {}))
    }

    async fn task_exec_wait(
        &self,
        request: Request<tcr::TaskExecWaitRequest>,
    ) -> Answer<tcr::TaskExecWaitResponse> {
        let m = request.get_ref();
        let mut target = self.enter("TaskExecWait", &request, &m.task_id, &m.exec_id)?;
        let exec = Self::exec(&target, &m.exec_id)?;
        let mut exit = exec.exit.subscribe();
        tokio::select! {
            biased;
            _ = target.finished.wait_for(|f| *f) => {
                Err(Status::not_found(format!("task {} not found", m.task_id)))
            }
            status = exit.wait_for(Option::is_some) => match status {
                Ok(status) => Ok(Response::new(tcr::TaskExecWaitResponse {
                    exit_status: exit_of(*status),
                })),
                Err(_) => Err(Status::internal("exec lost")),
            },
        }
    }

    async fn task_exec_poll(
        &self,
        request: Request<tcr::TaskExecPollRequest>,
    ) -> Answer<tcr::TaskExecPollResponse> {
        let m = request.get_ref();
        let target = self.enter("TaskExecPoll", &request, &m.task_id, &m.exec_id)?;
        let exec = Self::exec(&target, &m.exec_id)?;
        use tcr::task_exec_poll_response::ExitStatus;
        let exit_status = (*exec.exit.borrow()).map(|e| match e {
            Exit::Code(c) => ExitStatus::Code(c),
            Exit::Signal(s) => ExitStatus::Signal(s),
        });
        Ok(Response::new(tcr::TaskExecPollResponse { exit_status }))
    }
}
