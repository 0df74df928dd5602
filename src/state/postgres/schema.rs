//! The tables of a PostgreSQL state, created and migrated by agentform:
//! migrations are embedded (`migrations/*.sql`), applied in order in one
//! transaction, each recorded in `schema_version`. A database whose tables
//! are newer than this binary is refused: an older agentform must not
//! write what it does not understand.

use tokio_postgres::Client;

use super::connect::{classify, Target};
use crate::state::StateError;

/// The migrations, in order: version N is `MIGRATIONS[N - 1]`.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_entries.sql")];

/// The version this binary writes.
pub const LATEST_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the state's schema to [`LATEST_VERSION`], creating it if needed;
/// refuses a newer one. Runs with the state's lock held.
pub(super) async fn migrate(client: &mut Client, target: &Target) -> Result<(), StateError> {
    let schema = &target.url.schema;
    let failed = |e: tokio_postgres::Error| classify(target, &e, "creating the state's tables");
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[schema],
        )
        .await
        .map_err(failed)?
        .get(0);
    let version: i32 = if exists {
        let has_table: bool = client
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .await
            .map_err(failed)?
            .get(0);
        if has_table {
            client
                .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
                .await
                .map_err(failed)?
                .get(0)
        } else {
            0
        }
    } else {
        0
    };
    if version > LATEST_VERSION {
        return Err(target.failed(
            format!(
                "the state's tables in schema `{schema}` of `{}` on {} are at version {version}, \
                 newer than this agentform knows (up to {LATEST_VERSION})",
                target.dbname,
                target.url.server()
            ),
            "a newer agentform wrote this state: upgrade agentform to use it".into(),
        ));
    }
    if version == LATEST_VERSION {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(failed)?;
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
            .await
            .map_err(failed)?;
    }
    tx.batch_execute(&format!("SET LOCAL search_path TO \"{schema}\""))
        .await
        .map_err(failed)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let number = index as i32 + 1;
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&number],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    if version == 0 {
        tracing::info!("created the state's tables in schema `{schema}`");
    } else {
        tracing::info!("migrated the state's tables in schema `{schema}` from version {version} to {LATEST_VERSION}");
    }
    Ok(())
}
