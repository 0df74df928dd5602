//! A fake Anthropic Messages API for the tests (axum, plain HTTP on a
//! loopback port): `POST /v1/messages` answers one text block when the
//! request's `x-api-key` is the key it was started with, and 401 with the
//! API's `authentication_error` otherwise. It notes, per request, whether
//! the key was right (never the key sent).

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

/// What the model says when the key is right.
pub const REPLY: &str = "Hello from the fake model, reached with the right key.";

/// A running fake model; stops when dropped.
pub struct FakeModel {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Per request: whether its key was the right one.
    answered: Arc<Mutex<Vec<bool>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeModel {
    pub fn start(key: &str) -> FakeModel {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let answered = Arc::new(Mutex::new(Vec::new()));
        let state = (key.to_owned(), Arc::clone(&answered));
        let url = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let app = Router::new()
                .route("/v1/messages", post(messages))
                .with_state(state);
            tokio::spawn(async move { axum::serve(listener, app).await });
            url
        });
        FakeModel {
            url,
            answered,
            runtime: Some(runtime),
        }
    }

    /// Per request so far: whether its key was the right one.
    pub fn answered(&self) -> Vec<bool> {
        self.answered.lock().unwrap().clone()
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn messages(
    axum::extract::State((key, answered)): axum::extract::State<(String, Arc<Mutex<Vec<bool>>>)>,
    headers: HeaderMap,
) -> Response {
    let right = headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(key.as_str());
    answered.lock().unwrap().push(right);
    if !right {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"}
            })),
        )
            .into_response();
    }
    Json(json!({
        "id": "msg_fake_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": [{"type": "text", "text": REPLY}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 9}
    }))
    .into_response()
}
