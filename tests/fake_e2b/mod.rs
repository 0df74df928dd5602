//! A fake E2B for the tests: the control plane and envd (Connect RPC with
//! the JSON codec, files) on two loopback listeners, as the official SDK
//! (`e2b` 2.63.0) speaks to them — `tests/sdk/e2b_lifecycle.py` keeps it
//! honest. Commands really run here, one directory per sandbox standing
//! for its file system (`/home/user/…` is `DIR/home/user/…`); templates
//! are built for real the same way (`templates.rs`). Faults on
//! demand: a share of calls answered 429/503, exec streams cut after their
//! first output, a sandbox killed mid-run, a latency added to every call.
//! Each sandbox's outbound HTTP goes through an egress proxy of its own
//! that applies its `network` rules (`egress.rs`).

mod control;
mod egress;
mod envd;
mod process;
mod templates;

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::watch;

pub use egress::Passed;
pub use process::Proc;
pub use templates::Template;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub api_key: String,
    /// This share of all calls (percent, at most 50) is answered 429 or
    /// 503, never two calls in a row.
    pub fault_percent: u64,
    /// This many exec streams are cut (the connection dropped) after their
    /// first output.
    pub cut_streams: usize,
    /// Items per page of a sandbox list.
    pub page_size: usize,
    /// Put first on the `PATH` of every command (the sandbox's profile):
    /// stand-ins for package managers.
    pub shims: Option<PathBuf>,
    pub envd_version: String,
    /// Added before every answer (control plane, envd and ports): the
    /// distance to E2B, for benchmarks.
    pub latency: Duration,
    /// Whether the egress sets the headers of a sandbox's `network.rules`
    /// (`false`: an egress that ignores them, for negative checks).
    pub apply_rules: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_key: "e2b_test_key_0123456789abcdef".into(),
            fault_percent: 0,
            cut_streams: 0,
            page_size: 100,
            shims: None,
            envd_version: "0.5.7".into(),
            latency: Duration::ZERO,
            apply_rules: true,
        }
    }
}

/// One sandbox.
pub struct Sandbox {
    pub id: String,
    pub template: String,
    pub metadata: BTreeMap<String, String>,
    /// The create request's body, as sent.
    pub request: Value,
    pub envd_token: String,
    /// Required on requests to its ports, when it has one.
    pub traffic_token: Option<String>,
    /// Stands for `/`.
    pub root: PathBuf,
    pub started_at: String,
    pub end_at: Instant,
    /// Every `set_timeout`, in seconds.
    pub timeouts: Vec<u64>,
    pub procs: HashMap<u32, Arc<Proc>>,
    /// Flips to `true` when the sandbox dies: its streams break.
    pub killed: watch::Sender<bool>,
    /// Its egress proxy's URL, given to its processes as `HTTP_PROXY`.
    pub egress: Option<String>,
}

#[derive(Default)]
pub struct Inner {
    pub sandboxes: BTreeMap<String, Sandbox>,
    /// Every sandbox ever created, in order.
    pub created: Vec<String>,
    pub idempotency: HashMap<String, String>,
    /// Every request: `METHOD path`.
    pub log: Vec<String>,
    /// Calls so far, for the fault pattern.
    calls: u64,
    pub faults_injected: u64,
    /// Every process environment variable given, in every sandbox.
    pub envs_seen: Vec<(String, String)>,
    /// The last large upload, to hard-link instead of storing it again.
    pub last_upload: Option<(axum::body::Bytes, PathBuf)>,
    pub cuts_left: usize,
    /// Templates by id (ready, building or failed).
    pub templates: BTreeMap<String, templates::Template>,
    pub streams_cut: usize,
    /// Every request through a sandbox's egress, in order.
    pub egress: Vec<Passed>,
}

pub struct Shared {
    pub options: Options,
    pub dir: PathBuf,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        expire(&mut inner);
        inner
    }

    /// Logs the call; an injected fault to answer instead, if it is one.
    pub fn enter(&self, what: &str) -> Option<Response> {
        let mut inner = self.lock();
        inner.log.push(what.to_owned());
        let n = inner.calls;
        inner.calls += 1;
        let p = self.options.fault_percent;
        if p == 0 || (n * p) % 100 >= p {
            return None;
        }
        inner.faults_injected += 1;
        let response = if inner.faults_injected % 2 == 1 {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded (injected)",
            );
            r.headers_mut().insert("retry-after", "0".parse().unwrap());
            r
        } else {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable (injected)",
            )
        };
        Some(response)
    }
}

/// Kills the sandboxes past their end.
fn expire(inner: &mut Inner) {
    let now = Instant::now();
    let past: Vec<String> = inner
        .sandboxes
        .values()
        .filter(|s| s.end_at <= now)
        .map(|s| s.id.clone())
        .collect();
    for id in past {
        kill_sandbox(inner, &id);
    }
}

/// Removes the sandbox: its processes die, its streams break.
pub fn kill_sandbox(inner: &mut Inner, id: &str) -> bool {
    let Some(sandbox) = inner.sandboxes.remove(id) else {
        return false;
    };
    let _ = sandbox.killed.send(true);
    for proc in sandbox.procs.values() {
        proc.kill_group();
    }
    true
}

/// E2B's error body, `{code, message}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": status.as_u16(), "message": message })),
    )
        .into_response()
}

/// `/a/b` of a sandbox, on this machine; `None` for a relative path or one
/// that climbs above `/`.
pub fn host_path(root: &Path, path: &str) -> Option<PathBuf> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            Component::Normal(part) => {
                out.push(part);
                depth += 1;
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The sandbox's path of `host` below `root`.
pub fn sandbox_path(root: &Path, host: &Path) -> String {
    let rel = host.strip_prefix(root).unwrap_or(host);
    format!("/{}", rel.to_string_lossy())
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A running fake; stops when dropped.
pub struct FakeE2b {
    pub api_url: String,
    pub sandbox_url: String,
    pub shared: Arc<Shared>,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeE2b {
    pub fn start(options: Options) -> FakeE2b {
        let dir = tempfile::tempdir().expect("temp dir");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                cuts_left: options.cut_streams,
                ..Inner::default()
            }),
            dir: dir.path().to_path_buf(),
            options,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (api_url, sandbox_url) =
            runtime.block_on(async {
                let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let sandboxes = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let urls = (
                    format!("http://{}", api.local_addr().unwrap()),
                    format!("http://{}", sandboxes.local_addr().unwrap()),
                );
                let latency = shared.options.latency;
                let delayed = move |request: axum::extract::Request,
                                    next: axum::middleware::Next| async move {
                    tokio::time::sleep(latency).await;
                    next.run(request).await
                };
                let control = control::router(Arc::clone(&shared))
                    .merge(templates::router(Arc::clone(&shared)))
                    .layer(axum::middleware::from_fn(delayed));
                let envd =
                    envd::router(Arc::clone(&shared)).layer(axum::middleware::from_fn(delayed));
                tokio::spawn(async move { axum::serve(api, control).await });
                tokio::spawn(async move { axum::serve(sandboxes, envd).await });
                // Sandboxes die at their end even when nobody asks.
                let reaper = Arc::clone(&shared);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        drop(reaper.lock());
                    }
                });
                urls
            });
        FakeE2b {
            api_url,
            sandbox_url,
            shared,
            _dir: dir,
            runtime: Some(runtime),
        }
    }

    pub fn key(&self) -> &str {
        &self.shared.options.api_key
    }

    /// The ids of the sandboxes alive.
    pub fn alive(&self) -> Vec<String> {
        self.shared.lock().sandboxes.keys().cloned().collect()
    }

    /// Every template there is.
    pub fn templates(&self) -> Vec<Template> {
        self.shared.lock().templates.values().cloned().collect()
    }

    /// Every sandbox ever created, in order.
    pub fn created(&self) -> Vec<String> {
        self.shared.lock().created.clone()
    }

    /// A sandbox's directory standing for `/` (alive or not).
    pub fn root(&self, id: &str) -> PathBuf {
        self.shared.dir.join(id)
    }

    /// Where a sandbox's `/home/user/workspace` is.
    pub fn workspace(&self, id: &str) -> PathBuf {
        self.root(id).join("home/user/workspace")
    }

    pub fn metadata(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.shared
            .lock()
            .sandboxes
            .get(id)
            .map(|s| s.metadata.clone())
    }

    /// The create request of a live sandbox.
    pub fn request(&self, id: &str) -> Option<Value> {
        self.shared
            .lock()
            .sandboxes
            .get(id)
            .map(|s| s.request.clone())
    }

    pub fn timeouts(&self, id: &str) -> Vec<u64> {
        self.shared
            .lock()
            .sandboxes
            .get(id)
            .map(|s| s.timeouts.clone())
            .unwrap_or_default()
    }

    /// Every request so far: `METHOD path`.
    pub fn log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    pub fn faults_injected(&self) -> u64 {
        self.shared.lock().faults_injected
    }

    pub fn streams_cut(&self) -> usize {
        self.shared.lock().streams_cut
    }

    /// The environment variables given to processes of every sandbox
    /// ever alive here (values: secrets the tests look for).
    pub fn process_envs(&self) -> Vec<(String, String)> {
        self.shared.lock().envs_seen.clone()
    }

    /// The command line of every process of the sandboxes here.
    pub fn commands(&self) -> Vec<String> {
        self.shared
            .lock()
            .sandboxes
            .values()
            .flat_map(|s| s.procs.values().map(|p| p.command.clone()))
            .collect()
    }

    /// Every request the sandboxes' processes sent out through their
    /// egress, in order.
    pub fn egress(&self) -> Vec<Passed> {
        self.shared.lock().egress.clone()
    }

    /// The traffic tokens of every sandbox alive.
    pub fn traffic_tokens(&self) -> Vec<String> {
        self.shared
            .lock()
            .sandboxes
            .values()
            .filter_map(|s| s.traffic_token.clone())
            .collect()
    }

    /// The envd access tokens of every sandbox alive.
    pub fn envd_tokens(&self) -> Vec<String> {
        self.shared
            .lock()
            .sandboxes
            .values()
            .map(|s| s.envd_token.clone())
            .collect()
    }

    /// A sandbox made behind agentform's back (by a crashed earlier
    /// attempt), with `metadata`.
    pub fn plant(&self, metadata: &[(&str, &str)]) -> String {
        let id = format!("sbx{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
        let root = self.shared.dir.join(&id);
        std::fs::create_dir_all(root.join("home/user")).unwrap();
        let (killed, _) = watch::channel(false);
        let metadata: BTreeMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let started_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let mut inner = self.shared.lock();
        inner.sandboxes.insert(
            id.clone(),
            Sandbox {
                id: id.clone(),
                template: "base".into(),
                metadata,
                request: Value::Null,
                envd_token: format!("{:032x}", fastrand::u128(..)),
                traffic_token: None,
                root,
                started_at,
                end_at: Instant::now() + Duration::from_secs(600),
                timeouts: Vec::new(),
                procs: HashMap::new(),
                killed,
                egress: None,
            },
        );
        inner.created.push(id.clone());
        id
    }

    /// Kills a sandbox as E2B would at its timeout.
    pub fn kill(&self, id: &str) -> bool {
        kill_sandbox(&mut self.shared.lock(), id)
    }
}

impl Drop for FakeE2b {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        let ids: Vec<String> = inner.sandboxes.keys().cloned().collect();
        for id in ids {
            kill_sandbox(&mut inner, &id);
        }
        drop(inner);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
