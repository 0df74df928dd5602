//! The egress bridge, run inside a sandbox with limited networking as the
//! hidden subcommand `__sandbox-bridge SOCKET ADDR -- PROGRAM ARGS…` of the
//! agentform binary: it listens on `ADDR` (loopback of the sandbox's own
//! network namespace), relays every connection to the egress proxy's Unix
//! socket, runs the program and exits with its status. It decides nothing:
//! the proxy outside admits or refuses.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::{TcpListener, UnixStream};
use tokio::process::Command;

/// Runs the bridge; `args` are what follows the subcommand's name.
pub fn main(args: &[OsString]) -> ExitCode {
    let Some((socket, listen, program)) = parse(args) else {
        return fail("usage: agentform __sandbox-bridge SOCKET ADDR -- PROGRAM [ARGS...]");
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    runtime.block_on(run(socket, listen, program))
}

fn parse(args: &[OsString]) -> Option<(PathBuf, String, Vec<OsString>)> {
    let [socket, listen, dashes, program @ ..] = args else {
        return None;
    };
    if dashes != "--" || program.is_empty() {
        return None;
    }
    Some((
        PathBuf::from(socket),
        listen.to_str()?.to_string(),
        program.to_vec(),
    ))
}

async fn run(socket: PathBuf, listen: String, program: Vec<OsString>) -> ExitCode {
    let listener = match TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {listen}: {e}")),
    };
    let mut child = match Command::new(&program[0]).args(&program[1..]).spawn() {
        Ok(child) => child,
        Err(e) => {
            return fail(&format!(
                "cannot run `{}`: {e}",
                program[0].to_string_lossy()
            ))
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => exit_code(status),
                    Err(e) => fail(&format!("waiting for the command: {e}")),
                };
            }
            accepted = listener.accept() => {
                if let Ok((mut inbound, _)) = accepted {
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = UnixStream::connect(&socket).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn fail(message: &str) -> ExitCode {
    // The bridge's stderr is the command's: this reaches the tool result.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("agentform sandbox bridge: {message}");
    }
    ExitCode::from(126)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_need_the_separator_and_a_program() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(parse(&args(&["/s", "127.0.0.1:1", "--", "bash", "-c", "x"])).is_some());
        assert!(parse(&args(&["/s", "127.0.0.1:1", "--"])).is_none());
        assert!(parse(&args(&["/s", "127.0.0.1:1", "bash"])).is_none());
        assert!(parse(&args(&[])).is_none());
    }
}
