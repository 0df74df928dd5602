//! A session's live side, as the runtime hands it to the engine: sending
//! events, opening a stream (the engine's subscription as an
//! [`EventStream`] of JSON), and forgetting a session once its record is
//! gone. No API rule and no part of the agent loop lives here.

use async_trait::async_trait;
use serde_json::Value;

use super::LocalRuntime;
use crate::api::event::Event;
use crate::api::Result;
use crate::engine::Subscription;
use crate::runtime::{EventSource, EventStream};

impl LocalRuntime {
    pub(super) async fn send_events_now(
        &self,
        session_id: &str,
        params: &[Value],
    ) -> Result<Vec<Value>> {
        let accepted = self.engine.send(session_id, params).await?;
        Ok(accepted.iter().map(Event::to_value).collect())
    }

    pub(super) async fn stream_events_now(&self, session_id: &str) -> Result<EventStream> {
        let subscription = self.engine.subscribe(session_id).await?;
        Ok(EventStream::new(LiveEvents {
            subscription,
            drop_after: self.options.drop_stream_after,
        }))
    }

    /// After the session record is gone: stops its worker, ends its streams,
    /// removes its events and its workspace.
    pub(super) async fn forget_session(&self, id: &str) -> Result<()> {
        self.engine.forget(id).await
    }
}

/// A live stream of one session's events, as the JSON the engine stored.
pub(super) struct LiveEvents {
    subscription: Subscription,
    /// Fault injection: the stream ends after this many more events, like a
    /// dropped connection.
    drop_after: Option<usize>,
}

#[async_trait]
impl EventSource for LiveEvents {
    async fn next(&mut self) -> Option<Result<Value>> {
        if self.drop_after == Some(0) {
            return None;
        }
        let item = self.subscription.next().await?;
        if item.is_ok() {
            if let Some(n) = &mut self.drop_after {
                *n -= 1;
            }
        }
        Some(item.map(|event| event.to_value()))
    }
}
