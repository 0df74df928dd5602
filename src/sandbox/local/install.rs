//! Provisioning an environment's packages once into its directory, shared by
//! the environment's workspaces. It decides when to install (a marker holds
//! the digest of what was installed) and reports failures; the installer
//! processes themselves are launched by `process.rs`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::confine;
use super::io_error;
use super::process::{LaunchOptions, Launcher};
use crate::sandbox::{Packages, SandboxError};

/// Package-manager commands used by [`provision`]; each gets the target
/// directory and then the package names appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installers {
    /// Followed by `ENV_DIR/pip PKG...`.
    pub pip: Vec<String>,
    /// Followed by `ENV_DIR/npm PKG...`.
    pub npm: Vec<String>,
}

impl Default for Installers {
    fn default() -> Self {
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect();
        Self {
            pip: words("python3 -m pip install --quiet --target"),
            npm: words("npm install --silent --prefix"),
        }
    }
}

/// Name of the marker file holding the digest of the installed packages.
pub const PROVISIONED_MARKER: &str = ".provisioned";

fn packages_digest(packages: &Packages) -> String {
    let mut hasher = Sha256::new();
    for (manager, list) in [("pip", &packages.pip), ("npm", &packages.npm)] {
        hasher.update(manager.as_bytes());
        hasher.update([0]);
        for package in list {
            hasher.update(package.as_bytes());
            hasher.update([0]);
        }
        hasher.update([1]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One lock per environment directory, so concurrent sessions of one
/// environment install once (within this process; separate agentform
/// processes are not coordinated).
fn env_lock(env_dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<StdMutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(env_dir.to_path_buf()).or_default().clone()
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    &text[cut..]
}

/// How long one installer may run.
const INSTALL_DEADLINE: Duration = Duration::from_secs(30 * 60);

async fn install(
    manager: &str,
    prefix: &[String],
    env_dir: &Path,
    packages: &[String],
    options: &LaunchOptions,
) -> Result<(), SandboxError> {
    let failed = |message: String| {
        SandboxError::Provision(format!(
            "{manager} install of {}: {message}",
            packages.join(" ")
        ))
    };
    if prefix.is_empty() {
        return Err(failed("no installer command configured".to_string()));
    }
    let target = env_dir.join(manager);
    std::fs::create_dir_all(&target)
        .map_err(|e| failed(format!("cannot create {}: {e}", target.display())))?;
    for dir in [env_dir, target.as_path()] {
        confine::hand_over(dir, options.confinement)
            .map_err(|e| failed(format!("cannot hand {} over: {e}", dir.display())))?;
    }
    let mut program: Vec<OsString> = prefix.iter().map(OsString::from).collect();
    program.push(target.clone().into_os_string());
    program.extend(packages.iter().map(OsString::from));
    let launcher = Launcher::for_install(env_dir.to_path_buf(), target.clone(), options)?;
    let output = launcher
        .run_program(&program, INSTALL_DEADLINE, &mut |_| {})
        .await
        .map_err(|e| failed(e.to_string()))?;
    if output.exit_code == Some(0) {
        return Ok(());
    }
    let status = match (output.timed_out, output.exit_code) {
        (true, _) => format!("timed out after {INSTALL_DEADLINE:?}"),
        (false, Some(code)) => format!("exit code {code}"),
        (false, None) => "killed by a signal".to_string(),
    };
    let mut text = output.output.trim_end().to_string();
    for refusal in &output.refusals {
        text.push('\n');
        text.push_str(refusal);
    }
    Err(failed(format!("{status}\n{}", tail(&text, 2000))))
}

/// Installs `packages` into `env_dir` (pip into `env_dir/pip`, npm into
/// `env_dir/npm`) unless the same package lists were installed already.
/// Installers run as commands do (`options`: confined, with the
/// environment's network). Returns whether anything was installed. On
/// failure the marker is not written, so the next call tries again.
pub async fn provision(
    env_dir: &Path,
    packages: &Packages,
    installers: &Installers,
    options: &LaunchOptions,
) -> Result<bool, SandboxError> {
    if packages.pip.is_empty() && packages.npm.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(env_dir).map_err(|e| io_error(&env_dir.to_string_lossy(), &e))?;
    let env_dir =
        std::fs::canonicalize(env_dir).map_err(|e| io_error(&env_dir.to_string_lossy(), &e))?;
    let lock = env_lock(&env_dir);
    let _guard = lock.lock().await;
    let marker = env_dir.join(PROVISIONED_MARKER);
    let digest = packages_digest(packages);
    if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == digest) {
        return Ok(false);
    }
    if !packages.pip.is_empty() {
        install("pip", &installers.pip, &env_dir, &packages.pip, options).await?;
    }
    if !packages.npm.is_empty() {
        install("npm", &installers.npm, &env_dir, &packages.npm, options).await?;
    }
    std::fs::write(&marker, format!("{digest}\n"))
        .map_err(|e| io_error(&marker.to_string_lossy(), &e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::local::Confinement;

    fn unconfined() -> LaunchOptions {
        LaunchOptions {
            confinement: Confinement::None,
            ..LaunchOptions::default()
        }
    }

    fn fake_installer(dir: &Path) -> Vec<String> {
        let script = dir.join("fake-install.sh");
        std::fs::write(
            &script,
            "target=\"$1\"; shift\nsleep 0.2\necho \"$@\" >> \"$target/../calls-$(basename \"$target\")\"\n\
             for p in \"$@\"; do touch \"$target/$p\"; done\n",
        )
        .unwrap();
        vec!["bash".to_string(), script.to_string_lossy().into_owned()]
    }

    fn calls(env_dir: &Path, manager: &str) -> Vec<String> {
        std::fs::read_to_string(env_dir.join(format!("calls-{manager}")))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn provision_installs_once_then_skips() {
        let d = tempfile::tempdir().unwrap();
        let fake = fake_installer(d.path());
        let installers = Installers {
            pip: fake.clone(),
            npm: fake,
        };
        let env_dir = d.path().join("env");
        let packages = Packages {
            pip: vec!["requests".into(), "rich".into()],
            npm: vec!["left-pad".into()],
        };
        assert!(provision(&env_dir, &packages, &installers, &unconfined())
            .await
            .unwrap());
        assert!(env_dir.join("pip/requests").exists() && env_dir.join("pip/rich").exists());
        assert!(env_dir.join("npm/left-pad").exists());
        assert!(!provision(&env_dir, &packages, &installers, &unconfined())
            .await
            .unwrap());
        assert_eq!(calls(&env_dir, "pip"), vec!["requests rich"]);
        assert_eq!(calls(&env_dir, "npm"), vec!["left-pad"]);
        // Other packages: installed again.
        let more = Packages {
            pip: vec!["requests".into()],
            npm: vec![],
        };
        assert!(provision(&env_dir, &more, &installers, &unconfined())
            .await
            .unwrap());
        assert_eq!(calls(&env_dir, "pip").len(), 2);
        assert_eq!(calls(&env_dir, "npm").len(), 1);
        // Nothing to install.
        assert!(!provision(
            &d.path().join("none"),
            &Packages::default(),
            &installers,
            &unconfined()
        )
        .await
        .unwrap());
        assert!(!d.path().join("none").exists());
    }

    #[tokio::test]
    async fn provision_concurrent_sessions_install_once() {
        let d = tempfile::tempdir().unwrap();
        let fake = fake_installer(d.path());
        let installers = Installers {
            pip: fake.clone(),
            npm: fake,
        };
        let env_dir = d.path().join("env");
        let packages = Packages {
            pip: vec!["numpy".into()],
            npm: vec![],
        };
        let results = futures_join(
            provision(&env_dir, &packages, &installers, &unconfined()),
            provision(&env_dir, &packages, &installers, &unconfined()),
            provision(&env_dir, &packages, &installers, &unconfined()),
        )
        .await;
        assert_eq!(results.iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
        assert_eq!(calls(&env_dir, "pip"), vec!["numpy"]);
    }

    async fn futures_join<F: std::future::Future>(a: F, b: F, c: F) -> [F::Output; 3] {
        let (a, b, c) = tokio::join!(a, b, c);
        [a, b, c]
    }

    #[tokio::test]
    async fn provision_failure_names_the_manager_and_writes_no_marker() {
        let d = tempfile::tempdir().unwrap();
        let installers = Installers {
            pip: vec![
                "bash".into(),
                "-c".into(),
                "echo 'ERROR: no such package' >&2; exit 3".into(),
            ],
            npm: vec!["true".into()],
        };
        let env_dir = d.path().join("env");
        let packages = Packages {
            pip: vec!["nonexistent-pkg".into()],
            npm: vec![],
        };
        let err = provision(&env_dir, &packages, &installers, &unconfined())
            .await
            .unwrap_err();
        let SandboxError::Provision(message) = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains("pip"), "{message}");
        assert!(message.contains("no such package"), "{message}");
        assert!(message.contains("exit code 3"), "{message}");
        assert!(!env_dir.join(PROVISIONED_MARKER).exists());
        let missing = Installers {
            pip: vec!["/nonexistent/installer".into()],
            npm: vec![],
        };
        let err = provision(&env_dir, &packages, &missing, &unconfined())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("pip"), "{err}");
    }

    #[test]
    fn default_installers() {
        let i = Installers::default();
        assert_eq!(i.pip.join(" "), "python3 -m pip install --quiet --target");
        assert_eq!(i.npm.join(" "), "npm install --silent --prefix");
    }
}
