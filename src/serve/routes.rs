//! The endpoints, their query parameters and bodies (wire notes §1).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{sse, ApiError, AppState};
use crate::runtime::local::{ListFilter, TimeRange};
use crate::runtime::{ListQuery, Runtime};

/// A body past the limit is still read (and dropped) up to this, so the
/// client can read the 413 instead of seeing its upload reset.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

const SESSION_STATUSES: [&str; 4] = ["rescheduling", "running", "idle", "terminated"];
/// `BetaManagedAgentsSessionEventType` (wire notes §9.0).
const EVENT_TYPES: [&str; 41] = [
    "user.message",
    "user.interrupt",
    "user.tool_confirmation",
    "user.custom_tool_result",
    "agent.custom_tool_use",
    "agent.message",
    "agent.thinking",
    "agent.mcp_tool_use",
    "agent.mcp_tool_result",
    "agent.tool_use",
    "agent.tool_result",
    "agent.thread_message_received",
    "agent.thread_message_sent",
    "agent.thread_context_compacted",
    "session.error",
    "session.status_rescheduled",
    "session.status_running",
    "session.status_idle",
    "session.status_terminated",
    "session.thread_created",
    "span.outcome_evaluation_start",
    "span.outcome_evaluation_end",
    "span.model_request_start",
    "span.model_request_end",
    "span.outcome_evaluation_ongoing",
    "user.define_outcome",
    "session.thread_status_running",
    "session.thread_status_idle",
    "session.thread_status_terminated",
    "user.tool_result",
    "session.thread_status_rescheduled",
    "session.updated",
    "system.message",
    "session.usage",
    "workflow_run.created",
    "workflow_run.status_running",
    "workflow_run.status_idle",
    "workflow_run.status_ended",
    "workflow_run.error",
    "workflow_run.phase_started",
    "workflow_run.phase_ended",
];

pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/agents", get(list_agents).post(create_agent))
        .route("/v1/agents/{id}", get(retrieve_agent).post(update_agent))
        .route("/v1/agents/{id}/archive", post(archive_agent))
        .route("/v1/agents/{id}/versions", get(list_agent_versions))
        .route(
            "/v1/environments",
            get(list_environments).post(create_environment),
        )
        .route(
            "/v1/environments/{id}",
            get(retrieve_environment)
                .post(update_environment)
                .delete(delete_environment),
        )
        .route("/v1/environments/{id}/archive", post(archive_environment))
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route(
            "/v1/sessions/{id}",
            get(retrieve_session)
                .post(update_session)
                .delete(delete_session),
        )
        .route("/v1/sessions/{id}/archive", post(archive_session))
        .route(
            "/v1/sessions/{id}/events",
            get(list_events).post(send_events),
        )
        .route("/v1/sessions/{id}/events/stream", get(sse::stream))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

// ----- extractors ----------------------------------------------------------------

/// The `{id}` of a path.
pub(super) struct Id(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("path: {}", e.body_text())))?;
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return Err(ApiError::not_found(format!("`{id}`: not a valid id")));
        }
        Ok(Id(id))
    }
}

/// The query string as pairs, in order, percent-decoded.
pub(super) struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::invalid(format!("query string: {}", e.body_text())))?;
        Ok(Params(pairs))
    }
}

impl Params {
    /// The last value of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a list parameter, sent as `key[]=a&key[]=b` (the SDKs)
    /// or `key=a&key=b`.
    fn list(&self, key: &str) -> Vec<&str> {
        let bracketed = format!("{key}[]");
        self.0
            .iter()
            .filter(|(k, _)| *k == key || *k == bracketed)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(super) fn list_of(&self, key: &str, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
        self.list(key)
            .into_iter()
            .map(|v| {
                if allowed.contains(&v) {
                    Ok(v.to_owned())
                } else {
                    Err(ApiError::invalid(format!(
                        "`{key}`: `{v}` is not one of {}",
                        allowed.join(", ")
                    )))
                }
            })
            .collect()
    }

    fn bool(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" || v.is_empty() => Ok(false),
            Some(v) => Err(ApiError::invalid(format!(
                "`{key}`: expected `true` or `false`, got `{v}`"
            ))),
        }
    }

    fn positive_int(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::invalid(format!("`{key}`: expected an integer ≥ 1, got `{v}`"))
                })
            })
            .transpose()
    }

    /// `limit`, `page` and, when the endpoint has it, `include_archived`.
    fn list_query(&self, archivable: bool) -> Result<ListQuery, ApiError> {
        let limit = match self.get("limit") {
            None => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| {
                ApiError::invalid(format!(
                    "`limit`: expected an integer between 1 and 100, got `{v}`"
                ))
            })?),
        };
        Ok(ListQuery {
            limit,
            page: self.get("page").map(str::to_owned),
            include_archived: archivable && self.bool("include_archived")?,
        })
    }

    /// `order`: `asc` or `desc`; true for `desc`.
    fn descending(&self, default: bool) -> Result<bool, ApiError> {
        match self.get("order") {
            None | Some("") => Ok(default),
            Some("asc") => Ok(false),
            Some("desc") => Ok(true),
            Some(v) => Err(ApiError::invalid(format!(
                "`order`: expected `asc` or `desc`, got `{v}`"
            ))),
        }
    }

    /// `created_at[gt]`, `[gte]`, `[lt]`, `[lte]`.
    fn time_range(&self, allowed: &[&str]) -> Result<TimeRange, ApiError> {
        let bound = |op: &str| -> Result<Option<OffsetDateTime>, ApiError> {
            let key = format!("created_at[{op}]");
            match self.get(&key) {
                None => Ok(None),
                Some(_) if !allowed.contains(&op) => Err(ApiError::invalid(format!(
                    "`{key}`: not supported by this endpoint"
                ))),
                Some(v) => parse_time(v).map(Some).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "`{key}`: expected an RFC 3339 timestamp, got `{v}`"
                    ))
                }),
            }
        };
        Ok(TimeRange {
            gt: bound("gt")?,
            gte: bound("gte")?,
            lt: bound("lt")?,
            lte: bound("lte")?,
        })
    }
}

/// RFC 3339; a timestamp without an offset (Python's `isoformat()` of a
/// naive datetime) is taken as UTC, and a space is a `+` that arrived
/// unencoded.
fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim().replace(' ', "+");
    OffsetDateTime::parse(&s, &Rfc3339)
        .ok()
        .or_else(|| OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).ok())
}

/// A JSON request body; an empty body is `{}`. Its type was checked in
/// front of the routes; it must arrive within the header timeout.
pub(super) struct JsonBody(pub(super) Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.options.max_body_bytes;
        let patience = state.options.header_timeout;
        let deadline = tokio::time::Instant::now() + patience;
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expects_continue = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if declared.is_some_and(|n| n > limit as u64)
            && (expects_continue || declared.is_some_and(|n| n > DRAIN_LIMIT as u64))
        {
            return Err(ApiError::too_large(limit));
        }
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        let mut total = 0usize;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    format!(
                        "the request body did not arrive within {} ms",
                        patience.as_millis()
                    ),
                ));
            };
            let Some(chunk) = next else { break };
            let chunk: Bytes = chunk
                .map_err(|e| ApiError::invalid(format!("cannot read the request body: {e}")))?;
            total = total.saturating_add(chunk.len());
            if total <= limit {
                buf.extend_from_slice(&chunk);
            } else if total > DRAIN_LIMIT {
                break;
            }
        }
        if total > limit {
            return Err(ApiError::too_large(limit));
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(Map::new())));
        }
        serde_json::from_slice(&buf)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}")))
    }
}

fn ok<T: Serialize>(value: T) -> ApiResult<T> {
    Ok(Json(value))
}

// ----- agents ---------------------------------------------------------------------

async fn create_agent(
    State(s): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<crate::runtime::Agent> {
    ok(s.runtime.create_agent(body).await?)
}

async fn list_agents(
    State(s): State<AppState>,
    params: Params,
) -> ApiResult<crate::runtime::Page<crate::runtime::Agent>> {
    let query = params.list_query(true)?;
    let filter = ListFilter {
        time: params.time_range(&["gte", "lte"])?,
        ..ListFilter::default()
    };
    ok(s.runtime.list_agents_where(&query, &filter).await?)
}

async fn retrieve_agent(
    State(s): State<AppState>,
    Id(id): Id,
    params: Params,
) -> ApiResult<crate::runtime::Agent> {
    let version = params.positive_int("version")?;
    ok(s.runtime.retrieve_agent(&id, version).await?)
}

async fn update_agent(
    State(s): State<AppState>,
    Id(id): Id,
    JsonBody(body): JsonBody,
) -> ApiResult<crate::runtime::Agent> {
    ok(s.runtime.update_agent(&id, body).await?)
}

async fn archive_agent(State(s): State<AppState>, Id(id): Id) -> ApiResult<crate::runtime::Agent> {
    ok(s.runtime.archive_agent(&id).await?)
}

async fn list_agent_versions(
    State(s): State<AppState>,
    Id(id): Id,
    params: Params,
) -> ApiResult<crate::runtime::Page<crate::runtime::Agent>> {
    let query = params.list_query(false)?;
    ok(s.runtime.list_agent_versions(&id, &query).await?)
}

// ----- environments -------------------------------------------------------------

async fn create_environment(
    State(s): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<crate::runtime::Environment> {
    ok(s.runtime.create_environment(body).await?)
}

async fn list_environments(
    State(s): State<AppState>,
    params: Params,
) -> ApiResult<crate::runtime::Page<crate::runtime::Environment>> {
    let query = params.list_query(true)?;
    ok(s.runtime.list_environments(&query).await?)
}

async fn retrieve_environment(
    State(s): State<AppState>,
    Id(id): Id,
) -> ApiResult<crate::runtime::Environment> {
    ok(s.runtime.retrieve_environment(&id).await?)
}

async fn update_environment(
    State(s): State<AppState>,
    Id(id): Id,
    JsonBody(body): JsonBody,
) -> ApiResult<crate::runtime::Environment> {
    ok(s.runtime.update_environment(&id, body).await?)
}

async fn archive_environment(
    State(s): State<AppState>,
    Id(id): Id,
) -> ApiResult<crate::runtime::Environment> {
    ok(s.runtime.archive_environment(&id).await?)
}

async fn delete_environment(
    State(s): State<AppState>,
    Id(id): Id,
) -> ApiResult<crate::runtime::Deleted> {
    ok(s.runtime.delete_environment(&id).await?)
}

// ----- sessions -------------------------------------------------------------------

async fn create_session(
    State(s): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<crate::runtime::Session> {
    ok(s.runtime.create_session(body).await?)
}

async fn list_sessions(
    State(s): State<AppState>,
    params: Params,
) -> ApiResult<crate::runtime::Page<crate::runtime::Session>> {
    let query = params.list_query(true)?;
    let agent_id = params.get("agent_id").filter(|v| !v.is_empty());
    let agent_version = params.positive_int("agent_version")?;
    if agent_version.is_some() && agent_id.is_none() {
        return Err(ApiError::invalid(
            "`agent_version`: only allowed together with `agent_id`",
        ));
    }
    let filter = ListFilter {
        descending: params.descending(true)?,
        time: params.time_range(&["gt", "gte", "lt", "lte"])?,
        agent_id: agent_id.map(str::to_owned),
        agent_version,
        statuses: params.list_of("statuses", &SESSION_STATUSES)?,
        memory_store_id: params.get("memory_store_id").map(str::to_owned),
        deployment_id: params.get("deployment_id").map(str::to_owned),
        types: Vec::new(),
    };
    ok(s.runtime.list_sessions_where(&query, &filter).await?)
}

async fn retrieve_session(
    State(s): State<AppState>,
    Id(id): Id,
) -> ApiResult<crate::runtime::Session> {
    ok(s.runtime.retrieve_session(&id).await?)
}

async fn update_session(
    State(s): State<AppState>,
    Id(id): Id,
    JsonBody(body): JsonBody,
) -> ApiResult<crate::runtime::Session> {
    ok(s.runtime.update_session(&id, body).await?)
}

async fn archive_session(
    State(s): State<AppState>,
    Id(id): Id,
) -> ApiResult<crate::runtime::Session> {
    ok(s.runtime.archive_session(&id).await?)
}

async fn delete_session(
    State(s): State<AppState>,
    Id(id): Id,
) -> ApiResult<crate::runtime::Deleted> {
    ok(s.runtime.delete_session(&id).await?)
}

// ----- events ---------------------------------------------------------------------

async fn send_events(
    State(s): State<AppState>,
    Id(id): Id,
    JsonBody(body): JsonBody,
) -> ApiResult<Value> {
    let Value::Object(mut map) = body else {
        return Err(ApiError::invalid(
            "request body: expected an object with `events`",
        ));
    };
    if let Some(key) = map.keys().find(|k| *k != "events") {
        return Err(ApiError::invalid(format!("`{key}`: unknown field")));
    }
    let events = match map.remove("events") {
        Some(Value::Array(events)) => events,
        None | Some(Value::Null) => return Err(ApiError::invalid("`events`: required")),
        Some(_) => return Err(ApiError::invalid("`events`: expected an array")),
    };
    let accepted = s.runtime.send_events(&id, events).await?;
    ok(json!({ "data": accepted }))
}

async fn list_events(
    State(s): State<AppState>,
    Id(id): Id,
    params: Params,
) -> ApiResult<crate::runtime::Page<Value>> {
    let query = params.list_query(false)?;
    let filter = ListFilter {
        descending: params.descending(false)?,
        time: params.time_range(&["gt", "gte", "lt", "lte"])?,
        types: params.list_of("types", &EVENT_TYPES)?,
        ..ListFilter::default()
    };
    ok(s.runtime.list_events_where(&id, &query, &filter).await?)
}
