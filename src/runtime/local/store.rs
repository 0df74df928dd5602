//! The local runtime's object store: agents (with every version),
//! environments and sessions as JSON records in the state's trees named
//! `local.*` (sled's, or PostgreSQL's rows: [`crate::db`]), and the
//! one write lock their read-modify-writes take.
//!
//! Storage only: which changes are allowed is decided in `rules/`; session
//! events live in `events.rs`. Records pass through the [`Vault`], which
//! keeps secrets out of them.

use std::fmt::Display;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::vault::Vault;
use crate::api::{Agent, Environment, ErrorKind, Result, RuntimeError, Session};
use crate::db::{Db, Tree};

pub(super) const AGENTS_TREE: &str = "local.agents";
pub(super) const VERSIONS_TREE: &str = "local.agent_versions";
pub(super) const ENVIRONMENTS_TREE: &str = "local.environments";
pub(super) const SESSIONS_TREE: &str = "local.sessions";

pub(super) fn store_err(e: impl Display) -> RuntimeError {
    RuntimeError::new(ErrorKind::Transport, format!("local runtime storage: {e}"))
}

/// A record as stored, placeholders and all: for read-modify-writes that
/// change no string (a session's status), so nothing is resolved and
/// nothing can be lost.
pub(super) fn get_sealed<T: DeserializeOwned>(tree: &Tree, key: &[u8]) -> Result<Option<T>> {
    match tree.get(key).map_err(store_err)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| store_err(format!("corrupt record: {e}"))),
    }
}

/// Writes back what [`get_sealed`] read.
pub(super) fn put_sealed<T: Serialize>(tree: &Tree, id: &str, value: &T) -> Result<()> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| store_err(format!("cannot encode record: {e}")))?;
    tree.insert(id.as_bytes(), &bytes).map_err(store_err)?;
    Ok(())
}

/// An agent version's key: the id, then the version big-endian, so a
/// range over one agent walks its versions in order.
pub(super) fn version_key(id: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 8);
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// One lock for the process rather than per runtime: several runtimes may
/// share a Db, and mutations are read-modify-writes across trees. Other
/// processes are kept out by the state's lock.
static WRITE_LOCK: Mutex<()> = Mutex::new(());

pub(super) fn write_lock() -> MutexGuard<'static, ()> {
    // The guarded data is `()`, so a panic elsewhere cannot leave it broken.
    WRITE_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The trees of the API's objects.
#[derive(Clone)]
pub(super) struct Records {
    pub(super) vault: Vault,
    pub(super) agents: Tree,
    /// Every agent version, append-only, keyed by [`version_key`].
    pub(super) versions: Tree,
    pub(super) environments: Tree,
    pub(super) sessions: Tree,
}

impl Records {
    pub(super) fn open(db: &dyn Db, vault: Vault) -> Result<Self> {
        Ok(Records {
            vault,
            agents: db.open_tree(AGENTS_TREE).map_err(store_err)?,
            versions: db.open_tree(VERSIONS_TREE).map_err(store_err)?,
            environments: db.open_tree(ENVIRONMENTS_TREE).map_err(store_err)?,
            sessions: db.open_tree(SESSIONS_TREE).map_err(store_err)?,
        })
    }

    /// An agent's current version.
    pub(super) fn agent(&self, id: &str) -> Result<Agent> {
        self.vault
            .get(&self.agents, id.as_bytes())?
            .ok_or_else(|| RuntimeError::not_found("agent", id))
    }

    /// A stored version, showing the agent's current archival state.
    pub(super) fn agent_version(&self, current: &Agent, version: u64) -> Result<Agent> {
        if version == current.version {
            return Ok(current.clone());
        }
        let not_found = || {
            RuntimeError::new(
                ErrorKind::NotFound,
                format!("agent `{}` version {version} not found", current.id),
            )
        };
        if version > current.version {
            return Err(not_found());
        }
        let mut agent: Agent = self
            .vault
            .get(&self.versions, &version_key(&current.id, version))?
            .ok_or_else(not_found)?;
        agent.archived_at.clone_from(&current.archived_at);
        Ok(agent)
    }

    /// Writes the agent's version record, then its current record.
    ///
    /// Not a group: in sled 0.34, transactions and batches take a
    /// process-wide write lock that deadlocks with a concurrent flush (which
    /// the session workers do often). A version record past the current
    /// version, left by a crash between the two writes, is never shown and
    /// is overwritten by the next update.
    pub(super) fn put_agent_version(&self, agent: &Agent) -> Result<()> {
        let bytes = self.vault.encode(agent)?;
        self.versions
            .insert(&version_key(&agent.id, agent.version), &bytes)
            .map_err(store_err)?;
        self.agents
            .insert(agent.id.as_bytes(), &bytes)
            .map_err(store_err)?;
        Ok(())
    }

    /// Rewrites the current record only (archival is not a new version).
    pub(super) fn put_agent(&self, agent: &Agent) -> Result<()> {
        self.vault.put(&self.agents, &agent.id, agent)
    }

    pub(super) fn environment(&self, id: &str) -> Result<Environment> {
        self.vault
            .get(&self.environments, id.as_bytes())?
            .ok_or_else(|| RuntimeError::not_found("environment", id))
    }

    /// Every environment, in id order.
    pub(super) fn environments(&self) -> impl Iterator<Item = Result<Environment>> + '_ {
        self.environments.iter().map(|item| {
            let (_, bytes) = item.map_err(store_err)?;
            self.vault.decode(&bytes)
        })
    }

    pub(super) fn put_environment(&self, environment: &Environment) -> Result<()> {
        self.vault
            .put(&self.environments, &environment.id, environment)
    }

    /// Whether there was one to remove.
    pub(super) fn remove_environment(&self, id: &str) -> Result<bool> {
        let removed = self.environments.remove(id.as_bytes()).map_err(store_err)?;
        Ok(removed.is_some())
    }

    pub(super) fn session(&self, id: &str) -> Result<Session> {
        self.vault
            .get(&self.sessions, id.as_bytes())?
            .ok_or_else(|| RuntimeError::not_found("session", id))
    }

    pub(super) fn put_session(&self, session: &Session) -> Result<()> {
        self.vault.put(&self.sessions, &session.id, session)
    }

    /// Whether there was one to remove.
    pub(super) fn remove_session(&self, id: &str) -> Result<bool> {
        let removed = self.sessions.remove(id.as_bytes()).map_err(store_err)?;
        Ok(removed.is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::json;

    use crate::runtime::local::tests::{agent_body, environment, fixture, reopen};
    use crate::runtime::local::{LocalOptions, LocalRuntime};
    use crate::runtime::Runtime;

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let (agent, env, session) = {
            let db = sled::open(&path).expect("open");
            let rt = LocalRuntime::open(&db, LocalOptions::default()).expect("runtime");
            let agent = rt.create_agent(agent_body("a")).await.expect("agent");
            let agent = rt
                .update_agent(&agent.id, json!({"system": "s"}))
                .await
                .expect("update");
            let env = environment(&rt, "env").await;
            let session = rt
                .create_session(json!({"agent": agent.id, "environment_id": env.id}))
                .await
                .expect("session");
            db.flush().expect("flush");
            (agent, env, session)
        };
        let db = reopen(&path);
        let rt = LocalRuntime::open(&db, LocalOptions::default()).expect("runtime");
        assert_eq!(
            rt.retrieve_agent(&agent.id, None).await.expect("agent"),
            agent
        );
        assert_eq!(
            rt.retrieve_agent(&agent.id, Some(1))
                .await
                .expect("v1")
                .version,
            1
        );
        assert_eq!(rt.retrieve_environment(&env.id).await.expect("env"), env);
        assert_eq!(
            rt.retrieve_session(&session.id).await.expect("session"),
            session
        );
        // Only `local.*` trees are used.
        for name in db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            assert!(
                name.starts_with("local.") || name == "__sled__default",
                "{name}"
            );
        }
        assert!(db.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_updates_make_distinct_versions() {
        let f = fixture();
        let rt: Arc<dyn Runtime> = Arc::new(f.rt);
        let agent = rt.create_agent(agent_body("a")).await.expect("create");
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let rt = Arc::clone(&rt);
                let id = agent.id.clone();
                tokio::spawn(async move {
                    rt.update_agent(&id, json!({"system": format!("s{i}")}))
                        .await
                })
            })
            .collect();
        let mut versions = BTreeSet::new();
        for task in tasks {
            versions.insert(task.await.expect("join").expect("update").version);
        }
        assert_eq!(versions, (2..=17).collect());
        // Same-named environments created concurrently: exactly one wins.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let rt = Arc::clone(&rt);
                tokio::spawn(async move { rt.create_environment(json!({"name": "race"})).await })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            if task.await.expect("join").is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1);
    }
}
