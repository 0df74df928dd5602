//! The local runtime's tools on Modal (`providers.local.sandbox: modal`),
//! against the fake Modal of `fake_modal/`: the official client's
//! lifecycle keeps the fake honest, then `agentform` itself applies, runs
//! and destroys through it — files land in the sandbox, the environment
//! becomes an image built once at apply, deadlines kill, faults converge without duplicate
//! sandboxes, a cut output stream resumes by offset, and no token or JWT
//! appears anywhere.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentform::sandbox::modal::proto::client as pb;
use serde_json::{json, Value};

use crate::common::*;
use crate::fake_modal::{FakeModal, Options};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// The official client against the fake

#[test]
fn the_official_client_runs_its_lifecycle_against_the_fake() {
    if std::env::var("AGENTFORM_SDK_TEST").as_deref() == Ok("skip") {
        eprintln!(
            "\n!!!!!!!! SKIPPED: Modal client lifecycle (AGENTFORM_SDK_TEST=skip) !!!!!!!!\n"
        );
        return;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("modal-sdk-venv");
    let setup = Command::new("bash")
        .arg(repo().join("scripts/sdk-venv.sh"))
        .arg(&venv)
        .arg("modal==1.6.4")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/sdk-venv.sh");
    if setup.status.code() == Some(3) {
        eprintln!(
            "\n!!!!!!!! SKIPPED: the Modal client lifecycle needs python3 (with venv) !!!!!!!!\n{}",
            String::from_utf8_lossy(&setup.stderr)
        );
        return;
    }
    assert!(
        setup.status.success(),
        "scripts/sdk-venv.sh {} modal==1.6.4 failed ({}); set AGENTFORM_SDK_TEST=skip to skip this test offline\n--- stderr\n{}",
        venv.display(),
        setup.status,
        String::from_utf8_lossy(&setup.stderr)
    );
    // Scheduled late, as a busy Modal does: the client polls for the task.
    let fake = FakeModal::start(Options {
        scheduling_polls: 1,
        ..Options::default()
    });
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/sdk/modal_lifecycle.py"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("MODAL_CONFIG_PATH", home.path().join(".modal.toml"))
        .env("MODAL_SERVER_URL", &fake.server_url)
        .env("MODAL_TOKEN_ID", fake.token_id())
        .env("MODAL_TOKEN_SECRET", fake.token_secret())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run modal_lifecycle.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "the official Modal client disagrees with the fake ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- fake log\n{:#?}",
        out.status,
        fake.log()
    );
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
    assert!(
        fake.alive().is_empty(),
        "the lifecycle terminated its sandbox"
    );
    assert_eq!(fake.created().len(), 1, "{:?}", fake.created());
    // Its two local files came as two mounts, the big one through the blob store.
    let definition = fake.definition(&fake.created()[0]).unwrap();
    assert_eq!(definition.mount_ids.len(), 2, "{definition:?}");
    let mounted: Vec<String> = definition
        .mount_ids
        .iter()
        .flat_map(|id| fake.mount_files(id).unwrap())
        .map(|f| f.filename)
        .collect();
    assert_eq!(mounted, ["/data/small.txt", "/data/big.bin"]);
    assert!(
        fake.blob_bytes_received() >= 5 << 20,
        "{}",
        fake.blob_bytes_received()
    );
    assert_eq!(fake.calls_of("Blobs/Put"), 1);
    for method in [
        "ModalClient/MountBatchedCheckExistence",
        "ModalClient/BlobCreate",
        "ModalClient/MountPutFile",
        "ModalClient/MountGetOrCreate",
        "ModalClient/SandboxCreateV2",
        "ModalClient/SandboxGetTaskIdV2",
        "ModalClient/SandboxGetCommandRouterAccess",
        "TaskCommandRouter/TaskExecStart",
        "TaskCommandRouter/TaskExecStdioRead",
        "TaskCommandRouter/TaskExecStdinWrite",
        "ModalClient/SandboxListV2",
        "ModalClient/SandboxTerminateV2",
    ] {
        assert!(fake.calls_of(method) > 0, "{method} was called");
    }
}

// ---------------------------------------------------------------------------------------------
// agentform against the fake

fn bash(command: &str) -> Value {
    json!({ "name": "bash", "input": { "command": command } })
}

const OPEN: &str = "    config: { type: cloud }\n";

/// One scripted agent whose first turn makes `calls`, one session `chat`
/// in environment `box`, its tools on the fake Modal.
fn manifest(fake: &FakeModal, calls: &[Value], environment: &str) -> String {
    let turns = json!([{ "tool_use": calls }, { "text": "done" }]);
    format!(
        r#"version: 1
name: modaltest
providers:
  local:
    sandbox: modal
    models:
      scripted:
        backend: scripted
        turns: {turns}
  modal:
    server_url: {url}
    app: agentform-test
    timeout: 10m
environments:
  box:
{environment}
agents:
  bot:
    model: scripted
    system: test bot
    tools:
      - type: agent_toolset_20260401
sessions:
  chat:
    agent: bot
    environment: box
    steps:
      - send: go
        timeout: 120s
"#,
        url = fake.server_url,
    )
}

fn test_with(fake: &FakeModal, contents: &str) -> Test {
    let t = Test::new()
        .env("MODAL_TOKEN_ID", fake.token_id())
        .env("MODAL_TOKEN_SECRET", fake.token_secret());
    t.write("agentform.yaml", contents);
    t
}

/// No token, auth token, sandbox token or router JWT in `all`.
#[track_caller]
fn assert_no_secret(fake: &FakeModal, all: &str) {
    assert!(!all.contains(fake.token_id()), "the token id leaked");
    assert!(
        !all.contains(fake.token_secret()),
        "the token secret leaked"
    );
    let handed_out = fake.handed_out();
    assert!(!handed_out.is_empty());
    for secret in handed_out {
        assert!(!all.contains(&secret), "a token or JWT leaked");
        // A JWT's signature alone is as secret as the whole.
        if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() >= 20) {
            assert!(!all.contains(signature), "a JWT signature leaked");
        }
    }
}

/// The only sandbox running.
#[track_caller]
fn only_sandbox(fake: &FakeModal) -> String {
    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "{alive:?}");
    alive[0].clone()
}

/// Continues the session with new calls; the tool results of the new
/// transcript.
fn test_again(t: &Test, fake: &FakeModal, calls: &[Value], environment: &str) -> String {
    let before = files_under(&t.path("state/transcripts")).len();
    t.write("agentform.yaml", &manifest(fake, calls, environment));
    t.run(&["run", "--continue"]).success();
    let mut files = files_under(&t.path("state/transcripts"));
    files.sort();
    assert!(files.len() > before);
    let mut text = String::new();
    for line in std::fs::read_to_string(files.last().unwrap())
        .unwrap()
        .lines()
    {
        let line: Value = serde_json::from_str(line).unwrap();
        if line["event"]["type"] == "agent.tool_result" {
            text.push_str(&line["event"].to_string());
        }
    }
    text
}

#[test]
fn a_session_runs_its_tools_in_a_modal_sandbox_and_destroy_terminates_it() {
    // Scheduled late: the create answers no task, which is polled for.
    let fake = FakeModal::start(Options {
        scheduling_polls: 1,
        ..Options::default()
    });
    let environment = "    config:\n      type: cloud\n      packages: { pip: [fakepkg] }\n      \
                       networking: { type: limited, allowed_hosts: [api.example.com], allow_package_managers: true }\n";
    let calls = [
        bash("echo from-bash > hello.txt && cat hello.txt && pwd"),
        json!({"name": "write", "input": {"file_path": "notes/todo.md", "content": "from the write tool"}}),
        json!({"name": "read", "input": {"file_path": "hello.txt"}}),
        json!({"name": "glob", "input": {"pattern": "**/*"}}),
        json!({"name": "read", "input": {"file_path": "../../../etc/passwd"}}),
        bash("echo to-stderr >&2; exit 3"),
    ];
    let t = test_with(&fake, &manifest(&fake, &calls, environment));
    let apply = t.run(&["apply", "--auto-approve"]).success();
    assert!(fake.created().is_empty(), "apply alone opens no sandbox");
    let run = t.run(&["run"]).success();
    let results = tool_results(&t);
    assert_eq!(results.len(), 6, "{results:?}");
    let id = only_sandbox(&fake);
    assert!(
        id.starts_with("sb-") && id.len() == 29,
        "the V2 shape: {id}"
    );
    assert!(fake.calls_of("ModalClient/SandboxGetTaskIdV2") >= 2);
    let workspace = fake.workspace(&id);

    // bash and the file tools work in the sandbox's workspace.
    assert!(!results[0].1, "{results:?}");
    assert!(results[0].0.starts_with("from-bash\n"), "{results:?}");
    assert!(
        results[0].0.trim_end().ends_with("/workspace"),
        "cwd: {results:?}"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("hello.txt")).unwrap(),
        "from-bash\n"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("notes/todo.md")).unwrap(),
        "from the write tool"
    );
    assert!(results[2].0.contains("from-bash"), "{results:?}");
    assert!(
        results[3].0.contains("hello.txt") && results[3].0.contains("notes/todo.md"),
        "{results:?}"
    );
    assert!(results[4].1, "{results:?}");
    assert!(
        results[4].0.contains("outside the workspace"),
        "{results:?}"
    );
    assert!(results[5].0.contains("to-stderr"), "{results:?}");
    assert!(results[5].0.contains('3'), "the exit code: {results:?}");

    // The environment is an image of Dockerfile commands.
    let commands = fake.image_commands(&id);
    assert!(
        commands[0].starts_with("FROM python:3.12-slim-"),
        "{commands:?}"
    );
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("RUN python -m pip install") && c.contains("'fakepkg'")),
        "{commands:?}"
    );
    assert!(
        commands.contains(&"WORKDIR /workspace".to_owned()),
        "{commands:?}"
    );

    // Tagged for adoption; limited networking as an allow-list; the timeout
    // fixed at creation.
    let session_id = remote_id(&t, "session.chat");
    let tags = fake.tags(&id);
    assert_eq!(tags["agentform.session"], session_id);
    assert_eq!(tags["agentform.manifest"], "modaltest");
    assert_eq!(tags["agentform.address"], "session.chat");
    assert_eq!(tags["agentform.environment"], "environment.box");
    let definition = fake.definition(&id).unwrap();
    assert_eq!(definition.timeout_secs, 600);
    assert_eq!(definition.workdir.as_deref(), Some("/workspace"));
    let network = definition.network_access.unwrap();
    assert_eq!(
        network.network_access_type,
        pb::network_access::NetworkAccessType::Allowlist as i32
    );
    assert!(
        network
            .allowed_domains
            .contains(&"api.example.com".to_owned())
            && network.allowed_domains.contains(&"pypi.org".to_owned()),
        "{:?}",
        network.allowed_domains
    );

    // Continuing the session in a new process adopts its sandbox (found by
    // its tag, as after a crash): the workspace is still there.
    let again = test_again(&t, &fake, &[bash("cat hello.txt")], environment);
    assert!(again.contains("from-bash"), "{again}");
    assert_eq!(fake.created().len(), 1, "adopted, not created again");

    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(
        fake.alive().is_empty(),
        "destroy leaves no sandbox: {:?}",
        fake.alive()
    );
    assert_no_secret(&fake, &everything(&t, &[&apply, &run, &destroy]));
}

#[test]
fn faults_a_lost_create_and_a_cut_stream_converge_without_a_duplicate_sandbox() {
    let fake = FakeModal::start(Options {
        fault_percent: 30,
        lose_creates: 1,
        cut_streams: 1,
        page_size: 1,
        scheduling_polls: 2,
        ..Options::default()
    });
    let calls = [
        bash("echo one; sleep 1; echo two"),
        json!({"name": "write", "input": {"file_path": "f.txt", "content": "written"}}),
        json!({"name": "read", "input": {"file_path": "f.txt"}}),
    ];
    // Debug logs too: retries and adoption are logged, never a secret.
    let t = test_with(&fake, &manifest(&fake, &calls, OPEN)).env("RUST_LOG", "debug");
    t.run(&["apply", "--auto-approve"]).success();
    let run = t.run(&["run"]).success();
    assert!(run.stderr.contains("retrying"), "{}", run.stderr);
    let results = tool_results(&t);
    // Both kinds: `UNAVAILABLE` and `RESOURCE_EXHAUSTED` alternate.
    assert!(fake.faults_injected() >= 2, "{}", fake.faults_injected());
    assert_eq!(fake.streams_cut(), 1, "{:?}", fake.log());
    // Resumed from the offset reached: nothing lost, nothing twice.
    assert_eq!(results[0], ("one\ntwo\n".to_owned(), false), "{results:?}");
    assert!(fake.calls_of("TaskCommandRouter/TaskExecStdioRead") >= 3);
    assert!(results[2].0.contains("written"), "{results:?}");
    // Created before it was scheduled: its task was polled for.
    assert!(fake.calls_of("ModalClient/SandboxGetTaskIdV2") >= 3);
    assert!(fake.calls_of("ModalClient/SandboxGetCommandRouterAccess") >= 1);
    assert_eq!(
        fake.created().len(),
        1,
        "the sandbox whose answer was lost was adopted: {:?}",
        fake.created()
    );
    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
    assert_no_secret(&fake, &everything(&t, &[&run, &destroy]));
}

#[test]
fn duplicates_left_by_a_crash_are_adopted_newest_first_and_the_rest_terminated() {
    let fake = FakeModal::start(Options {
        page_size: 1,
        ..Options::default()
    });
    let t = test_with(
        &fake,
        &manifest(&fake, &[bash("echo here > where.txt")], OPEN),
    );
    t.run(&["apply", "--auto-approve"]).success();
    let session = remote_id(&t, "session.chat");
    // Earlier attempts made two sandboxes for the session; another
    // session's sandbox is not this one's to touch.
    let older = fake.plant("agentform-test", &[("agentform.session", &session)]);
    let newer = fake.plant("agentform-test", &[("agentform.session", &session)]);
    let other = fake.plant("agentform-test", &[("agentform.session", "sesn_other")]);
    t.run(&["run", "--continue"]).success();
    let mut alive = fake.alive();
    alive.sort();
    let mut expected = vec![newer.clone(), other];
    expected.sort();
    assert_eq!(alive, expected, "the older duplicate was terminated");
    assert!(!alive.contains(&older));
    assert!(fake.workspace(&newer).join("where.txt").is_file());
    assert_eq!(fake.created().len(), 3, "nothing new was created");
    assert!(fake.calls_of("ModalClient/SandboxListV2") >= 2, "paged");
}

#[test]
fn archiving_a_session_terminates_its_sandbox() {
    let fake = FakeModal::start(Options::default());
    let t = test_with(
        &fake,
        &manifest(&fake, &[bash("echo here > where.txt")], OPEN),
    );
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    let first = only_sandbox(&fake);
    let first_session = remote_id(&t, "session.chat");
    assert_eq!(fake.tags(&first)["agentform.session"], first_session);
    // The next `run` archives that session (its sandbox is terminated) and
    // runs a fresh one in a new sandbox.
    t.run(&["run"]).success();
    let second = only_sandbox(&fake);
    assert_ne!(first, second, "archive terminated the first sandbox");
    assert_ne!(remote_id(&t, "session.chat"), first_session);
    assert_eq!(fake.created().len(), 2, "{:?}", fake.created());
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}

#[test]
fn a_deadline_kills_a_long_command_and_what_it_started() {
    let fake = FakeModal::start(Options::default());
    // `sleep` runs as bash's child: killing bash alone would leave it. The
    // pid makes the marker this run's alone, whatever else runs here.
    let seconds = format!("29.{:07}2", std::process::id());
    let calls = [
        json!({"name": "bash", "input": {"command": format!("echo begun; sleep {seconds}; echo never"), "timeout_ms": 1500}}),
        bash("echo after"),
    ];
    let t = test_with(&fake, &manifest(&fake, &calls, OPEN));
    t.run(&["apply", "--auto-approve"]).success();
    let started = Instant::now();
    t.run(&["run"]).success();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    let results = tool_results(&t);
    assert!(results[0].1, "{results:?}");
    assert!(results[0].0.contains("begun"), "{results:?}");
    assert!(
        results[0].0.contains("timed out after 1500 ms"),
        "{results:?}"
    );
    assert!(!results[0].0.contains("never"), "{results:?}");
    assert_eq!(
        count_processes_with(&seconds),
        0,
        "the command's child was killed too"
    );
    assert_eq!(results[1], ("after\n".to_owned(), false), "{results:?}");
}

#[test]
fn a_sandbox_terminated_mid_run_fails_clearly_and_the_next_call_gets_a_new_one() {
    let fake = FakeModal::start(Options::default());
    let marker = format!("sleep 20.{:07}3", std::process::id());
    let calls = [
        bash(&format!("echo started; {marker}; echo never")),
        bash("echo again > after.txt && cat after.txt"),
    ];
    let t = test_with(&fake, &manifest(&fake, &calls, OPEN));
    t.run(&["apply", "--auto-approve"]).success();
    let started = Instant::now();
    let terminated = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let id = {
                    let inner = fake.shared.lock();
                    inner
                        .sandboxes
                        .values()
                        .find(|s| {
                            s.running()
                                && s.execs
                                    .values()
                                    .any(|e| e.args.iter().any(|a| a.contains(&marker)))
                        })
                        .map(|s| s.id.clone())
                };
                if let Some(id) = id {
                    std::thread::sleep(Duration::from_millis(300));
                    assert!(fake.terminate(&id));
                    return Some(id);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        });
        t.run(&["run"]).success();
        killer.join().unwrap().expect("the command ran")
    });
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let results = tool_results(&t);
    assert!(results[0].1, "{results:?}");
    assert!(
        results[0]
            .0
            .contains(&format!("Modal sandbox `{terminated}` is gone")),
        "{results:?}"
    );
    assert!(!results[1].1, "{results:?}");
    assert!(
        results[1]
            .0
            .contains("was gone; this command runs in a new sandbox"),
        "{results:?}"
    );
    assert!(results[1].0.contains("again\n"), "{results:?}");
    let replacement = only_sandbox(&fake);
    assert_ne!(replacement, terminated);
    assert_eq!(fake.created().len(), 2, "{:?}", fake.created());
    assert!(fake.workspace(&replacement).join("after.txt").is_file());
    assert_eq!(
        count_processes_with(&marker),
        0,
        "the terminated sandbox's commands died"
    );
}

/// The manifest of [`manifest`] with `n` sessions (`chat`, `chat2`, …) in
/// environment `box`.
fn manifest_with_sessions(
    fake: &FakeModal,
    calls: &[Value],
    environment: &str,
    n: usize,
) -> String {
    let mut contents = manifest(fake, calls, environment);
    for i in 2..=n {
        contents.push_str(&format!(
            "  chat{i}:\n    agent: bot\n    environment: box\n    steps:\n      - send: go\n        timeout: 120s\n"
        ));
    }
    contents
}

/// The image noted for each environment in the state's workspaces.
fn noted_images(t: &Test) -> Value {
    match std::fs::read_to_string(t.path("state/workspaces/modal-images.json")) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(_) => json!({}),
    }
}

#[test]
fn apply_builds_the_environments_image_once_and_sessions_start_from_it() {
    let fake = FakeModal::start(Options::default());
    let environment = "    config:\n      type: cloud\n      packages: { pip: [fakepkg] }\n";
    let calls = [bash("echo hi")];
    let t = test_with(
        &fake,
        &manifest_with_sessions(&fake, &calls, environment, 3),
    );
    let apply = t.run(&["apply", "--auto-approve"]).success();
    assert!(fake.created().is_empty(), "a build opens no sandbox");
    assert_eq!(fake.builds(), 1, "{:?}", fake.log());
    assert_eq!(fake.calls_of("ModalClient/ImageGetOrCreate"), 1);
    assert!(fake.calls_of("ModalClient/ImageJoinStreaming") >= 1);
    let environment_id = remote_id(&t, "environment.box");
    let noted = noted_images(&t);
    let image = noted[&environment_id]["image_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(image.starts_with("im-"), "{noted}");
    let locations =
        std::fs::read_to_string(t.path("state/workspaces/modal-locations.json")).unwrap();
    assert!(locations.contains(&fake.server_url), "{locations}");

    // An unchanged environment is not built again.
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(fake.calls_of("ModalClient/ImageGetOrCreate"), 1);

    // Three sessions at once start from the image built at apply.
    let run = t.run(&["run"]).success();
    assert_eq!(fake.alive().len(), 3, "{:?}", fake.alive());
    for id in fake.alive() {
        assert_eq!(fake.definition(&id).unwrap().image_id, image);
        assert!(
            fake.image_commands(&id)
                .iter()
                .any(|c| c.contains("'fakepkg'")),
            "{:?}",
            fake.image_commands(&id)
        );
    }
    assert_eq!(fake.builds(), 1, "N sessions, one build");
    assert_eq!(fake.calls_of("ModalClient/ImageGetOrCreate"), 1);
    let results = tool_results(&t);
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(
        results.iter().all(|r| r == &("hi\n".to_owned(), false)),
        "{results:?}"
    );

    // A package change builds a new image, which new sandboxes start from.
    let changed = "    config:\n      type: cloud\n      packages: { pip: [fakepkg, otherpkg] }\n";
    t.write(
        "agentform.yaml",
        &manifest_with_sessions(&fake, &calls, changed, 3),
    );
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(fake.builds(), 2, "{:?}", fake.log());
    assert_eq!(remote_id(&t, "environment.box"), environment_id);
    let rebuilt = noted_images(&t)[&environment_id]["image_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(rebuilt, image);
    t.run(&["run", "--session", "chat"]).success();
    let newest = fake.created().last().cloned().unwrap();
    assert_eq!(fake.definition(&newest).unwrap().image_id, rebuilt);
    assert_eq!(fake.builds(), 2);

    // Destroy forgets the image (Modal keeps it) and leaves no sandbox.
    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
    assert_eq!(noted_images(&t), json!({}));
    assert_no_secret(&fake, &everything(&t, &[&apply, &run, &destroy]));
    assert_no_secret(&fake, &locations);
}

#[test]
fn a_failed_image_build_stops_apply_naming_the_environment_and_its_log() {
    let fake = FakeModal::start(Options::default());
    let environment = format!(
        "    config:\n      type: cloud\n      packages: {{ pip: [{}] }}\n",
        crate::fake_modal::FAILING_PACKAGE
    );
    let t = test_with(&fake, &manifest(&fake, &[bash("echo never")], &environment));
    let out = t.command(&["apply", "--auto-approve"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("environment.box"), "{stderr}");
    assert!(stderr.contains("Modal image build `im-"), "{stderr}");
    assert!(stderr.contains("failed: Image build failed"), "{stderr}");
    assert!(
        stderr.contains("No matching distribution found for agentform-fail-build"),
        "the end of the build log: {stderr}"
    );
    assert_eq!(fake.builds(), 1);
    assert!(fake.created().is_empty(), "{:?}", fake.created());
    let state = t.run(&["state", "list"]).success();
    assert!(
        !state.stdout.contains("environment.box") && !state.stdout.contains("session.chat"),
        "{}",
        state.stdout
    );
    assert_eq!(noted_images(&t), json!({}));
}

#[test]
fn destroy_without_a_manifest_terminates_the_sessions_sandboxes() {
    let fake = FakeModal::start(Options::default());
    let t = test_with(
        &fake,
        &manifest_with_sessions(&fake, &[bash("echo here > where.txt")], OPEN, 2),
    );
    t.run(&["apply", "--auto-approve"]).success();
    let run = t.run(&["run"]).success();
    assert_eq!(fake.alive().len(), 2, "{:?}", fake.alive());
    for id in fake.alive() {
        assert!(fake.workspace(&id).join("where.txt").is_file());
    }
    std::fs::remove_file(t.path("agentform.yaml")).unwrap();
    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(
        fake.alive().is_empty(),
        "destroy from the state alone leaves no sandbox: {:?}",
        fake.alive()
    );
    assert_eq!(noted_images(&t), json!({}));
    assert!(fake.calls_of("ModalClient/SandboxTerminateV2") >= 2);
    assert_no_secret(&fake, &everything(&t, &[&run, &destroy]));
}

#[test]
fn plan_without_the_tokens_stops_before_any_call_and_names_them() {
    let fake = FakeModal::start(Options::default());
    let t = Test::new();
    t.write("agentform.yaml", &manifest(&fake, &[bash("true")], OPEN));
    let out = t
        .command(&["plan"])
        .env_remove("MODAL_TOKEN_ID")
        .env_remove("MODAL_TOKEN_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET` are not set"),
        "{stderr}"
    );
    assert!(fake.log().is_empty(), "{:?}", fake.log());
    assert!(files_under(&t.path("state/transcripts")).is_empty());
    let out = t
        .command(&["plan"])
        .env("MODAL_TOKEN_ID", fake.token_id())
        .env_remove("MODAL_TOKEN_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`MODAL_TOKEN_SECRET` is not set"),
        "{stderr}"
    );
    assert!(!stderr.contains(fake.token_id()), "{stderr}");
}

#[test]
fn a_refused_token_is_named_and_never_shown() {
    let fake = FakeModal::start(Options::default());
    let wrong = "as-wrongSecret5f0e1d2c3b4a";
    let t = Test::new()
        .env("MODAL_TOKEN_ID", fake.token_id())
        .env("MODAL_TOKEN_SECRET", wrong);
    t.write("agentform.yaml", &manifest(&fake, &[bash("true")], OPEN));
    // Refused at apply, where the environment's image is built.
    let apply = t.run(&["apply", "--auto-approve"]);
    assert_ne!(apply.code, 0, "{}", apply.stderr);
    let text = format!("{} {}", apply.stdout, apply.stderr);
    assert!(text.contains("environment.box"), "{text}");
    assert!(text.contains("UNAUTHENTICATED"), "{text}");
    assert!(
        text.contains("check the Modal token in `MODAL_TOKEN_ID` and `MODAL_TOKEN_SECRET`"),
        "{text}"
    );
    let all = everything(&t, &[&apply]);
    assert!(!all.contains(wrong), "the secret leaked");
    assert!(!all.contains(fake.token_id()), "the token id leaked");
    assert!(fake.created().is_empty());
}
