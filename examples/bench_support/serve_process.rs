//! `agentform serve` as a child process on loopback, for benchmarks: started
//! from the binary of the same profile, its URL read from its
//! `listening on http://…` line, its log kept in a file — with every request
//! (debug level) when asked, so the calls it answered can be counted after
//! it stops.

// Each benchmark that includes this file uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

/// `target/<profile>/agentform` next to `target/<profile>/examples/<this>`,
/// brought up to date by `cargo build` of the same profile first.
pub fn server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot place {}", exe.display()))?;
    let mut args = vec!["build", "--quiet", "--bin", "agentform"];
    if profile_dir.ends_with("release") {
        args.push("--release");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the server: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    let bin = profile_dir.join("agentform");
    if !status.success() || !bin.is_file() {
        bail!("cargo {} did not produce {}", args.join(" "), bin.display());
    }
    Ok(bin)
}

pub struct Serve {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl Serve {
    /// Starts `agentform serve --listen 127.0.0.1:0 --data DIR/data` with
    /// `extra` arguments; its log goes to `DIR/serve.log`, with every request
    /// when `log_requests` (which costs a load test its throughput).
    pub fn start(
        bin: &Path,
        dir: &Path,
        key: &str,
        extra: &[String],
        log_requests: bool,
    ) -> Result<Serve> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("serve.log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("creating the server log {}", log.display()))?;
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--api-key",
                key,
                "--data",
            ])
            .arg(dir.join("data"))
            .args(extra)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                if log_requests {
                    "warn,agentform::serve=debug"
                } else {
                    "warn"
                },
            )
            .env("NO_COLOR", "1")
            .env_remove("AGENTFORM_LOCAL_LATENCY_MS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("the server's stdout is not piped"))?;
        let mut lines = BufReader::new(stdout);
        let mut serve = Serve {
            child,
            url: String::new(),
            log,
        };
        let mut line = String::new();
        // The server prints the line once bound, or exits (EOF); a few lines at most.
        for _ in 0..100 {
            line.clear();
            if lines
                .read_line(&mut line)
                .context("reading the server's output")?
                == 0
            {
                let tail = std::fs::read_to_string(&serve.log).unwrap_or_default();
                bail!("the server exited before listening:\n{}", tail.trim());
            }
            let Some(at) = line.find("listening on ") else {
                continue;
            };
            let url = line[at + "listening on ".len()..].trim().to_owned();
            if !url.starts_with("http://127.0.0.1:") {
                bail!("the server is not on loopback: {url}");
            }
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while lines.read_line(&mut sink).is_ok_and(|n| n > 0) {
                    sink.clear();
                }
            });
            serve.url = url;
            return Ok(serve);
        }
        bail!("no `listening on` line from the server")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Stops the server with SIGTERM and returns the requests it logged,
    /// counted by `METHOD /v1/kind[/{id}/…]`.
    pub fn stop(mut self) -> Result<BTreeMap<String, u64>> {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("running kill")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the server exited with {status}");
                }
                break;
            }
            if Instant::now() >= deadline {
                bail!("the server did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&self.log)
            .with_context(|| format!("reading {}", self.log.display()))?;
        Ok(count_requests(&text))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Counts the server's `request` debug lines (`method=POST path=/v1/…`),
/// with object ids replaced by `{id}`.
fn count_requests(log: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in log.lines() {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
        };
        let (Some(method), Some(path)) = (field("method="), field("path=")) else {
            continue;
        };
        let route: Vec<&str> = path
            .split('/')
            .enumerate()
            .map(|(i, seg)| if i == 3 { "{id}" } else { seg })
            .collect();
        *counts
            .entry(format!("{method} {}", route.join("/")))
            .or_insert(0) += 1;
    }
    counts
}

/// `N in all (POST /v1/agents: a, …)`.
pub fn describe_counts(counts: &BTreeMap<String, u64>) -> String {
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{total} in all ({})", parts.join(", "))
}
