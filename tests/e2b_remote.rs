//! Whole sessions on E2B (`provider: e2b`, the remote loop), against the
//! fake E2B of `fake_e2b/`: `examples/e2b` applies (a sandbox per session,
//! agentform uploaded and serving in it), runs (the scripted model's bash
//! writes a file found in the fake sandbox), outlives the CLI and is
//! destroyed with nothing left, also from the state alone; archives kill
//! sandboxes; injected faults converge without a duplicate sandbox; a cut
//! start stream and a sandbox killed mid-run fail clearly; the timeout is
//! re-armed; no secret reaches a file (the sandboxes' included) or an
//! output.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fake_e2b::{FakeE2b, Options};

/// A model key the example's manifest asks for (an agent no session uses).
const MODEL_KEY: &str = "sk-ant-model-secret-7f3e9a1b";

/// `examples/e2b`, pointed at the fake, with an extra agent whose model
/// needs `MODEL_KEY_X` (so a model key travels to every serve), and
/// `extra` appended to the bash command.
fn example(fake: &FakeE2b, command: Option<&str>) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/e2b/agentform.yaml");
    let mut text = std::fs::read_to_string(path).unwrap();
    text = text.replace(
        "  e2b:\n",
        &format!(
            "  e2b:\n    api_url: {}\n    sandbox_url: {}\n",
            fake.api_url, fake.sandbox_url
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

fn test_with(fake: &FakeE2b, contents: &str) -> Test {
    let t = Test::new()
        .env("E2B_API_KEY", fake.key())
        .env("MODEL_KEY_X", MODEL_KEY);
    t.write("agentform.yaml", contents);
    t
}

/// Files named `name` anywhere under the sandbox's root.
fn found_in_sandbox(fake: &FakeE2b, id: &str, name: &str) -> Vec<PathBuf> {
    files_under(&fake.root(id))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == name))
        .collect()
}

#[test]
fn the_example_applies_runs_outlives_the_cli_and_is_destroyed_with_nothing_left() {
    let fake = FakeE2b::start(Options::default());
    let t = test_with(&fake, &example(&fake, None));
    let apply = t.run(&["apply", "--auto-approve"]).success();
    let created = fake.created();
    assert_eq!(created.len(), 1, "one sandbox for the one session");
    let first = created[0].clone();
    let metadata = fake.metadata(&first).unwrap();
    assert_eq!(metadata["agentform.loop"], "remote");
    assert_eq!(metadata["agentform.address"], "session.chat");
    assert_eq!(metadata["agentform.manifest"], "e2b-remote");
    let request = fake.request(&first).unwrap();
    assert_eq!(request["network"]["allowPublicTraffic"], false);
    assert_eq!(request["timeout"], 600);
    // The session's id names its sandbox; the serve in it holds the session.
    let session = remote_id(&t, "session.chat");
    assert!(session.ends_with(&format!(".{first}")), "{session}");
    let binary = found_in_sandbox(&fake, &first, "agentform");
    assert_eq!(binary.len(), 1, "agentform uploaded: {binary:?}");
    let commands = fake.commands();
    assert!(
        commands
            .iter()
            .any(|c| c.contains("serve --no-confinement")),
        "{commands:?}"
    );

    // `run` archives the applied session (its sandbox is killed) and runs a
    // fresh one in a new sandbox; the bash step's file is in that sandbox.
    let run = t.run(&["run"]).success();
    assert!(!fake.alive().contains(&first), "archive killed the sandbox");
    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "{alive:?}");
    let second = alive[0].clone();
    let proof = found_in_sandbox(&fake, &second, "proof.txt");
    assert_eq!(proof.len(), 1, "{proof:?}");
    assert_eq!(
        std::fs::read_to_string(&proof[0]).unwrap(),
        "hello from the sandbox\n"
    );
    let text = transcripts(&t);
    assert!(text.contains("hello from the sandbox"), "{text}");
    assert!(text.contains("I wrote proof.txt in the sandbox."), "{text}");

    // A new process finds the session through the state (sandbox id in its id).
    let plan = t
        .run(&["plan", "--refresh", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes.");
    let serve_keys: Vec<String> = fake
        .process_envs()
        .into_iter()
        .filter(|(k, _)| k == "AGENTFORM_SERVE_API_KEY")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(serve_keys.len(), 2, "one serve per sandbox");
    assert!(fake
        .process_envs()
        .contains(&("MODEL_KEY_X".to_owned(), MODEL_KEY.to_owned())));
    let (envd, traffic) = (fake.envd_tokens(), fake.traffic_tokens());
    assert!(!traffic.is_empty(), "the port needs a traffic token");

    let destroy = t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
    assert_eq!(fake.created().len(), 2, "{:?}", fake.created());
    let (agents, envs, sessions) = live_objects(&t.path("state"));
    assert!(agents.iter().all(|a| a.archived_at.is_some()));
    assert!(envs.is_empty() && sessions.is_empty());

    let mut all = everything(&t, &[&apply, &run, &plan, &destroy]);
    // The sandboxes' files too: the serve's log, its manifest, its data.
    for sandbox in fake.created() {
        for f in files_under(&fake.root(&sandbox)) {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(f).unwrap()));
        }
    }
    let secrets = [fake.key().to_owned(), MODEL_KEY.to_owned()]
        .into_iter()
        .chain(serve_keys)
        .chain(envd)
        .chain(traffic);
    for secret in secrets {
        assert!(!all.contains(&secret), "a secret leaked: {}…", &secret[..6]);
    }
}

#[test]
fn destroy_without_a_manifest_reaches_the_sandboxes() {
    let fake = FakeE2b::start(Options::default());
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
    assert!(!stderr.contains(fake.key()));
}

#[test]
fn injected_faults_converge_without_a_duplicate_sandbox() {
    let fake = FakeE2b::start(Options {
        fault_percent: 30,
        page_size: 1,
        ..Options::default()
    });
    let t = test_with(&fake, &example(&fake, None));
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    assert!(fake.faults_injected() >= 5, "{}", fake.faults_injected());
    assert!(
        fake.log().iter().any(|l| l.contains(" port /v1/")),
        "the serve was reached through the fake's port routing"
    );
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

#[test]
fn a_cut_start_stream_is_recovered_from_the_serves_log_without_a_second_sandbox() {
    let fake = FakeE2b::start(Options {
        cut_streams: 1,
        ..Options::default()
    });
    let t = test_with(&fake, &example(&fake, None));
    let apply = t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(fake.streams_cut(), 1, "{}", apply.stderr);
    assert_eq!(fake.alive().len(), 1, "{:?}", fake.alive());
    assert_eq!(fake.created().len(), 1, "no second sandbox");
    let id = fake.alive()[0].clone();
    let log =
        std::fs::read_to_string(fake.root(&id).join("home/user/.agentform/serve.log")).unwrap();
    assert!(log.contains("listening on "), "{log}");
    t.run(&["run"]).success();
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty());
}

#[test]
fn a_sandbox_killed_mid_run_fails_clearly_and_plan_replaces_the_session() {
    let fake = FakeE2b::start(Options::default());
    // Processes are counted machine-wide: the pid keeps this marker ours.
    let marker = &format!("sleep 19.{:07}5", std::process::id());
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
                    assert!(fake.kill(&alive[0]));
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
fn the_timeout_is_re_armed_while_the_session_runs() {
    let fake = FakeE2b::start(Options::default());
    let contents = example(&fake, Some("sleep 9; echo slept > proof.txt"))
        .replace("    timeout: 10m\n", "    timeout: 6s\n");
    let t = test_with(&fake, &contents);
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    let alive = fake.alive();
    assert_eq!(alive.len(), 1, "outlived its 6 s: {alive:?}");
    let timeouts = fake.timeouts(&alive[0]);
    assert!(
        !timeouts.is_empty() && timeouts.iter().all(|t| *t == 6),
        "{timeouts:?}"
    );
    assert_eq!(found_in_sandbox(&fake, &alive[0], "proof.txt").len(), 1);
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.alive().is_empty());
}

#[test]
fn plan_without_a_key_stops_before_any_call_naming_the_variable() {
    let fake = FakeE2b::start(Options::default());
    let t = Test::new();
    t.write("agentform.yaml", &example(&fake, None));
    for (missing, present) in [
        ("E2B_API_KEY", "MODEL_KEY_X"),
        ("MODEL_KEY_X", "E2B_API_KEY"),
    ] {
        let value = if present == "E2B_API_KEY" {
            fake.key()
        } else {
            MODEL_KEY
        };
        let out = t
            .command(&["plan"])
            .env_remove(missing)
            .env(present, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("`{missing}`, which is not set")),
            "{stderr}"
        );
    }
    assert!(fake.log().is_empty(), "{:?}", fake.log());
    assert!(
        !t.path("state/workspaces/e2b-locations.json").exists(),
        "nothing noted"
    );
}

/// How many templates were named (one per build started).
fn template_builds(fake: &FakeE2b) -> usize {
    fake.log()
        .iter()
        .filter(|l| *l == "POST /v3/templates")
        .count()
}

#[test]
fn the_environments_template_is_built_at_apply_and_a_failed_build_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeE2b::start(Options {
        shims: Some(crate::e2b::shims(dir.path())),
        ..Options::default()
    });
    let command = "python3 -c 'import fakepkg; print(fakepkg.OK)' > proof.txt && cat proof.txt";
    let with = |packages: &str| {
        example(&fake, Some(command)).replace(
            "      type: cloud\n",
            &format!("      type: cloud\n      packages: {{ pip: [{packages}] }}\n"),
        )
    };
    // A failed build stops apply naming the environment: no environment,
    // no sandbox, no template left.
    let t = test_with(&fake, &with("broken"));
    let failed = t.run(&["apply", "--auto-approve"]);
    assert_ne!(failed.code, 0, "{}", failed.stderr);
    assert!(
        failed.stderr.contains("environment.box")
            && failed
                .stderr
                .contains("No matching distribution found for broken"),
        "the environment and the end of the build log: {}",
        failed.stderr
    );
    assert!(fake.created().is_empty(), "{:?}", fake.created());
    assert!(fake.templates().is_empty(), "{:?}", fake.templates());
    let (_, envs, sessions) = live_objects(&t.path("state"));
    assert!(envs.is_empty() && sessions.is_empty());

    // Built once at apply; the session's sandbox starts from it.
    t.write("agentform.yaml", &with("fakepkg"));
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(template_builds(&fake), 2, "the failed one and this one");
    let templates = fake.templates();
    assert_eq!(templates.len(), 1, "{templates:?}");
    let template = templates[0].clone();
    assert_eq!(template.status, "ready");
    assert_eq!(template.build["fromTemplate"], "base");
    let first = fake.created()[0].clone();
    assert_eq!(fake.request(&first).unwrap()["templateID"], template.id);

    // An unchanged re-apply builds nothing; a session builds nothing, and
    // nothing is installed in its sandbox: the serve's environment has no
    // packages, and the bash step imports the template's.
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    assert_eq!(template_builds(&fake), 2);
    let created = fake.created();
    assert_eq!(created.len(), 2, "{created:?}");
    let second = created[1].clone();
    assert_eq!(fake.request(&second).unwrap()["templateID"], template.id);
    let installs = found_in_sandbox(&fake, &second, "installs.log");
    assert_eq!(installs.len(), 1, "{installs:?}");
    let log = std::fs::read_to_string(&installs[0]).unwrap();
    assert_eq!(log.lines().count(), 1, "installed at build only: {log}");
    let marker = found_in_sandbox(&fake, &second, ".provisioned");
    assert!(marker.is_empty(), "the serve installed: {marker:?}");
    let proof = found_in_sandbox(&fake, &second, "proof.txt");
    assert_eq!(proof.len(), 1, "{proof:?}");
    assert_eq!(
        std::fs::read_to_string(&proof[0]).unwrap(),
        "fakepkg installed\n"
    );
    assert!(transcripts(&t).contains("fakepkg installed"));

    // A package change rebuilds and deletes the replaced template.
    t.write("agentform.yaml", &with("fakepkg, otherpkg"));
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(template_builds(&fake), 3);
    let templates = fake.templates();
    assert_eq!(templates.len(), 1, "the old one deleted: {templates:?}");
    assert_ne!(templates[0].id, template.id);
    let changed = templates[0].clone();

    // A package change whose build fails stops apply; the environment
    // keeps its packages and its template.
    t.write("agentform.yaml", &with("fakepkg, broken"));
    failed_build_keeps_packages(&t, &["fakepkg", "otherpkg"]);
    let ids: Vec<String> = fake.templates().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, [changed.id]);

    // Destroy deletes the template with the environment.
    t.write("agentform.yaml", &with("fakepkg, otherpkg"));
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.templates().is_empty(), "{:?}", fake.templates());
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}

#[test]
fn without_a_noted_template_the_sandbox_installs_and_destroy_from_the_state_deletes_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeE2b::start(Options {
        shims: Some(crate::e2b::shims(dir.path())),
        ..Options::default()
    });
    let command = "python3 -c 'import fakepkg; print(fakepkg.OK)' > proof.txt && cat proof.txt";
    let manifest = example(&fake, Some(command)).replace(
        "      type: cloud\n",
        "      type: cloud\n      packages: { pip: [fakepkg] }\n",
    );
    let t = test_with(&fake, &manifest);
    t.run(&["apply", "--auto-approve"]).success();
    assert_eq!(fake.templates().len(), 1);

    // The note lost (an environment made before templates): the session's
    // sandbox starts from the base template and gets the packages installed
    // where the template would hold them, once; the serve installs none.
    let note = t.path("state/workspaces/e2b-templates.json");
    let kept = std::fs::read(&note).unwrap();
    std::fs::remove_file(&note).unwrap();
    t.run(&["run"]).success();
    let created = fake.created();
    assert_eq!(created.len(), 2, "{created:?}");
    let second = created[1].clone();
    assert_eq!(fake.request(&second).unwrap()["templateID"], "base");
    let installs = found_in_sandbox(&fake, &second, "installs.log");
    assert_eq!(installs.len(), 1, "{installs:?}");
    let log = std::fs::read_to_string(&installs[0]).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(found_in_sandbox(&fake, &second, ".provisioned").is_empty());
    assert!(transcripts(&t).contains("fakepkg installed"));

    // Destroy from the state alone deletes the noted template.
    std::fs::write(&note, kept).unwrap();
    std::fs::remove_file(t.path("agentform.yaml")).unwrap();
    t.run(&["destroy", "--auto-approve"]).success();
    assert!(fake.templates().is_empty(), "{:?}", fake.templates());
    assert!(fake.alive().is_empty(), "{:?}", fake.alive());
}
