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
    t.write("m/agents.yaml", "agents:\n  a: { model: claude-sonnet-4-6 }\nsessions:\n  s: { agent: a, environment: e }\n");
    t.run(&["validate", "-f", "m"])
        .success()
        .stdout_has("3 resources")
        .stdout_has("2 file(s)");
}
