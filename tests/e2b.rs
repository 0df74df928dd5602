//! The local runtime's tools on E2B (`providers.local.sandbox: e2b`),
//! against the fake E2B of `fake_e2b/`: the official SDK's lifecycle keeps
//! the fake honest, then `agentform` itself applies, runs and destroys
//! through it — files land in the sandbox, packages are installed,
//! deadlines kill, faults converge without duplicate sandboxes, and the API
//! key appears nowhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::fake_e2b::{FakeE2b, Options};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// The official SDK against the fake

#[test]
fn the_official_sdk_runs_its_lifecycle_against_the_fake() {
    if std::env::var("AGENTFORM_SDK_TEST").as_deref() == Ok("skip") {
        eprintln!("\n!!!!!!!! SKIPPED: E2B SDK lifecycle (AGENTFORM_SDK_TEST=skip) !!!!!!!!\n");
        return;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2b-sdk-venv");
    let setup = Command::new("bash")
        .arg(repo().join("scripts/sdk-venv.sh"))
        .arg(&venv)
        .arg("e2b==2.63.0")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/sdk-venv.sh");
    if setup.status.code() == Some(3) {
        eprintln!(
            "\n!!!!!!!! SKIPPED: the E2B SDK lifecycle needs python3 (with venv) !!!!!!!!\n{}",
            String::from_utf8_lossy(&setup.stderr)
        );
        return;
    }
    assert!(
        setup.status.success(),
        "scripts/sdk-venv.sh {} e2b==2.63.0 failed ({}); set AGENTFORM_SDK_TEST=skip to skip this test offline\n--- stderr\n{}",
        venv.display(),
        setup.status,
        String::from_utf8_lossy(&setup.stderr)
    );
    let fake = FakeE2b::start(Options::default());
    let out = Command::new(venv.join("bin/python"))
        .arg(repo().join("tests/sdk/e2b_lifecycle.py"))
        .env("E2B_API_KEY", fake.key())
        .env("E2B_API_URL", &fake.api_url)
        .env("E2B_SANDBOX_URL", &fake.sandbox_url)
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run e2b_lifecycle.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "the official E2B SDK disagrees with the fake ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- fake log\n{:#?}",
        out.status,
        fake.log()
    );
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
    assert!(
        fake.alive().is_empty(),
        "the lifecycle killed its sandboxes"
    );
    assert_eq!(fake.created().len(), 2, "one sandbox per idempotency key");
}

// ---------------------------------------------------------------------------------------------
// agentform against the fake

/// Stand-ins for the template's `python3 -m pip` and `npm`: they record
/// their arguments in `~/installs.log` and put a module in the target.
pub(crate) fn shims(dir: &Path) -> PathBuf {
    let bin = dir.join("shims");
    std::fs::create_dir_all(&bin).unwrap();
    let python = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .expect("python3 on the PATH");
    let scripts = [
        (
            "python3",
            format!(
                r#"#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "pip $*" >> "$HOME/installs.log"
  shift 3
  target=""
  for a in "$@"; do
    case "$a" in
      --target) next=target ;;
      -*) ;;
      broken) echo "ERROR: No matching distribution found for broken" >&2; exit 1 ;;
      *) if [ "$next" = target ]; then target="$a"; next=""; else mkdir -p "$target/$a" && echo "OK = '$a installed'" > "$target/$a/__init__.py"; fi ;;
    esac
  done
  exit 0
fi
exec {} "$@"
"#,
                python.display()
            ),
        ),
        (
            "npm",
            r#"#!/bin/sh
echo "npm $*" >> "$HOME/installs.log"
exit 0
"#
            .to_owned(),
        ),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn bash(command: &str) -> Value {
    json!({ "name": "bash", "input": { "command": command } })
}

const OPEN: &str = "    config: { type: cloud }\n";

/// One scripted agent whose first turn makes `calls`, one session `chat`
/// in environment `box`, its tools on the fake E2B.
fn manifest(fake: &FakeE2b, calls: &[Value], environment: &str) -> String {
    let turns = json!([{ "tool_use": calls }, { "text": "done" }]);
    format!(
        r#"version: 1
name: e2btest
providers:
  local:
    sandbox: e2b
    models:
      scripted:
        backend: scripted
        turns: {turns}
  e2b:
    api_url: {api}
    sandbox_url: {sandbox}
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
        api = fake.api_url,
        sandbox = fake.sandbox_url,
    )
}

fn test_with(fake: &FakeE2b, contents: &str) -> Test {
    let t = Test::new().env("E2B_API_KEY", fake.key());
    t.write("agentform.yaml", contents);
    t
}

/// The only sandbox alive.
#[track_caller]
fn only_sandbox(fake: &FakeE2b) -> String {
    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "{alive:?}");
    alive[0].clone()
}

#[test]
fn a_session_runs_its_tools_in_an_e2b_sandbox_and_destroy_kills_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeE2b::start(Options {
        shims: Some(shims(dir.path())),
        ..Options::default()
    });
    let environment = "    config:\n      type: cloud\n      packages: { pip: [fakepkg], npm: [left-pad] }\n      \
                       networking: { type: limited, allowed_hosts: [api.example.com], allow_package_managers: true }\n";
    let calls = [
        bash("echo from-bash > hello.txt && cat hello.txt && pwd"),
        json!({"name": "write", "input": {"file_path": "notes/todo.md", "content": "from the write tool"}}),
        json!({"name": "read", "input": {"file_path": "hello.txt"}}),
        json!({"name": "glob", "input": {"pattern": "**/*"}}),
        bash("python3 -c 'import fakepkg; print(fakepkg.OK)'; echo \"$NODE_PATH\""),
        json!({"name": "read", "input": {"file_path": "../../../etc/passwd"}}),
    ];
    let t = test_with(&fake, &manifest(&fake, &calls, environment));
    let apply = t.run(&["apply", "--auto-approve"]).success();
    assert!(fake.created().is_empty(), "apply alone opens no sandbox");
    let run = t.run(&["run"]).success();
    let results = tool_results(&t);
    assert_eq!(results.len(), 6, "{results:?}");
    let id = only_sandbox(&fake);
    let workspace = fake.workspace(&id);

    // bash and the file tools work in the sandbox's workspace.
    assert!(!results[0].1, "{results:?}");
    assert!(results[0].0.contains("from-bash\n"), "{results:?}");
    assert!(
        results[0].0.contains("/home/user/workspace"),
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

    // The packages were installed once, before the first command, and are importable.
    let installs = std::fs::read_to_string(fake.root(&id).join("home/user/installs.log")).unwrap();
    assert_eq!(installs.lines().count(), 2, "{installs}");
    assert!(
        installs.contains("pip -m pip install") && installs.contains(" fakepkg"),
        "{installs}"
    );
    assert!(
        installs.contains("npm install --silent --prefix") && installs.contains(" left-pad"),
        "{installs}"
    );
    assert!(results[4].0.contains("fakepkg installed"), "{results:?}");
    assert!(
        results[4].0.contains("/.agentform/env/npm/node_modules"),
        "{results:?}"
    );

    // The tools' paths stay in the workspace.
    assert!(results[5].1, "{results:?}");
    assert!(
        results[5].0.contains("outside the workspace"),
        "{results:?}"
    );

    // Tagged for adoption, limited networking as E2B's egress rules.
    let session_id = remote_id(&t, "session.chat");
    let metadata = fake.metadata(&id).unwrap();
    assert_eq!(metadata["agentform.session"], session_id);
    assert_eq!(metadata["agentform.manifest"], "e2btest");
    assert_eq!(metadata["agentform.environment"], "environment.box");
    let request = fake.request(&id).unwrap();
    // The sandbox starts from the environment's template, built at apply.
    let templates = fake.templates();
    assert_eq!(templates.len(), 1, "{templates:?}");
    assert_eq!(request["templateID"], templates[0].id);
    assert_eq!(request["timeout"], 600);
    assert_eq!(request["network"]["denyOut"], json!(["0.0.0.0/0"]));
    let allowed = request["network"]["allowOut"].as_array().unwrap();
    assert!(
        allowed.contains(&json!("api.example.com")) && allowed.contains(&json!("pypi.org")),
        "{allowed:?}"
    );

    // Continuing the session in a new process adopts its sandbox (found by
    // its metadata, as after a crash): the workspace is still there.
    let again = test_again(&t, &fake, &[bash("cat hello.txt")]);
    assert!(again.contains("from-bash"), "{again}");
    assert_eq!(fake.created().len(), 1, "adopted, not created again");

    let tokens = fake.envd_tokens();
    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(
        fake.alive().is_empty(),
        "destroy leaves no sandbox: {:?}",
        fake.alive()
    );
    let all = everything(&t, &[&apply, &run, &destroy]);
    assert!(!all.contains(fake.key()), "the API key leaked");
    for token in tokens {
        assert!(!all.contains(&token), "an envd token leaked");
    }
}

#[test]
fn duplicates_left_by_a_crash_are_adopted_newest_first_and_the_rest_killed() {
    let fake = FakeE2b::start(Options {
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
    let older = fake.plant(&[("agentform.session", &session)]);
    std::thread::sleep(Duration::from_millis(20));
    let newer = fake.plant(&[("agentform.session", &session)]);
    let other = fake.plant(&[("agentform.session", "sesn_other")]);
    t.run(&["run", "--continue"]).success();
    let mut alive = fake.alive();
    alive.sort();
    let mut expected = vec![newer.clone(), other];
    expected.sort();
    assert_eq!(alive, expected, "the older duplicate was killed");
    assert!(!alive.contains(&older));
    assert!(fake.workspace(&newer).join("where.txt").is_file());
    assert_eq!(fake.created().len(), 3, "nothing new was created");
    assert!(
        fake.log()
            .iter()
            .filter(|l| *l == "GET /v2/sandboxes")
            .count()
            >= 2,
        "paged"
    );
}

/// Continues the session with new calls (a new manifest of the same
/// resources); the tool results of the new transcript.
fn test_again(t: &Test, fake: &FakeE2b, calls: &[Value]) -> String {
    let before = files_under(&t.path("state/transcripts")).len();
    t.write("agentform.yaml", &manifest(fake, calls, "    config:\n      type: cloud\n      packages: { pip: [fakepkg], npm: [left-pad] }\n      networking: { type: limited, allowed_hosts: [api.example.com], allow_package_managers: true }\n"));
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
fn a_deadline_kills_a_long_command_and_what_it_started() {
    let fake = FakeE2b::start(Options::default());
    // `sleep` runs as bash's child: killing bash alone would leave it. The
    // pid makes the marker this run's alone, whatever else runs here.
    let seconds = format!("29.{:07}1", std::process::id());
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
    assert!(fake
        .log()
        .iter()
        .any(|l| l == "POST /process.Process/SendSignal"));
    assert_eq!(
        count_processes_with(&seconds),
        0,
        "the command's child was killed too"
    );
    assert_eq!(results[1].0, "after\n");
}

#[test]
fn faults_and_a_cut_stream_converge_without_a_duplicate_sandbox() {
    let fake = FakeE2b::start(Options {
        fault_percent: 30,
        cut_streams: 1,
        page_size: 1,
        ..Options::default()
    });
    let calls = [
        bash("echo one; sleep 3; echo two"),
        json!({"name": "write", "input": {"file_path": "f.txt", "content": "written"}}),
        json!({"name": "read", "input": {"file_path": "f.txt"}}),
    ];
    let t = test_with(&fake, &manifest(&fake, &calls, OPEN));
    t.run(&["apply", "--auto-approve"]).success();
    let run = t.run(&["run"]).success();
    let results = tool_results(&t);
    assert_eq!(fake.streams_cut(), 1, "{:?}", fake.log());
    assert!(fake.faults_injected() > 0);
    assert!(!results[0].1, "{results:?}");
    assert!(
        results[0].0.contains("one\n") && results[0].0.contains("two\n"),
        "{results:?}"
    );
    assert!(
        fake.log()
            .iter()
            .any(|l| l == "POST /process.Process/Connect"),
        "re-attached"
    );
    assert!(results[2].0.contains("written"), "{results:?}");
    assert_eq!(
        fake.created().len(),
        1,
        "no duplicate sandbox: {:?}",
        fake.created()
    );
    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
    assert!(!everything(&t, &[&run, &destroy]).contains(fake.key()));
}

#[test]
fn a_sandbox_killed_mid_run_fails_clearly_and_the_next_call_gets_a_new_one() {
    let fake = FakeE2b::start(Options::default());
    let calls = [
        bash("echo started; sleep 20; echo never"),
        bash("echo again > after.txt && cat after.txt"),
    ];
    let t = test_with(&fake, &manifest(&fake, &calls, OPEN));
    t.run(&["apply", "--auto-approve"]).success();
    let started = Instant::now();
    let killed = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let id = {
                    let inner = fake.shared.lock();
                    inner
                        .sandboxes
                        .values()
                        .find(|s| s.procs.values().any(|p| p.command.contains("sleep 20")))
                        .map(|s| s.id.clone())
                };
                if let Some(id) = id {
                    assert!(fake.kill(&id));
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
            .contains(&format!("E2B sandbox `{killed}` is gone")),
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
    assert_ne!(replacement, killed);
    assert_eq!(fake.created().len(), 2, "{:?}", fake.created());
    assert!(fake.workspace(&replacement).join("after.txt").is_file());
}

#[test]
fn the_timeout_is_re_armed_while_the_session_runs() {
    let fake = FakeE2b::start(Options::default());
    let calls = [bash("sleep 3; echo first"), bash("sleep 3; echo second")];
    let contents = manifest(&fake, &calls, OPEN).replace("timeout: 10m", "timeout: 4s");
    let t = test_with(&fake, &contents);
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    let results = tool_results(&t);
    assert_eq!(results[0], ("first\n".to_owned(), false), "{results:?}");
    assert_eq!(results[1], ("second\n".to_owned(), false), "{results:?}");
    let id = only_sandbox(&fake);
    let timeouts = fake.timeouts(&id);
    assert!(
        timeouts.len() >= 2 && timeouts.iter().all(|t| *t == 4),
        "{timeouts:?}"
    );
    assert_eq!(fake.created().len(), 1);
}

#[test]
fn plan_without_the_api_key_stops_before_any_call_and_names_the_variable() {
    let fake = FakeE2b::start(Options::default());
    let t = Test::new();
    t.write("agentform.yaml", &manifest(&fake, &[bash("true")], OPEN));
    let out = t
        .command(&["plan"])
        .env_remove("E2B_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`E2B_API_KEY`, which is not set"),
        "{stderr}"
    );
    assert!(fake.log().is_empty(), "{:?}", fake.log());
    assert!(files_under(&t.path("state/transcripts")).is_empty());
    let renamed = manifest(&fake, &[bash("true")], OPEN).replace(
        "    timeout: 10m\n",
        "    timeout: 10m\n    api_key_env: MY_E2B_KEY\n",
    );
    t.write("agentform.yaml", &renamed);
    let out = t
        .command(&["plan"])
        .env_remove("MY_E2B_KEY")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("`MY_E2B_KEY`"));
}

#[test]
fn a_refused_key_is_named_and_never_shown() {
    let fake = FakeE2b::start(Options::default());
    let wrong = "e2b_wrong_key_5f0e1d2c3b4a";
    let t = Test::new().env("E2B_API_KEY", wrong);
    t.write("agentform.yaml", &manifest(&fake, &[bash("true")], OPEN));
    t.run(&["apply", "--auto-approve"]).success();
    let run = t.run(&["run"]);
    let results = tool_results(&t);
    let text = format!("{results:?} {} {}", run.stdout, run.stderr);
    assert!(text.contains("401"), "{text}");
    assert!(
        text.contains("check the API key in `E2B_API_KEY`"),
        "{text}"
    );
    assert!(!everything(&t, &[&run]).contains(wrong), "the key leaked");
    assert!(fake.created().is_empty());
}

#[test]
fn destroy_without_a_manifest_kills_the_sessions_sandboxes() {
    let fake = FakeE2b::start(Options::default());
    let t = test_with(
        &fake,
        &manifest(&fake, &[bash("echo here > where.txt")], OPEN),
    );
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    let id = only_sandbox(&fake);
    assert!(fake.workspace(&id).join("where.txt").is_file());
    let noted = std::fs::read_to_string(t.path("state/workspaces/e2b-locations.json")).unwrap();
    assert!(noted.contains(&fake.api_url), "{noted}");
    assert!(!noted.contains(fake.key()), "{noted}");
    std::fs::remove_file(t.path("agentform.yaml")).unwrap();
    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(
        fake.alive().is_empty(),
        "destroy from the state alone leaves no sandbox: {:?}",
        fake.alive()
    );
    assert!(!everything(&t, &[&destroy]).contains(fake.key()));
}

#[test]
fn apply_builds_the_environments_template_once_and_destroy_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeE2b::start(Options {
        shims: Some(shims(dir.path())),
        ..Options::default()
    });
    let environment = "    config:\n      type: cloud\n      packages: { pip: [fakepkg] }\n";
    let calls = [bash("python3 -c 'import fakepkg; print(fakepkg.OK)'")];
    let t = test_with(&fake, &manifest(&fake, &calls, environment));
    let apply = t.run(&["apply", "--auto-approve"]).success();
    assert!(fake.created().is_empty(), "a build opens no sandbox");
    let templates = fake.templates();
    assert_eq!(templates.len(), 1, "{templates:?}");
    let template = &templates[0];
    assert_eq!(template.status, "ready");
    assert!(
        template.name.starts_with("agentform-env-"),
        "{}",
        template.name
    );
    assert_eq!(template.build["fromTemplate"], "base");
    let step = &template.build["steps"][0];
    assert_eq!(step["type"], "RUN");
    assert_eq!(step["args"][1], "user");
    let built_log = template.root.join("home/user/installs.log");
    assert_eq!(
        std::fs::read_to_string(&built_log).unwrap().lines().count(),
        1
    );

    // A second apply builds nothing; the session starts from the template
    // and installs nothing more.
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(fake.templates().len(), 1);
    t.run(&["run"]).success();
    let results = tool_results(&t);
    assert!(results[0].0.contains("fakepkg installed"), "{results:?}");
    let id = only_sandbox(&fake);
    assert_eq!(fake.request(&id).unwrap()["templateID"], template.id);
    let installs = std::fs::read_to_string(fake.root(&id).join("home/user/installs.log")).unwrap();
    assert_eq!(
        installs.lines().count(),
        1,
        "installed at build only: {installs}"
    );
    assert_eq!(
        fake.log()
            .iter()
            .filter(|l| *l == "POST /v3/templates")
            .count(),
        1
    );

    // Destroy (without the manifest) deletes the template with the environment.
    std::fs::remove_file(t.path("agentform.yaml")).unwrap();
    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.templates().is_empty(), "{:?}", fake.templates());
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
    assert!(!everything(&t, &[&apply, &destroy]).contains(fake.key()));
}

#[test]
fn a_failed_template_build_fails_the_environment_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeE2b::start(Options {
        shims: Some(shims(dir.path())),
        ..Options::default()
    });
    let environment = "    config:\n      type: cloud\n      packages: { pip: [broken] }\n";
    let t = test_with(&fake, &manifest(&fake, &[bash("true")], environment));
    let out = t.command(&["apply", "--auto-approve"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("environment.box"), "{stderr}");
    assert!(
        stderr.contains("No matching distribution found for broken"),
        "the end of the build log: {stderr}"
    );
    assert!(
        fake.templates().is_empty(),
        "the failed template is deleted"
    );
    assert!(fake.created().is_empty());
    let state = t.run(&["state", "list"]).success();
    assert!(
        !state.stdout.contains("environment.box"),
        "{}",
        state.stdout
    );
}
