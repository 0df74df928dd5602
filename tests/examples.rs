//! Every example applies and destroys offline on the local runtime.

use crate::common::*;

/// Examples whose sessions run on a provider account (`provider: e2b` or
/// `modal`): `e2b_remote.rs` and `modal_remote.rs` run them against the
/// fakes instead.
fn needs_an_account(p: &std::path::Path) -> bool {
    let file = if p.is_dir() {
        p.join("agentform.yaml")
    } else {
        p.to_path_buf()
    };
    std::fs::read_to_string(file)
        .is_ok_and(|t| t.contains("\nprovider: e2b\n") || t.contains("\nprovider: modal\n"))
}

fn examples() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples dir").flatten() {
        let p = entry.path();
        // Directories without a manifest hold code the benchmarks share.
        if p.extension().is_some_and(|e| e == "yaml") || p.join("agentform.yaml").is_file() {
            out.push(p);
        }
    }
    out.sort();
    assert!(
        out.len() >= 2,
        "expected at least two examples, found {out:?}"
    );
    out
}

#[test]
fn examples_start_with_the_schema_comment() {
    for p in examples() {
        let file = if p.is_dir() {
            p.join("agentform.yaml")
        } else {
            p.clone()
        };
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema="),
            "{} lacks the yaml-language-server schema comment",
            file.display()
        );
    }
}

#[test]
fn examples_apply_and_destroy_offline() {
    for p in examples().into_iter().filter(|p| !needs_an_account(p)) {
        let t = Test::new();
        // Copy so the lock file lands in the temp dir, not the repository.
        let target = if p.is_dir() {
            let d = t.path("example");
            std::fs::create_dir_all(&d).unwrap();
            for f in std::fs::read_dir(&p).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "yaml") {
                    std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
                }
            }
            "example".to_string()
        } else {
            std::fs::copy(&p, t.path("example.yaml")).unwrap();
            "example.yaml".to_string()
        };
        t.run(&["validate", "-f", &target]).success();
        t.run(&["apply", "-f", &target, "--auto-approve"])
            .success()
            .stdout_has("Apply complete!");
        t.run(&["plan", "-f", &target, "--refresh", "--detailed-exitcode"])
            .success()
            .stdout_has("No changes.");
        t.run(&["destroy", "-f", &target, "--auto-approve"])
            .success();
        let (agents, envs, sessions) = live_objects(&t.path("state"));
        assert!(
            agents.iter().all(|a| a.archived_at.is_some()),
            "{}: agents left unarchived",
            p.display()
        );
        assert!(
            envs.is_empty() && sessions.is_empty(),
            "{}: objects left behind",
            p.display()
        );
    }
}
