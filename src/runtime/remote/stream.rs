//! A remote-loop session's live events: the serve's stream passed through
//! unchanged, the sandbox's lifetime re-armed while it is read, and a
//! sandbox that dies under it told as a `session.error` before the stream
//! ends (a reconnect would find nothing to reach).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::sandbox::SandboxHost;
use crate::api::ids::{new_id, timestamp, EVENT_PREFIX};
use crate::runtime::{EventSource, EventStream, Result};

/// `inner`, watched: see the module's doc.
pub(super) fn watched(
    inner: EventStream,
    host: Arc<dyn SandboxHost>,
    sandbox: String,
) -> EventStream {
    let keeper = {
        let (host, sandbox) = (Arc::clone(&host), sandbox.clone());
        tokio::spawn(async move {
            let every = host.keep_alive_every();
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = host.keep_alive(&sandbox).await {
                    tracing::debug!(%sandbox, "re-arming the sandbox's lifetime: {}", e.message);
                    if e.is_gone() {
                        return;
                    }
                }
            }
        })
    };
    EventStream::new(Watched {
        inner,
        host,
        sandbox,
        keeper,
        ended: false,
    })
}

struct Watched {
    inner: EventStream,
    host: Arc<dyn SandboxHost>,
    sandbox: String,
    keeper: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

#[async_trait]
impl EventSource for Watched {
    async fn next(&mut self) -> Option<Result<Value>> {
        if self.ended {
            return None;
        }
        let next = self.inner.next().await;
        if matches!(next, Some(Ok(_))) {
            return next;
        }
        // The stream ended or broke: a dead sandbox is said once, clearly.
        self.ended = true;
        if let Ok(false) = self.host.alive(&self.sandbox).await {
            self.keeper.abort();
            return Some(Ok(gone_event(self.host.provider(), &self.sandbox)));
        }
        next
    }
}

/// The `session.error` of a sandbox that is gone.
fn gone_event(provider: &str, sandbox: &str) -> Value {
    json!({
        "type": "session.error",
        "id": new_id(EVENT_PREFIX),
        "processed_at": timestamp(),
        "error": {
            "type": "unknown_error",
            "message": format!(
                "the session's {provider} sandbox `{sandbox}` is gone (killed, or past its lifetime); \
                 what arrived before is kept, and plan shows the session for replacement"
            ),
            "retry_status": {"type": "terminal"}
        }
    })
}
