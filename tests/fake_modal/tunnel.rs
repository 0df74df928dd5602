//! The fake's tunnels: one loopback listener per port a sandbox declared
//! at its creation, forwarding each connection (raw TCP, so streams pass
//! as they are) to the real local port of the process listening for that
//! port in the sandbox. Sandboxes here share this machine's ports, so a
//! command that listens on a declared port (`0.0.0.0:PORT`) is started on
//! `127.0.0.1:0` instead, and the port it took is read from its
//! `listening on http://…:N` line. A finished sandbox's tunnel refuses.
//! With a latency set, each chunk towards the sandbox waits it first (a
//! request pays the distance once, as through the fake E2B's port route).

use std::sync::Arc;

use super::Shared;

/// Binds the tunnel of `port` of sandbox `id`; its local port.
pub fn open(shared: &Arc<Shared>, id: &str, port: u32) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a tunnel");
    listener.set_nonblocking(true).expect("non-blocking");
    let local = listener.local_addr().expect("tunnel address").port();
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let (shared, id) = (Arc::clone(shared), id.to_owned());
    let latency = shared.options.latency;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target(&shared, &id, port);
            shared.lock().log.push(format!("Tunnel {port}"));
            let Some(target) = target else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                {
                    if latency.is_zero() {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    } else {
                        forward_delayed(inbound, outbound, latency).await;
                    }
                }
            });
        }
    });
    local
}

/// Copies both ways; what goes towards the sandbox waits `latency` per chunk.
async fn forward_delayed(
    inbound: tokio::net::TcpStream,
    outbound: tokio::net::TcpStream,
    latency: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = in_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tokio::time::sleep(latency).await;
            if out_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = out_write.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
        let _ = in_write.shutdown().await;
    };
    tokio::join!(up, down);
}

/// The local port the process serving `port` of sandbox `id` listens on,
/// while the sandbox runs.
fn target(shared: &Shared, id: &str, port: u32) -> Option<u16> {
    let inner = shared.lock();
    let sandbox = inner.sandboxes.get(id).filter(|s| s.running())?;
    sandbox
        .execs
        .values()
        .filter(|e| e.serves == Some(port) && e.exit.borrow().is_none())
        .find_map(|e| listening_port(&e.stdout.borrow().data))
}

/// `…listening on http://127.0.0.1:43121…` → 43121.
fn listening_port(output: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().find(|l| l.starts_with("listening on "))?;
    line.trim_end()
        .rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
}

/// `args` with a listen address on a declared port moved to a free
/// loopback port; the declared port it serves, if any.
pub fn rewrite(args: &[String], declared: &[u32]) -> (Vec<String>, Option<u32>) {
    let mut serves = None;
    let args = args
        .iter()
        .map(|a| {
            let mut a = a.clone();
            for p in declared {
                let address = format!("0.0.0.0:{p}");
                if a.contains(&address) {
                    a = a.replace(&address, "127.0.0.1:0");
                    serves = Some(*p);
                }
            }
            a
        })
        .collect();
    (args, serves)
}
