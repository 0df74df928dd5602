//! A fake Modal for the tests: the control plane (`modal.client.ModalClient`)
//! and the task command router (`modal.task_command_router.TaskCommandRouter`)
//! as two tonic servers on loopback listeners (plain h2c), serving the
//! methods the official client (`modal` 1.6.4) and agentform call and
//! `UNIMPLEMENTED` for the rest — `tests/sdk/modal_lifecycle.py` keeps it
//! honest. Commands really run here, one directory per sandbox standing for
//! its file system (`/workspace` is `DIR/workspace`). Faults on demand:
//! calls answered `UNAVAILABLE` / `RESOURCE_EXHAUSTED`, a create whose
//! answer is lost, output streams cut after their first chunk, a sandbox
//! terminated mid-run. A declared port's tunnel reaches the process
//! listening for it in the sandbox (`tunnel.rs`). Sandbox ids have the V2 shape of the official
//! client (`sb-` and 26 characters: `sb-` and 22 would be a V1 sandbox).
//! Mounts as Modal serves them: files of 4 MiB or more go up to a blob
//! store (`BlobCreate`, then HTTP PUTs to a third loopback listener, in
//! parts above `Options::multipart_over`; `blobs.rs`), every file's content
//! is put by sha256 (`MountPutFile`) into a content store, a mount lists
//! stored files (`MountGetOrCreate`), and a sandbox created with
//! `mount_ids` finds them in its directory as hard links of one stored copy
//! per (content, mode) (`mounts.rs`).

mod blobs;
mod control;
mod latency;
mod mounts;
mod router;
mod tunnel;

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agentform::sandbox::modal::proto::client as pb;
use base64::Engine;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::Status;

pub use control::FAILING_PACKAGE;
pub use router::Exec;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub token_id: String,
    pub token_secret: String,
    /// This share of all calls (percent, at most 50) is answered
    /// `UNAVAILABLE` or `RESOURCE_EXHAUSTED` (alternately), never two calls
    /// in a row.
    pub fault_percent: u64,
    /// This many `SandboxCreateV2` calls make their sandbox and then answer
    /// `UNAVAILABLE`, as if the answer were lost.
    pub lose_creates: usize,
    /// This many output streams are cut (`UNAVAILABLE` mid-stream) after
    /// their first chunk.
    pub cut_streams: usize,
    /// Sandboxes per page of a list.
    pub page_size: usize,
    /// A new sandbox is scheduled only after this many `SandboxGetTaskIdV2`
    /// calls: until then its create answers no task and no command router.
    pub scheduling_polls: u32,
    /// Added before every answer and to every chunk sent through a tunnel
    /// (`latency.rs`): the distance to Modal, for benchmarks.
    pub latency: Duration,
    /// `BlobCreate` of more bytes than this answers a multipart upload
    /// (Modal's `MULTIPART_UPLOAD_THRESHOLD`, 1 GiB, by default).
    pub multipart_over: u64,
    /// The length of each part of a multipart upload (the last is shorter).
    pub part_length: u64,
    /// This many uploads to the blob store (whole or parts) are answered
    /// 503 `SlowDown`, as S3 does under load.
    pub slow_down_puts: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token_id: "ak-fakeTokenId0123456789".into(),
            token_secret: "as-fakeTokenSecret9876543210".into(),
            fault_percent: 0,
            lose_creates: 0,
            cut_streams: 0,
            page_size: 100,
            scheduling_polls: 0,
            latency: Duration::ZERO,
            multipart_over: 1 << 30,
            part_length: 8 << 20,
            slow_down_puts: 0,
        }
    }
}

/// One sandbox.
pub struct Sandbox {
    pub id: String,
    pub task_id: String,
    pub app_id: String,
    pub tags: BTreeMap<String, String>,
    pub definition: pb::Sandbox,
    /// Variables every command sees (the create's inline secrets).
    pub env: BTreeMap<String, String>,
    pub sandbox_token: String,
    pub router_jwt: String,
    /// Stands for `/`.
    pub root: PathBuf,
    pub created_at: f64,
    pub end_at: Instant,
    /// Set when it finished (terminated, or past its timeout).
    pub result: Option<pb::GenericResult>,
    pub execs: HashMap<String, Arc<Exec>>,
    /// `SandboxGetTaskIdV2` calls still answered "not scheduled yet".
    pub polls_left: u32,
    /// Flips to `true` when the sandbox finishes.
    pub finished: watch::Sender<bool>,
    /// The local port of each declared port's tunnel (`tunnel.rs`).
    pub tunnel_ports: BTreeMap<u32, u16>,
}

impl Sandbox {
    pub fn running(&self) -> bool {
        self.result.is_none()
    }

    /// The ports declared at its creation.
    pub fn declared_ports(&self) -> Vec<u32> {
        match &self.definition.open_ports_oneof {
            Some(pb::sandbox::OpenPortsOneof::OpenPorts(p)) => {
                p.ports.iter().map(|p| p.port).collect()
            }
            None => Vec::new(),
        }
    }

    pub fn tunnels(&self) -> Vec<pb::TunnelData> {
        let ports = match &self.definition.open_ports_oneof {
            Some(pb::sandbox::OpenPortsOneof::OpenPorts(p)) => p.ports.clone(),
            None => Vec::new(),
        };
        ports
            .iter()
            .map(|p| match self.tunnel_ports.get(&p.port) {
                Some(local) => pb::TunnelData {
                    host: "127.0.0.1".into(),
                    port: u32::from(*local),
                    container_port: p.port,
                    ..Default::default()
                },
                None => pb::TunnelData {
                    host: format!("{}-{}.modal.fake", self.id.to_lowercase(), p.port),
                    port: 443,
                    container_port: p.port,
                    ..Default::default()
                },
            })
            .collect()
    }
}

#[derive(Default)]
pub struct Inner {
    pub sandboxes: BTreeMap<String, Sandbox>,
    /// Every sandbox ever created, in order.
    pub created: Vec<String>,
    /// App ids by name.
    pub apps: BTreeMap<String, String>,
    /// Dockerfile commands of every image, by id.
    pub images: BTreeMap<String, Vec<String>>,
    /// The files of every mount, by id (`MountGetOrCreate`).
    pub mounts: BTreeMap<String, Vec<pb::MountFile>>,
    /// Auth tokens handed out (`AuthTokenGet`).
    pub auth_tokens: Vec<String>,
    /// Every call: `Service/Method`.
    pub log: Vec<String>,
    calls: u64,
    pub faults_injected: u64,
    pub creates_to_lose: usize,
    pub cuts_left: usize,
    pub streams_cut: usize,
    pub slow_downs_left: usize,
    last_created_at: f64,
}

pub struct Shared {
    pub options: Options,
    pub dir: PathBuf,
    pub router_url: Mutex<String>,
    /// The blob server's uploads and the content store of mounted files.
    pub blobs: blobs::Blobs,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        expire(&mut inner);
        inner
    }

    /// Logs the call; the injected fault to answer instead, if it is one.
    pub fn enter(&self, what: &str) -> Result<(), Status> {
        let mut inner = self.lock();
        inner.log.push(what.to_owned());
        let n = inner.calls;
        inner.calls += 1;
        let p = self.options.fault_percent.min(50);
        if p == 0 || (n * p) % 100 >= p {
            return Ok(());
        }
        inner.faults_injected += 1;
        Err(if inner.faults_injected % 2 == 1 {
            Status::unavailable("service unavailable (injected)")
        } else {
            Status::resource_exhausted("rate limit exceeded (injected)")
        })
    }

    /// Checks the token of a control-plane call (and the auth token of a
    /// V2 call).
    pub fn check_token(&self, metadata: &MetadataMap, v2: bool) -> Result<(), Status> {
        let get = |k: &str| metadata.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
        if get("x-modal-token-id") != self.options.token_id
            || get("x-modal-token-secret") != self.options.token_secret
        {
            return Err(Status::unauthenticated("Token ID or secret is invalid"));
        }
        if v2 {
            let token = get("x-modal-auth-token");
            if token.is_empty() || !self.lock().auth_tokens.iter().any(|t| t == token) {
                return Err(Status::unauthenticated("missing or invalid auth token"));
            }
        }
        Ok(())
    }

    /// A creation time later than every earlier one (lists page by it).
    pub fn created_at(&self, inner: &mut Inner) -> f64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let at = now.max(inner.last_created_at + 0.001);
        inner.last_created_at = at;
        at
    }
}

/// Finishes the sandboxes past their end.
fn expire(inner: &mut Inner) {
    let now = Instant::now();
    let past: Vec<String> = inner
        .sandboxes
        .values()
        .filter(|s| s.running() && s.end_at <= now)
        .map(|s| s.id.clone())
        .collect();
    for id in past {
        finish(inner, &id, pb::generic_result::GenericStatus::Timeout);
    }
}

/// Finishes the sandbox: its commands die, its streams end.
pub fn finish(inner: &mut Inner, id: &str, status: pb::generic_result::GenericStatus) -> bool {
    let Some(sandbox) = inner.sandboxes.get_mut(id) else {
        return false;
    };
    if !sandbox.running() {
        return false;
    }
    sandbox.result = Some(pb::GenericResult {
        status: status as i32,
        ..Default::default()
    });
    sandbox.finished.send_replace(true);
    for exec in sandbox.execs.values() {
        exec.kill_group();
    }
    // A container dies whole: also what a command started in a process
    // group of its own (found by its working directory).
    kill_under(&sandbox.root);
    true
}

/// Kills every process of this user whose working directory is below `root`.
fn kill_under(root: &Path) {
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
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

/// `prefix-` and `n` random letters and digits.
pub fn random_id(prefix: &str, n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..n)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// A JWT (unsigned: the fake only compares it) that expires in an hour.
pub fn jwt(subject: &str) -> String {
    let b64 = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + 3600;
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#.to_owned()),
        b64(format!(r#"{{"sub":"{subject}","exp":{exp}}}"#)),
        random_id("", 32)
    )
}

/// A running fake; stops when dropped.
pub struct FakeModal {
    /// The control plane, `http://127.0.0.1:PORT`.
    pub server_url: String,
    pub shared: Arc<Shared>,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeModal {
    pub fn start(options: Options) -> FakeModal {
        let dir = tempfile::tempdir().expect("temp dir");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                cuts_left: options.cut_streams,
                creates_to_lose: options.lose_creates,
                slow_downs_left: options.slow_down_puts,
                ..Inner::default()
            }),
            dir: dir.path().to_path_buf(),
            router_url: Mutex::new(String::new()),
            blobs: blobs::Blobs::new(dir.path()).expect("blob store"),
            options,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let server_url = runtime.block_on(async {
            let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let tcr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let blob_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            blobs::serve(Arc::clone(&shared), blob_listener).expect("blob server");
            let server_url = format!("http://{}", api.local_addr().unwrap());
            *shared.router_url.lock().unwrap() = format!("http://{}", tcr.local_addr().unwrap());
            let control = control::service(Arc::clone(&shared));
            let router = router::service(Arc::clone(&shared));
            let latency = shared.options.latency;
            tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(latency::layer(latency))
                    .add_service(control)
                    .serve_with_incoming(incoming(api)),
            );
            // The command router takes 16 MiB stdin writes: windows of
            // h2's default 64 KiB would make each a few hundred round trips
            // of flow control, which a production server's windows avoid.
            tokio::spawn(
                tonic::transport::Server::builder()
                    .initial_stream_window_size(Some(16 << 20))
                    .initial_connection_window_size(Some(64 << 20))
                    .layer(latency::layer(latency))
                    .add_service(router)
                    .serve_with_incoming(incoming(tcr)),
            );
            // Sandboxes finish at their end even when nobody asks.
            let reaper = Arc::clone(&shared);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    drop(reaper.lock());
                }
            });
            server_url
        });
        FakeModal {
            server_url,
            shared,
            _dir: dir,
            runtime: Some(runtime),
        }
    }

    pub fn token_id(&self) -> &str {
        &self.shared.options.token_id
    }

    pub fn token_secret(&self) -> &str {
        &self.shared.options.token_secret
    }

    /// The ids of the sandboxes running.
    pub fn alive(&self) -> Vec<String> {
        self.shared
            .lock()
            .sandboxes
            .values()
            .filter(|s| s.running())
            .map(|s| s.id.clone())
            .collect()
    }

    /// Every sandbox ever created, in order.
    pub fn created(&self) -> Vec<String> {
        self.shared.lock().created.clone()
    }

    /// A sandbox's directory standing for `/` (running or not).
    pub fn root(&self, id: &str) -> PathBuf {
        self.shared.dir.join(id)
    }

    /// Where a sandbox's `/workspace` is.
    pub fn workspace(&self, id: &str) -> PathBuf {
        self.root(id).join("workspace")
    }

    pub fn tags(&self, id: &str) -> BTreeMap<String, String> {
        self.shared
            .lock()
            .sandboxes
            .get(id)
            .map(|s| s.tags.clone())
            .unwrap_or_default()
    }

    pub fn definition(&self, id: &str) -> Option<pb::Sandbox> {
        self.shared
            .lock()
            .sandboxes
            .get(id)
            .map(|s| s.definition.clone())
    }

    /// The Dockerfile commands of the sandbox's image.
    pub fn image_commands(&self, id: &str) -> Vec<String> {
        let inner = self.shared.lock();
        let image = inner
            .sandboxes
            .get(id)
            .map(|s| s.definition.image_id.clone())
            .unwrap_or_default();
        inner.images.get(&image).cloned().unwrap_or_default()
    }

    /// Bytes of content the blob server received (every PUT's body): what
    /// went up through `BlobCreate`'s URLs.
    pub fn blob_bytes_received(&self) -> u64 {
        self.shared.blobs.received()
    }

    /// The ids of every mount made, in id order.
    pub fn mounts(&self) -> Vec<String> {
        self.shared.lock().mounts.keys().cloned().collect()
    }

    /// The files of a mount, as `MountGetOrCreate` listed them.
    pub fn mount_files(&self, mount_id: &str) -> Option<Vec<pb::MountFile>> {
        self.shared.lock().mounts.get(mount_id).cloned()
    }

    /// Where the content store keeps the content with this sha256 (hex),
    /// if it was put.
    pub fn stored(&self, sha256_hex: &str) -> Option<PathBuf> {
        self.shared.blobs.stored(sha256_hex)
    }

    /// The arguments of every command the sandboxes here ran.
    pub fn commands(&self) -> Vec<String> {
        self.shared
            .lock()
            .sandboxes
            .values()
            .flat_map(|s| s.execs.values().map(|e| e.args.join(" ")))
            .collect()
    }

    /// Every call so far: `Service/Method` (the blob server's requests as
    /// `Blobs/Put`, `Blobs/PutPart`, `Blobs/Complete`).
    pub fn log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    pub fn calls_of(&self, method: &str) -> usize {
        self.log().iter().filter(|l| l.ends_with(method)).count()
    }

    pub fn faults_injected(&self) -> u64 {
        self.shared.lock().faults_injected
    }

    pub fn streams_cut(&self) -> usize {
        self.shared.lock().streams_cut
    }

    /// Every secret the fake handed out: auth tokens, sandbox tokens,
    /// command router JWTs and the signatures of upload URLs.
    pub fn handed_out(&self) -> Vec<String> {
        let inner = self.shared.lock();
        let mut all = inner.auth_tokens.clone();
        for s in inner.sandboxes.values() {
            all.push(s.sandbox_token.clone());
            all.push(s.router_jwt.clone());
        }
        drop(inner);
        all.extend(self.shared.blobs.signatures());
        all
    }

    /// A sandbox made behind agentform's back (by a crashed earlier
    /// attempt) in app `app`, with `tags` and a `/workspace`.
    pub fn plant(&self, app: &str, tags: &[(&str, &str)]) -> String {
        let id = random_id("sb-", 26).to_lowercase();
        let root = self.shared.dir.join(&id);
        std::fs::create_dir_all(root.join("workspace")).unwrap();
        std::fs::create_dir_all(root.join("tmp"))
            .and_then(|()| std::fs::create_dir_all(root.join("root")))
            .unwrap();
        let mut inner = self.shared.lock();
        let app_id = inner
            .apps
            .entry(app.to_owned())
            .or_insert_with(|| random_id("ap-", 22))
            .clone();
        let created_at = self.shared.created_at(&mut inner);
        let sandbox = Sandbox {
            id: id.clone(),
            task_id: format!("{}V", random_id("ta-", 21)),
            app_id,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            definition: pb::Sandbox {
                workdir: Some("/workspace".into()),
                timeout_secs: 600,
                ..Default::default()
            },
            env: BTreeMap::new(),
            sandbox_token: random_id("st-", 32),
            router_jwt: jwt(&id),
            root,
            created_at,
            end_at: Instant::now() + Duration::from_secs(600),
            result: None,
            execs: HashMap::new(),
            polls_left: 0,
            finished: watch::channel(false).0,
            tunnel_ports: BTreeMap::new(),
        };
        inner.sandboxes.insert(id.clone(), sandbox);
        inner.created.push(id.clone());
        id
    }

    /// Terminates a sandbox behind the client's back.
    pub fn terminate(&self, id: &str) -> bool {
        finish(
            &mut self.shared.lock(),
            id,
            pb::generic_result::GenericStatus::Terminated,
        )
    }
}

impl Drop for FakeModal {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        let ids: Vec<String> = inner.sandboxes.keys().cloned().collect();
        for id in ids {
            finish(
                &mut inner,
                &id,
                pb::generic_result::GenericStatus::Terminated,
            );
        }
        drop(inner);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The connections a listener accepts, as tonic serves them.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((next, listener))
    })
}
