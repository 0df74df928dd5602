//! The distance to Modal, for benchmarks: a tower layer that waits a fixed
//! time before every call of both services is answered (as the fake E2B's
//! middleware does), so a unary call and a stream's opening pay it once.
//! A tunnel pays it on each chunk sent towards the sandbox (`tunnel.rs`).
//! It changes no answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::http::Request;

/// Wraps a service so that each call waits `latency` first.
#[derive(Clone)]
pub struct Delayed<S> {
    inner: S,
    latency: Duration,
}

/// The layer of [`Delayed`].
pub fn layer<S>(latency: Duration) -> impl tower::Layer<S, Service = Delayed<S>> + Clone {
    tower::layer::layer_fn(move |inner| Delayed { inner, latency })
}

impl<S, B> tower::Service<Request<B>> for Delayed<S>
where
    S: tower::Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The ready service answers this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let latency = self.latency;
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            inner.call(request).await
        })
    }
}
