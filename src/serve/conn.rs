//! Accepting and holding connections: HTTP/1.1 through hyper, with the
//! limits that keep slow and idle clients from holding the server.
//!
//! * At most `max_connections` are open; beyond that the accept loop waits
//!   (new connections queue in the kernel's backlog), so descriptors are
//!   never exhausted.
//! * A connection must deliver its first request head within
//!   `header_timeout` of being accepted; between requests it may stay idle
//!   for `idle_timeout`, and once a byte of the next head has come the rest
//!   must follow within `header_timeout`. Past either it is closed.
//! * While a request is answered (its response body included, so an event
//!   stream), or while the socket takes no more of a response, no timeout
//!   of this module runs; the handlers bound their own reads.
//!
//! On shutdown it stops accepting, closes the connections that are not
//! answering a request at once (a client halfway through its head is not
//! waited for), lets the others close once their answer is written and
//! waits for all of them. It routes nothing itself.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// The limits of one server's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// How long the accept loop rests after an error that is not one
/// connection's (e.g. out of descriptors), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` completes, then tells the
/// handlers through `stop`, lets the open connections finish and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: Arc<watch::Sender<bool>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!("accepting a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            tcp,
            router.clone(),
            limits,
            stop.subscribe(),
            permit,
        ));
    }
    drop(listener);
    stop.send_replace(true);
    // Every connection holds a permit until it is closed.
    let all =
        u32::try_from(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

/// Errors of one connection that went away before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection, from accept to close; `_slot` frees its place.
async fn connection(
    tcp: TcpStream,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    // Small SSE frames must not wait for delayed ACKs (Nagle).
    let _ = tcp.set_nodelay(true);
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let answering = activity.answering();
            let router = router.clone();
            async move {
                let response = match router.oneshot(req.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|inner| Answer {
                    inner,
                    _answering: answering,
                }))
            }
        })
    };
    let conn = http1::Builder::new()
        .keep_alive(true)
        // The timeouts are this module's: hyper's would also cut idle waits.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut expired = pin!(activity.expired(limits));
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            why = &mut expired => {
                tracing::debug!("closing a connection: {why}");
                return;
            }
            () = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
                activity.close();
            }
        }
    }
}

/// Completes when the server stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// What a connection is doing, as far as its deadline goes.
#[derive(Debug, Clone, Copy)]
struct State {
    /// Requests being answered (their response bodies not yet done).
    answering: usize,
    /// When the connection was accepted or last finished an answer.
    since: Instant,
    /// Whether a request was answered on it yet.
    served: bool,
    /// When the first byte of the head being waited for came.
    first_byte: Option<Instant>,
    /// Whether the socket refused the last write (the client reads slowly).
    writing: bool,
    /// When the server began to shut down.
    closing: Option<Instant>,
}

impl State {
    /// When the connection is closed if nothing changes, and why.
    fn deadline(&self, limits: Limits) -> Option<(Instant, &'static str)> {
        if self.answering > 0 || self.writing {
            return None;
        }
        if let Some(at) = self.closing {
            return Some((at, "the server is shutting down"));
        }
        Some(match self.first_byte {
            Some(at) => (
                at + limits.header_timeout,
                "request head not received in time",
            ),
            None if !self.served => (
                self.since + limits.header_timeout,
                "no request head received in time",
            ),
            None => (self.since + limits.idle_timeout, "idle"),
        })
    }
}

/// The shared [`State`] of one connection.
#[derive(Clone)]
struct Activity(Arc<watch::Sender<State>>);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(watch::Sender::new(State {
            answering: 0,
            since: Instant::now(),
            served: false,
            first_byte: None,
            writing: false,
            closing: None,
        })))
    }

    /// A request head arrived; answering it lasts as long as the guard.
    fn answering(&self) -> Answering {
        self.0.send_modify(|s| {
            s.answering += 1;
            s.first_byte = None;
        });
        Answering(self.clone())
    }

    /// A write completed, or the socket refused it for now.
    fn wrote(&self, blocked: bool) {
        self.0.send_if_modified(|s| {
            let changed = s.writing != blocked;
            s.writing = blocked;
            if changed && !blocked {
                s.since = Instant::now();
            }
            changed
        });
    }

    /// The server shuts down: close once nothing is being answered.
    fn close(&self) {
        self.0.send_modify(|s| s.closing = Some(Instant::now()));
    }

    /// Bytes arrived; while waiting for a head they start its clock.
    fn read(&self) {
        self.0.send_if_modified(|s| {
            let starts = s.answering == 0 && s.first_byte.is_none();
            if starts {
                s.first_byte = Some(Instant::now());
            }
            starts
        });
    }

    /// Completes with the reason once the connection outlived its deadline.
    async fn expired(&self, limits: Limits) -> &'static str {
        let mut changes = self.0.subscribe();
        loop {
            let deadline = changes.borrow_and_update().deadline(limits);
            match deadline {
                None => {
                    // The sender lives as long as this future's `self`.
                    let _ = changes.changed().await;
                }
                Some((at, why)) => {
                    tokio::select! {
                        biased;
                        _ = changes.changed() => {}
                        () = tokio::time::sleep_until(at) => return why,
                    }
                }
            }
        }
    }
}

/// Held while a request is answered.
struct Answering(Activity);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0 .0.send_modify(|s| {
            s.answering = s.answering.saturating_sub(1);
            s.since = Instant::now();
            s.served = true;
        });
    }
}

/// A response body that holds its request's [`Answering`] until hyper has
/// written it all (or dropped it).
struct Answer {
    inner: Body,
    _answering: Answering,
}

impl http_body::Body for Answer {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.wrote(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.wrote(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.wrote(polled.is_pending());
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1,
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_has_the_header_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        assert_eq!(
            activity.expired(LIMITS).await,
            "no request head received in time"
        );
        assert_eq!(started.elapsed(), LIMITS.header_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_an_answer_then_the_header_timeout_from_the_first_byte() {
        let activity = Activity::new();
        let answering = activity.answering();
        let expired = activity.expired(LIMITS);
        let mut expired = pin!(expired);
        // No deadline while answering, however long.
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), expired.as_mut())
                .await
                .is_err()
        );
        drop(answering);
        let idle_from = Instant::now();
        tokio::time::sleep(Duration::from_secs(30)).await;
        activity.read();
        let head_from = Instant::now();
        assert_eq!(expired.await, "request head not received in time");
        assert_eq!(head_from.elapsed(), LIMITS.header_timeout);
        assert!(idle_from.elapsed() < LIMITS.idle_timeout);

        let idle = Activity::new();
        drop(idle.answering());
        let from = Instant::now();
        assert_eq!(idle.expired(LIMITS).await, "idle");
        assert_eq!(from.elapsed(), LIMITS.idle_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_the_client_does_not_read_yet_is_not_idle() {
        let activity = Activity::new();
        drop(activity.answering());
        activity.wrote(true);
        let expired = activity.expired(LIMITS);
        let mut expired = pin!(expired);
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), expired.as_mut())
                .await
                .is_err()
        );
        activity.wrote(false);
        let from = Instant::now();
        assert_eq!(expired.await, "idle");
        assert_eq!(from.elapsed(), LIMITS.idle_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn on_shutdown_only_answers_are_waited_for() {
        let halfway = Activity::new();
        halfway.read();
        halfway.close();
        let from = Instant::now();
        assert_eq!(halfway.expired(LIMITS).await, "the server is shutting down");
        assert_eq!(from.elapsed(), Duration::ZERO);

        let busy = Activity::new();
        let answering = busy.answering();
        busy.close();
        let expired = busy.expired(LIMITS);
        let mut expired = pin!(expired);
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), expired.as_mut())
                .await
                .is_err()
        );
        drop(answering);
        assert_eq!(expired.await, "the server is shutting down");
    }
}
