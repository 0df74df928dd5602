//! Secrets: every value read with `env()`, and every repository token, is
//! masked wherever it appears — inside longer strings too — in every file a
//! full `apply → run → transcripts → destroy` leaves and in every output.

use crate::common::*;

/// Each secret, by the variable that holds it; all long enough to be masked.
const SECRETS: &[(&str, &str)] = &[
    ("SYS_SECRET", "sysKey-4f9a1c77d2"),
    ("META_SECRET", "metaVal-83be01f5aa"),
    ("SEND_SECRET", "sendTok-5d2e9b0c41"),
    ("TOOL_SECRET", "toolArg-0c7d3e9f18"),
    ("REPO_TOKEN", "ghp_repoTok-71aa2bd03e"),
];

const SYSTEM: &str = "You are a bot. The deploy key is {{ env('SYS_SECRET') }}. Never share it.";

fn manifest() -> String {
    format!(
        r#"version: 1
name: secrets
providers:
  local:
    models:
      scripted:
        backend: scripted
        turns:
          # The model quotes the user and part of its system prompt...
          - text: "You said {{{{ env('SEND_SECRET') }}}}; my key is {{{{ env('SYS_SECRET') }}}}."
          # ...calls a built-in tool and a custom tool with a secret in their input...
          - tool_use:
              - name: bash
                input: {{ command: "echo out-{{{{ env('TOOL_SECRET') }}}}-end" }}
              - name: lookup
                input: {{ key: "in-{{{{ env('TOOL_SECRET') }}}}-put" }}
          # ...and repeats its whole system prompt.
          - text: "{SYSTEM}"
environments:
  box:
    config: {{ type: cloud }}
    metadata: {{ owner: "env {{{{ env('META_SECRET') }}}} here" }}
agents:
  bot:
    model: scripted
    system: "{SYSTEM}"
    metadata: {{ owner: "team {{{{ env('META_SECRET') }}}} lead" }}
    tools:
      - type: agent_toolset_20260401
      - type: custom
        name: lookup
        description: Looks a key up
        input_schema: {{ type: object, properties: {{ key: {{ type: string }} }} }}
sessions:
  chat:
    agent: bot
    environment: box
    metadata: {{ token: "t={{{{ env('META_SECRET') }}}};" }}
    resources:
      - type: github_repository
        url: https://github.com/example/app
        authorization_token: "{{{{ env('REPO_TOKEN') }}}}"
    tools:
      lookup: {{ run: "printf 'found '; cat" }}
    steps:
      - send: "my token is {{{{ env('SEND_SECRET') }}}} ok"
        expect:
          - contains: "said {{{{ env('SEND_SECRET') }}}};"
          # Fails: the reply quotes the key, so the failure is reported too.
          - not_contains: "key is {{{{ env('SYS_SECRET') }}}}"
      - send: "now use {{{{ env('TOOL_SECRET') }}}} please"
        expect:
          - contains: "{{{{ env('SYS_SECRET') }}}}"
"#
    )
}

fn test() -> Test {
    let mut t = Test::new().env("RUST_LOG", "trace");
    for (k, v) in SECRETS {
        t = t.env(k, v);
    }
    t.write("agentform.yaml", &manifest());
    t
}

#[track_caller]
fn assert_clean(what: &str, bytes: &[u8]) {
    for (name, secret) in SECRETS {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{what} holds the value of {name}:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Runs `args`, expects `code`, keeps the output for the final check.
fn run(t: &Test, outputs: &mut Vec<(String, Output)>, args: &[&str], code: i32) -> Output {
    let out = t.run(args).code(code);
    let kept = Output {
        code: out.code,
        stdout: out.stdout.clone(),
        stderr: out.stderr.clone(),
    };
    outputs.push((args.join(" "), kept));
    out
}

#[test]
fn no_secret_reaches_a_file_or_an_output() {
    let t = test();
    let o = &mut Vec::new();
    run(&t, o, &["validate", "-vvv"], 0);
    run(&t, o, &["plan", "-vvv"], 0);
    run(&t, o, &["apply", "--auto-approve", "-vvv"], 0);
    // The first step's `not_contains` fails by design: the run exits 1.
    let ran = run(&t, o, &["run", "--junit", "junit.xml", "-vvv"], 1);
    assert!(ran.stdout.contains("FAILED session.chat"), "{}", ran.stdout);
    // The stored placeholders read back as the values: no drift.
    run(
        &t,
        o,
        &["plan", "--refresh", "--detailed-exitcode", "-vvv"],
        0,
    );
    run(&t, o, &["transcripts", "list", "-vvv"], 0);
    let show = run(&t, o, &["transcripts", "show", "latest/chat", "-vvv"], 0);
    run(&t, o, &["transcripts", "export", "latest/chat", "-vvv"], 0);
    let html = ["transcripts", "export", "latest/chat", "--format", "html"];
    run(&t, o, &[&html[..], &["-vvv"]].concat(), 0);
    run(
        &t,
        o,
        &["transcripts", "export", "latest/chat", "-o", "chat.md"],
        0,
    );
    run(&t, o, &[&html[..], &["-o", "chat.html"]].concat(), 0);
    run(&t, o, &["state", "list", "-vvv"], 0);
    run(&t, o, &["state", "show", "agent.bot", "-vvv"], 0);
    run(&t, o, &["state", "show", "session.chat", "-vvv"], 0);

    // The conversation happened, with the secrets masked in it.
    for shown in [
        "my token is (sensitive) ok",
        "You said (sensitive); my key is (sensitive).",
        "The deploy key is (sensitive). Never share it.",
        "out-(sensitive)-end",
        "found ",
        "in-(sensitive)-put",
        "now use (sensitive) please",
    ] {
        assert!(
            show.stdout.contains(shown),
            "{shown:?} in:\n{}",
            show.stdout
        );
    }
    let junit = t.read("junit.xml");
    assert!(junit.contains("<failure"), "{junit}");
    assert!(t.read("chat.html").contains("(sensitive)"));
    assert!(t.read("chat.md").contains("(sensitive)"));

    // Everything on disk: state (sled, lock), transcripts, exports, JUnit.
    for f in files_under(t.root()) {
        assert_clean(&f.display().to_string(), &std::fs::read(&f).unwrap());
    }
    run(&t, o, &["destroy", "--auto-approve", "-vvv"], 0);
    for f in files_under(t.root()) {
        assert_clean(&f.display().to_string(), &std::fs::read(&f).unwrap());
    }
    for (command, out) in o.iter() {
        assert_clean(&format!("the stdout of `{command}`"), out.stdout.as_bytes());
        assert_clean(&format!("the stderr of `{command}`"), out.stderr.as_bytes());
    }
}

#[test]
fn log_records_and_session_errors_are_masked() {
    // A model endpoint that refuses connections: the error names its URL,
    // which holds a secret; the runner logs it and the transcript keeps it.
    const SECRET: &str = "urlPath-99a8b7c6";
    let t = Test::new()
        .env("URL_SECRET", SECRET)
        .env("RUST_LOG", "trace");
    t.write(
        "agentform.yaml",
        r#"version: 1
providers:
  local:
    models:
      remote:
        backend: openai
        base_url: "http://127.0.0.1:9/v1/{{ env('URL_SECRET') }}/x"
environments:
  box:
    config: { type: cloud }
agents:
  bot:
    model: remote
sessions:
  chat:
    agent: bot
    environment: box
    steps:
      - send: hi
        timeout: 60s
"#,
    );
    let mut outputs = vec![t.run(&["apply", "--auto-approve", "-vvv"]).success()];
    let run = t.run(&["run", "-vvv"]).code(1);
    assert!(
        run.stderr
            .contains("session error: cannot reach http://127.0.0.1:9/v1/(sensitive)/x"),
        "{}",
        run.stderr
    );
    outputs.push(run);
    outputs.push(t.run(&["transcripts", "show", "latest/chat"]).success());
    for out in &outputs {
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains(SECRET), "{text}");
        }
    }
    for f in files_under(t.root()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{}",
            f.display()
        );
    }
}

#[test]
fn validate_warns_about_values_too_short_to_mask() {
    let t = Test::new()
        .env("SHORT_SECRET", "ab1")
        .env("LONG_SECRET", "long-enough-1");
    t.write(
        "agentform.yaml",
        "version: 1\nagents:\n  a:\n    model: claude-sonnet-4-6\n    system: \"{{ env('SHORT_SECRET') }} {{ env('LONG_SECRET') }}\"\n",
    );
    let out = t.run(&["validate"]).success().stderr_has(
        "warning: the value of `SHORT_SECRET` (read with `env()`) has 3 characters, too few to be masked",
    );
    assert!(!out.stderr.contains("LONG_SECRET"), "{}", out.stderr);
}
