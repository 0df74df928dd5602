//! Pagination: pages, list queries and following cursors.

use serde::{Deserialize, Serialize};

use super::limits::MAX_PAGE_LIMIT;
use super::Result;

/// One page of a list; `next_page` is an opaque cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Default 20, at most 100.
    pub limit: Option<u32>,
    pub page: Option<String>,
    pub include_archived: bool,
}

impl ListQuery {
    pub fn all() -> Self {
        ListQuery {
            limit: Some(MAX_PAGE_LIMIT),
            page: None,
            include_archived: true,
        }
    }
}

/// Every item of a list, following `next_page` until it runs out.
pub async fn list_all<T, F, Fut>(mut fetch: F) -> Result<Vec<T>>
where
    F: FnMut(ListQuery) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>>>,
{
    let mut out = Vec::new();
    let mut query = ListQuery::all();
    loop {
        let page = fetch(query.clone()).await?;
        out.extend(page.data);
        match page.next_page {
            Some(next) if !next.is_empty() => query.page = Some(next),
            _ => return Ok(out),
        }
    }
}
