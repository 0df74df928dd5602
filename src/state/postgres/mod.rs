//! The PostgreSQL backend of [`Db`]: the same trees as sled, as rows of one
//! table `entries (tree, key, value)` in a schema of its own, for a state
//! that a team and its CI share.
//!
//! One main connection per process, opened by [`PgDb::open`]: connect
//! (`connect.rs`, which also says what went wrong in words), take the
//! state's session-level advisory lock and record who holds it
//! (`lock.rs`), create or migrate the tables (`schema.rs`). The lock lives
//! as long as the connection: should the connection die, the lock is gone
//! and every later call fails, so nothing is written without it. A second
//! connection only flushes: commits are grouped and made durable in
//! `commit.rs`, and the trees a group reads are cached (this process holds
//! the lock, so no one else writes them).
//!
//! The client is async (tokio-postgres) and the state's calls are not:
//! the connections run on a runtime of their own (one thread), and each
//! call waits for its answer. A call never runs on that runtime's thread,
//! so waiting cannot deadlock, whatever runtime the caller is on.
//!
//! Rows are read and written in `tree.rs`; the password never leaves
//! `url.rs` and `connect.rs`. It must not interpret the trees' contents.

mod commit;
mod connect;
mod lock;
mod schema;
mod tls;
mod tree;
pub mod url;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::db::{Committing, Db, DbError, DbResult, Group, Tree};
use super::StateError;
pub use schema::LATEST_VERSION;
use url::PgUrl;

/// A parameter of a query, owned so the query can run on the connection's runtime.
pub(crate) type Param = Box<dyn ToSql + Send + Sync>;

/// The smallest write whose synchronous commit flushes the WAL.
const FLUSH: &str = "UPDATE lock_holder SET since = since WHERE id = 1;";

/// How many ids one round trip reserves (the sequence's increment).
const ID_BLOCK: u64 = 64;

/// A PostgreSQL state's database: the connection, holding the state's lock.
pub struct PgDb {
    conn: Arc<Conn>,
    /// Ids reserved and not yet handed out: (next, end).
    ids: Mutex<(u64, u64)>,
}

/// The connection and what runs it.
pub(crate) struct Conn {
    client: Arc<Client>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The server, for messages (`host:port`).
    server: String,
    /// The state's lock, held by this connection.
    lock_key: (i32, i32),
    /// The commits of groups, grouped.
    committer: Arc<commit::Committer>,
    /// The flushes, on the second connection.
    flusher: Arc<commit::Committer>,
    statements: Mutex<HashMap<String, Statement>>,
    /// The trees that groups read, whole, as of the groups sent so far:
    /// this connection holds the state's lock, so no one else writes them.
    /// A tree is loaded the first time a group reads it, and dropped when
    /// written outside a group or when a commit fails.
    cache: Mutex<HashMap<String, Cached>>,
}

/// One tree's entries.
pub(crate) type Cached = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// How long closing waits for the server to release the lock.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropped from async code as often as not: the runtime is shut down
        // without waiting, once the lock is released (or given up on).
        if let Some(runtime) = self.runtime.take() {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let client = Arc::clone(&self.client);
            let key = self.lock_key;
            runtime.spawn(async move {
                lock::release(&client, key).await;
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(RELEASE_WAIT);
            runtime.shutdown_background();
        }
    }
}

impl PgDb {
    /// Connects, takes the state's lock for `command` (waiting up to
    /// `lock_timeout`), and creates or migrates the tables; every failure
    /// is said in words, naming the server, before anything is changed.
    pub fn open(
        url: &PgUrl,
        command: &str,
        lock_timeout: Duration,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PgDb, StateError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agentform-postgres")
            .enable_all()
            .build()
            .map_err(|e| StateError::Postgres {
                message: format!("cannot start the PostgreSQL client: {e}"),
                hint: "the machine is out of threads or memory".into(),
            })?;
        let target = connect::Target::new(url, env);
        let holder = lock::Holder::of_this_process(command);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let handle = runtime.handle().clone();
        handle.spawn(async move {
            let _ = tx.send(connect::open(target, holder, lock_timeout).await);
        });
        let opened = rx.recv().unwrap_or_else(|_| {
            Err(StateError::Postgres {
                message: format!(
                    "the PostgreSQL client stopped while connecting to {}",
                    url.server()
                ),
                hint: "run again with `-vv` to see why".into(),
            })
        });
        let clients = match opened {
            Ok(clients) => clients,
            Err(e) => {
                // Opened from async code as often as not: without waiting.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let server = url.server();
        let committer_of = |client: &Arc<Client>| {
            let word = {
                let (client, server) = (Arc::clone(client), server.clone());
                Box::new(move |e: &tokio_postgres::Error| error(&client, &server, e))
            };
            commit::Committer::new(Arc::clone(client), runtime.handle().clone(), word)
        };
        let client = Arc::new(clients.main);
        let committer = committer_of(&client);
        let flusher = committer_of(&Arc::new(clients.flusher));
        Ok(PgDb {
            conn: Arc::new(Conn {
                client,
                runtime: Some(runtime),
                server,
                lock_key: lock::key_of(&url.schema),
                committer,
                flusher,
                statements: Mutex::default(),
                cache: Mutex::default(),
            }),
            ids: Mutex::new((0, 0)),
        })
    }
}

impl Conn {
    /// Runs `f` with the client on the connection's runtime and waits for it.
    fn call<T, F>(&self, f: impl FnOnce(Arc<Client>) -> F) -> DbResult<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(self.lost());
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = f(Arc::clone(&self.client));
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        match rx.recv() {
            Ok(result) => result.map_err(|e| self.error(&e)),
            Err(_) => Err(self.lost()),
        }
    }

    fn lost(&self) -> DbError {
        lost(&self.server)
    }

    fn error(&self, e: &tokio_postgres::Error) -> DbError {
        error(&self.client, &self.server, e)
    }

    /// `sql`, prepared once per connection.
    fn statement(&self, sql: &str) -> DbResult<Statement> {
        if let Some(s) = self
            .statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sql)
        {
            return Ok(s.clone());
        }
        let text = sql.to_string();
        let prepared = self.call(move |c| async move { c.prepare(&text).await })?;
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    /// The rows `sql` returns for `params`.
    pub(crate) fn query(&self, sql: &str, params: Vec<Param>) -> DbResult<Vec<Row>> {
        let statement = self.statement(sql)?;
        self.call(move |c| async move {
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            c.query(&statement, &refs).await
        })
    }

    /// Sends a group's statements to be committed after every group sent
    /// before (together with those sent while a commit is in flight),
    /// without waiting for the answer.
    pub(crate) fn send_batch(self: &Arc<Self>, sql: String) -> DbResult<Box<dyn Committing>> {
        if self.runtime.is_none() {
            return Err(self.lost());
        }
        Ok(Box::new(SentBatch {
            conn: Arc::clone(self),
            answer: self.committer.send(&sql),
        }))
    }

    /// Makes every commit that returned before the call durable: a commit
    /// on the flushing connection that waits for the WAL, which covers
    /// them (`commit.rs`).
    fn flush(&self) -> DbResult<()> {
        if self.runtime.is_none() {
            return Err(self.lost());
        }
        match self.flusher.send_once(FLUSH).recv() {
            Ok(result) => result,
            Err(_) => Err(self.lost()),
        }
    }

    /// The entries of `tree` as of the groups sent so far, loaded once.
    pub(crate) fn with_cached<T>(&self, tree: &str, f: impl FnOnce(&Cached) -> T) -> DbResult<T> {
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entries) = cache.get(tree) {
                return Ok(f(entries));
            }
        }
        let rows = self.query(
            "SELECT key, value FROM entries WHERE tree = $1",
            vec![Box::new(tree.to_string())],
        )?;
        let entries: Cached = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let out = f(&entries);
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tree.to_string(), entries);
        Ok(out)
    }

    /// Applies a group's writes to the trees cached.
    pub(crate) fn update_cache(&self, update: impl FnOnce(&mut HashMap<String, Cached>)) {
        update(&mut self.cache.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Forgets `tree` (written outside a group), or every tree.
    pub(crate) fn forget_cached(&self, tree: Option<&str>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        match tree {
            Some(tree) => {
                cache.remove(tree);
            }
            None => cache.clear(),
        }
    }
}

fn lost(server: &str) -> DbError {
    DbError(format!(
        "the connection to PostgreSQL at {server} was lost; nothing more was written"
    ))
}

/// An error of the client, in words: a lost connection, or what the
/// server said.
fn error(client: &Client, server: &str, e: &tokio_postgres::Error) -> DbError {
    if e.is_closed() || client.is_closed() {
        return lost(server);
    }
    DbError(format!("PostgreSQL at {server}: {}", connect::describe(e)))
}

/// A group on its way to the server.
struct SentBatch {
    conn: Arc<Conn>,
    answer: std::sync::mpsc::Receiver<DbResult<()>>,
}

impl SentBatch {
    fn finish(self, durable: bool) -> DbResult<()> {
        let result = match self.answer.recv() {
            Ok(Ok(())) if durable => self.conn.flush(),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.conn.lost()),
        };
        if result.is_err() {
            // What the cache holds may not have been written.
            self.conn.forget_cached(None);
        }
        result
    }
}

impl Committing for SentBatch {
    fn wait(self: Box<Self>) -> DbResult<()> {
        self.finish(true)
    }

    fn wait_committed(self: Box<Self>) -> DbResult<()> {
        self.finish(false)
    }
}

impl Db for PgDb {
    fn open_tree(&self, name: &str) -> DbResult<Tree> {
        Ok(Arc::new(tree::PgTree::new(Arc::clone(&self.conn), name)))
    }

    fn tree_names(&self) -> DbResult<Vec<String>> {
        let rows = self
            .conn
            .query("SELECT DISTINCT tree FROM entries ORDER BY tree", vec![])?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    fn generate_id(&self) -> DbResult<u64> {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.0 >= ids.1 {
            let rows = self.conn.query("SELECT nextval('ids')", vec![])?;
            let start = rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64;
            *ids = (start, start + ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    fn advance_ids(&self, at_least: u64) -> DbResult<()> {
        let at_least = i64::try_from(at_least).unwrap_or(i64::MAX - ID_BLOCK as i64);
        self.conn.query(
            "SELECT setval('ids', GREATEST($1, (SELECT last_value FROM ids)))",
            vec![Box::new(at_least)],
        )?;
        *self.ids.lock().unwrap_or_else(PoisonError::into_inner) = (0, 0);
        Ok(())
    }

    fn flush(&self) -> DbResult<()> {
        self.conn.flush()
    }

    fn durable_writes(&self) -> bool {
        false
    }

    fn group(&self, writes: &mut dyn FnMut(&dyn Group) -> DbResult<()>) -> DbResult<()> {
        self.send_group(writes)?.wait()
    }

    fn send_group(
        &self,
        writes: &mut dyn FnMut(&dyn Group) -> DbResult<()>,
    ) -> DbResult<Box<dyn Committing>> {
        let group = tree::PgGroup::new(&self.conn);
        writes(&group)?;
        group.send()
    }

    fn atomic_groups(&self) -> bool {
        true
    }

    /// Every connection's commits go to one WAL, and a flush covers every
    /// commit that returned before it (`commit.rs`).
    fn one_log(&self) -> bool {
        true
    }
}
