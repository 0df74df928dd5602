//! Commits of a PostgreSQL state, grouped: the connection has one backend,
//! which runs one transaction after another, each waiting for its own WAL
//! flush; so while a commit is in flight, the groups sent meanwhile wait
//! and go together in the next one (one flush for all), in the order they
//! were sent — as a server groups the commits of many connections.
//!
//! Each group is still committed before its sender's wait returns; a batch
//! that fails fails every group in it, and none of them is written.
//!
//! Every commit of the main connection returns without waiting for the WAL
//! flush (`synchronous_commit = off`, set when connecting), so the disk
//! never holds up the one backend. What must be durable waits for a flush:
//! a tiny commit on a second connection that does wait for the WAL, which
//! covers every commit that returned before it began (the WAL is one
//! sequence). Flushes are grouped the same way: those asked for while one
//! is in flight share the next. Together, a group is durable before its
//! sender's wait returns, as a flush of sled's makes it.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_postgres::Client;

use crate::db::{DbError, DbResult};

/// The commits of one connection.
pub(super) struct Committer {
    client: Arc<Client>,
    runtime: tokio::runtime::Handle,
    queue: Mutex<Queue>,
    /// What a failed commit says: how to word an error of the client.
    word: Box<dyn Fn(&tokio_postgres::Error) -> DbError + Send + Sync>,
}

#[derive(Default)]
struct Queue {
    /// Whether a commit is on its way to the server.
    in_flight: bool,
    /// The statements of the groups sent since, and who waits for them.
    sql: String,
    waiters: Vec<SyncSender<DbResult<()>>>,
}

impl Committer {
    pub(super) fn new(
        client: Arc<Client>,
        runtime: tokio::runtime::Handle,
        word: Box<dyn Fn(&tokio_postgres::Error) -> DbError + Send + Sync>,
    ) -> Arc<Committer> {
        Arc::new(Committer {
            client,
            runtime,
            queue: Mutex::default(),
            word,
        })
    }

    /// Queues `sql` (a group's statements) to be committed after every group
    /// sent before it; the answer comes on the receiver.
    pub(super) fn send(self: &Arc<Self>, sql: &str) -> Receiver<DbResult<()>> {
        self.enqueue(sql, false)
    }

    /// [`send`](Self::send) for a flush: one statement serves every
    /// waiter of a batch.
    pub(super) fn send_once(self: &Arc<Self>, sql: &str) -> Receiver<DbResult<()>> {
        self.enqueue(sql, true)
    }

    fn enqueue(self: &Arc<Self>, sql: &str, once: bool) -> Receiver<DbResult<()>> {
        let (tx, rx) = sync_channel(1);
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if !once || queue.sql.is_empty() {
            queue.sql.push_str(sql);
            if !queue.sql.ends_with(';') {
                queue.sql.push(';');
            }
        }
        queue.waiters.push(tx);
        if !queue.in_flight {
            queue.in_flight = true;
            let (sql, waiters) = (
                std::mem::take(&mut queue.sql),
                std::mem::take(&mut queue.waiters),
            );
            drop(queue);
            self.commit(sql, waiters);
        }
        rx
    }

    /// Commits one batch; then the next, if groups came meanwhile.
    fn commit(self: &Arc<Self>, sql: String, waiters: Vec<SyncSender<DbResult<()>>>) {
        let this = Arc::clone(self);
        self.runtime.spawn(async move {
            let (mut sql, mut waiters) = (sql, waiters);
            loop {
                // One message, one transaction.
                let text = format!("BEGIN;{sql}COMMIT;");
                let result = this
                    .client
                    .batch_execute(&text)
                    .await
                    .map_err(|e| (this.word)(&e));
                if result.is_err() {
                    // A statement that failed leaves the transaction open.
                    let _ = this.client.batch_execute("ROLLBACK").await;
                }
                for waiter in waiters.drain(..) {
                    let _ = waiter.send(result.clone());
                }
                let mut queue = this.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.waiters.is_empty() {
                    queue.in_flight = false;
                    return;
                }
                sql = std::mem::take(&mut queue.sql);
                waiters = std::mem::take(&mut queue.waiters);
            }
        });
    }
}
