//! Command-line behaviour: help, confirmation, variables, exit codes.

use crate::common::*;

const SMALL: &str = "version: 1\nvars: { model: claude-sonnet-4-6 }\nagents:\n  a:\n    model: \"{{ vars.model }}\"\n";

#[test]
fn every_command_has_help_with_examples() {
    let t = Test::new();
    for cmd in [
        &["validate"][..],
        &["plan"],
        &["apply"],
        &["destroy"],
        &["state", "show"],
        &["state", "import"],
        &["schema"],
        &["completions"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = t.run(&args).success();
        assert!(
            out.stdout.contains("Example"),
            "{cmd:?} --help has no examples:\n{}",
            out.stdout
        );
    }
}

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let t = Test::new();
    t.write("agentform.yaml", SMALL);
    t.run(&["apply"])
        .code(1)
        .stderr_has("refusing to apply these changes without confirmation")
        .stderr_has("--auto-approve");
    t.run(&["plan", "--detailed-exitcode"]).code(2);
}

#[test]
fn vars_can_be_overridden_terraform_style() {
    let t = Test::new();
    t.write("agentform.yaml", SMALL);
    t.run(&["plan", "-var", "model=claude-opus-4-6"])
        .success()
        .stdout_has("\"claude-opus-4-6\"");
    t.run(&["plan", "--var", "model=claude-haiku-4-5"])
        .success()
        .stdout_has("\"claude-haiku-4-5\"");
    t.run(&["plan", "--var", "nope=1"])
        .code(1)
        .stderr_has("does not declare");
    t.run(&["plan", "--var", "novalue"])
        .code(2)
        .stderr_has("NAME=VALUE");
}

#[test]
fn missing_manifest_is_a_clear_error() {
    Test::new()
        .run(&["plan"])
        .code(1)
        .stderr_has("agentform.yaml")
        .stderr_has("help:");
}

#[test]
fn state_flag_and_env_choose_the_state_directory() {
    let t = Test::new();
    t.write("agentform.yaml", SMALL);
    t.run(&["apply", "--auto-approve", "--state", "custom"])
        .success();
    assert!(t.path("custom").is_dir() && !t.path("state").exists());
    let t = t.env("AGENTFORM_STATE", "custom");
    t.run(&["state", "list"]).success().stdout_has("agent.a");
}

#[test]
fn completions_and_output_without_colour() {
    let t = Test::new();
    t.run(&["completions", "bash"])
        .success()
        .stdout_has("agentform");
    t.write("agentform.yaml", SMALL);
    let out = t.run(&["plan"]).success();
    assert!(
        !out.stdout.contains('\x1b'),
        "colour codes without a terminal"
    );
}

#[test]
fn quiet_and_verbose_conflict_and_bad_flags_fail() {
    let t = Test::new();
    t.run(&["plan", "-q", "-v"]).code(2);
    t.run(&["plan", "--parallelism", "0"]).code(2);
    t.run(&["apply", "--target", "robot.x"])
        .code(2)
        .stderr_has("unknown resource kind");
}

#[test]
fn validate_combines_files_and_directories() {
    let t = Test::new();
    t.write(
        "m/env.yaml",
        "version: 1\nenvironments:\n  e: { config: { type: cloud } }\n",
    );
    t.write("m/agents.yaml", "version: 1\nagents:\n  a: { model: claude-sonnet-4-6 }\nsessions:\n  s: { agent: a, environment: e }\n");
    t.run(&["validate", "-f", "m"])
        .success()
        .stdout_has("3 resources")
        .stdout_has("2 file(s)");
}

/// Applied first, so that an empty manifest would remove something.
const APPLIED: &str = "version: 1\nenvironments:\n  data:\n    config: { type: cloud }\nagents:\n  a:\n    model: claude-sonnet-4-6\n";

#[test]
fn a_manifest_without_resources_does_not_remove_everything_by_accident() {
    let t = Test::new();
    t.write("agentform.yaml", APPLIED);
    t.run(&["apply", "--auto-approve"]).success();
    let records = || t.run(&["state", "list"]).success().stdout;
    let before = records();

    // An empty file: refused by every command that reads a manifest.
    t.write("agentform.yaml", "# everything moved elsewhere\n");
    for args in [&["validate"][..], &["plan"], &["apply", "--auto-approve"]] {
        t.run(args)
            .code(1)
            .stderr_has("error: the manifest file is empty")
            .stderr_has("--> agentform.yaml:1:1")
            .stderr_has("run `agentform destroy`, or pass `--allow-empty`");
    }
    // A file with a version and no resources: refused once the state is read.
    t.write("agentform.yaml", "version: 1\n");
    t.run(&["validate"]).success();
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        t.run(args)
            .code(1)
            .stderr_has("the manifest declares no resources, but the state records 2 resources")
            .stderr_has("hint: to destroy everything on purpose, run `agentform destroy`");
    }
    assert_eq!(records(), before, "a refused plan changed the state");

    // Meant: `--allow-empty` plans and applies the removal, empty file or not.
    t.write("agentform.yaml", "");
    t.run(&["plan", "--allow-empty"])
        .success()
        .stdout_has("Plan: 0 to add, 0 to change, 1 to destroy, 1 to archive.");
    t.write("agentform.yaml", "version: 1\n");
    t.run(&["apply", "--allow-empty", "--auto-approve"])
        .success()
        .stdout_has("1 archived, 1 destroyed");
    // Over an empty state there is nothing to protect.
    t.run(&["plan"]).success().stdout_has("No changes.");
}

#[test]
fn destroy_accepts_an_empty_manifest() {
    let t = Test::new();
    t.write("agentform.yaml", APPLIED);
    t.run(&["apply", "--auto-approve"]).success();
    t.write("agentform.yaml", "");
    t.run(&["destroy", "--auto-approve"])
        .success()
        .stdout_has("1 archived, 1 destroyed");
}

#[test]
fn a_manifest_file_must_state_its_version() {
    let t = Test::new();
    t.write("agentform.yaml", "agents:\n  a:\n    model: m\n");
    t.run(&["validate"])
        .code(1)
        .stderr_has("error: the manifest file has no `version`")
        .stderr_has("--> agentform.yaml:1:1")
        .stderr_has("help: add `version: 1` as the first line of the file");
}

#[test]
fn runaway_templates_stop_within_seconds_at_their_line() {
    let t = Test::new();
    let cases = [
        // Three nested loops: 10^12 iterations.
        (
            "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}{% endfor %}{% endfor %}{% endfor %}",
            "the template did not finish within",
        ),
        // A gigabyte of system prompt.
        (
            "{% for i in range(10000) %}{{ 'x' * 100000 }}{% endfor %}",
            "the template's output is larger than 1048576 bytes",
        ),
    ];
    for (template, message) in cases {
        t.write(
            "agentform.yaml",
            &format!("version: 1\nagents:\n  a:\n    model: m\n    system: |\n      Be brief.\n      {template}\n"),
        );
        let started = std::time::Instant::now();
        let out = t.run(&["validate"]).code(1);
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(10),
            "{template} took {took:?}"
        );
        out.stderr_has(message)
            .stderr_has("--> agentform.yaml:7:1")
            .stderr_has("help: ");
    }
    // A template within the limits is unaffected.
    t.write(
        "agentform.yaml",
        "version: 1\nvars: { tools: [a, b, c] }\nagents:\n  a:\n    model: m\n    system: \"{% for t in vars.tools %}use {{ t }}; {% endfor %}\"\n",
    );
    t.run(&["validate"]).success();
}

#[test]
fn errors_never_show_a_value_read_from_the_environment() {
    let t = Test::new()
        .env("AF_NET", "NETSECRET-zz")
        .env("AF_TIMEOUT", "TIMEOUTSECRET-9");
    t.write(
        "agentform.yaml",
        "version: 1\nenvironments:\n  data:\n    config:\n      type: cloud\n      networking: { type: \"{{ env('AF_NET') }}\" }\n",
    );
    let out = t.run(&["validate"]).code(1).stderr_has(
        "error: `environments.data.config.networking.type`: unknown variant (sensitive), expected",
    );
    assert!(!out.stderr.contains("NETSECRET"), "{}", out.stderr);
    t.write(
        "agentform.yaml",
        "version: 1\nenvironments:\n  data:\n    config: { type: cloud }\nagents:\n  a:\n    model: m\nsessions:\n  s:\n    agent: a\n    environment: data\n    timeout: \"{{ env('AF_TIMEOUT') }}\"\n",
    );
    let out = t
        .run(&["plan"])
        .code(1)
        .stderr_has("error: `sessions.s.timeout`: (sensitive) is not a duration");
    assert!(!out.stderr.contains("TIMEOUTSECRET"), "{}", out.stderr);
}
