//! The database: SQLite through sqlx, schema in `migrations/`.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub type Db = sqlx::SqlitePool;

/// Opens (creating if needed) and migrates the database at `url`.
pub async fn open(url: &str) -> anyhow::Result<Db> {
    if !url.starts_with("sqlite:") {
        anyhow::bail!(
            "unsupported --database-url `{url}`: this build of bosun-server supports sqlite://PATH"
        );
    }
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("parsing database URL {url}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Deleted and overwritten rows are zeroed, not left in free space, so a secret removed
        // from the database (the continuation keys older versions kept in `jobs.spec`) does not
        // linger in the file.
        .pragma("secure_delete", "on");
    let db = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .with_context(|| format!("opening database {url}"))?;
    sqlx::migrate!("./migrations")
        .run(&db)
        .await
        .with_context(|| format!("migrating database {url}"))?;
    // Fold the WAL into the database and empty it, so that pages written before a migration
    // scrubbed them (older versions' continuation keys) are not left in old WAL frames.
    if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&db)
        .await
    {
        tracing::warn!("checkpointing database {url}: {err}");
    }
    Ok(db)
}
