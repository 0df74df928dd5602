//! The fake's control plane: `POST /v2/sandboxes` (idempotent by
//! `Idempotency-Key`), `GET /v2/sandboxes` (metadata filter, pages through
//! `X-Next-Token`), `GET`/`DELETE /sandboxes/{id}`, `POST
//! /sandboxes/{id}/timeout`, `POST /v2/sandboxes/{id}/connect`, behind
//! `X-API-Key`; bodies as the SDK's models (`e2b/api/client/models/`)
//! require them. A sandbox made with `allowPublicTraffic: false` gets a
//! traffic token that its ports then require; every sandbox gets an
//! egress proxy (`egress.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{error, header, kill_sandbox, Sandbox, Shared};

type S = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(detail).delete(delete))
        .route("/sandboxes/{id}/timeout", post(timeout))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .with_state(shared)
}

/// The call's fault or refused key, if any.
fn enter(shared: &Shared, headers: &HeaderMap, what: &str) -> Option<Response> {
    if let Some(fault) = shared.enter(what) {
        return Some(fault);
    }
    if header(headers, "x-api-key") != Some(shared.options.api_key.as_str()) {
        return Some(error(StatusCode::UNAUTHORIZED, "Invalid API key"));
    }
    None
}

fn now_rfc3339(offset: Duration) -> String {
    let t = time::OffsetDateTime::now_utc() + offset;
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn token() -> String {
    format!("{:032x}", fastrand::u128(..))
}

fn created_body(shared: &Shared, s: &Sandbox) -> Value {
    json!({
        "templateID": s.template,
        "sandboxID": s.id,
        "clientID": "fake-client",
        "envdVersion": shared.options.envd_version,
        "envdAccessToken": s.envd_token,
        "trafficAccessToken": s.traffic_token,
        "domain": null,
    })
}

async fn create(State(shared): S, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = enter(&shared, &headers, "POST /v2/sandboxes") {
        return r;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let Some(template) = request["templateID"].as_str().map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "templateID is required");
    };
    let timeout = request["timeout"].as_u64().unwrap_or(300);
    let metadata: BTreeMap<String, String> =
        serde_json::from_value(request["metadata"].clone()).unwrap_or_default();
    let key = header(&headers, "idempotency-key").map(str::to_owned);
    if let Some(k) = &key {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return error(StatusCode::BAD_REQUEST, "invalid Idempotency-Key");
        }
    }
    let mut inner = shared.lock();
    if let Some(id) = key.as_ref().and_then(|k| inner.idempotency.get(k)).cloned() {
        return match inner.sandboxes.get(&id) {
            Some(s) => (StatusCode::CREATED, Json(created_body(&shared, s))).into_response(),
            None => error(
                StatusCode::CONFLICT,
                "the sandbox of this idempotency key is gone",
            ),
        };
    }
    let id = format!("sbx{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
    let root = shared.dir.join(&id);
    let home = root.join("home/user");
    if let Err(e) = std::fs::create_dir_all(&home) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let from = inner
        .templates
        .values()
        .find(|t| (t.id == template || t.name == template) && t.status == "ready")
        .map(|t| t.root.clone());
    if let Some(from) = from {
        super::templates::copy_tree(&from, &root);
    }
    if let Some(shims) = &shared.options.shims {
        let profile = format!("export PATH=\"{}:$PATH\"\n", shims.display());
        let _ = std::fs::write(home.join(".bash_profile"), profile);
    }
    let (killed, _) = watch::channel(false);
    let egress = match super::egress::start(Arc::clone(&shared), id.clone(), killed.subscribe()) {
        Ok(url) => url,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let traffic_token = (request["network"]["allowPublicTraffic"] == json!(false)).then(token);
    let sandbox = Sandbox {
        id: id.clone(),
        template,
        metadata,
        request,
        envd_token: token(),
        traffic_token,
        root,
        started_at: now_rfc3339(Duration::ZERO),
        end_at: Instant::now() + Duration::from_secs(timeout),
        timeouts: Vec::new(),
        procs: Default::default(),
        killed,
        egress: Some(egress),
    };
    let body = created_body(&shared, &sandbox);
    inner.sandboxes.insert(id.clone(), sandbox);
    inner.created.push(id.clone());
    if let Some(k) = key {
        inner.idempotency.insert(k, id);
    }
    (StatusCode::CREATED, Json(body)).into_response()
}

fn listed(s: &Sandbox, envd_version: &str) -> Value {
    let left = s.end_at.saturating_duration_since(Instant::now());
    json!({
        "templateID": s.template,
        "sandboxID": s.id,
        "clientID": "fake-client",
        "startedAt": s.started_at,
        "endAt": now_rfc3339(left),
        "cpuCount": 2,
        "memoryMB": 512,
        "diskSizeMB": 1024,
        "state": "running",
        "envdVersion": envd_version,
        "metadata": s.metadata,
    })
}

/// `k=v&k2=v2`, each part percent-encoded (the SDK's `metadata` filter,
/// once the query string is decoded).
fn metadata_filter(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(&decode(k)), decode(&decode(v)))
        })
        .collect()
}

/// Percent-decoding, `+` as a space.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn list(
    State(shared): S,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(r) = enter(&shared, &headers, "GET /v2/sandboxes") {
        return r;
    }
    let filter = query
        .get("metadata")
        .map(|m| metadata_filter(m))
        .unwrap_or_default();
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .min(shared.options.page_size)
        .max(1);
    let start: usize = query
        .get("nextToken")
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let inner = shared.lock();
    let matching: Vec<Value> = inner
        .created
        .iter()
        .filter_map(|id| inner.sandboxes.get(id))
        .filter(|s| filter.iter().all(|(k, v)| s.metadata.get(k) == Some(v)))
        .map(|s| listed(s, &shared.options.envd_version))
        .collect();
    let page: Vec<Value> = matching.iter().skip(start).take(limit).cloned().collect();
    let mut response = Json(Value::Array(page)).into_response();
    if start + limit < matching.len() {
        let next = format!("page-{}", start + limit);
        response
            .headers_mut()
            .insert("x-next-token", next.parse().unwrap());
    }
    response
}

async fn detail(State(shared): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = enter(&shared, &headers, "GET /sandboxes/{id}") {
        return r;
    }
    let inner = shared.lock();
    let Some(s) = inner.sandboxes.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("sandbox \"{id}\" doesn't exist or you don't have access to it"),
        );
    };
    let mut body = listed(s, &shared.options.envd_version);
    body["envdAccessToken"] = json!(s.envd_token);
    body["domain"] = Value::Null;
    Json(body).into_response()
}

async fn delete(State(shared): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = enter(&shared, &headers, "DELETE /sandboxes/{id}") {
        return r;
    }
    match kill_sandbox(&mut shared.lock(), &id) {
        true => StatusCode::NO_CONTENT.into_response(),
        false => error(
            StatusCode::NOT_FOUND,
            &format!("sandbox \"{id}\" not found"),
        ),
    }
}

async fn timeout(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = enter(&shared, &headers, "POST /sandboxes/{id}/timeout") {
        return r;
    }
    let Some(seconds) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["timeout"].as_u64())
    else {
        return error(StatusCode::BAD_REQUEST, "timeout is required");
    };
    let mut inner = shared.lock();
    let Some(s) = inner.sandboxes.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("sandbox \"{id}\" not found"),
        );
    };
    s.end_at = Instant::now() + Duration::from_secs(seconds);
    s.timeouts.push(seconds);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /v2/sandboxes/{id}/connect`: a running sandbox's tokens, its
/// lifetime extended to `timeout` from now (never shortened).
async fn connect(
    State(shared): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = enter(&shared, &headers, "POST /v2/sandboxes/{id}/connect") {
        return r;
    }
    let Some(seconds) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["timeout"].as_u64())
    else {
        return error(StatusCode::BAD_REQUEST, "timeout is required");
    };
    let mut inner = shared.lock();
    let Some(s) = inner.sandboxes.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("sandbox \"{id}\" not found"),
        );
    };
    s.end_at = s.end_at.max(Instant::now() + Duration::from_secs(seconds));
    (StatusCode::OK, Json(created_body(&shared, s))).into_response()
}
