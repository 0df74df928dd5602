//! `agentform run`: scripted conversations, expectations, tool handlers,
//! confirmations, interrupts, transcripts and reports.

use crate::common::*;

const CONVERSATION: &str = include_str!("../examples/conversation/agentform.yaml");

/// A manifest with one scripted agent and one session; `turns` and `session`
/// are YAML fragments indented to fit.
fn manifest(turns: &str, tools: &str, session: &str) -> String {
    format!(
        r#"version: 1
name: runtest
providers:
  local:
    models:
      scripted:
        backend: scripted
        turns:
{turns}
environments:
  box:
    config: {{ type: cloud }}
agents:
  bot:
    model: scripted
    system: test bot
    tools:
{tools}
sessions:
  chat:
    agent: bot
    environment: box
{session}
"#
    )
}

const TOOLSET: &str = "      - type: agent_toolset_20260401\n";

fn applied(contents: &str) -> Test {
    let t = Test::new();
    t.write("agentform.yaml", contents);
    t.run(&["apply", "--auto-approve"]).success();
    t
}

/// The only transcript file under `state_dir`.
fn transcript_file(state_dir: &std::path::Path) -> std::path::PathBuf {
    let files = files_under(&state_dir.join("transcripts"));
    assert_eq!(files.len(), 1, "expected one transcript: {files:?}");
    files[0].clone()
}

fn events_of(file: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["kind"] == "event")
        .map(|l| l["event"].clone())
        .collect()
}

fn transcript_events(t: &Test) -> Vec<serde_json::Value> {
    events_of(&transcript_file(&t.path("state")))
}

#[test]
fn the_conversation_example_passes_and_reports() {
    let t = applied(CONVERSATION);
    let out = t.run(&["run", "--junit", "report.xml"]).success();
    assert!(out.stdout.contains("1 passed, 0 failed"), "{}", out.stdout);
    let xml = t.read("report.xml");
    assert!(
        xml.contains(r#"<testcase name="session.triage""#) && !xml.contains("<failure"),
        "{xml}"
    );

    // The host command got the tool input on stdin; bash ran after confirmation.
    let events = transcript_events(&t);
    let result = events
        .iter()
        .find(|e| e["type"] == "user.custom_tool_result")
        .expect("custom tool result");
    assert!(
        result.to_string().contains(r#"ticket: {\"id\":\"T-42\"}"#),
        "{result}"
    );
    assert!(events
        .iter()
        .any(|e| e["type"] == "user.tool_confirmation" && e["result"] == "allow"));
    let bash = events
        .iter()
        .find(|e| e["type"] == "agent.tool_result")
        .expect("bash result");
    assert!(bash.to_string().contains("refund T-42: 30 EUR"), "{bash}");

    let list = t.run(&["transcripts", "list"]).success().stdout;
    assert!(list.contains("/triage\tpassed"), "{list}");
    let shown = t
        .run(&["transcripts", "show", "latest/triage"])
        .success()
        .stdout;
    assert!(
        shown.contains("user  › What is ticket T-42 about?")
            && shown.contains("tool lookup_ticket"),
        "{shown}"
    );
    t.run(&[
        "transcripts",
        "export",
        "latest/triage",
        "--format",
        "html",
        "-o",
        "t.html",
    ])
    .success();
    let html = t.read("t.html");
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<details") && html.contains("T-42")
    );
    let md = t
        .run(&[
            "transcripts",
            "export",
            "latest/triage",
            "--format",
            "markdown",
        ])
        .success()
        .stdout;
    assert!(md.contains("**User:** What is ticket T-42 about?"));
}

#[test]
fn a_failing_expectation_fails_the_run_and_the_junit_report() {
    let session = "    steps:\n      - send: hello\n        expect:\n          - contains: goodbye\n          - stop_reason: end_turn\n";
    let t = applied(&manifest(
        "          - text: hello there\n",
        TOOLSET,
        session,
    ));
    let out = t.run(&["run", "--junit", "report.xml"]).code(1);
    assert!(
        out.stdout.contains("0 passed, 1 failed") && out.stdout.contains("FAILED session.chat"),
        "{}",
        out.stdout
    );
    let xml = t.read("report.xml");
    assert!(
        xml.contains(r#"<failure message="step 1: contains &quot;goodbye&quot;""#),
        "{xml}"
    );
    assert_eq!(
        xml.matches("<failure").count(),
        1,
        "only the unmet expectation fails: {xml}"
    );
}

#[test]
fn confirmation_denied_means_the_tool_does_not_run() {
    let turns = "          - tool_use: [{ name: bash, input: { command: 'touch ran.txt' } }]\n          - text: done\n";
    let tools = "      - type: agent_toolset_20260401\n        default_config: { permission_policy: { type: always_ask } }\n";
    let session = "    confirm:\n      bash: { deny: not in CI }\n    steps:\n      - send: go\n        expect: [{ contains: done }]\n";
    let t = applied(&manifest(turns, tools, session));
    t.run(&["run"]).success();
    let events = transcript_events(&t);
    let result = events
        .iter()
        .find(|e| e["type"] == "agent.tool_result")
        .unwrap();
    assert_eq!(result["is_error"], true);
    assert!(result.to_string().contains("not in CI"), "{result}");
    let ws = t.path("state/workspaces");
    let ran = files_under(&ws).iter().any(|p| p.ends_with("ran.txt"));
    assert!(!ran, "the denied command ran");
}

#[test]
fn escaping_the_workspace_is_refused() {
    let turns = "          - tool_use:\n              - { name: read, input: { file_path: ../../../../../etc/passwd } }\n              - { name: write, input: { file_path: /tmp/agentform-escape-test, content: x } }\n          - text: done\n";
    let session = "    steps:\n      - send: go\n";
    let t = applied(&manifest(turns, TOOLSET, session));
    t.run(&["run"]).success();
    let events = transcript_events(&t);
    let results: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "agent.tool_result")
        .collect();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["is_error"], true, "{r}");
        assert!(r.to_string().contains("outside the workspace"), "{r}");
    }
    assert!(!std::path::Path::new("/tmp/agentform-escape-test").exists());
}

#[test]
fn interrupt_on_a_tool_stops_a_long_command() {
    let turns = "          - tool_use: [{ name: bash, input: { command: 'sleep 60' } }]\n          - text: never\n";
    let session = "    steps:\n      - send: go\n        timeout: 40s\n        interrupt: { on_tool: bash }\n        expect:\n          - stop_reason: end_turn\n          - not_contains: never\n";
    let t = applied(&manifest(turns, TOOLSET, session));
    t.run(&["run"]).success();
    let events = transcript_events(&t);
    assert!(events.iter().any(|e| e["type"] == "user.interrupt"));
}

#[test]
fn each_run_starts_a_fresh_session_unless_continued() {
    let session = "    steps:\n      - send: hi\n";
    let t = applied(&manifest(
        "          - text: one\n          - text: two\n          - text: three\n",
        TOOLSET,
        session,
    ));
    t.run(&["run"]).success();
    let first = session_id(&t);
    t.run(&["run"]).success();
    let second = session_id(&t);
    assert_ne!(first, second);
    t.run(&["run", "--continue"]).success();
    assert_eq!(session_id(&t), second);
    let (_, _, sessions) = live_objects(&t.path("state"));
    let old = sessions.iter().find(|s| s.id == first).unwrap();
    assert!(
        old.archived_at.is_some(),
        "the previous session is archived"
    );
    t.run(&["plan", "--refresh", "--detailed-exitcode"])
        .success();
}

#[test]
fn run_refuses_unapplied_changes_and_unknown_sessions() {
    let session = "    steps:\n      - send: hi\n";
    let t = applied(&manifest("          - text: one\n", TOOLSET, session));
    t.run(&["run", "--session", "nope"])
        .code(1)
        .stderr_has("not declared");
    t.write(
        "agentform.yaml",
        &manifest("          - text: one\n", TOOLSET, session).replace("test bot", "changed bot"),
    );
    t.run(&["run"]).code(1).stderr_has("not applied");
}

fn session_id(t: &Test) -> String {
    remote_id(t, "session.chat")
}

/// Events without ids and times, to compare two runs.
fn shape(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            strip(&mut e);
            e.to_string()
        })
        .collect()
}

fn strip(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for k in [
                "id",
                "processed_at",
                "tool_use_id",
                "custom_tool_use_id",
                "model_request_start_id",
                "event_ids",
            ] {
                m.remove(k);
            }
            m.values_mut().for_each(strip);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

#[test]
fn a_recorded_transcript_replays_the_same_events() {
    let turns = "          - text: Checking the files.\n            tool_use: [{ name: bash, input: { command: 'echo 42 > n.txt; cat n.txt' } }]\n          - text: The number is 42.\n          - text: Bye.\n";
    let session = "    steps:\n      - send: what is the number?\n        expect: [{ contains: '42' }]\n      - send: bye\n";
    let t = applied(&manifest(turns, TOOLSET, session));
    t.run(&["run"]).success();
    let recorded = transcript_events(&t);
    std::fs::create_dir_all(t.path("replay")).unwrap();
    std::fs::copy(
        transcript_file(&t.path("state")),
        t.path("replay/recorded.jsonl"),
    )
    .unwrap();

    let replay = manifest("", TOOLSET, session).replace(
        "        backend: scripted\n        turns:\n",
        "        backend: scripted\n        transcript: recorded.jsonl\n",
    );
    t.write("replay/agentform.yaml", &replay);
    t.run(&[
        "apply",
        "-f",
        "replay",
        "--state",
        "replay/state",
        "--auto-approve",
    ])
    .success();
    t.run(&["run", "-f", "replay", "--state", "replay/state"])
        .success();
    let replayed = events_of(&transcript_file(&t.path("replay/state")));
    assert_eq!(shape(&recorded), shape(&replayed));
}

#[test]
fn a_missing_api_key_is_a_clear_failure_not_a_hang() {
    let t = Test::new().env("AGENTFORM_TEST_UNSET_KEY", "");
    t.write(
        "agentform.yaml",
        "version: 1\nproviders:\n  local:\n    models:\n      claude-sonnet-4-6: { backend: anthropic, api_key_env: AGENTFORM_TEST_UNSET_KEY }\nenvironments:\n  box: { config: { type: cloud } }\nagents:\n  a: { model: claude-sonnet-4-6 }\nsessions:\n  s:\n    agent: a\n    environment: box\n    steps:\n      - send: hi\n        timeout: 60s\n",
    );
    t.run(&["apply", "--auto-approve"]).success();
    let out = t.run(&["run"]).code(1);
    let events = transcript_events(&t);
    let error = events
        .iter()
        .find(|e| e["type"] == "session.error")
        .expect("a session.error");
    assert!(
        error.to_string().contains("AGENTFORM_TEST_UNSET_KEY"),
        "{error}"
    );
    assert!(out.stdout.contains("FAILED session.s"), "{}", out.stdout);
}

/// Control characters anywhere but in `\n` and `\t`.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\t'))
        .collect()
}

#[test]
fn terminal_escapes_from_the_model_and_tools_are_shown_escaped() {
    // A title change, a screen clear and fake colours, from the model and
    // from a tool's output.
    let turns = r#"          - tool_use: [{ name: bash, input: { command: 'printf ''\033]0;tool-title\007\033[2Jtool-out''' } }]
          - text: "\e]0;pwned\a\e[2J\e[32mall tests passed\e[0m"
"#;
    let session = "    steps:\n      - send: go\n        expect: [{ contains: never said }]\n";
    let t = applied(&manifest(turns, TOOLSET, session));

    let out = t.run(&["run"]).code(1);
    assert!(raw_controls(&out.stdout).is_empty(), "{:?}", out.stdout);
    assert!(raw_controls(&out.stderr).is_empty(), "{:?}", out.stderr);
    assert!(
        out.stdout
            .contains(r"reply: \u001b]0;pwned\u0007\u001b[2J\u001b[32mall tests passed\u001b[0m"),
        "{}",
        out.stdout
    );

    let shown = t.run(&["transcripts", "show", "latest/chat"]).success();
    assert!(raw_controls(&shown.stdout).is_empty(), "{:?}", shown.stdout);
    assert!(
        shown
            .stdout
            .contains(r"agent › \u001b]0;pwned\u0007\u001b[2J"),
        "{}",
        shown.stdout
    );
    assert!(
        shown
            .stdout
            .contains(r"\u001b]0;tool-title\u0007\u001b[2Jtool-out"),
        "{}",
        shown.stdout
    );
    for format in ["markdown", "html"] {
        let exported = t
            .run(&["transcripts", "export", "latest/chat", "--format", format])
            .success();
        assert!(raw_controls(&exported.stdout).is_empty(), "{format}");
        assert!(exported.stdout.contains(r"\u001b]0;pwned"), "{format}");
    }

    // The transcript keeps what was received.
    let events = transcript_events(&t);
    let text_of = |kind: &str| {
        let e = events
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"));
        agentform::runtime::event::text(e)
    };
    assert_eq!(
        text_of("agent.message"),
        "\x1b]0;pwned\x07\x1b[2J\x1b[32mall tests passed\x1b[0m"
    );
    assert!(
        text_of("agent.tool_result").contains("\x1b]0;tool-title\x07\x1b[2Jtool-out"),
        "{events:?}"
    );
}

#[test]
fn secrets_never_reach_transcripts() {
    let secret = "tok-5ecret-777";
    let turns = "          - text: \"the token is tok-5ecret-777\"\n";
    let session = "    metadata: { token: \"{{ env('RUN_SECRET') }}\" }\n    steps:\n      - send: \"use {{ env('RUN_SECRET') }}\"\n";
    let t = Test::new().env("RUN_SECRET", secret);
    t.write("agentform.yaml", &manifest(turns, TOOLSET, session));
    t.run(&["apply", "--auto-approve"]).success();
    t.run(&["run"]).success();
    let dir = t.path("state/transcripts");
    for f in files_under(&dir) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(secret),
            "{} contains the secret",
            f.display()
        );
    }
}

#[test]
fn a_dropped_stream_still_yields_the_complete_history() {
    let turns = "          - text: first\n            tool_use: [{ name: bash, input: { command: 'echo one' } }]\n          - text: second\n            tool_use: [{ name: bash, input: { command: 'echo two' } }]\n          - text: third\n          - text: fourth\n";
    let session = "    steps:\n      - send: go\n        expect: [{ contains: third }]\n      - send: again\n        expect: [{ contains: fourth }]\n";
    let t = applied(&manifest(turns, TOOLSET, session));
    // Every stream ends after 3 events, so the runner reconnects many times.
    let t = t.env("AGENTFORM_LOCAL_DROP_STREAM_AFTER", "3");
    t.run(&["run"]).success();
    let transcript: Vec<String> = transcript_events(&t)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let id = session_id(&t);
    let history = with_runtime(&t, |rt| async move {
        use agentform::runtime::{list_all, Runtime};
        let rt = &rt;
        let id = &id;
        list_all(|q| async move { rt.list_events(id, &q).await })
            .await
            .unwrap()
    });
    let history: Vec<String> = history
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(history.len() > 12, "{history:?}");
    assert_eq!(
        transcript, history,
        "the transcript must equal the history, in order, without repeats"
    );
}

fn with_runtime<F, Fut, T>(t: &Test, f: F) -> T
where
    F: FnOnce(agentform::runtime::local::LocalRuntime) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = agentform::state::StateStore::open(&t.path("state"), "test").unwrap();
        let local =
            agentform::runtime::local::LocalRuntime::open(store.db(), Default::default()).unwrap();
        f(local).await
    })
}
