//! The `bash` tool: one command in the sandbox, its output and exit status
//! as a tool result. It must not launch anything itself; the sandbox runs
//! the command.

use std::time::Duration;

use serde_json::{json, Value};

use super::{optional_bool, optional_str, type_error, Input, ToolResult};
use crate::sandbox::Sandbox;

pub(super) fn definition() -> Value {
    json!({
        "name": "bash",
        "description": "Runs a command with `bash -c` in the workspace directory and returns its \
            combined stdout and stderr (the last 100 KB). Each call starts a fresh shell: \
            variables and `cd` do not carry over. A non-zero exit code is reported as an error. \
            The command is killed when it runs past its time limit.",
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to run."},
                "restart": {"type": "boolean", "description": "Restart the shell. Every command already runs in a fresh shell, so this only acknowledges."},
                "timeout_ms": {"type": "integer", "minimum": 1, "description": "Time limit in milliseconds (capped by the session's limit)."}
            }
        }
    })
}

/// `timeout_ms`, capped by the session's `deadline`.
fn time_limit(input: &Input, deadline: Duration) -> Result<Duration, ToolResult> {
    match input.get("timeout_ms") {
        None | Some(Value::Null) => Ok(deadline),
        Some(v) => match v.as_f64() {
            Some(ms) if ms >= 1.0 && ms.fract() == 0.0 => {
                Ok(deadline.min(Duration::from_millis(ms as u64)))
            }
            _ => Err(type_error("timeout_ms", "a positive integer")),
        },
    }
}

pub(super) async fn bash(
    sandbox: &dyn Sandbox,
    input: &Input,
    deadline: Duration,
) -> Result<ToolResult, ToolResult> {
    let restart = optional_bool(input, "restart")?;
    let command = optional_str(input, "command")?;
    let limit = time_limit(input, deadline)?;
    let command = match command {
        Some(c) if !c.trim().is_empty() => c,
        _ if restart => {
            return Ok(ToolResult::ok(
                "Shell restarted (every command runs in a fresh shell).",
            ))
        }
        Some(_) => return Err(ToolResult::error("invalid input: `command` is empty")),
        None => {
            return Err(ToolResult::error(
                "invalid input: missing required field `command`",
            ))
        }
    };
    let out = sandbox.run(command, limit, &mut |_| {}).await?;
    let mut content = out.output;
    let mut note = |line: String| {
        if !content.is_empty() && !content.ends_with('\n') {
            content.push('\n');
        }
        content.push_str(&line);
    };
    for refusal in &out.refusals {
        note(format!("[agentform: {refusal}]"));
    }
    let is_error = if out.timed_out {
        note(format!(
            "[command timed out after {} ms and was killed]",
            limit.as_millis()
        ));
        true
    } else {
        match out.exit_code {
            Some(0) => false,
            Some(code) => {
                note(format!("exit code {code}"));
                true
            }
            None => {
                note("[command was terminated by a signal]".to_string());
                true
            }
        }
    };
    if content.is_empty() {
        content = "(no output)".to_string();
    }
    Ok(ToolResult { content, is_error })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::run;
    use super::super::test_support::{err, ok, workspace};

    #[tokio::test]
    async fn bash_runs_commands() {
        let (_d, ws) = workspace();
        assert_eq!(
            ok(
                &ws,
                "bash",
                json!({"command": "echo hello; echo there >&2"})
            )
            .await,
            "hello\nthere\n"
        );
        assert_eq!(
            ok(&ws, "bash", json!({"command": "true"})).await,
            "(no output)"
        );
        let out = err(&ws, "bash", json!({"command": "echo partial; exit 7"})).await;
        assert_eq!(out, "partial\nexit code 7");
        let out = err(&ws, "bash", json!({"command": "printf x; exit 1"})).await;
        assert_eq!(out, "x\nexit code 1");
        assert!(ok(&ws, "bash", json!({"restart": true}))
            .await
            .contains("restarted"));
        assert_eq!(
            ok(&ws, "bash", json!({"command": "echo a", "restart": true})).await,
            "a\n"
        );
        // Files written by bash are visible to the file tools, and back.
        ok(
            &ws,
            "bash",
            json!({"command": "mkdir -p d && echo from-bash > d/f"}),
        )
        .await;
        assert!(ok(&ws, "read", json!({"file_path": "d/f"}))
            .await
            .contains("from-bash"));
    }

    #[tokio::test]
    async fn bash_timeout_ms_caps_the_deadline() {
        let (_d, ws) = workspace();
        let started = std::time::Instant::now();
        let out = err(
            &ws,
            "bash",
            json!({"command": "echo before; sleep 30", "timeout_ms": 300}),
        )
        .await;
        assert!(out.starts_with("before\n"), "{out}");
        assert!(out.contains("timed out after 300 ms"), "{out}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // And the session deadline caps timeout_ms.
        let started = std::time::Instant::now();
        let r = run(
            &ws,
            "bash",
            &json!({"command": "sleep 30", "timeout_ms": 600000}),
            Duration::from_millis(300),
        )
        .await;
        assert!(
            r.is_error && r.content.contains("timed out"),
            "{}",
            r.content
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
