//! `serve`: the local runtime over HTTP. Checks the listening policy, opens
//! the runtime over its data directory, binds, serves until told to stop,
//! then stops the sessions and flushes the data. Signals are the caller's.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::manifest::Manifest;
use crate::runtime::local::{LocalOptions, LocalRuntime, ModelResolver, NoModels};
use crate::runtime::RuntimeError;
use crate::sandbox::local::{Confinement, LocalSandboxes};
use crate::sandbox::SandboxProvider;
use crate::serve::{self, Server};
use crate::state::{StateError, StateStore};

use super::models::ManifestModels;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where the served runtime keeps its database and workspaces.
    pub data: PathBuf,
    /// Whether a non-loopback `listen` is allowed (an API key is required then).
    pub allow_remote: bool,
    /// Fault injection: each runtime call answers this late.
    pub latency: Duration,
    /// Fault injection: event streams close after this many events.
    pub drop_stream_after: Option<usize>,
    /// Tools run unconfined: only where the machine itself is the
    /// boundary (a remote sandbox holding one session). Never implied.
    pub unconfined: bool,
    /// The server's own options: API key, injected failures, heartbeat.
    pub server: serve::Options,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "the API key is empty; set --api-key (or AGENTFORM_SERVE_API_KEY) to a non-empty value"
    )]
    EmptyApiKey,
    #[error("refusing to listen on {0}: it is reachable from other machines\nhint: pass --allow-remote (with an API key), or listen on 127.0.0.1")]
    Remote(SocketAddr),
    #[error("refusing to listen on {0} without an API key\nhint: set --api-key or AGENTFORM_SERVE_API_KEY")]
    RemoteWithoutKey(SocketAddr),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot open the local runtime: {0}")]
    Runtime(RuntimeError),
    #[error(transparent)]
    Sandboxes(super::providers::ProvidersError),
    #[error("cannot listen on {address}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Address(std::io::Error),
    #[error("serving")]
    Serving(#[source] std::io::Error),
    #[error("flushing the data: {0}")]
    FlushTask(tokio::task::JoinError),
    #[error("flushing the data")]
    Flush(#[source] crate::db::DbError),
}

impl ServeOptions {
    /// Refuses an empty API key, and a reachable address without consent
    /// and a key.
    pub fn check(&self) -> Result<(), ServeError> {
        let api_key = self.server.api_key.as_deref();
        if api_key.is_some_and(|k| k.trim().is_empty()) {
            return Err(ServeError::EmptyApiKey);
        }
        if !self.listen.ip().is_loopback() {
            if !self.allow_remote {
                return Err(ServeError::Remote(self.listen));
            }
            if api_key.is_none() {
                return Err(ServeError::RemoteWithoutKey(self.listen));
            }
        }
        Ok(())
    }
}

/// The runtime and server, ready to bind.
pub struct Prepared {
    store: StateStore,
    runtime: Arc<LocalRuntime>,
    server: Server,
    listen: SocketAddr,
}

/// A server bound to its address.
pub struct Bound {
    prepared: Prepared,
    listener: TcpListener,
    address: SocketAddr,
}

/// Opens the runtime over `options.data`, with the model backends of
/// `manifest` (none: sessions cannot call a model).
pub fn prepare(options: ServeOptions, manifest: Option<&Manifest>) -> Result<Prepared, ServeError> {
    options.check()?;
    let models: Arc<dyn ModelResolver> = match manifest {
        None => Arc::new(NoModels),
        Some(m) => Arc::new(ManifestModels::new(m)),
    };
    let store = StateStore::open(&options.data, "serve")?;
    let workspaces = options.data.join("workspaces");
    let sandboxes: Arc<dyn SandboxProvider> = if options.unconfined {
        tracing::warn!("--no-confinement: the served runtime's tools run commands unconfined");
        let mut unconfined = LocalSandboxes::new(workspaces);
        unconfined.confinement = Confinement::None;
        Arc::new(unconfined)
    } else {
        super::providers::local_sandboxes(workspaces, manifest, |name| std::env::var(name).ok())
            .map_err(ServeError::Sandboxes)?
    };
    let local = LocalOptions {
        latency: options.latency,
        sandboxes,
        models,
        drop_stream_after: options.drop_stream_after,
        secrets: manifest.map(Manifest::secrets).unwrap_or_default(),
        ..Default::default()
    };
    let runtime = Arc::new(LocalRuntime::open(store.db(), local).map_err(ServeError::Runtime)?);
    let server = Server::new(runtime.clone(), options.server);
    Ok(Prepared {
        store,
        runtime,
        server,
        listen: options.listen,
    })
}

impl Prepared {
    pub async fn bind(self) -> Result<Bound, ServeError> {
        let listener =
            TcpListener::bind(self.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    address: self.listen,
                    source,
                })?;
        let address = listener.local_addr().map_err(ServeError::Address)?;
        Ok(Bound {
            prepared: self,
            listener,
            address,
        })
    }
}

impl Bound {
    /// The address bound, with the port picked when 0 was asked for.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` completes; then, whatever happened, stops the
    /// sessions' workers and makes everything durable.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Prepared {
            store,
            runtime,
            server,
            ..
        } = self.prepared;
        let served = server.run(self.listener, shutdown).await;
        runtime.shutdown().await;
        let db = store.db().clone();
        let flushed = tokio::task::spawn_blocking(move || db.flush()).await;
        served.map_err(ServeError::Serving)?;
        flushed
            .map_err(ServeError::FlushTask)?
            .map_err(ServeError::Flush)?;
        Ok(())
    }
}
