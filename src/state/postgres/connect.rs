//! Opening the connection of a PostgreSQL state, and saying in words what
//! went wrong: an unreachable server, refused credentials, a missing
//! database, a missing permission — each naming the server and what to
//! check, before anything was changed.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::lock::{self, Holder};
use super::schema;
use super::tls::Rustls;
use super::url::{PgUrl, SslMode};
use crate::state::StateError;

/// What to connect to, the password resolved.
pub(super) struct Target {
    pub(super) url: PgUrl,
    pub(super) user: String,
    pub(super) dbname: String,
    password: Option<String>,
}

impl Target {
    pub(super) fn new(url: &PgUrl, env: &dyn Fn(&str) -> Option<String>) -> Target {
        Target {
            url: url.clone(),
            user: url.user_or_default(env),
            dbname: url.dbname_or_default(env),
            password: url.password(env),
        }
    }

    fn config(&self) -> Config {
        let mut config = Config::new();
        config
            .host(&self.url.host)
            .port(self.url.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("agentform")
            .connect_timeout(self.url.connect_timeout)
            // A server that vanished (not closed: gone) is noticed.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .ssl_mode(match self.url.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
            });
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }

    pub(super) fn failed(&self, message: String, hint: String) -> StateError {
        StateError::Postgres { message, hint }
    }
}

/// The connections of an open state.
pub(super) struct Clients {
    /// Everything but flushes; holds the state's lock.
    pub(super) main: Client,
    /// Flushes only: commits that wait for the WAL (`commit.rs`), so that
    /// the main connection never waits for the disk.
    pub(super) flusher: Client,
}

/// Connects, locks, migrates: the clients of a state ready for use.
pub(super) async fn open(
    target: Target,
    holder: Holder,
    lock_timeout: Duration,
) -> Result<Clients, StateError> {
    let mut client = connect(&target, "agentform").await?;
    let schema = &target.url.schema;
    client
        .batch_execute(&format!("SET search_path TO \"{schema}\""))
        .await
        .map_err(|e| classify(&target, &e, "setting the schema"))?;
    lock::acquire(&client, &target, lock_timeout).await?;
    schema::migrate(&mut client, &target).await?;
    lock::record(&client, &holder)
        .await
        .map_err(|e| classify(&target, &e, "recording the lock's holder"))?;
    // Writes commit without waiting for the WAL flush; a flush on the
    // other connection waits for it, making everything before durable.
    client
        .batch_execute("SET synchronous_commit TO off")
        .await
        .map_err(|e| classify(&target, &e, "setting up the session"))?;
    let flusher = connect(&target, "agentform (flush)").await?;
    flusher
        .batch_execute(&format!("SET search_path TO \"{schema}\""))
        .await
        .map_err(|e| classify(&target, &e, "setting the schema"))?;
    Ok(Clients {
        main: client,
        flusher,
    })
}

async fn connect(target: &Target, application: &str) -> Result<Client, StateError> {
    let mut config = target.config();
    config.application_name(application);
    let connection_failed = |e: tokio_postgres::Error| classify(target, &e, "connecting");
    let client = match target.url.sslmode {
        SslMode::Disable => {
            let (client, connection) = config.connect(NoTls).await.map_err(connection_failed)?;
            tokio::spawn(watch(connection));
            client
        }
        mode => {
            let tls = Rustls::new(mode == SslMode::VerifyFull).map_err(|e| {
                target.failed(
                    format!(
                        "cannot set up TLS for PostgreSQL at {}: {e}",
                        target.url.server()
                    ),
                    "use `sslmode=disable` on a trusted network".into(),
                )
            })?;
            let (client, connection) = config.connect(tls).await.map_err(connection_failed)?;
            tokio::spawn(watch(connection));
            client
        }
    };
    // Literals are written as `'\x…'` (tree.rs): a backslash must stay a
    // backslash whatever the server's default says.
    client
        .batch_execute("SET standard_conforming_strings TO on")
        .await
        .map_err(|e| classify(target, &e, "setting up the session"))?;
    Ok(client)
}

/// Drives the connection until it ends; its end is seen by every later call.
async fn watch<C>(connection: C)
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        tracing::warn!("the PostgreSQL connection ended: {}", describe(&e));
    }
}

/// The error and its cause in one line, the server's own message first.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// An error met while `doing` something, as what happened and what to check.
pub(super) fn classify(target: &Target, e: &tokio_postgres::Error, doing: &str) -> StateError {
    let server = target.url.server();
    let host = &target.url.host;
    let port = target.url.port;
    let user = &target.user;
    let db = &target.dbname;
    let why = describe(e);
    let code = e.code();
    let (message, hint) = if code == Some(&SqlState::INVALID_PASSWORD)
        || code == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
        || why.contains("password missing")
        || why.contains("authentication")
    {
        (
            format!("PostgreSQL at {server} refused user `{user}`: {why}"),
            format!(
                "check the user name and its password (in the URL, `PGPASSWORD` or `~/.pgpass`), \
                 and that `pg_hba.conf` on {host} lets `{user}` connect to `{db}`"
            ),
        )
    } else if code == Some(&SqlState::INVALID_CATALOG_NAME) {
        (
            format!("the database `{db}` does not exist on PostgreSQL at {server}"),
            format!("create it (`createdb -h {host} -p {port} {db}`) or fix the database name in the state URL"),
        )
    } else if code == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        let schema = &target.url.schema;
        (
            format!(
                "user `{user}` lacks a permission on PostgreSQL at {server} while {doing}: {why}"
            ),
            format!(
                "agentform needs its own schema `{schema}` in `{db}`: grant `{user}` \
                 `CREATE` on the database (`GRANT CREATE ON DATABASE \"{db}\" TO \"{user}\"`), or \
                 have the schema created and owned by `{user}`"
            ),
        )
    } else if code == Some(&SqlState::TOO_MANY_CONNECTIONS)
        || code == Some(&SqlState::CANNOT_CONNECT_NOW)
    {
        (
            format!("PostgreSQL at {server} does not accept a connection now: {why}"),
            "try again shortly; check the server's `max_connections` and whether it is starting or stopping".into(),
        )
    } else if code.is_some() {
        (
            format!("PostgreSQL at {server} failed while {doing}: {why}"),
            format!("check the server's log on {host}, and that `{user}` may use `{db}`"),
        )
    } else if why.contains("TLS")
        || why.contains("tls")
        || why.contains("certificate")
        || why.contains("SSL")
    {
        (
            format!("cannot set up TLS with PostgreSQL at {server}: {why}"),
            "check `sslmode` in the state URL: `disable` for a server without TLS, `require` to \
             skip checking its certificate"
                .into(),
        )
    } else {
        (
            format!("cannot reach PostgreSQL at {server}: {why}"),
            format!(
                "check that PostgreSQL runs on {host} and accepts TCP connections on port {port} \
                 (the host and port in the state URL, the server's `listen_addresses`, a firewall)"
            ),
        )
    };
    target.failed(message, hint)
}
