//! Lists of the local runtime: pages over trees keyed by id (or by agent
//! version), opaque `page_…` cursors, and the filters of the API's list
//! endpoints ([`ListFilter`], [`TimeRange`]).

use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

use super::body::invalid;
use super::ids::{is_id, AGENT_PREFIX, ENVIRONMENT_PREFIX, SESSION_PREFIX};
use super::store::{store_err, version_key};
use super::vault::Vault;
use crate::api::limits::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use crate::api::{event, Agent, Environment, ListQuery, Page, Result, Session, SessionResource};
use crate::db::{Entries, Tree};

pub(super) const PAGE_PREFIX: &str = "page_";

/// What the API's list endpoints filter and order by beyond [`ListQuery`]
/// (their query parameters, e.g. `GET /v1/sessions?statuses[]=idle`). The
/// [`Runtime`](crate::runtime::Runtime) methods list with the default:
/// everything, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Newest first (`order=desc`).
    pub descending: bool,
    /// Bounds on `created_at` (on `processed_at` for events).
    pub time: TimeRange,
    /// Sessions: of this agent.
    pub agent_id: Option<String>,
    /// Sessions: of this version of `agent_id`.
    pub agent_version: Option<u64>,
    /// Sessions: in one of these statuses (any when empty).
    pub statuses: Vec<String>,
    /// Sessions: with this memory store among their resources.
    pub memory_store_id: Option<String>,
    /// Sessions: of this deployment (the local runtime has none).
    pub deployment_id: Option<String>,
    /// Events: of one of these types (any when empty).
    pub types: Vec<String>,
}

/// `created_at[gt]`, `[gte]`, `[lt]`, `[lte]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub gt: Option<OffsetDateTime>,
    pub gte: Option<OffsetDateTime>,
    pub lt: Option<OffsetDateTime>,
    pub lte: Option<OffsetDateTime>,
}

impl TimeRange {
    pub fn is_unbounded(&self) -> bool {
        *self == TimeRange::default()
    }

    /// Whether an RFC 3339 timestamp is within the bounds; one that does not
    /// parse is outside any bound.
    pub fn contains(&self, timestamp: &str) -> bool {
        if self.is_unbounded() {
            return true;
        }
        let Ok(t) =
            OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        else {
            return false;
        };
        self.gt.is_none_or(|b| t > b)
            && self.gte.is_none_or(|b| t >= b)
            && self.lt.is_none_or(|b| t < b)
            && self.lte.is_none_or(|b| t <= b)
    }
}

impl ListFilter {
    pub(super) fn keeps_session(&self, session: &Session) -> bool {
        self.agent_id
            .as_deref()
            .is_none_or(|id| session.agent_id() == Some(id))
            && self
                .agent_version
                .is_none_or(|v| session.agent_version() == Some(v))
            && (self.statuses.is_empty() || self.statuses.contains(&session.status))
            && self.memory_store_id.as_deref().is_none_or(|store| {
                session.resources.iter().any(
                    |r| matches!(r, SessionResource::MemoryStore(m) if m.memory_store_id == store),
                )
            })
            && self.deployment_id.is_none()
            && self.time.contains(&session.created_at)
    }

    pub(super) fn keeps_event(&self, event: &Value) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event::kind(event)))
            && (self.time.is_unbounded()
                || event
                    .get("processed_at")
                    .and_then(Value::as_str)
                    .is_some_and(|t| self.time.contains(t)))
    }
}

pub(super) fn page_limit(query: &ListQuery) -> Result<usize> {
    match query.limit.unwrap_or(DEFAULT_PAGE_LIMIT) {
        limit @ 1..=MAX_PAGE_LIMIT => Ok(limit as usize),
        other => Err(invalid(format!(
            "`limit`: must be between 1 and {MAX_PAGE_LIMIT}, got {other}"
        ))),
    }
}

pub(super) fn non_empty_cursor(query: &ListQuery) -> Option<&str> {
    query.page.as_deref().filter(|p| !p.is_empty())
}

/// The objects listed by id: the key is the id, which sorts by creation.
pub(super) trait Listed: DeserializeOwned {
    const PREFIX: &'static str;
    fn id(&self) -> &str;
    fn archived(&self) -> bool;
}

impl Listed for Agent {
    const PREFIX: &'static str = AGENT_PREFIX;
    fn id(&self) -> &str {
        &self.id
    }
    fn archived(&self) -> bool {
        self.archived_at.is_some()
    }
}

impl Listed for Environment {
    const PREFIX: &'static str = ENVIRONMENT_PREFIX;
    fn id(&self) -> &str {
        &self.id
    }
    fn archived(&self) -> bool {
        self.archived_at.is_some()
    }
}

impl Listed for Session {
    const PREFIX: &'static str = SESSION_PREFIX;
    fn id(&self) -> &str {
        &self.id
    }
    fn archived(&self) -> bool {
        self.archived_at.is_some()
    }
}

/// A page of a tree keyed by id, in id order; the cursor is the last id
/// returned.
pub(super) fn page_by_id<T: Listed>(
    vault: &Vault,
    tree: &Tree,
    query: &ListQuery,
) -> Result<Page<T>> {
    page_where(vault, tree, query, false, |_| true)
}

/// A page of the objects of a tree keyed by id that `keep` accepts, in id
/// order (newest first when `descending`); the cursor is the last id
/// returned, and the next page continues after it in the same direction.
pub(super) fn page_where<T: Listed>(
    vault: &Vault,
    tree: &Tree,
    query: &ListQuery,
    descending: bool,
    keep: impl Fn(&T) -> bool,
) -> Result<Page<T>> {
    let limit = page_limit(query)?;
    let after = match non_empty_cursor(query) {
        None => None,
        Some(cursor) => Some(
            cursor
                .strip_prefix(PAGE_PREFIX)
                .filter(|id| is_id(id, T::PREFIX))
                .ok_or_else(|| invalid("`page`: invalid page cursor"))?,
        ),
    };
    let items: Entries<'_> = match after {
        None => tree.range(Bound::Unbounded, Bound::Unbounded, descending),
        Some(after) if !descending => tree.range(
            Bound::Excluded(after.as_bytes().to_vec()),
            Bound::Unbounded,
            false,
        ),
        Some(after) => tree.range(
            Bound::Unbounded,
            Bound::Excluded(after.as_bytes().to_vec()),
            true,
        ),
    };
    let mut data: Vec<T> = Vec::new();
    let mut more = false;
    for item in items {
        let (_, bytes) = item.map_err(store_err)?;
        let value: T = vault.decode(&bytes)?;
        if (value.archived() && !query.include_archived) || !keep(&value) {
            continue;
        }
        if data.len() == limit {
            more = true;
            break;
        }
        data.push(value);
    }
    let next_page = match data.last() {
        Some(last) if more => Some(format!("{PAGE_PREFIX}{}", last.id())),
        _ => None,
    };
    Ok(Page { data, next_page })
}

/// A page of an agent's versions, newest first, each showing the agent's
/// current archival state; the cursor is the last version returned.
pub(super) fn page_versions(
    vault: &Vault,
    versions: &Tree,
    current: &Agent,
    query: &ListQuery,
) -> Result<Page<Agent>> {
    let id = &current.id;
    let limit = page_limit(query)?;
    let upper = match non_empty_cursor(query) {
        None => Bound::Included(version_key(id, current.version)),
        Some(cursor) => {
            let before = cursor
                .strip_prefix(PAGE_PREFIX)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v >= 1)
                .ok_or_else(|| invalid("`page`: invalid page cursor"))?;
            Bound::Excluded(version_key(id, before.min(current.version + 1)))
        }
    };
    let lower = Bound::Included(version_key(id, 0));
    let mut data = Vec::new();
    let mut more = false;
    for item in versions.range(lower, upper, true) {
        let (_, bytes) = item.map_err(store_err)?;
        if data.len() == limit {
            more = true;
            break;
        }
        let mut agent: Agent = vault.decode(&bytes)?;
        agent.archived_at.clone_from(&current.archived_at);
        data.push(agent);
    }
    let next_page = match data.last() {
        Some(last) if more => Some(format!("{PAGE_PREFIX}{}", last.version)),
        _ => None,
    };
    Ok(Page { data, next_page })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::api::{list_all, ErrorKind, ListQuery};
    use crate::runtime::local::tests::{agent_body, assert_kind, fixture};
    use crate::runtime::Runtime;

    #[tokio::test]
    async fn version_pages_walk_newest_first() {
        let f = fixture();
        let agent = f.rt.create_agent(agent_body("a")).await.expect("create");
        for i in 0..4 {
            f.rt.update_agent(&agent.id, json!({"system": format!("s{i}")}))
                .await
                .expect("update");
        }
        let rt = &f.rt;
        let all = list_all(|mut q| {
            q.limit = Some(2);
            let id = agent.id.clone();
            async move { rt.list_agent_versions(&id, &q).await }
        })
        .await
        .expect("list");
        let numbers: Vec<u64> = all.iter().map(|a| a.version).collect();
        assert_eq!(numbers, [5, 4, 3, 2, 1]);
    }

    #[tokio::test]
    async fn pagination_is_complete_and_ordered() {
        let f = fixture();
        let rt = &f.rt;
        let mut created = Vec::new();
        for i in 0..45 {
            created.push(
                rt.create_agent(agent_body(&format!("a{i}")))
                    .await
                    .expect("create")
                    .id,
            );
        }
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        let mut query = ListQuery::default();
        loop {
            let page = rt.list_agents(&query).await.expect("page");
            sizes.push(page.data.len());
            seen.extend(page.data.into_iter().map(|a| a.id));
            match page.next_page {
                Some(next) => query.page = Some(next),
                None => break,
            }
        }
        assert_eq!(sizes, [20, 20, 5]);
        assert_eq!(seen, created);

        for limit in [0, 101] {
            let q = ListQuery {
                limit: Some(limit),
                ..ListQuery::default()
            };
            assert_kind(rt.list_agents(&q).await, ErrorKind::InvalidRequest);
        }
        for page in ["garbage", "page_env_01xyz", "page_agent_01!!"] {
            let q = ListQuery {
                page: Some(page.into()),
                ..ListQuery::default()
            };
            assert_kind(rt.list_agents(&q).await, ErrorKind::InvalidRequest);
        }
        let q = ListQuery {
            page: Some("nope".into()),
            ..ListQuery::default()
        };
        assert_kind(
            rt.list_agent_versions(&created[0], &q).await,
            ErrorKind::InvalidRequest,
        );
    }
}
