//! The store: every SQL statement of the server, behind domain methods.
//!
//! Handlers and the scheduler call [`Store`] (one statement or one transaction per method) and,
//! for what must happen atomically across several steps, a [`StoreTx`] from [`Store::begin`].
//! The rules (which job runs next, how statuses roll up) live with their callers; the store
//! only reads and writes rows. Rows come back as named structs (`rows.rs`) and statuses as enums
//! (`status.rs`) that read and write CircleCI's strings.
//!
//! Today the one backend is SQLite through sqlx (schema in `migrations/`). The SQL is kept
//! portable where that costs nothing (`ON CONFLICT ... DO NOTHING`, `RETURNING`, no SQLite
//! functions in queries), so that a PostgreSQL backend is a second implementation of these
//! methods and nothing above this module changes: callers see only `Store`, `StoreTx`, the row
//! structs, the status enums and [`StoreError`], none of which exposes the pool or the driver.
//! Adding it means a second pool behind `Store` (an enum of the two, or the method set lifted
//! into a trait), its own `migrations/postgres/`, and `FOR UPDATE SKIP LOCKED` in `claim_task`.
//!
//! A feature that needs tables (caches, workspaces, artifacts) adds a migration and a
//! `store/<feature>.rs` with its methods and rows, as the files here do. Objects that expire
//! (caches, workspace layers, artifacts) carry only their creation time: every read takes the
//! oldest creation time still alive (`created_after`), so expiry needs no sweep to take effect.

mod admin;
mod artifacts;
mod caches;
mod continuations;
#[cfg(test)]
pub(crate) mod fixtures;
mod orbs;
mod pipelines;
mod releases;
pub mod rows;
mod secrets;
pub mod status;
mod tasks;
mod test_results;
#[cfg(test)]
mod tests;
mod users;
mod workspaces;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use artifacts::ArtifactRow;
pub use caches::{CacheInsert, CacheRow, JobScope};
pub use orbs::{OrbPublished, OrbVersionRow, UrlOrbRow};
pub use pipelines::{PipelineCursor, PipelineFilter};
pub use releases::{PromotionRow, Published, ReleaseFileRow, ReleaseRow};
pub use rows::*;
pub use secrets::{CheckoutKeyRow, ContextRow, JobPipelineRow, RestrictionRow, SshKeyRow};
pub use status::*;
pub use users::{BOOTSTRAP_ADMIN_ID, Owned};
pub use workspaces::LayerRow;

/// What went wrong in the store. Callers answer clients with a generic message; the details go
/// to the server's log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed, or a stored value did not decode (a status no variant spells).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The server's database.
#[derive(Clone)]
pub struct Store {
    pool: sqlx::SqlitePool,
}

/// A transaction: what its methods write becomes visible together at [`StoreTx::commit`], or
/// not at all if it is dropped.
pub struct StoreTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
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
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .with_context(|| format!("opening database {url}"))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .with_context(|| format!("migrating database {url}"))?;
        // Fold the WAL into the database and empty it, so that pages written before a migration
        // scrubbed them (older versions' continuation keys) are not left in old WAL frames.
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await
        {
            tracing::warn!("checkpointing database {url}: {err}");
        }
        Ok(Store { pool })
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> StoreResult<StoreTx> {
        Ok(StoreTx {
            tx: self.pool.begin().await?,
        })
    }
}

impl StoreTx {
    /// Makes the transaction's writes visible.
    pub async fn commit(self) -> StoreResult<()> {
        Ok(self.tx.commit().await?)
    }
}

/// A store in a fresh temporary directory, for unit tests: real SQLite, real migrations.
#[cfg(test)]
pub(crate) async fn test_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    (Store::open(&url).await.unwrap(), dir)
}
