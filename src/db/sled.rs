//! The embedded backend: sled's trees, as they always were.
//!
//! No sled transaction or batch here: in sled 0.34 they take a
//! process-wide lock that deadlocks with a concurrent flush, so a group's
//! writes are made one by one (the state's serial and marker notice a
//! group cut short). Every flush goes through [`flush`].

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock};

use super::{Db, DbError, DbResult, Entries, Group, Tree, TreeOps};

/// sled's own tree, always present and unused.
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

/// A sled database, with its trees opened once.
pub struct SledDb {
    db: sled::Db,
    trees: RwLock<HashMap<String, sled::Tree>>,
}

impl SledDb {
    pub fn new(db: sled::Db) -> Self {
        SledDb {
            db,
            trees: RwLock::default(),
        }
    }

    /// The sled database itself.
    pub fn sled(&self) -> &sled::Db {
        &self.db
    }

    fn tree(&self, name: &str) -> DbResult<sled::Tree> {
        if let Some(tree) = self
            .trees
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(name).map_err(err)?;
        self.trees
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), tree.clone());
        Ok(tree)
    }
}

/// Flushes `db`, one flush at a time in the whole process: sled 0.34's
/// flushes can hang for good when several run at once (spacejam/sled#1308).
/// Every flush of a sled database in agentform goes through here.
pub fn flush(db: &sled::Db) -> sled::Result<usize> {
    static FLUSH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = FLUSH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    db.flush()
}

pub(crate) fn err(e: sled::Error) -> DbError {
    DbError(e.to_string())
}

fn owned(v: Option<sled::IVec>) -> Option<Vec<u8>> {
    v.map(|v| v.to_vec())
}

impl Db for SledDb {
    fn open_tree(&self, name: &str) -> DbResult<Tree> {
        Ok(Arc::new(SledTree {
            name: name.to_string(),
            tree: self.tree(name)?,
        }))
    }

    fn tree_names(&self) -> DbResult<Vec<String>> {
        let mut names: Vec<String> = self
            .db
            .tree_names()
            .into_iter()
            .filter(|n| &**n != SLED_DEFAULT_TREE)
            .filter_map(|n| String::from_utf8(n.to_vec()).ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn generate_id(&self) -> DbResult<u64> {
        self.db.generate_id().map_err(err)
    }

    fn advance_ids(&self, at_least: u64) -> DbResult<()> {
        // sled has no way to set its counter: it is raised one by one (an
        // atomic increment each; ids are counted per event).
        while self.generate_id()? < at_least {}
        Ok(())
    }

    fn flush(&self) -> DbResult<()> {
        flush(&self.db).map(drop).map_err(err)
    }

    fn durable_writes(&self) -> bool {
        false
    }

    fn group(&self, writes: &mut dyn FnMut(&dyn Group) -> DbResult<()>) -> DbResult<()> {
        writes(self)
    }

    fn atomic_groups(&self) -> bool {
        false
    }
}

impl Group for SledDb {
    fn insert(&self, tree: &str, key: &[u8], value: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.tree(tree)?.insert(key, value).map(owned).map_err(err)
    }

    fn remove(&self, tree: &str, key: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.tree(tree)?.remove(key).map(owned).map_err(err)
    }

    fn clear(&self, tree: &str) -> DbResult<()> {
        self.tree(tree)?.clear().map_err(err)
    }
}

struct SledTree {
    name: String,
    tree: sled::Tree,
}

impl TreeOps for SledTree {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.tree.get(key).map(owned).map_err(err)
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.tree.insert(key, value).map(owned).map_err(err)
    }

    fn remove(&self, key: &[u8]) -> DbResult<Option<Vec<u8>>> {
        self.tree.remove(key).map(owned).map_err(err)
    }

    fn range(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>, reverse: bool) -> Entries<'_> {
        let items = self.tree.range::<Vec<u8>, _>((from, to));
        let entry = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(err)
        };
        if reverse {
            Box::new(items.rev().map(entry))
        } else {
            Box::new(items.map(entry))
        }
    }

    fn len(&self) -> DbResult<u64> {
        Ok(self.tree.len() as u64)
    }

    fn clear(&self) -> DbResult<()> {
        self.tree.clear().map_err(err)
    }

    fn is_empty(&self) -> DbResult<bool> {
        Ok(self.tree.is_empty())
    }
}
