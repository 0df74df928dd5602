//! The fake's templates, as the SDK's `e2b/api/client/api/templates/`
//! calls them: `POST /v3/templates {name}` → `{templateID, buildID, …}`,
//! `POST /v2/templates/{id}/builds/{build}` `{fromTemplate, steps}` (202;
//! `RUN` steps really run, in the template's own directory standing for
//! `/`), `GET /templates/{id}/builds/{build}/status` (`TemplateBuildInfo`,
//! logs from `logsOffset`), `DELETE /templates/{id}`. A sandbox created
//! from a ready template starts with a copy of its directory.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{error, header, Shared};

type S = State<Arc<Shared>>;

/// One template.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub build_id: String,
    /// `waiting`, `building`, `ready` or `error`.
    pub status: String,
    pub logs: Vec<String>,
    /// The build's start request, as sent.
    pub build: Value,
    /// Stands for `/` of sandboxes made from it.
    pub root: PathBuf,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v3/templates", post(request))
        .route("/v2/templates/{id}/builds/{build}", post(start))
        .route("/templates/{id}/builds/{build}/status", get(status))
        .route("/templates/{id}", delete(remove))
        .with_state(shared)
}

fn enter(shared: &Shared, headers: &HeaderMap, what: &str) -> Option<Response> {
    if let Some(fault) = shared.enter(what) {
        return Some(fault);
    }
    if header(headers, "x-api-key") != Some(shared.options.api_key.as_str()) {
        return Some(error(StatusCode::UNAUTHORIZED, "Invalid API key"));
    }
    None
}

async fn request(State(shared): S, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = enter(&shared, &headers, "POST /v3/templates") {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let Some(name) = body["name"].as_str().filter(|n| !n.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "name is required");
    };
    let id = format!("tpl{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
    let build_id = format!("{:032x}", fastrand::u128(..));
    let template = Template {
        id: id.clone(),
        name: name.to_owned(),
        build_id: build_id.clone(),
        status: "waiting".into(),
        logs: Vec::new(),
        build: Value::Null,
        root: shared.dir.join(&id),
    };
    shared.lock().templates.insert(id.clone(), template);
    let answer = json!({
        "templateID": id, "buildID": build_id, "public": false,
        "names": [name], "tags": [], "aliases": [name],
    });
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

async fn start(
    State(shared): S,
    headers: HeaderMap,
    Path((id, build)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(r) = enter(&shared, &headers, "POST /v2/templates/{id}/builds/{build}") {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let commands: Vec<String> = body["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["type"] == "RUN")
        .filter_map(|s| s["args"][0].as_str().map(str::to_owned))
        .collect();
    let root = {
        let mut inner = shared.lock();
        let Some(t) = inner.templates.get_mut(&id).filter(|t| t.build_id == build) else {
            return error(StatusCode::NOT_FOUND, "no such template build");
        };
        t.status = "building".into();
        t.build = body.clone();
        t.root.clone()
    };
    let from = body["fromTemplate"].as_str().unwrap_or("base").to_owned();
    let base = shared.lock().templates.get(&from).map(|t| t.root.clone());
    let shared2 = Arc::clone(&shared);
    tokio::spawn(async move {
        let (ok, logs) = build_in(&shared2, &root, base.as_deref(), &commands).await;
        if let Some(t) = shared2.lock().templates.get_mut(&id) {
            t.logs = logs;
            t.status = if ok { "ready" } else { "error" }.into();
        }
    });
    StatusCode::ACCEPTED.into_response()
}

/// Runs the steps in `root` (a copy of `base`'s, when a template); its log.
async fn build_in(
    shared: &Shared,
    root: &FsPath,
    base: Option<&FsPath>,
    commands: &[String],
) -> (bool, Vec<String>) {
    let home = root.join("home/user");
    if let Err(e) = std::fs::create_dir_all(&home) {
        return (false, vec![e.to_string()]);
    }
    if let Some(base) = base {
        copy_tree(base, root);
    }
    if let Some(shims) = &shared.options.shims {
        let _ = std::fs::write(
            home.join(".bash_profile"),
            format!("export PATH=\"{}:$PATH\"\n", shims.display()),
        );
    }
    let mut logs = Vec::new();
    for command in commands {
        let out = tokio::process::Command::new("/bin/bash")
            .args(["-l", "-c", command])
            .current_dir(&home)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("USER", "user")
            .output()
            .await;
        let Ok(out) = out else {
            return (false, vec!["cannot start bash".into()]);
        };
        for text in [&out.stdout, &out.stderr] {
            logs.extend(String::from_utf8_lossy(text).lines().map(str::to_owned));
        }
        if !out.status.success() {
            logs.push(format!("step failed: {}", out.status));
            return (false, logs);
        }
    }
    (true, logs)
}

/// Copies `from`'s tree into `to` (`cp -a`).
pub fn copy_tree(from: &FsPath, to: &FsPath) {
    let _ = std::fs::create_dir_all(to);
    let _ = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status();
}

async fn status(
    State(shared): S,
    headers: HeaderMap,
    Path((id, build)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = enter(
        &shared,
        &headers,
        "GET /templates/{id}/builds/{build}/status",
    ) {
        return r;
    }
    let inner = shared.lock();
    let Some(t) = inner.templates.get(&id).filter(|t| t.build_id == build) else {
        return error(StatusCode::NOT_FOUND, "no such template build");
    };
    let offset: usize = query
        .get("logsOffset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let logs: Vec<&String> = t.logs.iter().skip(offset).collect();
    let mut body = json!({
        "templateID": t.id, "buildID": t.build_id, "status": t.status,
        "logs": logs, "logEntries": [],
    });
    if t.status == "error" {
        body["reason"] = json!({ "message": "the build's step failed" });
    }
    Json(body).into_response()
}

async fn remove(State(shared): S, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = enter(&shared, &headers, "DELETE /templates/{id}") {
        return r;
    }
    match shared.lock().templates.remove(&id) {
        Some(t) => {
            let _ = std::fs::remove_dir_all(&t.root);
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such template"),
    }
}
