//! A tree as rows of `entries (tree, key, value)`: single reads and writes
//! as prepared statements, ranges read in growing chunks, and groups of
//! writes sent as one message that the server runs as one transaction.
//!
//! `bytea` compares byte by byte, as sled orders keys, so ranges and
//! prefixes mean the same on both backends.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::Arc;

use super::{Conn, Param};
use crate::db::{Committed, Committing, DbResult, Entries, Entry, Group, TreeOps};

/// The first chunk of a range; each next one is twice as large, up to
/// [`LAST_CHUNK`]: a page of 20 costs one round trip, a list of 10,000 few.
const FIRST_CHUNK: i64 = 128;
const LAST_CHUNK: i64 = 4096;

pub(super) struct PgTree {
    conn: Arc<Conn>,
    name: String,
}

impl PgTree {
    pub(super) fn new(conn: Arc<Conn>, name: &str) -> Self {
        PgTree {
            conn,
            name: name.to_string(),
        }
    }
}

fn get(conn: &Conn, tree: &str, key: &[u8]) -> DbResult<Option<Vec<u8>>> {
    let rows = conn.query(
        "SELECT value FROM entries WHERE tree = $1 AND key = $2",
        vec![Box::new(tree.to_string()), Box::new(key.to_vec())],
    )?;
    Ok(rows.first().map(|r| r.get(0)))
}

impl TreeOps for PgTree {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> DbResult<Option<Vec<u8>>> {
        get(&self.conn, &self.name, key)
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.conn.forget_cached(Some(&self.name));
        // The old value is read in the statement's snapshot, before the upsert.
        let rows = self.conn.query(
            "WITH old AS (SELECT value FROM entries WHERE tree = $1 AND key = $2), \
             up AS (INSERT INTO entries (tree, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value) \
             SELECT value FROM old",
            vec![
                Box::new(self.name.clone()),
                Box::new(key.to_vec()),
                Box::new(value.to_vec()),
            ],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn remove(&self, key: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.conn.forget_cached(Some(&self.name));
        let rows = self.conn.query(
            "DELETE FROM entries WHERE tree = $1 AND key = $2 RETURNING value",
            vec![Box::new(self.name.clone()), Box::new(key.to_vec())],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>, reverse: bool) -> Entries<'_> {
        Box::new(Range {
            conn: &self.conn,
            tree: &self.name,
            from,
            to,
            reverse,
            chunk: FIRST_CHUNK,
            buffer: VecDeque::new(),
            done: false,
        })
    }

    fn len(&self) -> DbResult<u64> {
        let rows = self.conn.query(
            "SELECT count(*) FROM entries WHERE tree = $1",
            vec![Box::new(self.name.clone())],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }

    fn clear(&self) -> DbResult<()> {
        self.conn.forget_cached(Some(&self.name));
        self.conn.query(
            "DELETE FROM entries WHERE tree = $1",
            vec![Box::new(self.name.clone())],
        )?;
        Ok(())
    }
}

/// A range read chunk by chunk, each chunk starting after the last key read.
struct Range<'a> {
    conn: &'a Conn,
    tree: &'a str,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    reverse: bool,
    chunk: i64,
    buffer: VecDeque<Entry>,
    done: bool,
}

impl Range<'_> {
    fn fetch(&mut self) -> DbResult<()> {
        let mut sql = String::from("SELECT key, value FROM entries WHERE tree = $1");
        let mut params: Vec<Param> = vec![Box::new(self.tree.to_string())];
        for (bound, above) in [(&self.from, true), (&self.to, false)] {
            let (op, key) = match (bound, above) {
                (Bound::Included(k), true) => (">=", k),
                (Bound::Excluded(k), true) => (">", k),
                (Bound::Included(k), false) => ("<=", k),
                (Bound::Excluded(k), false) => ("<", k),
                (Bound::Unbounded, _) => continue,
            };
            params.push(Box::new(key.clone()));
            let _ = write!(sql, " AND key {op} ${}", params.len());
        }
        params.push(Box::new(self.chunk));
        let order = if self.reverse { "DESC" } else { "ASC" };
        let _ = write!(sql, " ORDER BY key {order} LIMIT ${}", params.len());
        let rows = self.conn.query(&sql, params)?;
        if (rows.len() as i64) < self.chunk {
            self.done = true;
        }
        self.chunk = (self.chunk * 2).min(LAST_CHUNK);
        for row in rows {
            self.buffer.push_back((row.get(0), row.get(1)));
        }
        if let Some((last, _)) = self.buffer.back() {
            // The next chunk starts after the last key read.
            if self.reverse {
                self.to = Bound::Excluded(last.clone());
            } else {
                self.from = Bound::Excluded(last.clone());
            }
        }
        Ok(())
    }
}

impl Iterator for Range<'_> {
    type Item = DbResult<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.buffer.pop_front().map(Ok)
    }
}

/// A group's writes, kept until [`commit`](PgGroup::commit): each key's
/// last value (or its removal), after the trees cleared.
pub(super) struct PgGroup<'a> {
    conn: &'a Arc<Conn>,
    writes: RefCell<Writes>,
}

#[derive(Default)]
struct Writes {
    cleared: BTreeSet<String>,
    /// (tree, key) → the value, or `None` for removed.
    changes: BTreeMap<(String, Vec<u8>), Option<Vec<u8>>>,
}

impl<'a> PgGroup<'a> {
    pub(super) fn new(conn: &'a Arc<Conn>) -> Self {
        PgGroup {
            conn,
            writes: RefCell::default(),
        }
    }

    /// The value `key` has as of the writes so far (the tree's cache).
    fn current(&self, tree: &str, key: &[u8]) -> DbResult<Option<Vec<u8>>> {
        {
            let writes = self.writes.borrow();
            if let Some(value) = writes.changes.get(&(tree.to_string(), key.to_vec())) {
                return Ok(value.clone());
            }
            if writes.cleared.contains(tree) {
                return Ok(None);
            }
        }
        self.conn
            .with_cached(tree, |entries| entries.get(key).cloned())
    }

    fn set(&self, tree: &str, key: &[u8], value: Option<Vec<u8>>) -> DbResult<Option<Vec<u8>>> {
        let old = self.current(tree, key)?;
        self.writes
            .borrow_mut()
            .changes
            .insert((tree.to_string(), key.to_vec()), value);
        Ok(old)
    }

    /// Sends every write in one message, which the server commits whole
    /// or, on any error, not at all; the trees cached are brought up to it.
    pub(super) fn send(self) -> DbResult<Box<dyn Committing>> {
        let writes = self.writes.into_inner();
        let sql = sql(&writes);
        if sql.is_empty() {
            return Ok(Box::new(Committed));
        }
        self.conn.update_cache(|cache| {
            for tree in &writes.cleared {
                if let Some(entries) = cache.get_mut(tree) {
                    entries.clear();
                }
            }
            for ((tree, key), value) in &writes.changes {
                if let Some(entries) = cache.get_mut(tree) {
                    match value {
                        Some(value) => entries.insert(key.clone(), value.clone()),
                        None => entries.remove(key),
                    };
                }
            }
        });
        self.conn.send_batch(sql)
    }
}

impl Group for PgGroup<'_> {
    fn insert(&self, tree: &str, key: &[u8], value: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.set(tree, key, Some(value.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> DbResult<()> {
        self.writes
            .borrow_mut()
            .changes
            .insert((tree.to_string(), key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn remove(&self, tree: &str, key: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.set(tree, key, None)
    }

    fn clear(&self, tree: &str) -> DbResult<()> {
        let mut writes = self.writes.borrow_mut();
        writes.changes.retain(|(t, _), _| t != tree);
        writes.cleared.insert(tree.to_string());
        Ok(())
    }
}

/// Upserts per statement: large enough to be few, small enough to parse fast.
const ROWS_PER_INSERT: usize = 500;

/// The statements of a group: clears, removals, then upserts; keys and
/// values as hex literals (nothing else reaches the text but tree names,
/// quoted).
fn sql(writes: &Writes) -> String {
    let mut sql = String::new();
    for tree in &writes.cleared {
        let _ = write!(sql, "DELETE FROM entries WHERE tree = {};", text(tree));
    }
    for ((tree, key), _) in writes.changes.iter().filter(|(_, v)| v.is_none()) {
        if !writes.cleared.contains(tree) {
            let _ = write!(
                sql,
                "DELETE FROM entries WHERE tree = {} AND key = {};",
                text(tree),
                bytes(key)
            );
        }
    }
    let upserts: Vec<_> = writes
        .changes
        .iter()
        .filter_map(|((tree, key), v)| v.as_ref().map(|v| (tree, key, v)))
        .collect();
    for chunk in upserts.chunks(ROWS_PER_INSERT) {
        sql.push_str("INSERT INTO entries (tree, key, value) VALUES ");
        for (i, (tree, key, value)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let _ = write!(sql, "({},{},{})", text(tree), bytes(key), bytes(value));
        }
        sql.push_str(" ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value;");
    }
    sql
}

/// A string literal.
fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A `bytea` literal in hex.
fn bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() * 2 + 12);
    out.push_str("'\\x");
    for byte in b {
        let _ = write!(out, "{byte:02x}");
    }
    out.push_str("'::bytea");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_becomes_clears_removals_then_upserts() {
        let mut w = Writes::default();
        w.cleared.insert("t'x".into());
        w.changes.insert(("a".into(), b"k".to_vec()), None);
        w.changes.insert(("t'x".into(), b"k".to_vec()), None);
        w.changes
            .insert(("a".into(), vec![0, 0xff]), Some(b"v".to_vec()));
        assert_eq!(
            sql(&w),
            "DELETE FROM entries WHERE tree = 't''x';\
             DELETE FROM entries WHERE tree = 'a' AND key = '\\x6b'::bytea;\
             INSERT INTO entries (tree, key, value) VALUES ('a','\\x00ff'::bytea,'\\x76'::bytea) \
             ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value;"
        );
        assert_eq!(sql(&Writes::default()), "");
    }
}
