//! The fake's processes: a command run here (its own process group, a
//! cleared environment with `HOME` inside the sandbox's directory), its
//! output and end broadcast to every stream attached to it, as envd's
//! `Start` and `Connect` see them.

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

/// What a stream attached to a process sees.
#[derive(Debug, Clone)]
pub enum Ev {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    End {
        code: i32,
        exited: bool,
        status: String,
    },
}

/// A running process.
pub struct Proc {
    pub pid: u32,
    pub tag: Option<String>,
    pub command: String,
    pub events: broadcast::Sender<Ev>,
    /// The last event, once it ended (for late subscribers).
    pub ended: Mutex<Option<Ev>>,
}

impl Proc {
    /// `SendSignal`: the process alone, as envd signals it.
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// The sandbox dies: everything the command started dies too.
    pub fn kill_group(&self) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The spawned process and its event channel, before any stream reads it.
pub struct Spawned {
    pub proc: std::sync::Arc<Proc>,
    pub events: broadcast::Receiver<Ev>,
}

/// Starts `cmd args` in `cwd` with `envs`; `on_end` runs when it ended.
pub fn spawn(
    cmd: &str,
    args: &[String],
    envs: &[(String, String)],
    cwd: &Path,
    home: &Path,
    tag: Option<String>,
    on_end: impl FnOnce(u32) + Send + 'static,
) -> std::io::Result<Spawned> {
    let mut command = tokio::process::Command::new(cmd);
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("USER", "user")
        .env("LANG", "C.UTF-8")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pid = child.id().unwrap_or(0);
    let (sender, receiver) = broadcast::channel(4096);
    let proc = std::sync::Arc::new(Proc {
        pid,
        tag,
        command: args.join(" "),
        events: sender.clone(),
        ended: Mutex::new(None),
    });
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let reader = std::sync::Arc::clone(&proc);
    tokio::spawn(async move {
        let mut out_buf = vec![0u8; 8192];
        let mut err_buf = vec![0u8; 8192];
        let mut status = None;
        let mut grace: Option<tokio::time::Instant> = None;
        while stdout.is_some() || stderr.is_some() || status.is_none() {
            let until =
                grace.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400));
            tokio::select! {
                _ = tokio::time::sleep_until(until), if grace.is_some() => break,
                n = read(&mut stdout, &mut out_buf), if stdout.is_some() => match n {
                    Some(n) => { let _ = sender.send(Ev::Stdout(out_buf[..n].to_vec())); }
                    None => stdout = None,
                },
                n = read(&mut stderr, &mut err_buf), if stderr.is_some() => match n {
                    Some(n) => { let _ = sender.send(Ev::Stderr(err_buf[..n].to_vec())); }
                    None => stderr = None,
                },
                s = child.wait(), if status.is_none() => {
                    status = Some(s);
                    grace = Some(tokio::time::Instant::now() + Duration::from_millis(300));
                }
            }
        }
        let end = match status {
            Some(Ok(s)) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(code), _) => Ev::End {
                        code,
                        exited: true,
                        status: format!("exit status {code}"),
                    },
                    (None, Some(9)) => Ev::End {
                        code: -1,
                        exited: false,
                        status: "signal: killed".into(),
                    },
                    (None, sig) => Ev::End {
                        code: -1,
                        exited: false,
                        status: format!("signal: {}", sig.unwrap_or(0)),
                    },
                }
            }
            _ => Ev::End {
                code: -1,
                exited: false,
                status: "unknown".into(),
            },
        };
        *reader.ended.lock().unwrap() = Some(end.clone());
        on_end(pid);
        let _ = sender.send(end);
    });
    Ok(Spawned {
        proc,
        events: receiver,
    })
}

async fn read<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> Option<usize> {
    match pipe {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}
