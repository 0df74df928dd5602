//! The confined sandbox of the local runtime, tried as a hostile model would:
//! each test drives `agentform run` with a scripted model whose tool calls
//! try one escape, then checks the outcome from outside the sandbox. Each
//! also holds a positive control, so that a sandbox that runs nothing at all
//! cannot pass.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A manifest with one scripted agent (the toolset and `custom` tools) whose
/// first turn makes `calls`, one session per entry of `sessions` (name,
/// extra YAML), and `extra` top-level YAML (e.g. `providers`).
fn manifest(calls: &[Value], environment: &str, extra: &str) -> String {
    manifest_with_sessions(calls, environment, extra, &["chat"])
}

fn manifest_with_sessions(
    calls: &[Value],
    environment: &str,
    extra: &str,
    sessions: &[&str],
) -> String {
    let turns = json!([{ "tool_use": calls }, { "text": "done" }]);
    let mut sessions_yaml = String::new();
    for name in sessions {
        sessions_yaml.push_str(&format!(
            "  {name}:\n    agent: bot\n    environment: box\n    tools:\n      lookup: {{ run: 'sleep 30' }}\n    steps:\n      - send: go\n        timeout: 60s\n"
        ));
    }
    format!(
        r#"version: 1
name: sandboxtest
providers:
  local:
    models:
      scripted:
        backend: scripted
        turns: {turns}
{extra}
environments:
  box:
{environment}
agents:
  bot:
    model: scripted
    system: test bot
    tools:
      - type: agent_toolset_20260401
      - type: custom
        name: lookup
        description: looks things up
        input_schema: {{ type: object }}
sessions:
{sessions_yaml}"#
    )
}

const OPEN: &str = "    config: { type: cloud }\n";

fn bash(command: &str) -> Value {
    json!({ "name": "bash", "input": { "command": command } })
}

/// Applies and runs `contents` with `env`, returning the test and the
/// `run` output.
fn run_manifest(contents: &str, env: &[(&str, &str)]) -> (Test, Output) {
    let mut t = Test::new();
    for (k, v) in env {
        t = t.env(k, v);
    }
    t.write("agentform.yaml", contents);
    t.run(&["apply", "--auto-approve"]).success();
    let out = t.run(&["run"]);
    (t, out)
}

#[test]
fn commands_never_see_agentforms_environment() {
    let canary = "canary-7c1e-NEVER-IN-A-SANDBOX";
    let calls = [
        bash("tr '\\0' '\\n' < /proc/$PPID/environ; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done; env"),
        bash("ps -eo pid,args 2>/dev/null || ls /proc"),
    ];
    let (t, out) = run_manifest(
        &manifest(&calls, OPEN, ""),
        &[("AGENTFORM_CANARY", canary), ("ANTHROPIC_API_KEY", canary)],
    );
    out.success();
    let results = tool_results(&t);
    assert_eq!(results.len(), 2, "{results:?}");
    // The control: the command ran and printed its own, fixed environment.
    assert!(results[0].0.contains("TERM=dumb"), "{}", results[0].0);
    assert!(results[0].0.contains("HOME="), "{}", results[0].0);
    assert!(!everything(&t, &[]).contains(canary), "the canary leaked");
}

#[test]
fn commands_see_only_their_workspace() {
    let t0 = Test::new();
    let outside = t0.path("outside.txt");
    std::fs::write(&outside, "precious").unwrap();
    let hostname = std::fs::read("/etc/hostname").unwrap_or_default();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let state = t0.path("state");
    let tmp_marker = format!("/tmp/agentform-sandbox-{}", std::process::id());
    let socket = t0.path("host.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let command = format!(
        "echo pwned > {o}; cat {o}; echo pwned > {s}/pwned; ls {s}; ls {home}; \
         echo pwned > /etc/hostname; cat /etc/shadow /etc/gshadow; ls \"$HOME/..\"; \
         echo private > {tmp_marker}; curl -s -m 5 --unix-socket {sock} http://x/; echo sock=$?; \
         echo mine > inside.txt && cat inside.txt",
        sock = socket.display(),
        o = outside.display(),
        s = state.display(),
    );
    let calls = [bash(&command), bash("find / -name 'secret-*' -not -path '/proc/*' 2>/dev/null; echo secret-$RANDOM > secret-$RANDOM")];
    let contents = manifest_with_sessions(&calls, OPEN, "", &["one", "two"]);
    t0.write("agentform.yaml", &contents);
    t0.run(&["apply", "--auto-approve"]).success();
    t0.run(&["run", "--concurrency", "1"]).success();
    let results = tool_results(&t0);
    assert_eq!(results.len(), 4, "{results:?}");
    // Control: the workspace is writable and readable.
    assert!(results[0].0.contains("mine"), "{results:?}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert!(!state.join("pwned").exists());
    assert_eq!(std::fs::read("/etc/hostname").unwrap_or_default(), hostname);
    let inside: Vec<_> = files_under(&state.join("workspaces/sessions"))
        .into_iter()
        .filter(|p| p.ends_with("inside.txt"))
        .collect();
    assert_eq!(inside.len(), 2, "each session wrote its own file");
    // The second session's search found no other session's secret.
    let second_find = &results[3].0;
    assert!(!second_find.contains("secret-"), "{second_find}");
    assert!(
        !results[0].0.contains("root:"),
        "/etc/shadow was readable: {}",
        results[0].0
    );
}

#[test]
fn namespaces_and_capabilities_are_out_of_reach() {
    let command = "nsenter --net=/proc/1/ns/net true; echo nsenter=$?; unshare -n true; echo unshare=$?; \
                   mount -t tmpfs none /tmp; echo mount=$?; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status";
    let (t, out) = run_manifest(&manifest(&[bash(command)], OPEN, ""), &[]);
    out.success();
    let results = tool_results(&t);
    let text = &results[0].0;
    for refused in ["nsenter=", "unshare=", "mount="] {
        let line = text
            .lines()
            .find(|l| l.starts_with(refused))
            .unwrap_or_else(|| panic!("{text}"));
        assert_ne!(line, format!("{refused}0"), "{text}");
    }
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
}

/// A one-request-at-a-time HTTP server counting its connections.
fn http_server(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (port, hits)
}

#[test]
fn limited_networking_reaches_only_the_allowed_hosts() {
    let (allowed, allowed_hits) = http_server("hello-from-the-allowed-host");
    let (denied, denied_hits) = http_server("must-never-be-seen");
    let command = format!(
        "curl -s -m 10 http://127.0.0.1:{allowed}/; echo; \
         curl -s -m 10 -o /dev/null -w 'status=%{{http_code}}\\n' http://localhost:{denied}/; \
         (echo x > /dev/tcp/127.0.0.1/{denied}) 2>&1 | head -1; echo direct=$?"
    );
    let environment = "    config:\n      type: cloud\n      networking: { type: limited, allowed_hosts: ['127.0.0.1'] }\n";
    let (t, out) = run_manifest(&manifest(&[bash(&command)], environment, ""), &[]);
    out.success();
    let text = &tool_results(&t)[0].0;
    assert!(text.contains("hello-from-the-allowed-host"), "{text}");
    assert!(text.contains("status=403"), "{text}");
    assert!(!text.contains("must-never-be-seen"), "{text}");
    assert!(
        text.contains(&format!(
            "[agentform: connection to localhost:{denied} refused"
        )),
        "the refusal is in the transcript: {text}"
    );
    assert!(allowed_hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(denied_hits.load(Ordering::SeqCst), 0, "{text}");
}

#[test]
fn limited_networking_without_hosts_has_no_network() {
    let (port, hits) = http_server("nope");
    let command =
        format!("curl -s -m 5 http://127.0.0.1:{port}/; echo curl=$?; echo ok > f && cat f");
    let environment = "    config:\n      type: cloud\n      networking: { type: limited }\n";
    let (t, out) = run_manifest(&manifest(&[bash(&command)], environment, ""), &[]);
    out.success();
    let text = &tool_results(&t)[0].0;
    assert!(text.contains("ok\n"), "{text}");
    assert!(!text.contains("curl=0"), "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn hard_links_and_symlinks_cannot_reach_outside() {
    let t0 = Test::new();
    let outside = t0.path("target.txt");
    std::fs::write(&outside, "unchanged").unwrap();
    let command = format!(
        "ln {o} hard 2>&1; echo ln=$?; ln -s {o} soft; cat soft; echo cat=$?",
        o = outside.display()
    );
    let calls = [
        bash(&command),
        json!({"name": "write", "input": {"file_path": "soft", "content": "overwritten"}}),
        json!({"name": "write", "input": {"file_path": "hard", "content": "overwritten"}}),
    ];
    t0.write("agentform.yaml", &manifest(&calls, OPEN, ""));
    t0.run(&["apply", "--auto-approve"]).success();
    t0.run(&["run"]).success();
    let results = tool_results(&t0);
    assert!(results[0].0.contains("ln="), "{results:?}");
    assert!(!results[0].0.contains("ln=0"), "{results:?}");
    assert!(!results[0].0.contains("cat=0"), "{results:?}");
    assert!(
        results[1].1,
        "writing through a symlink out is refused: {results:?}"
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "unchanged");
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// Waits for `done` to hold, up to `patience`; whether it did.
fn eventually(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < patience {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn nothing_a_command_starts_outlives_it() {
    let marker = format!("98{}", std::process::id());
    let command = format!(
        "setsid sleep {marker}1 > /dev/null 2>&1 & nohup sleep {marker}2 > /dev/null 2>&1 & (sleep {marker}3 &); echo started"
    );
    let (t, out) = run_manifest(&manifest(&[bash(&command)], OPEN, ""), &[]);
    out.success();
    assert!(tool_results(&t)[0].0.contains("started"));
    assert!(
        eventually(Duration::from_secs(10), || processes_with(&format!(
            "sleep {marker}"
        ))
        .is_empty()),
        "survivors: {:?}",
        processes_with(&format!("sleep {marker}"))
    );
}

#[test]
fn nothing_survives_agentform_being_killed() {
    let marker = format!("97{}", std::process::id());
    let command = format!("setsid sleep {marker} > /dev/null 2>&1 & touch started; sleep 300");
    let t = Test::new();
    t.write("agentform.yaml", &manifest(&[bash(&command)], OPEN, ""));
    t.run(&["apply", "--auto-approve"]).success();
    let mut child = t.command(&["run"]).spawn().unwrap();
    let sessions = t.path("state/workspaces/sessions");
    let started = eventually(Duration::from_secs(60), || {
        files_under(&sessions)
            .iter()
            .any(|p| p.ends_with("started"))
    });
    assert!(started, "the command never started");
    assert!(
        !processes_with(&format!("sleep {marker}")).is_empty(),
        "control: the sleeper runs"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || processes_with(&format!(
            "sleep {marker}"
        ))
        .is_empty()),
        "survivors: {:?}",
        processes_with(&format!("sleep {marker}"))
    );
}

#[test]
fn glob_bombs_fifos_and_large_files_are_tool_errors() {
    let calls = [
        json!({"name": "glob", "input": {"pattern": "{a,b}".repeat(26)}}),
        json!({"name": "glob", "input": {"pattern": "**/".repeat(30_000)}}),
        bash("mkfifo pipe && truncate -s 900M sparse && echo made"),
        json!({"name": "read", "input": {"file_path": "pipe"}}),
        json!({"name": "read", "input": {"file_path": "sparse", "view_range": [1, 1]}}),
        json!({"name": "grep", "input": {"pattern": "x"}}),
        json!({"name": "glob", "input": {"pattern": "*"}}),
    ];
    let (t, out) = run_manifest(&manifest(&calls, OPEN, ""), &[]);
    out.success();
    let results = tool_results(&t);
    assert_eq!(results.len(), 7, "{results:?}");
    // Answered (an error, or no match) rather than exploding.
    assert!(
        results[0].1 || results[0].0.starts_with("No files match"),
        "{results:?}"
    );
    assert!(results[1].1, "{results:?}");
    assert!(results[2].0.contains("made"), "{results:?}");
    assert!(
        results[3].1 && results[3].0.contains("not a regular file"),
        "{results:?}"
    );
    // The sparse file's first line is read without reading 3 GB.
    assert!(
        results[4].1 && results[4].0.contains("binary"),
        "{results:?}"
    );
    assert!(!results[5].0.contains("must"), "{results:?}");
    assert!(results[6].0.contains("sparse"), "control: {results:?}");
}

#[test]
fn a_handler_that_never_reads_its_input_meets_the_deadline() {
    let big = "x".repeat(200 * 1024);
    let calls = [json!({"name": "lookup", "input": {"blob": big}})];
    let t = Test::new();
    let marker = format!("6{}", std::process::id());
    let contents = manifest(&calls, OPEN, "")
        .replace("timeout: 60s", "timeout: 5s")
        .replace("sleep 30", &format!("sleep {marker}"));
    t.write("agentform.yaml", &contents);
    t.run(&["apply", "--auto-approve"]).success();
    let mut child = t
        .command(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A guard against a hang, not a speed target: the step's deadline is 5 s,
    // the handler would block for hours.
    let finished = eventually(Duration::from_secs(120), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !finished {
        let _ = child.kill();
        panic!("`run` did not honour the step's deadline");
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The handler's timeout and the step's are the same instant: either the
    // timeout became the tool's result, or the step failed at its deadline.
    let answered = files_under(&t.path("state/transcripts")).iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .contains("did not finish in time")
    });
    assert!(answered || text.contains("FAILED session.chat"), "{text}");
    assert!(
        eventually(Duration::from_secs(10), || processes_with(&format!(
            "sleep {marker}"
        ))
        .is_empty()),
        "the handler was not killed"
    );
}

#[test]
fn limits_hold_and_are_set_from_the_manifest() {
    let command = "ulimit -u; ulimit -v; ulimit -f; ulimit -t; \
                   python3 -c \"import os, time\nn = 0\ntry:\n    for i in range(100):\n        if os.fork() == 0:\n            time.sleep(3)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    print('fork refused after', n)\"; \
                   head -c 3000000 /dev/zero > big 2>&1; echo head=$?";
    let environment = "    config: { type: cloud }\n    limits: { memory: 512MiB, processes: 16, file_size: 1MiB, cpu_time: 30s }\n";
    let (t, out) = run_manifest(&manifest(&[bash(command)], environment, ""), &[]);
    out.success();
    let text = &tool_results(&t)[0].0;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..4], ["16", "524288", "1024", "30"], "{text}");
    let refused = lines
        .iter()
        .find_map(|l| l.strip_prefix("fork refused after "))
        .unwrap_or_else(|| panic!("the process limit did not hold: {text}"));
    assert!(refused.parse::<u32>().unwrap() < 16, "{text}");
    assert!(!text.contains("head=0"), "{text}");
    let big: Vec<_> = files_under(&t.path("state/workspaces"))
        .into_iter()
        .filter(|p| p.ends_with("big"))
        .collect();
    assert!(
        big.iter()
            .all(|p| std::fs::metadata(p).unwrap().len() <= 1 << 20),
        "{big:?}"
    );
}

#[test]
fn without_bubblewrap_commands_refuse_unless_the_manifest_opts_out() {
    let calls = [bash("echo ran-$((6*7))")];
    let (t, out) = run_manifest(
        &manifest(&calls, OPEN, ""),
        &[("AGENTFORM_BWRAP", "/nonexistent/bwrap")],
    );
    out.success();
    let results = tool_results(&t);
    assert!(results[0].1, "{results:?}");
    assert!(results[0].0.contains("bubblewrap"), "{results:?}");
    assert!(
        results[0].0.contains("providers.local.sandbox: none"),
        "{results:?}"
    );
    assert!(!results[0].0.contains("ran-42"), "{results:?}");

    let opt_out = "    sandbox: none\n";
    let contents =
        manifest(&calls, OPEN, "").replace("    models:\n", &format!("{opt_out}    models:\n"));
    let (t, out) = run_manifest(&contents, &[("AGENTFORM_BWRAP", "/nonexistent/bwrap")]);
    let out = out.success();
    assert!(
        out.stderr.contains("unconfined"),
        "a warning: {}",
        out.stderr
    );
    let results = tool_results(&t);
    assert!(results[0].0.contains("ran-42"), "{results:?}");
    let plan = t.run(&["plan"]).success();
    assert!(plan.stderr.contains("unconfined"), "{}", plan.stderr);
}

#[test]
fn the_workspace_path_is_the_same_inside() {
    let (t, out) = run_manifest(&manifest(&[bash("pwd; echo \"$HOME\"")], OPEN, ""), &[]);
    out.success();
    let text = &tool_results(&t)[0].0;
    let sessions = t.path("state/workspaces/sessions");
    let dir = std::fs::read_dir(&sessions)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let dir = dir.canonicalize().unwrap();
    let expected = format!("{}\n{}\n", dir.display(), dir.display());
    assert_eq!(text, &expected);
    let _ = Path::new(&expected);
}

#[test]
fn served_sessions_run_their_tools_in_the_same_sandbox() {
    let calls = [bash(
        "tr '\\0' ' ' < /proc/1/cmdline; echo; id -u; echo ok > f && cat f",
    )];
    let served = manifest(&calls, OPEN, "");
    let t = Test::new().env("ANTHROPIC_API_KEY", crate::serve::KEY);
    t.write("served.yaml", &served);
    let server = crate::serve::Server::start(&t.path("served.yaml"), &[]);
    let client = served
        .replacen("version: 1\n", "version: 1\nprovider: anthropic\n", 1)
        .replace(
            "providers:\n",
            &format!("providers:\n  anthropic:\n    base_url: {}\n    rate_limits: {{ environments_per_minute: unlimited, environments_concurrency: unlimited, creates_per_minute: unlimited, other_per_minute: unlimited }}\n", server.url),
        );
    t.write("agentform.yaml", &client);
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    let text = &tool_results(&t)[0].0;
    // Pid 1 of the command's PID namespace is bubblewrap's own.
    assert!(
        text.lines().next().unwrap_or_default().contains("bwrap"),
        "{text}"
    );
    let uid = text.lines().nth(1).unwrap_or_default();
    if is_root() {
        assert_eq!(uid, "65534", "{text}");
    }
    assert!(text.ends_with("ok\n"), "{text}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}
