//! What a session's sandbox is set up with before its first command: the
//! workspace directory, the environment's pip and npm packages (installed
//! once per sandbox into `~/.agentform/env`, a marker holding their digest),
//! and the lines that put them on the paths of every command. Scripts only:
//! running them is `exec.rs`'s.
//!
//! The same script is the one step of an environment's E2B template
//! (`images.rs`), built at apply: a sandbox made from it finds the marker
//! and installs nothing. A sandbox on the base template (no template noted,
//! e.g. an environment made before templates) installs at open.

use serde_json::json;

use crate::sandbox::Packages;

/// The sandbox user's home (E2B templates run commands as `user`).
pub const HOME: &str = "/home/user";
/// The tools' workspace: every file path resolves below it, commands run in it.
pub const WORKSPACE: &str = "/home/user/workspace";
/// Below `$HOME`: the packages and the marker of what was installed.
const STATE_DIR: &str = "$HOME/.agentform";

/// `s` as one shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn has_packages(packages: &Packages) -> bool {
    !packages.pip.is_empty() || !packages.npm.is_empty()
}

/// The digest the marker holds for `packages`.
fn digest(packages: &Packages) -> String {
    crate::digest::digest(&json!({ "pip": packages.pip, "npm": packages.npm }))
}

/// The set-up script, run in [`HOME`]: makes the workspace and installs
/// the packages unless the marker says they are there.
pub fn setup_script(packages: &Packages) -> String {
    let mut script = String::from("set -e\nmkdir -p workspace\n");
    if !has_packages(packages) {
        return script;
    }
    let digest = digest(packages);
    script.push_str(&format!(
        "marker=\"{STATE_DIR}/provisioned\"\n\
         if [ \"$(cat \"$marker\" 2>/dev/null)\" != {d} ]; then\n\
         \x20 env=\"{STATE_DIR}/env\"\n\
         \x20 mkdir -p \"$env/pip\" \"$env/npm\"\n",
        d = shell_quote(&digest)
    ));
    let words = |list: &[String]| {
        list.iter()
            .map(|p| shell_quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !packages.pip.is_empty() {
        script.push_str(&format!(
            "  python3 -m pip install --quiet --disable-pip-version-check --target \"$env/pip\" {}\n",
            words(&packages.pip)
        ));
    }
    if !packages.npm.is_empty() {
        script.push_str(&format!(
            "  npm install --silent --prefix \"$env/npm\" {}\n",
            words(&packages.npm)
        ));
    }
    script.push_str(&format!(
        "  printf '%s\\n' {d} > \"$marker\"\nfi\n",
        d = shell_quote(&digest)
    ));
    script
}

/// `command` with the packages on its paths (`PYTHONPATH`, `NODE_PATH`,
/// `PATH`): a line before it, so that the command itself is untouched.
pub fn with_packages(packages: &Packages, command: &str) -> String {
    if !has_packages(packages) {
        return command.to_owned();
    }
    format!(
        "export PYTHONPATH=\"{STATE_DIR}/env/pip${{PYTHONPATH:+:$PYTHONPATH}}\" \
         NODE_PATH=\"{STATE_DIR}/env/npm/node_modules${{NODE_PATH:+:$NODE_PATH}}\" \
         PATH=\"{STATE_DIR}/env/npm/node_modules/.bin:{STATE_DIR}/env/pip/bin:$PATH\"\n{command}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn without_packages_only_the_workspace_is_made() {
        let none = Packages::default();
        assert_eq!(setup_script(&none), "set -e\nmkdir -p workspace\n");
        assert_eq!(with_packages(&none, "ls"), "ls");
    }

    #[test]
    fn packages_install_once_into_the_environment_directory() {
        let packages = Packages {
            pip: vec!["pandas==2.2".into(), "x'y".into()],
            npm: vec!["left-pad".into()],
        };
        let script = setup_script(&packages);
        assert!(script.contains(
            "python3 -m pip install --quiet --disable-pip-version-check --target \"$env/pip\" 'pandas==2.2' 'x'\\''y'\n"
        ), "{script}");
        assert!(script.contains("npm install --silent --prefix \"$env/npm\" 'left-pad'\n"));
        assert!(script.contains(&digest(&packages)));
        let command = with_packages(&packages, "python3 -c 'import pandas'");
        assert!(command.starts_with("export PYTHONPATH=\"$HOME/.agentform/env/pip"));
        assert!(command.ends_with("\npython3 -c 'import pandas'"));
    }

    #[test]
    fn the_scripts_run_in_bash() {
        let dir = tempfile::tempdir().unwrap();
        let packages = Packages {
            pip: vec!["p".into()],
            npm: Vec::new(),
        };
        // A `python3` that records its arguments stands for pip.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let shim = bin.join("python3");
        std::fs::write(&shim, "#!/bin/sh\necho \"$@\" >> \"$HOME/calls\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = || {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(setup_script(&packages))
                .current_dir(dir.path())
                .env("HOME", dir.path())
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .status()
                .unwrap()
        };
        assert!(run().success());
        assert!(run().success());
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert_eq!(calls.lines().count(), 1, "installed once: {calls}");
        assert!(dir.path().join("workspace").is_dir());
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(with_packages(&packages, "echo \"$PYTHONPATH\""))
            .env("HOME", "/h")
            .env_remove("PYTHONPATH")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "/h/.agentform/env/pip\n"
        );
    }
}
