//! The one trait a state's storage implements: named, ordered trees of
//! bytes, groups of writes committed together, monotonic ids and
//! durability. sled implements it with its own trees (`sled.rs`, the
//! embedded default), PostgreSQL with rows of one table (in the state
//! module, which owns connecting and locking).
//!
//! Everything a state keeps goes through it: the resource records,
//! intents, serial and transcript index, and the local runtime's objects
//! and events. Both backends hold the same trees with the same keys and
//! values, so a state moves between them entry by entry.
//!
//! A leaf: storage only. It must not import the rest of the crate, nor
//! interpret keys or values.

mod sled;

use std::ops::Bound;
use std::sync::Arc;

pub use self::sled::{flush, SledDb};

/// What storage said went wrong, already in words (the backend's own
/// error, with where the state is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

pub type DbResult<T> = Result<T, DbError>;

/// One key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The entries of a range, in key order (or reversed), read lazily.
pub type Entries<'a> = Box<dyn Iterator<Item = DbResult<Entry>> + Send + 'a>;

/// A state's database.
pub trait Db: Send + Sync + 'static {
    /// The tree `name`, created when first written.
    fn open_tree(&self, name: &str) -> DbResult<Tree>;

    /// The names of the trees that hold (or held) entries, sorted.
    fn tree_names(&self) -> DbResult<Vec<String>>;

    /// A number never handed out before by this database, larger than every
    /// one before it (across restarts).
    fn generate_id(&self) -> DbResult<u64>;

    /// Makes every id up to `at_least` used, so that later ids are larger
    /// (a state copied in keeps its ids' order).
    fn advance_ids(&self, at_least: u64) -> DbResult<()>;

    /// Makes every write done before the call durable.
    fn flush(&self) -> DbResult<()>;

    /// Whether every write is durable when it returns (no flush needed).
    fn durable_writes(&self) -> bool;

    /// Runs `writes`, whose changes are committed together: all or none,
    /// when [`atomic_groups`](Db::atomic_groups); otherwise as they go.
    fn group(&self, writes: &mut dyn FnMut(&dyn Group) -> DbResult<()>) -> DbResult<()>;

    /// Whether a [`group`](Db::group) that fails leaves nothing behind.
    fn atomic_groups(&self) -> bool;

    /// Whether writes become durable in the order they were committed (one
    /// log, as PostgreSQL's WAL): then a flush makes every earlier commit
    /// durable too, and a commit that later writes depend on needs no
    /// flush of its own when one of theirs follows.
    fn one_log(&self) -> bool {
        false
    }

    /// [`group`](Db::group), but returning once the writes are on their way
    /// rather than once they are committed: groups sent one after another
    /// are committed in that order, and reads made after the call see them.
    /// The caller waits with [`Committing::wait`] (outside its own locks,
    /// so that concurrent groups share the wait).
    fn send_group(
        &self,
        writes: &mut dyn FnMut(&dyn Group) -> DbResult<()>,
    ) -> DbResult<Box<dyn Committing>> {
        self.group(writes)?;
        Ok(Box::new(Committed))
    }
}

/// A group sent by [`Db::send_group`].
pub trait Committing: Send {
    /// Waits until the group is committed and durable, or says why it was not.
    fn wait(self: Box<Self>) -> DbResult<()>;

    /// Waits until the group is committed, not necessarily durable: with
    /// [`Db::one_log`], it becomes durable with the next flush.
    fn wait_committed(self: Box<Self>) -> DbResult<()> {
        self.wait()
    }
}

/// A group already committed when sent.
pub struct Committed;

impl Committing for Committed {
    fn wait(self: Box<Self>) -> DbResult<()> {
        Ok(())
    }
}

/// The writes of a group, by tree name.
pub trait Group {
    /// Sets `key` in `tree`; the value it had.
    fn insert(&self, tree: &str, key: &[u8], value: &[u8]) -> DbResult<Option<Vec<u8>>>;
    /// Sets `key` in `tree`, without reading what it was.
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> DbResult<()> {
        self.insert(tree, key, value).map(drop)
    }
    /// Removes `key` from `tree`; the value it had.
    fn remove(&self, tree: &str, key: &[u8]) -> DbResult<Option<Vec<u8>>>;
    /// Removes every entry of `tree`.
    fn clear(&self, tree: &str) -> DbResult<()>;
}

/// One tree: a shared handle, cheap to clone.
pub type Tree = Arc<dyn TreeOps>;

/// What a tree does: sled's operations, each on its own (not in a group).
pub trait TreeOps: Send + Sync {
    fn name(&self) -> &str;
    fn get(&self, key: &[u8]) -> DbResult<Option<Vec<u8>>>;
    /// Sets `key`; the value it had.
    fn insert(&self, key: &[u8], value: &[u8]) -> DbResult<Option<Vec<u8>>>;
    /// Removes `key`; the value it had.
    fn remove(&self, key: &[u8]) -> DbResult<Option<Vec<u8>>>;
    /// The entries between two bounds, in key order or reversed.
    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>, reverse: bool) -> Entries<'_>;
    /// How many entries the tree holds.
    fn len(&self) -> DbResult<u64>;
    fn clear(&self) -> DbResult<()>;

    fn is_empty(&self) -> DbResult<bool> {
        Ok(self.first()?.is_none())
    }

    /// The entry with the smallest key.
    fn first(&self) -> DbResult<Option<Entry>> {
        self.iter().next().transpose()
    }

    /// Every entry, in key order.
    fn iter(&self) -> Entries<'_> {
        self.range(Bound::Unbounded, Bound::Unbounded, false)
    }

    /// The entries whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Entries<'_> {
        let (from, to) = prefix_range(prefix);
        self.range(from, to, false)
    }
}

/// The bounds of the keys that start with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.to_vec();
    // The smallest key after every key with the prefix: the prefix with
    // its last byte below 0xff raised, and what follows it dropped.
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

/// A handle on a database: a `sled::Db` of a caller's own or a state's
/// database, for the local runtime to open its trees in.
pub trait AsDb {
    fn as_db(&self) -> Arc<dyn Db>;
}

impl AsDb for Arc<dyn Db> {
    fn as_db(&self) -> Arc<dyn Db> {
        Arc::clone(self)
    }
}

impl AsDb for ::sled::Db {
    fn as_db(&self) -> Arc<dyn Db> {
        Arc::new(SledDb::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_holds_exactly_the_keys_with_the_prefix() {
        assert_eq!(
            prefix_range(b"ab"),
            (
                Bound::Included(b"ab".to_vec()),
                Bound::Excluded(b"ac".to_vec())
            )
        );
        assert_eq!(
            prefix_range(&[b'a', 0xff]),
            (
                Bound::Included(vec![b'a', 0xff]),
                Bound::Excluded(b"b".to_vec())
            )
        );
        assert_eq!(
            prefix_range(&[0xff]),
            (Bound::Included(vec![0xff]), Bound::Unbounded)
        );
    }
}
