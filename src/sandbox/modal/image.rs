//! The Modal image of an environment: Debian slim with Python (the base of
//! the official `Image.debian_slim()`), the environment's pip and npm
//! packages installed by Dockerfile commands, and the workspace directory.
//! Modal builds it once and reuses it for every sandbox with the same
//! commands. Commands only: building is `control.rs`'s.

use crate::sandbox::Packages;

/// The tools' workspace: every file path resolves below it, commands run
/// in it.
pub const WORKSPACE: &str = "/workspace";
/// The Python series of the base image.
const PYTHON: &str = "3.12";
/// A sandbox runs its image's command until its timeout ends it (the
/// official `debian_slim()` sleeps 48 h too).
const IDLE_COMMAND: &str = r#"CMD ["sleep", "172800"]"#;

/// `s` as one shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The Debian release of `builder_version`, as the official client's
/// `builder/base-images.json` pairs them.
fn debian(builder_version: &str) -> &'static str {
    match builder_version {
        "2023.12" => "bullseye",
        "2024.04" | "2024.10" | "2025.06" => "bookworm",
        _ => "trixie",
    }
}

/// The Dockerfile commands of an environment's image.
pub fn dockerfile(packages: &Packages, builder_version: &str) -> Vec<String> {
    let words = |list: &[String]| {
        list.iter()
            .map(|p| shell_quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut commands = vec![format!(
        "FROM python:{PYTHON}-slim-{}",
        debian(builder_version)
    )];
    if !packages.npm.is_empty() {
        commands.push(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
             --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*"
                .to_owned(),
        );
    }
    if !packages.pip.is_empty() {
        commands.push(format!(
            "RUN python -m pip install --no-cache-dir --disable-pip-version-check {}",
            words(&packages.pip)
        ));
    }
    if !packages.npm.is_empty() {
        commands.push(format!("RUN npm install --global {}", words(&packages.npm)));
        // Global modules are found by `require` only through NODE_PATH.
        commands.push("ENV NODE_PATH=/usr/local/lib/node_modules".to_owned());
    }
    commands.push(format!("RUN mkdir -p {WORKSPACE}"));
    commands.push(format!("WORKDIR {WORKSPACE}"));
    commands.push(IDLE_COMMAND.to_owned());
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_packages_only_the_base_and_the_workspace() {
        assert_eq!(
            dockerfile(&Packages::default(), "2025.06"),
            [
                "FROM python:3.12-slim-bookworm",
                "RUN mkdir -p /workspace",
                "WORKDIR /workspace",
                r#"CMD ["sleep", "172800"]"#,
            ]
        );
        assert_eq!(
            dockerfile(&Packages::default(), "2026.10")[0],
            "FROM python:3.12-slim-trixie"
        );
    }

    #[test]
    fn packages_are_installed_quoted() {
        let packages = Packages {
            pip: vec!["pandas==2.2".into(), "x'y".into()],
            npm: vec!["left-pad".into()],
        };
        let commands = dockerfile(&packages, "2025.06");
        assert!(commands[1].contains("apt-get install -y --no-install-recommends nodejs npm"));
        assert_eq!(
            commands[2],
            "RUN python -m pip install --no-cache-dir --disable-pip-version-check 'pandas==2.2' 'x'\\''y'"
        );
        assert_eq!(commands[3], "RUN npm install --global 'left-pad'");
        assert_eq!(commands[4], "ENV NODE_PATH=/usr/local/lib/node_modules");
    }
}
