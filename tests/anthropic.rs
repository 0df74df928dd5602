//! The `anthropic` provider end to end: validate, plan, apply, run and destroy
//! against `agentform serve` on loopback — the examples as they are, with
//! injected faults, with dropped event streams, with changes made outside
//! agentform — and a search for the credential in everything written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use agentform::runtime::anthropic::{AnthropicOptions, AnthropicRuntime, RateLimits, Secret};
use agentform::runtime::{list_all, Agent, Environment, Runtime, Session};

use crate::common::*;
use crate::serve::{repo, Server, KEY};

/// A manifest rewritten to use the `anthropic` provider at `url`; `settings`
/// are merged into `providers.anthropic`.
fn retarget(text: &str, url: &str, settings: &[(&str, Value)]) -> String {
    let mut doc: serde_norway::Value = serde_norway::from_str(text).expect("example is YAML");
    let map = doc.as_mapping_mut().expect("a mapping");
    map.insert("provider".into(), "anthropic".into());
    let providers = map
        .entry("providers".into())
        .or_insert_with(|| serde_norway::Value::Mapping(Default::default()));
    let mut anthropic = json!({
        "base_url": url,
        "retry_backoff": "10ms",
        "rate_limits": {
            "environments_per_minute": "unlimited",
            "environments_concurrency": "unlimited",
            "creates_per_minute": "unlimited",
            "other_per_minute": "unlimited",
        },
    });
    for (k, v) in settings {
        anthropic[*k] = v.clone();
    }
    providers
        .as_mapping_mut()
        .expect("providers is a mapping")
        .insert(
            "anthropic".into(),
            serde_norway::to_value(&anthropic).expect("settings"),
        );
    serde_norway::to_string(&doc).expect("YAML")
}

/// A client of the test's own, patient enough for a server that injects faults.
struct Remote {
    rt: tokio::runtime::Runtime,
    api: Arc<AnthropicRuntime>,
}

/// What a server holds for one project (`agentform.manifest` metadata).
#[derive(Debug)]
struct Live {
    agents: Vec<Agent>,
    environments: Vec<Environment>,
    sessions: Vec<Session>,
}

impl Live {
    fn addresses<'a>(metadata: impl Iterator<Item = &'a BTreeMap<String, String>>) -> Vec<String> {
        let mut out: Vec<String> = metadata
            .map(|m| m.get("agentform.address").cloned().unwrap_or_default())
            .collect();
        out.sort();
        out
    }

    fn live_agents(&self) -> Vec<String> {
        Self::addresses(
            self.agents
                .iter()
                .filter(|a| a.archived_at.is_none())
                .map(|a| &a.metadata),
        )
    }

    fn environment_addresses(&self) -> Vec<String> {
        Self::addresses(self.environments.iter().map(|e| &e.metadata))
    }

    fn session_addresses(&self) -> Vec<String> {
        Self::addresses(self.sessions.iter().map(|s| &s.metadata))
    }
}

impl Remote {
    fn new(url: &str) -> Remote {
        let mut options = AnthropicOptions {
            base_url: Some(url.to_owned()),
            api_key: Some(Secret::new(KEY)),
            limits: RateLimits::unlimited(),
            max_retries: 30,
            retry_backoff: Some(Duration::from_millis(5)),
            ..AnthropicOptions::default()
        };
        options.timeout = Duration::from_secs(30);
        Remote {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio"),
            api: Arc::new(AnthropicRuntime::new(options).expect("client")),
        }
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Everything tagged with `project`, archived objects included.
    fn project(&self, project: &str) -> Live {
        let api = &self.api;
        let mine = |m: &BTreeMap<String, String>| {
            m.get("agentform.manifest").map(String::as_str) == Some(project)
        };
        self.block_on(async {
            let agents = list_all(|q| async move { api.list_agents(&q).await })
                .await
                .expect("list agents");
            let environments = list_all(|q| async move { api.list_environments(&q).await })
                .await
                .expect("list environments");
            let sessions = list_all(|q| async move { api.list_sessions(&q).await })
                .await
                .expect("list sessions");
            Live {
                agents: agents.into_iter().filter(|a| mine(&a.metadata)).collect(),
                environments: environments
                    .into_iter()
                    .filter(|e| mine(&e.metadata))
                    .collect(),
                sessions: sessions
                    .into_iter()
                    .filter(|s| mine(&s.metadata) && s.archived_at.is_none())
                    .collect(),
            }
        })
    }

    fn event_ids(&self, session_id: &str) -> Vec<String> {
        let api = &self.api;
        let events = self.block_on(async {
            list_all(|q| async move { api.list_events(session_id, &q).await })
                .await
                .expect("list events")
        });
        events
            .iter()
            .map(|e| e["id"].as_str().expect("event id").to_owned())
            .collect()
    }

    fn versions(&self, agent_id: &str) -> Vec<u64> {
        let api = &self.api;
        let page = self.block_on(async {
            list_all(|q| async move { api.list_agent_versions(agent_id, &q).await })
                .await
                .expect("list versions")
        });
        let mut v: Vec<u64> = page.iter().map(|a| a.version).collect();
        v.sort_unstable();
        v
    }
}

/// The addresses a manifest declares, by kind.
fn declared(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let doc: serde_norway::Value = serde_norway::from_str(text).unwrap();
    let names = |kind: &str, prefix: &str| -> Vec<String> {
        let mut out: Vec<String> = doc
            .get(kind)
            .and_then(serde_norway::Value::as_mapping)
            .map(|m| {
                m.keys()
                    .map(|k| format!("{prefix}.{}", k.as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    (
        names("agents", "agent"),
        names("environments", "environment"),
        names("sessions", "session"),
    )
}

fn project_name(text: &str) -> String {
    let doc: serde_norway::Value = serde_norway::from_str(text).unwrap();
    doc["name"].as_str().expect("examples are named").to_owned()
}

/// Sessions with steps whose agents' models are all scripted: these run offline.
fn runs_offline(text: &str) -> bool {
    let doc: serde_norway::Value = serde_norway::from_str(text).unwrap();
    let models = &doc["providers"]["local"]["models"];
    let Some(sessions) = doc["sessions"].as_mapping() else {
        return false;
    };
    let mut any = false;
    for s in sessions.values() {
        if s["steps"].as_sequence().is_none_or(|v| v.is_empty()) {
            continue;
        }
        let agent = s["agent"]
            .as_str()
            .or_else(|| s["agent"]["name"].as_str())
            .unwrap();
        let model = doc["agents"][agent]["model"].as_str().unwrap_or_default();
        if models[model]["backend"].as_str() != Some("scripted") {
            return false;
        }
        any = true;
    }
    any
}

/// The event ids of every transcript under the test's state, by session id.
fn transcript_events(t: &Test) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files_under(&t.path("state/transcripts")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut session = None;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            match v["kind"].as_str() {
                Some("header") => session = v["session_id"].as_str().map(str::to_owned),
                Some("event") => out
                    .entry(session.clone().expect("header first"))
                    .or_default()
                    .push(v["event"]["id"].as_str().unwrap().to_owned()),
                _ => {}
            }
        }
    }
    out
}

/// Every transcript equals its session's history on the server, in order and
/// without repeats.
#[track_caller]
fn transcripts_match_history(t: &Test, remote: &Remote) -> usize {
    let transcripts = transcript_events(t);
    assert!(!transcripts.is_empty(), "no transcript was written");
    let mut events = 0;
    for (session, ids) in &transcripts {
        let history = remote.event_ids(session);
        assert_eq!(
            ids, &history,
            "the transcript of {session} must equal the server's history"
        );
        events += ids.len();
    }
    events
}

/// Applies, checks, runs (when offline) and destroys one manifest through
/// the provider, verifying the server's objects after each step.
fn round_trip(t: &Test, text: &str, remote: &Remote) {
    let project = project_name(text);
    let (agents, environments, sessions) = declared(text);
    t.run(&["validate", "-f", "example"]).success();
    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success()
        .stdout_has("Apply complete!");
    t.run(&["plan", "-f", "example", "--refresh", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes.");

    let live = remote.project(&project);
    assert_eq!(
        live.live_agents(),
        agents,
        "{project}: agents on the server"
    );
    assert_eq!(
        live.agents.len(),
        agents.len(),
        "{project}: no duplicate or stray agents"
    );
    assert_eq!(live.environment_addresses(), environments, "{project}");
    assert_eq!(live.session_addresses(), sessions, "{project}");

    if runs_offline(text) {
        t.run(&["run", "-f", "example"]).success();
        transcripts_match_history(t, remote);
    }

    t.run(&["destroy", "-f", "example", "--auto-approve"])
        .success();
    let live = remote.project(&project);
    assert!(
        live.live_agents().is_empty(),
        "{project}: agents left unarchived: {:?}",
        live.live_agents()
    );
    assert!(
        live.environments.is_empty() && live.sessions.is_empty(),
        "{project}: objects left behind: {live:?}"
    );
}

fn example_test(text: &str, url: &str, settings: &[(&str, Value)]) -> Test {
    let t = Test::new().env("ANTHROPIC_API_KEY", KEY);
    t.write("example/agentform.yaml", &retarget(text, url, settings));
    t
}

/// A server whose models come from `text`, and a test directory holding
/// `text` retargeted at it as `example/`.
fn served(
    text: &str,
    extra: &[&str],
    rust_log: Option<&str>,
    settings: &[(&str, Value)],
) -> (Test, Server, Remote) {
    let t = Test::new().env("ANTHROPIC_API_KEY", KEY);
    t.write("served.yaml", text);
    let server = Server::start_with(&t.path("served.yaml"), KEY, extra, rust_log);
    let remote = Remote::new(&server.url);
    t.write(
        "example/agentform.yaml",
        &retarget(text, &server.url, settings),
    );
    (t, server, remote)
}

fn example_texts() -> Vec<(std::path::PathBuf, String)> {
    let dir = repo().join("examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = entry.path();
        let file = if p.join("agentform.yaml").is_file() {
            p.join("agentform.yaml")
        } else if p.extension().is_some_and(|e| e == "yaml") {
            p.clone()
        } else {
            continue;
        };
        out.push((p, std::fs::read_to_string(&file).unwrap()));
    }
    out.sort();
    assert!(out.len() >= 3, "examples: {out:?}");
    out
}

#[test]
fn the_examples_apply_run_and_destroy_through_the_provider() {
    for (path, text) in example_texts() {
        let server = Server::start(&path, &[]);
        let remote = Remote::new(&server.url);
        let t = example_test(&text, &server.url, &[]);
        round_trip(&t, &text, &remote);
        server.stop_gracefully();
    }
}

/// A project of several environments, agents and sessions, and a scripted
/// conversation with a custom tool and a confirmation.
const FLEET: &str = r#"
version: 1
name: fleet
providers:
  local:
    models:
      scripted-support:
        backend: scripted
        turns:
          - text: Let me look that ticket up.
            tool_use:
              - name: lookup_ticket
                input: { id: T-7 }
          - text: Ticket T-7 is open.
          - tool_use:
              - name: bash
                input: { command: "echo noted > note.txt && cat note.txt" }
          - text: Noted.
environments:
  e1: { config: { type: cloud } }
  e2: { config: { type: cloud, networking: { type: unrestricted } } }
  e3: { description: third, config: { type: cloud } }
  e4: { config: { type: cloud } }
agents:
  a1: { model: claude-sonnet-4-6, system: "first {{ environment.e1.id }}" }
  a2: { model: claude-sonnet-4-6, system: second }
  a3: { model: claude-sonnet-4-6, system: third, description: three }
  a4: { model: claude-haiku-4-5, system: fourth }
  a5: { model: claude-haiku-4-5, system: fifth }
  support:
    model: scripted-support
    system: You are a support agent.
    tools:
      - type: agent_toolset_20260401
        configs:
          - name: bash
            permission_policy: { type: always_ask }
      - type: custom
        name: lookup_ticket
        description: Look up a ticket
        input_schema: { type: object, properties: { id: { type: string } } }
sessions:
  s1: { agent: a1, environment: e1 }
  s2: { agent: a2, environment: e2, title: two }
  s3: { agent: { name: a3, version: 1 }, environment: e3 }
  s4: { agent: a4, environment: e4 }
  s5: { agent: a5, environment: e1 }
  triage:
    agent: support
    environment: e2
    tools:
      lookup_ticket: { result: "ticket T-7: open" }
    confirm: { bash: allow }
    steps:
      - send: What is T-7 about?
        expect: [{ contains: T-7 }, { tool_used: lookup_ticket }]
      - send: Note it.
        expect: [{ tool_used: bash }, { contains: Noted }]
"#;

#[test]
fn thirty_percent_failing_calls_still_converge_to_the_exact_desired_set() {
    let faults = [
        "--fail-rate",
        "0.3",
        "--fail-status",
        "429,500,529",
        "--fail-after",
        "0.5",
    ];
    let (t, server, remote) = served(FLEET, &faults, None, &[("max_retries", json!(15))]);
    let text = t.read("example/agentform.yaml");
    let (agents, environments, sessions) = declared(&text);

    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success();
    let live = remote.project("fleet");
    assert_eq!(live.live_agents(), agents);
    assert_eq!(live.agents.len(), agents.len(), "no duplicate agents");
    assert_eq!(
        live.environment_addresses(),
        environments,
        "no duplicate environments"
    );
    assert_eq!(live.session_addresses(), sessions, "no duplicate sessions");
    assert!(live.agents.iter().all(|a| a.version == 1));

    // Two agents change: exactly one new version each, even when an update's
    // answer was lost after it took effect.
    let edited = text
        .replace("system: second", "system: second, edited")
        .replace("system: fifth", "system: fifth, edited");
    assert_ne!(edited, text);
    t.write("example/agentform.yaml", &edited);
    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success();
    t.run(&["plan", "-f", "example", "--refresh", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes.");
    let live = remote.project("fleet");
    assert_eq!(live.agents.len(), agents.len());
    for agent in &live.agents {
        let address = &agent.metadata["agentform.address"];
        let want = if address == "agent.a2" || address == "agent.a5" {
            vec![1, 2]
        } else {
            vec![1]
        };
        assert_eq!(remote.versions(&agent.id), want, "versions of {address}");
    }
    // s2 and s5 run the latest version, so they were replaced; the pinned
    // s3 was not.
    assert_eq!(live.session_addresses(), sessions, "no duplicate sessions");

    t.run(&["run", "-f", "example"]).success();
    let events = transcripts_match_history(&t, &remote);
    assert!(events > 10, "{events} events");

    t.run(&["destroy", "-f", "example", "--auto-approve"])
        .success();
    let live = remote.project("fleet");
    assert!(live.live_agents().is_empty(), "{live:?}");
    assert!(live.environments.is_empty() && live.sessions.is_empty());
    let logs = server.logs();
    let failed = logs.matches("request failed").count();
    assert!(
        failed >= 5,
        "{failed} injected 5xx faults: too few to mean anything"
    );
    drop(server);
}

#[test]
fn a_stream_dropped_every_seven_events_still_yields_the_complete_transcript() {
    let path = repo().join("examples/conversation");
    let text = std::fs::read_to_string(path.join("agentform.yaml")).unwrap();
    let server = Server::start(&path, &["--drop-stream-after", "7"]);
    let remote = Remote::new(&server.url);
    let t = example_test(&text, &server.url, &[]);
    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success();
    t.run(&["run", "-f", "example"]).success();
    let events = transcripts_match_history(&t, &remote);
    assert!(
        events > 14,
        "{events} events: the stream must have dropped more than once"
    );
    server.stop_gracefully();
}

const DRIFT: &str = r#"
version: 1
name: drift
environments:
  data: { config: { type: cloud } }
  spare: { config: { type: cloud } }
agents:
  helper: { model: claude-sonnet-4-6, system: Help. }
sessions:
  chat: { agent: helper, environment: data }
"#;

#[test]
fn drift_made_outside_agentform_is_reported_and_repaired() {
    let (t, server, remote) = served(DRIFT, &[], None, &[]);
    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success();
    let agent = remote_id(&t, "agent.helper");
    let spare = remote_id(&t, "environment.spare");
    let chat = remote_id(&t, "session.chat");
    remote.block_on(async {
        remote
            .api
            .update_agent(
                &agent,
                json!({"version": 1, "system": "changed in the console"}),
            )
            .await
            .expect("update outside agentform");
        remote
            .api
            .delete_environment(&spare)
            .await
            .expect("delete outside agentform");
        remote
            .api
            .archive_session(&chat)
            .await
            .expect("archive outside agentform");
    });

    let out = t.run(&["plan", "-f", "example", "--refresh"]).success();
    for needle in [
        "agent.helper: version moved from 1 to 2",
        "environment.spare: deleted outside agentform",
        "session.chat: archived outside agentform",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?}\n{}", out.stdout);
    }
    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success();
    t.run(&["plan", "-f", "example", "--refresh", "--detailed-exitcode"])
        .success()
        .stdout_has("No changes.");
    let live = remote.project("drift");
    let helper = live.agents.iter().find(|a| a.id == agent).unwrap();
    assert_eq!(helper.system.as_deref(), Some("Help."));
    assert_eq!(helper.version, 3);
    assert_eq!(
        live.environment_addresses(),
        ["environment.data", "environment.spare"]
    );
    assert_eq!(live.session_addresses(), ["session.chat"]);
    server.stop_gracefully();
}

#[test]
fn the_credential_never_reaches_anything_written() {
    const SECRET: &str = "sk-ant-api03-agentform-test-Zq81xWv0";
    const REPO_TOKEN: &str = "ghp_agentformTestToken0000000000000001";
    const LITERAL_TOKEN: &str = "ghp_agentformLiteralToken00000000000002";
    let path = repo().join("examples/conversation");
    let text = std::fs::read_to_string(path.join("agentform.yaml")).unwrap();
    let server = Server::start_with(&path, SECRET, &["--fail-rate", "0.2"], None);
    let t = Test::new()
        .env("ANTHROPIC_API_KEY", SECRET)
        .env("REPO_TOKEN", REPO_TOKEN)
        .env("RUST_LOG", "trace");
    // The session mounts a repository whose token comes from the environment,
    // and another whose token is written in the manifest: neither is stored.
    let mut doc: serde_norway::Value =
        serde_norway::from_str(&retarget(&text, &server.url, &[("max_retries", json!(15))]))
            .unwrap();
    doc["sessions"]["triage"]["resources"] = serde_norway::to_value(json!([
        {"type": "github_repository", "url": "https://github.com/example/tickets",
         "authorization_token": "{{ env('REPO_TOKEN') }}", "checkout": {"type": "branch", "name": "main"}},
        {"type": "github_repository", "url": "https://github.com/example/docs",
         "authorization_token": LITERAL_TOKEN},
    ]))
    .unwrap();
    doc["sessions"]["triage"]["vault_ids"] =
        serde_norway::to_value(json!(["vlt_tickets"])).unwrap();
    t.write(
        "example/agentform.yaml",
        &serde_norway::to_string(&doc).unwrap(),
    );
    let mut outputs = Vec::new();
    for args in [
        &["plan", "-f", "example", "-vvv"][..],
        &["apply", "-f", "example", "--auto-approve", "-vvv"],
        &["plan", "-f", "example", "--refresh", "-vvv"],
        &["plan", "-f", "example", "--json"],
        &["run", "-f", "example", "-vvv"],
        &["state", "show", "session.triage", "-vvv"],
        &["destroy", "-f", "example", "--auto-approve", "-vvv"],
    ] {
        outputs.push(t.run(args).success());
    }
    // A wrong key: the error names the fix and the request, not the key.
    let wrong = Test::new().env("ANTHROPIC_API_KEY", "sk-ant-api03-wrong-key-Pq77");
    wrong.write("example/agentform.yaml", &retarget(&text, &server.url, &[]));
    let out = wrong
        .run(&["apply", "-f", "example", "--auto-approve", "-vvv"])
        .code(1)
        .stderr_has("check ANTHROPIC_API_KEY")
        .stderr_has("request_id: req_");
    assert!(!out.stderr.contains("sk-ant-api03-wrong-key-Pq77"));
    assert!(!out.stdout.contains("sk-ant-api03-wrong-key-Pq77"));

    let logged: usize = outputs.iter().map(|o| o.stderr.len()).sum();
    assert!(logged > 10_000, "-vvv should log plenty ({logged} bytes)");
    for o in &outputs {
        for secret in [SECRET, REPO_TOKEN, LITERAL_TOKEN] {
            assert!(
                !o.stdout.contains(secret) && !o.stderr.contains(secret),
                "{secret} in the output:\n{}\n{}",
                o.stdout,
                o.stderr
            );
        }
    }
    assert!(
        outputs[0].stdout.contains("(sensitive)"),
        "the plan shows the tokens as sensitive:\n{}",
        outputs[0].stdout
    );
    let files = files_under(t.root());
    assert!(
        files.iter().any(|f| f.ends_with("agentform.lock")),
        "{files:?}"
    );
    assert!(files
        .iter()
        .any(|f| f.to_string_lossy().contains("transcripts")));
    for f in files {
        if f.ends_with("example/agentform.yaml") {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        for secret in [SECRET, REPO_TOKEN, LITERAL_TOKEN] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} contains {secret}",
                f.display()
            );
        }
    }
    drop(server);
}

#[test]
fn missing_credentials_stop_before_anything_changes() {
    let t = Test::new();
    t.write(
        "agentform.yaml",
        "version: 1\nprovider: anthropic\nproviders:\n  anthropic:\n    base_url: http://127.0.0.1:9\n    api_key_env: MY_TEAM_KEY\nagents:\n  a: { model: claude-sonnet-4-6 }\n",
    );
    t.run(&["validate"]).success();
    for cmd in [&["plan"][..], &["apply", "--auto-approve"]] {
        t.run(cmd)
            .code(1)
            .stderr_has("set MY_TEAM_KEY")
            .stderr_has("ANTHROPIC_AUTH_TOKEN");
    }
    // The local provider alone never asks for a key.
    t.write(
        "agentform.yaml",
        "version: 1\nagents:\n  a: { model: claude-sonnet-4-6 }\n",
    );
    t.run(&["apply", "--auto-approve"]).success();
}

#[test]
fn the_state_remembers_where_its_objects_live() {
    let (t, server, remote) = served(DRIFT, &[], None, &[]);
    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success();

    // A manifest that now points elsewhere is refused before anything changes.
    t.write(
        "elsewhere/agentform.yaml",
        &retarget(DRIFT, "http://127.0.0.1:9", &[]),
    );
    let records = || t.run(&["state", "list"]).success().stdout;
    let before = records();
    t.run(&["plan", "-f", "elsewhere"])
        .code(1)
        .stderr_has(&format!(
            "the state holds `anthropic` objects at {}/",
            server.url
        ))
        .stderr_has("http://127.0.0.1:9/")
        .stderr_has("hint: set `providers.anthropic.base_url`");
    assert_eq!(records(), before, "the state changed");

    // Without a manifest, destroy goes where the objects are.
    t.run(&["destroy", "--auto-approve"]).success();
    let live = remote.project("drift");
    assert!(live.live_agents().is_empty(), "{live:?}");
    assert!(live.environments.is_empty() && live.sessions.is_empty());
    server.stop_gracefully();
}

#[test]
fn refreshing_many_resources_lists_them_and_still_sees_every_drift() {
    let mut text = String::from("version: 1\nname: many\nenvironments:\n");
    for i in 0..20 {
        text.push_str(&format!("  e{i}: {{ config: {{ type: cloud }} }}\n"));
    }
    text.push_str("agents:\n");
    for i in 0..20 {
        text.push_str(&format!(
            "  a{i}: {{ model: claude-sonnet-4-6, system: \"agent {i}\" }}\n"
        ));
    }
    let (t, server, remote) = served(&text, &[], Some("agentform=debug"), &[]);
    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success();
    let (a3, a7, e5) = (
        remote_id(&t, "agent.a3"),
        remote_id(&t, "agent.a7"),
        remote_id(&t, "environment.e5"),
    );
    remote.block_on(async {
        let api = &remote.api;
        api.update_agent(&a3, json!({"version": 1, "system": "edited"}))
            .await
            .unwrap();
        api.archive_agent(&a7).await.unwrap();
        api.delete_environment(&e5).await.unwrap();
    });
    let requests = |logs: &str, pattern: &str| logs.matches(pattern).count();
    let before = server.logs();
    let out = t.run(&["plan", "-f", "example", "--refresh"]).success();
    for needle in [
        "agent.a3: version moved from 1 to 2",
        "agent.a7: archived outside agentform",
        "environment.e5: deleted outside agentform",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?}\n{}", out.stdout);
    }
    let logs = server.logs();
    let logs = &logs[before.len().min(logs.len())..];
    // Two lists and one read of the deleted environment instead of 40 reads.
    let reads = requests(logs, "method=GET path=/v1/agents/")
        + requests(logs, "method=GET path=/v1/environments/");
    let lists = requests(logs, "method=GET path=/v1/agents ")
        + requests(logs, "method=GET path=/v1/environments ");
    assert_eq!((lists, reads), (2, 1), "{logs}");
    server.stop_gracefully();
}

#[test]
fn objects_made_in_the_console_are_imported_and_gone_ones_get_a_hint() {
    let (t, server, remote) = served(DRIFT, &[], None, &[]);
    // The agent exists already, made by hand with the manifest's body.
    let made = remote.block_on(async {
        remote
            .api
            .create_agent(
                json!({"name": "helper", "model": "claude-sonnet-4-6", "system": "Help."}),
            )
            .await
            .unwrap()
    });
    t.run(&["state", "import", "-f", "example", "agent.helper", &made.id])
        .success()
        .stdout_has("Imported agent.helper");
    t.run(&["apply", "-f", "example", "--auto-approve"])
        .success();
    // Adopted, not duplicated.
    assert_eq!(remote_id(&t, "agent.helper"), made.id);
    let api = &remote.api;
    let helpers: Vec<Agent> = remote.block_on(async {
        list_all(|q| async move { api.list_agents(&q).await })
            .await
            .unwrap()
    });
    let helpers: Vec<&Agent> = helpers.iter().filter(|a| a.name == "helper").collect();
    assert_eq!(helpers.len(), 1, "{helpers:?}");

    let bogus = "agent_0000000000000000000000000";
    t.run(&["state", "import", "-f", "example", "agent.helper", bogus])
        .code(1)
        .stderr_has("already in the state");
    t.run(&["state", "rm", "agent.helper"]).success();
    t.run(&["state", "import", "-f", "example", "agent.helper", bogus])
        .code(1)
        .stderr_has("not_found_error (404)")
        .stderr_has("request_id: req_")
        .stderr_has("agentform state rm ADDR");
    server.stop_gracefully();
}
