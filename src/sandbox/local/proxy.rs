//! The egress proxy of a sandbox with limited networking: an HTTP proxy
//! (`CONNECT host:port` for TLS, absolute-form requests for plain HTTP) on a
//! Unix socket that the sandbox reaches through its bridge. It admits the
//! environment's `allowed_hosts` (and the package registries when
//! `allow_package_managers` is set), refuses everything else with 403 and
//! remembers each refusal for the command's result. It must not be
//! reachable from the network: it listens on a Unix socket only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::sandbox::SandboxError;

/// Hosts of the package registries pip, npm, cargo, gem, go and apt use.
pub const PACKAGE_REGISTRIES: [&str; 14] = [
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "rubygems.org",
    "index.rubygems.org",
    "proxy.golang.org",
    "sum.golang.org",
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
];

/// The longest request head read before answering 400.
const MAX_HEAD: usize = 16 * 1024;
/// How long an upstream connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which hosts a sandbox may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// `host`, `host:port` or `*.domain` (any subdomain), case-insensitive.
    entries: Vec<String>,
}

impl AllowList {
    pub fn new(allowed_hosts: &[String], package_managers: bool) -> Self {
        let mut entries: Vec<String> = allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if package_managers {
            entries.extend(PACKAGE_REGISTRIES.iter().map(|h| h.to_string()));
        }
        AllowList { entries }
    }

    /// Whether `host:port` may be reached.
    pub fn admits(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.entries.iter().any(|entry| {
            let (name, entry_port) = split_port(entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            match name.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|rest| rest.ends_with('.')),
                None => host == name,
            }
        })
    }
}

/// `host:port` → (host, Some(port)); a bare host or an IPv6 literal keeps
/// its colons.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct EgressProxy {
    socket: PathBuf,
    refusals: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl EgressProxy {
    /// Listens on a new socket in a private directory of the temp dir (Unix
    /// socket paths are short, state directories may be long).
    pub fn start(allow: AllowList) -> Result<Self, SandboxError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = proxy_dir()?;
        let socket = dir.join(format!(
            "{}-{}-{:08x}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        ));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).map_err(|e| {
            SandboxError::Other(format!(
                "cannot start the egress proxy at `{}`: {e}",
                socket.display()
            ))
        })?;
        // Commands may run as another user; the directory is not listable.
        set_mode(&socket, 0o666)?;
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let allow = Arc::new(allow);
        let task = tokio::spawn(serve(listener, allow, Arc::clone(&refusals)));
        Ok(EgressProxy {
            socket,
            refusals,
            task,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The refusals since the last call.
    pub fn take_refusals(&self) -> Vec<String> {
        std::mem::take(&mut *self.refusals.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `TMP/agentform-egress-UID/`, mode 0711: others may reach a socket whose
/// name they know, not list them.
fn proxy_dir() -> Result<PathBuf, SandboxError> {
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("agentform-egress-{uid}"));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(SandboxError::Other(format!(
                "cannot create `{}`: {e}",
                dir.display()
            )))
        }
    }
    let metadata = std::fs::symlink_metadata(&dir)
        .map_err(|e| SandboxError::Other(format!("`{}`: {e}", dir.display())))?;
    use std::os::unix::fs::MetadataExt;
    if !metadata.is_dir() || metadata.uid() != uid {
        return Err(SandboxError::Other(format!(
            "`{}` is not a directory of this user; remove it",
            dir.display()
        )));
    }
    set_mode(&dir, 0o711)?;
    Ok(dir)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| SandboxError::Other(format!("`{}`: {e}", path.display())))
}

async fn serve(listener: UnixListener, allow: Arc<AllowList>, refusals: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let allow = Arc::clone(&allow);
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            let _ = handle(client, &allow, &refusals).await;
        });
    }
}

/// One client connection; a refusal is recorded before it is answered, so
/// the command that asked sees it in its result.
async fn handle(
    mut client: UnixStream,
    allow: &AllowList,
    refusals: &Mutex<Vec<String>>,
) -> Result<(), Option<String>> {
    let (head, rest) = read_head(&mut client).await?;
    let Some(request) = Request::parse(&head) else {
        let _ = respond(&mut client, "400 Bad Request", "not an HTTP proxy request").await;
        return Err(None);
    };
    if !allow.admits(&request.host, request.port) {
        let why = format!(
            "connection to {}:{} refused: the host is not in the environment's \
             `networking.allowed_hosts`",
            request.host, request.port
        );
        tracing::warn!("egress proxy: {why}");
        refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(why.clone());
        let _ = respond(&mut client, "403 Forbidden", &why).await;
        return Err(None);
    }
    let connect = TcpStream::connect((request.host.as_str(), request.port));
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let _ = respond(&mut client, "502 Bad Gateway", &e.to_string()).await;
            return Err(None);
        }
        Err(_) => {
            let _ = respond(&mut client, "504 Gateway Timeout", "connect timed out").await;
            return Err(None);
        }
    };
    if request.tunnel {
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .map_err(|_| None)?;
    } else {
        upstream
            .write_all(&request.origin_form(&head))
            .await
            .map_err(|_| None)?;
    }
    upstream.write_all(&rest).await.map_err(|_| None)?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

/// The request head (through the blank line) and whatever followed it.
async fn read_head(client: &mut UnixStream) -> Result<(Vec<u8>, Vec<u8>), Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find_blank_line(&buf) {
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            let _ = respond(
                client,
                "431 Request Header Fields Too Large",
                "head too long",
            )
            .await;
            return Err(None);
        }
        let n = client.read(&mut chunk).await.map_err(|_| None)?;
        if n == 0 {
            return Err(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

async fn respond(client: &mut UnixStream, status: &str, text: &str) -> std::io::Result<()> {
    let body = format!("agentform egress proxy: {text}\n");
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(reply.as_bytes()).await?;
    client.shutdown().await
}

/// What a proxy request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    host: String,
    port: u16,
    /// `CONNECT`: a tunnel; otherwise a plain-HTTP request to forward.
    tunnel: bool,
    /// The request line's method, and the target's path and query.
    method: String,
    path: String,
}

impl Request {
    fn parse(head: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(head).ok()?;
        let line = text.lines().next()?;
        let mut parts = line.split(' ');
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !version.starts_with("HTTP/1.") {
            return None;
        }
        if method.eq_ignore_ascii_case("CONNECT") {
            let (host, port) = split_host_port(target)?;
            return Some(Request {
                host,
                port: port?,
                tunnel: true,
                method: method.to_string(),
                path: String::new(),
            });
        }
        let rest = target.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return None;
        }
        let (host, port) = split_host_port(authority)?;
        Some(Request {
            host,
            port: port.unwrap_or(80),
            tunnel: false,
            method: method.to_string(),
            path: path.to_string(),
        })
    }

    /// The head with the request line in origin form (`GET /path HTTP/1.1`).
    fn origin_form(&self, head: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(head);
        let (line, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
        let version = line.rsplit(' ').next().unwrap_or("HTTP/1.1");
        format!("{} {} {version}\r\n{rest}", self.method, self.path).into_bytes()
    }
}

/// `host[:port]` or `[v6][:port]`; `None` when malformed.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_ascii_lowercase(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_ascii_lowercase(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None => Some((authority.to_ascii_lowercase(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_hosts_ports_and_subdomains() {
        let allow = AllowList::new(
            &[
                "Example.com".into(),
                "*.internal.test".into(),
                "127.0.0.1:8080".into(),
            ],
            false,
        );
        assert!(allow.admits("example.com", 443));
        assert!(allow.admits("EXAMPLE.COM.", 80));
        assert!(!allow.admits("www.example.com", 443));
        assert!(!allow.admits("example.com.evil.test", 443));
        assert!(allow.admits("a.b.internal.test", 1));
        assert!(!allow.admits("internal.test", 1));
        assert!(!allow.admits("evilinternal.test", 1));
        assert!(allow.admits("127.0.0.1", 8080));
        assert!(!allow.admits("127.0.0.1", 8081));
        assert!(!allow.admits("pypi.org", 443));
        assert!(AllowList::new(&[], true).admits("pypi.org", 443));
    }

    #[test]
    fn requests_parse_in_both_forms() {
        let connect = Request::parse(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (connect.host.as_str(), connect.port, connect.tunnel),
            ("pypi.org", 443, true)
        );
        let get =
            Request::parse(b"GET http://127.0.0.1:9/a?b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (get.host.as_str(), get.port, get.path.as_str()),
            ("127.0.0.1", 9, "/a?b")
        );
        assert_eq!(
            get.origin_form(b"GET http://127.0.0.1:9/a?b HTTP/1.1\r\nHost: x\r\n\r\n"),
            b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let bare = Request::parse(b"GET http://example.com HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((bare.port, bare.path.as_str()), (80, "/"));
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"CONNECT pypi.org HTTP/1.1\r\n\r\n",
            b"GET http://user@host/ HTTP/1.1\r\n\r\n",
            b"GET http://host:notaport/ HTTP/1.1\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert_eq!(
                Request::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn the_proxy_forwards_allowed_and_refuses_other_hosts() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = upstream.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let body = format!("seen: {line}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        let proxy = EgressProxy::start(AllowList::new(&["127.0.0.1".into()], false)).unwrap();
        let ask = |request: String| {
            let socket = proxy.socket().to_path_buf();
            async move {
                let mut c = UnixStream::connect(socket).await.unwrap();
                c.write_all(request.as_bytes()).await.unwrap();
                let mut out = String::new();
                c.read_to_string(&mut out).await.unwrap();
                out
            }
        };
        let ok = ask(format!(
            "GET http://127.0.0.1:{port}/hi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;
        assert!(ok.ends_with("seen: GET /hi HTTP/1.1"), "{ok}");
        let refused = ask("CONNECT evil.example:443 HTTP/1.1\r\n\r\n".into()).await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        let refusals = proxy.take_refusals();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(refusals[0].contains("evil.example:443"));
        assert!(proxy.take_refusals().is_empty());
    }
}
