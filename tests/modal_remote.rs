//! Whole sessions on Modal (`provider: modal`, the remote loop), against
//! the fake Modal of `fake_modal/`: `examples/modal` applies (a sandbox per
//! session with the serve's port declared, agentform uploaded once as a
//! mount and serving in every sandbox, reached through the tunnel), runs (the
//! scripted model's bash writes a file found in the fake sandbox),
//! refreshes with no changes and is destroyed with nothing left, also from
//! the state alone; archives terminate sandboxes; injected faults, a lost
//! create answer and a cut output stream converge without a duplicate
//! sandbox; a sandbox terminated mid-run fails
//! clearly; missing tokens or model keys stop plan before any call; no
//! secret reaches a file or an output.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentform::sandbox::modal::proto::client as pb;

use crate::common::*;
use crate::fake_modal::{FakeModal, Options};

/// A model key the example's manifest asks for (an agent no session uses).
const MODEL_KEY: &str = "sk-ant-model-secret-4c2d8e0f";

/// `examples/modal`, pointed at the fake, with an extra agent whose model
/// needs `MODEL_KEY_X` (so a model key travels to every serve), and the
/// bash command replaced by `command`.
fn example(fake: &FakeModal, command: Option<&str>) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/modal/agentform.yaml");
    let mut text = std::fs::read_to_string(path).unwrap();
    text = text.replace(
        "  modal:\n",
        &format!(
            "  modal:\n    server_url: {}\n    agent_binary: {}\n",
            fake.server_url,
            lean_binary().display()
        ),
    );
    text = text.replace(
        "    models:\n",
        "    models:\n      claude-x:\n        backend: anthropic\n        api_key_env: MODEL_KEY_X\n        base_url: https://models.example.com\n",
    );
    text = text.replace(
        "agents:\n",
        "agents:\n  spare:\n    model: claude-x\n    system: unused\n",
    );
    if let Some(c) = command {
        let old = "echo hello from the sandbox > proof.txt && cat proof.txt";
        assert!(text.contains(old));
        text = text.replace(old, c);
    }
    text
}

/// The executable under test without its debug information: what a sandbox
/// gets, so that each test uploads tens of MiB rather than hundreds. One
/// copy per test process, renamed into place whole.
fn lean_binary() -> &'static Path {
    static LEAN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LEAN.get_or_init(|| {
        let full = PathBuf::from(env!("CARGO_BIN_EXE_agentform"));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let part = dir.join(format!("agentform-lean.{}", std::process::id()));
        let lean = dir.join("agentform-lean");
        // Without `strip`, or where the target directory is another user's,
        // the whole executable goes, which is only slower.
        let made = std::fs::copy(&full, &part).is_ok()
            && std::process::Command::new("strip")
                .arg("--strip-debug")
                .arg(&part)
                .status()
                .is_ok_and(|s| s.success())
            && std::fs::rename(&part, &lean).is_ok();
        if made {
            lean
        } else {
            let _ = std::fs::remove_file(&part);
            full
        }
    })
}

fn test_with(fake: &FakeModal, contents: &str) -> Test {
    let t = Test::new()
        .env("MODAL_TOKEN_ID", fake.token_id())
        .env("MODAL_TOKEN_SECRET", fake.token_secret())
        .env("MODEL_KEY_X", MODEL_KEY);
    t.write("agentform.yaml", contents);
    t
}

/// Files named `name` anywhere under the sandbox's root.
fn found_in_sandbox(fake: &FakeModal, id: &str, name: &str) -> Vec<PathBuf> {
    files_under(&fake.root(id))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == name))
        .collect()
}

#[test]
fn the_example_applies_runs_refreshes_and_is_destroyed_with_nothing_left() {
    let fake = FakeModal::start(Options::default());
    let t = test_with(&fake, &example(&fake, None));
    let apply = t.run(&["apply", "--auto-approve"]).success();
    let created = fake.created();
    assert_eq!(created.len(), 1, "one sandbox for the one session");
    let first = created[0].clone();
    let tags = fake.tags(&first);
    assert_eq!(tags["agentform.loop"], "remote");
    assert_eq!(tags["agentform.address"], "session.chat");
    assert_eq!(tags["agentform.manifest"], "modal-remote");
    let definition = fake.definition(&first).unwrap();
    assert_eq!(definition.timeout_secs, 600);
    match &definition.open_ports_oneof {
        Some(pb::sandbox::OpenPortsOneof::OpenPorts(p)) => {
            assert_eq!(p.ports.len(), 1, "{p:?}");
            assert_eq!(p.ports[0].port, 8000);
            assert!(!p.ports[0].unencrypted, "an encrypted port");
        }
        other => panic!("no open ports: {other:?}"),
    }
    // The session's id names its sandbox; the serve in it holds the session.
    let session = remote_id(&t, "session.chat");
    assert!(session.ends_with(&format!(".{first}")), "{session}");
    // agentform is placed by one mount, its bytes sent to the blob store
    // once, not written into the sandbox.
    let lean = std::fs::metadata(lean_binary()).unwrap().len();
    assert_eq!(definition.mount_ids.len(), 1, "{:?}", definition.mount_ids);
    let binary = found_in_sandbox(&fake, &first, "agentform");
    assert_eq!(binary.len(), 1, "agentform placed: {binary:?}");
    assert!(
        binary[0].ends_with("root/.agentform/bin/agentform"),
        "{binary:?}"
    );
    assert_eq!(
        fake.blob_bytes_received(),
        lean,
        "the executable went up once"
    );
    let ran = fake.commands();
    assert!(
        ran.iter()
            .any(|c| c.contains("serve --no-confinement --listen 0.0.0.0:8000 ")),
        "{ran:?}"
    );

    // `run` archives the applied session (its sandbox is terminated) and
    // runs a fresh one in a new sandbox; the bash step's file is there.
    let run = t.run(&["run"]).success();
    assert!(!fake.alive().contains(&first), "archive terminated it");
    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "{alive:?}");
    let second = alive[0].clone();
    assert_eq!(
        fake.blob_bytes_received(),
        lean,
        "an executable Modal has is not sent again"
    );
    assert_eq!(fake.definition(&second).unwrap().mount_ids.len(), 1);
    let proof = found_in_sandbox(&fake, &second, "proof.txt");
    assert_eq!(proof.len(), 1, "{proof:?}");
    assert_eq!(
        std::fs::read_to_string(&proof[0]).unwrap(),
        "hello from the sandbox\n"
    );
    let text = transcripts(&t);
    assert!(text.contains("hello from the sandbox"), "{text}");
    assert!(text.contains("I wrote proof.txt in the sandbox."), "{text}");
    assert!(
        fake.log().iter().any(|l| l == "Tunnel 8000"),
        "the serve was reached through the tunnel"
    );

    // A new process finds the session through the state.
    let plan = t
        .run(&["plan", "--refresh", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes.");

    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
    assert_eq!(fake.created().len(), 2, "{:?}", fake.created());
    let (agents, envs, sessions) = live_objects(&t.path("state"));
    assert!(agents.iter().all(|a| a.archived_at.is_some()));
    assert!(envs.is_empty() && sessions.is_empty());

    let all = everything(&t, &[&apply, &run, &plan, &destroy]);
    assert_no_secret(&fake, &all);
}

/// No token, JWT, serve key or model key in `all`.
#[track_caller]
fn assert_no_secret(fake: &FakeModal, all: &str) {
    let serve_keys: Vec<String> = fake
        .created()
        .iter()
        .map(|id| agentform::runtime::remote::serve_key(fake.token_secret(), id))
        .collect();
    let secrets = [
        fake.token_id().to_owned(),
        fake.token_secret().to_owned(),
        MODEL_KEY.to_owned(),
    ]
    .into_iter()
    .chain(serve_keys)
    .chain(fake.handed_out());
    for secret in secrets {
        assert!(!all.contains(&secret), "a secret leaked: {}…", &secret[..6]);
        if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() >= 20) {
            assert!(!all.contains(signature), "a JWT signature leaked");
        }
    }
}

#[test]
fn the_environments_image_is_built_at_apply_and_a_failed_build_stops_it() {
    let fake = FakeModal::start(Options::default());
    let with = |package: &str| {
        example(&fake, None).replace(
            "      type: cloud\n",
            &format!("      type: cloud\n      packages: {{ pip: [{package}] }}\n"),
        )
    };
    // A failed build stops apply naming the environment: no session.
    let t = test_with(&fake, &with(crate::fake_modal::FAILING_PACKAGE));
    let failed = t.run(&["apply", "--auto-approve"]);
    assert_ne!(failed.code, 0, "{}", failed.stderr);
    assert!(
        failed.stderr.contains("environment.box"),
        "{}",
        failed.stderr
    );
    assert!(
        failed
            .stderr
            .contains("No matching distribution found for agentform-fail-build"),
        "the end of the build log: {}",
        failed.stderr
    );
    assert!(fake.created().is_empty(), "{:?}", fake.created());
    let (_, envs, sessions) = live_objects(&t.path("state"));
    assert!(envs.is_empty() && sessions.is_empty());

    // Built once at apply; the session's sandbox starts from it, and the
    // serve installs nothing.
    t.write("agentform.yaml", &with("fakepkg"));
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(fake.builds(), 2, "the failed one and this one");
    let joins = fake.calls_of("ModalClient/ImageJoinStreaming");
    let first = fake.created()[0].clone();
    let image = fake.image_commands(&first);
    assert!(
        image
            .iter()
            .any(|c| c.starts_with("RUN python -m pip install") && c.contains("'fakepkg'")),
        "{image:?}"
    );
    t.run(&["run"]).success();
    assert_eq!(fake.created().len(), 2, "{:?}", fake.created());
    assert_eq!(fake.builds(), 2, "sessions build nothing");
    assert_eq!(fake.calls_of("ModalClient/ImageJoinStreaming"), joins);
    // The serve's environment has no packages to install (they are in the
    // image): nothing was installed in the sandbox, and the bash step ran.
    let second = fake.created()[1].clone();
    let installed = found_in_sandbox(&fake, &second, ".provisioned");
    assert!(installed.is_empty(), "{installed:?}");
    let proof = found_in_sandbox(&fake, &second, "proof.txt");
    assert_eq!(proof.len(), 1, "{proof:?}");
    assert!(transcripts(&t).contains("hello from the sandbox"));

    // A package change whose build fails stops apply; the environment
    // keeps the packages it had.
    t.write(
        "agentform.yaml",
        &with(&format!("fakepkg, {}", crate::fake_modal::FAILING_PACKAGE)),
    );
    failed_build_keeps_packages(&t, &["fakepkg"]);
    t.write("agentform.yaml", &with("fakepkg"));
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}

#[test]
fn destroy_without_a_manifest_reaches_the_sandboxes() {
    let fake = FakeModal::start(Options::default());
    let t = test_with(&fake, &example(&fake, None));
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(fake.alive().len(), 1);
    std::fs::remove_file(t.path("agentform.yaml")).unwrap();
    let out = t
        .command(&["destroy", "--auto-approve"])
        .env_remove("MODEL_KEY_X")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
    assert!(!stderr.contains(fake.token_secret()));
}

/// Above Modal's multipart threshold the executable goes up in parts; a
/// store that answers `SlowDown` is tried again; the parts are assembled,
/// checked, and the serve runs from the mount.
#[test]
fn the_executable_goes_up_in_parts_through_a_busy_store() {
    let part_length = 4u64 << 20;
    let fake = FakeModal::start(Options {
        multipart_over: 1 << 20,
        part_length,
        slow_down_puts: 2,
        ..Options::default()
    });
    let t = test_with(&fake, &example(&fake, None));
    t.run(&["apply", "--auto-approve"]).success();
    let lean = std::fs::metadata(lean_binary()).unwrap().len();
    let parts = lean.div_ceil(part_length) as usize;
    assert!(parts >= 2, "{lean} bytes");
    assert_eq!(fake.calls_of("Blobs/SlowDown"), 2);
    assert_eq!(
        fake.calls_of("Blobs/PutPart"),
        parts + 2,
        "{:?}",
        fake.log()
    );
    assert_eq!(fake.calls_of("Blobs/Complete"), 1);
    assert_eq!(fake.blob_bytes_received(), lean);
    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "{alive:?}");
    let placed = found_in_sandbox(&fake, &alive[0], "agentform");
    assert_eq!(
        std::fs::read(&placed[0]).unwrap(),
        std::fs::read(lean_binary()).unwrap()
    );
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}

/// A blob store that keeps refusing fails `apply` naming its host and its
/// answer, never the signed upload URL; no sandbox is made.
#[test]
fn a_refusing_blob_store_fails_apply_without_showing_the_signed_url() {
    let fake = FakeModal::start(Options {
        slow_down_puts: usize::MAX,
        ..Options::default()
    });
    let t = test_with(&fake, &example(&fake, None));
    let apply = t.run(&["apply", "--auto-approve"]).code(1);
    let err = &apply.stderr;
    assert!(
        err.contains("the mount of the agentform executable"),
        "{err}"
    );
    assert!(err.contains("Modal's blob store at 127.0.0.1"), "{err}");
    assert!(err.contains("SlowDown"), "{err}");
    assert!(!err.contains("X-Amz-Signature"), "{err}");
    assert!(fake.calls_of("Blobs/SlowDown") > 1, "retried");
    assert!(fake.created().is_empty(), "{:?}", fake.created());
    assert_no_secret(&fake, &everything(&t, &[&apply]));
}

#[test]
fn injected_faults_converge_with_one_sandbox_per_session() {
    let fake = FakeModal::start(Options {
        fault_percent: 30,
        page_size: 1,
        ..Options::default()
    });
    let t = test_with(&fake, &example(&fake, None));
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    assert!(fake.faults_injected() >= 5, "{}", fake.faults_injected());
    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "{alive:?}");
    assert_eq!(
        fake.created().len(),
        2,
        "one sandbox per session made, no duplicate: {:?}",
        fake.created()
    );
    assert_eq!(found_in_sandbox(&fake, &alive[0], "proof.txt").len(), 1);
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}

/// A create whose answer is lost is found by its tag, not made twice; an
/// output stream cut after its first chunk is resumed from its offset, and
/// the serve comes up.
#[test]
fn a_lost_create_and_a_cut_output_stream_make_one_sandbox() {
    let fake = FakeModal::start(Options {
        lose_creates: 1,
        cut_streams: 1,
        ..Options::default()
    });
    let t = test_with(&fake, &example(&fake, None));
    let apply = t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(fake.streams_cut(), 1, "{}", apply.stderr);
    assert_eq!(
        fake.created().len(),
        1,
        "no second sandbox: {:?}",
        fake.created()
    );
    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "{alive:?}");
    let log = found_in_sandbox(&fake, &alive[0], "serve.log");
    assert_eq!(log.len(), 1, "{log:?}");
    let log = std::fs::read_to_string(&log[0]).unwrap();
    assert!(log.contains("listening on "), "{log}");
    t.run(&["run"]).success();
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}

#[test]
fn a_sandbox_terminated_mid_run_fails_clearly_and_plan_replaces_the_session() {
    let fake = FakeModal::start(Options::default());
    let marker = &format!("sleep 20.{:07}4", std::process::id());
    let t = test_with(
        &fake,
        &example(&fake, Some(&format!("echo begun; {marker}; echo never"))),
    );
    t.run(&["apply", "--auto-approve"]).success();
    let started = Instant::now();
    let (run, killed) = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                if count_processes_with(marker) > 0 {
                    let alive = fake.alive();
                    assert_eq!(alive.len(), 1, "{alive:?}");
                    assert!(fake.terminate(&alive[0]));
                    return Some(alive[0].clone());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        });
        let run = t.run(&["run"]);
        (run, killer.join().unwrap().expect("the command ran"))
    });
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let said = format!("{}{}{}", run.stdout, run.stderr, transcripts(&t));
    assert!(
        said.contains(&format!("sandbox `{killed}` is gone")),
        "{said}"
    );
    assert!(transcripts(&t).contains("\"session.error\""));
    let plan = t.run(&["plan", "--refresh", "--detailed-exitcode"]).code(2);
    assert!(plan.stdout.contains("session.chat"), "{}", plan.stdout);
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}

#[test]
fn plan_without_the_tokens_or_the_model_key_stops_before_any_call() {
    let fake = FakeModal::start(Options::default());
    let t = Test::new();
    t.write("agentform.yaml", &example(&fake, None));
    let all = [
        ("MODAL_TOKEN_ID", fake.token_id()),
        ("MODAL_TOKEN_SECRET", fake.token_secret()),
        ("MODEL_KEY_X", MODEL_KEY),
    ];
    for (missing, _) in all {
        let mut command = t.command(&["plan"]);
        for (name, value) in all {
            if name == missing {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let named = if missing == "MODEL_KEY_X" {
            format!("`{missing}`, which is not set")
        } else {
            format!("`{missing}` is not set")
        };
        assert!(stderr.contains(&named), "{stderr}");
    }
    assert!(fake.log().is_empty(), "{:?}", fake.log());
}
