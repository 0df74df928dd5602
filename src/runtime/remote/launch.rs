//! Bringing up agentform inside a fresh sandbox: its executable and the
//! serve manifest (model backends only) uploaded, `agentform serve`
//! started with the local confinement turned off on its command line (the
//! sandbox, one per session, is the boundary), its `listening on` line
//! awaited, and the port it took noted in a file beside it, so that later
//! commands reach it. The serve's output also goes to a log file beside
//! it: when the start's stream breaks before the line arrived (it may have
//! been lost with the stream), the line is looked for there, while the
//! serve runs, instead of failing the session. What the served API is used
//! for is the caller's.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::sandbox::{RemoteError, RemoteSandbox, Started};

/// The directory under the sandbox user's home that holds agentform.
pub const DIR: &str = ".agentform";
/// What `agentform serve` prints once it accepts connections.
pub const READY: &str = "listening on ";
/// The serve's API key, as `agentform serve` reads it.
pub const SERVE_KEY_ENV: &str = "AGENTFORM_SERVE_API_KEY";
const PORT_FILE: &str = "port";
/// The serve's output, kept beside it.
const LOG_FILE: &str = "serve.log";
/// The serve's process id, noted before it starts.
const PID_FILE: &str = "serve.pid";
/// How often the log is looked at after the start's stream broke.
const LOG_POLL: Duration = Duration::from_millis(200);
/// What the look at the log prints when the serve is not running.
const GONE: &str = "agentform-serve-gone";
const BINARY: &str = "agentform";
const MANIFEST: &str = "serve.yaml";

/// The executable a launch runs.
#[derive(Clone)]
pub enum Executable {
    /// Uploaded into the sandbox first.
    Upload(Bytes),
    /// Already at [`PLACED`], put there by the host.
    Placed,
}

/// Where a host that places the executable for every sandbox puts it,
/// under the sandbox user's home (not in [`DIR`] itself, which the serve
/// writes to, while a placed file may be on a read-only mount).
pub const PLACED: &str = ".agentform/bin/agentform";

/// Everything a launch needs besides the sandbox.
pub struct Launch<'a> {
    pub executable: Executable,
    /// The serve manifest's text.
    pub manifest: &'a str,
    /// The serve's environment: its API key and the model keys.
    pub envs: BTreeMap<String, String>,
    /// How long the serve may take to say it listens.
    pub deadline: Duration,
}

fn path(sandbox: &dyn RemoteSandbox, name: &str) -> String {
    format!("{}/{DIR}/{name}", sandbox.home().trim_end_matches('/'))
}

/// The serve's command line, listening on `port` (0: any), running the
/// uploaded executable or the one [placed](PLACED). `--no-confinement` is
/// the one place the local confinement is turned off, and it says so.
pub fn command(port: u16, placed: bool) -> String {
    // A placed executable may sit on a read-only mount: not chmod-ed.
    let (prepare, run) = match placed {
        false => (format!("chmod 700 {BINARY} && "), format!("./{BINARY}")),
        true => (String::new(), format!("\"$HOME/{PLACED}\"")),
    };
    format!(
        "cd \"$HOME/{DIR}\" && {prepare}echo $$ > {PID_FILE} && \
         exec > >(tee -a {LOG_FILE}) 2>&1 && exec {run} --file {MANIFEST} \
         serve --no-confinement --listen 0.0.0.0:{port} --allow-remote --data data"
    )
}

/// Uploads and starts the serve; the port it listens on.
pub async fn launch(sandbox: &dyn RemoteSandbox, launch: Launch<'_>) -> Result<u16, RemoteError> {
    let began = std::time::Instant::now();
    let placed = match launch.executable {
        Executable::Upload(binary) => {
            sandbox.write_file(&path(sandbox, BINARY), binary).await?;
            false
        }
        Executable::Placed => true,
    };
    sandbox
        .write_file(
            &path(sandbox, MANIFEST),
            Bytes::copy_from_slice(launch.manifest.as_bytes()),
        )
        .await?;
    let uploaded = began.elapsed();
    let started = sandbox
        .start(
            &command(sandbox.serve_port(), placed),
            &launch.envs,
            READY,
            launch.deadline,
        )
        .await?;
    let line = match started {
        Started::Ready(line) => line,
        Started::Ended(out) => {
            let tail: String = out
                .output
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n");
            return Err(RemoteError::failed(format!(
                "agentform serve in sandbox `{}` ended before it listened (exit code {:?}{})\n{tail}",
                sandbox.id(),
                out.exit_code,
                if out.timed_out { ", timed out" } else { "" },
            )));
        }
        Started::Unknown(why) => {
            tracing::info!(sandbox = sandbox.id(), %why, "the serve's start stream broke; reading its log");
            ready_in_log(sandbox, launch.deadline).await.map_err(|e| {
                RemoteError::failed(format!(
                    "lost the output of agentform serve in sandbox `{}` before it listened ({why}), \
                     and its log did not say it listens: {}",
                    sandbox.id(),
                    e.message
                ))
            })?
        }
    };
    let ready = began.elapsed();
    let port = port_of(&line).ok_or_else(|| {
        RemoteError::failed(format!(
            "agentform serve in sandbox `{}` said `{line}`, which names no port",
            sandbox.id()
        ))
    })?;
    sandbox
        .write_file(&path(sandbox, PORT_FILE), Bytes::from(port.to_string()))
        .await?;
    let ms = |d: Duration| d.as_millis() as u64;
    tracing::debug!(
        sandbox = sandbox.id(),
        upload_ms = ms(uploaded),
        ready_ms = ms(ready - uploaded),
        port_file_ms = ms(began.elapsed() - ready),
        "serve launch phases"
    );
    Ok(port)
}

/// The serve's ready line, from its log, once it is there; an error when
/// the serve is gone or the deadline passes first.
async fn ready_in_log(
    sandbox: &dyn RemoteSandbox,
    deadline: Duration,
) -> Result<String, RemoteError> {
    let look = format!(
        "cd \"$HOME/{DIR}\" && grep -m1 '^{READY}' {LOG_FILE} || \
         {{ kill -0 \"$(cat {PID_FILE})\" 2>/dev/null || echo {GONE}; }}"
    );
    let ends = tokio::time::Instant::now() + deadline;
    loop {
        let out = sandbox.run(&look, Duration::from_secs(30)).await?;
        let said = out.output.trim();
        if let Some(line) = said.lines().find(|l| l.starts_with(READY)) {
            return Ok(line.to_owned());
        }
        if said.contains(GONE) {
            return Err(RemoteError::failed("the serve is not running"));
        }
        if tokio::time::Instant::now() + LOG_POLL > ends {
            return Err(RemoteError::failed(format!("not within {deadline:?}")));
        }
        tokio::time::sleep(LOG_POLL).await;
    }
}

/// The port the serve in `sandbox` listens on, as its launch noted it.
pub async fn port(sandbox: &dyn RemoteSandbox) -> Result<u16, RemoteError> {
    let raw = sandbox
        .read_file(&path(sandbox, PORT_FILE), 64)
        .await?
        .ok_or_else(|| {
            RemoteError::failed(format!(
                "sandbox `{}` runs no agentform serve (its port file is missing)",
                sandbox.id()
            ))
        })?;
    String::from_utf8_lossy(&raw)
        .trim()
        .parse()
        .map_err(|_| RemoteError::failed(format!("sandbox `{}`: a broken port file", sandbox.id())))
}

/// `listening on http://0.0.0.0:43121` → 43121.
fn port_of(line: &str) -> Option<u16> {
    line.trim_end()
        .rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_the_ready_line() {
        assert_eq!(port_of("listening on http://0.0.0.0:43121"), Some(43121));
        assert_eq!(port_of("listening on http://[::]:8/"), Some(8));
        assert_eq!(port_of("listening on soon"), None);
        assert_eq!(port_of("listening on http://0.0.0.0:0"), None);
    }

    #[test]
    fn the_command_turns_the_confinement_off_explicitly() {
        let c = command(0, false);
        assert!(command(8000, true).contains("--listen 0.0.0.0:8000 "));
        assert!(c.contains("serve --no-confinement"), "{c}");
        assert!(!c.contains("KEY"), "no secret on the command line: {c}");
    }

    #[test]
    fn a_placed_executable_runs_from_its_place_unchanged() {
        let c = command(8000, true);
        assert!(
            c.contains(r#"exec "$HOME/.agentform/bin/agentform" --file serve.yaml serve"#),
            "{c}"
        );
        assert!(!c.contains("chmod"), "a mount may be read-only: {c}");
        assert!(command(8000, false).contains("chmod 700 agentform && echo"));
    }
}
