//! Releases of the agents, their files and where each is promoted (`releases.rs` has the rules).

use super::{Store, StoreResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReleaseRow {
    pub version: String,
    pub manifest: String,
    pub signature: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReleaseFileRow {
    pub platform: String,
    pub name: String,
    pub size: i64,
    pub sha256: String,
    pub uploaded: bool,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PromotionRow {
    /// `""` for the whole fleet, else a resource class.
    pub scope: String,
    pub version: String,
    pub previous: Option<String>,
    pub rollback: bool,
}

/// What [`Store::insert_release`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    New,
    /// The same manifest was published before (its missing files may follow).
    Again,
    /// Another manifest holds the version.
    Conflict,
}

impl Store {
    /// Records a release and the files its manifest lists, unless the version exists. The
    /// transaction writes first, so it takes SQLite's write lock at once (a read first could
    /// not be upgraded while another connection writes).
    pub async fn insert_release(
        &self,
        release: &ReleaseRow,
        files: &[ReleaseFileRow],
    ) -> StoreResult<Published> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO releases (version, manifest, signature, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(&release.version)
        .bind(&release.manifest)
        .bind(&release.signature)
        .bind(release.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            drop(tx);
            let existing = self.release(&release.version).await?;
            return Ok(match existing {
                Some(existing) if existing.manifest == release.manifest => Published::Again,
                _ => Published::Conflict,
            });
        }
        for file in files {
            sqlx::query(
                "INSERT INTO release_files (version, platform, name, size, sha256)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&release.version)
            .bind(&file.platform)
            .bind(&file.name)
            .bind(file.size)
            .bind(&file.sha256)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Published::New)
    }

    pub async fn release(&self, version: &str) -> StoreResult<Option<ReleaseRow>> {
        Ok(sqlx::query_as(
            "SELECT version, manifest, signature, created_at FROM releases WHERE version = $1",
        )
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every release, newest first.
    pub async fn releases(&self) -> StoreResult<Vec<ReleaseRow>> {
        Ok(sqlx::query_as(
            "SELECT version, manifest, signature, created_at FROM releases
             ORDER BY created_at DESC, version DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn release_files(&self, version: &str) -> StoreResult<Vec<ReleaseFileRow>> {
        Ok(sqlx::query_as(
            "SELECT platform, name, size, sha256, uploaded FROM release_files
             WHERE version = $1 ORDER BY platform, name",
        )
        .bind(version)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn mark_release_file_uploaded(
        &self,
        version: &str,
        platform: &str,
        name: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE release_files SET uploaded = 1
             WHERE version = $1 AND platform = $2 AND name = $3",
        )
        .bind(version)
        .bind(platform)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn promotions(&self) -> StoreResult<Vec<PromotionRow>> {
        Ok(sqlx::query_as(
            "SELECT scope, version, previous, rollback FROM release_promotions ORDER BY scope",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets `scope`'s version; the one it replaces becomes what a rollback returns to (unless
    /// it is the same version). One statement: no read-then-write transaction to conflict with
    /// the claims and heartbeats writing meanwhile.
    pub async fn promote(
        &self,
        scope: &str,
        version: &str,
        rollback: bool,
        now: i64,
    ) -> StoreResult<PromotionRow> {
        Ok(sqlx::query_as(
            "INSERT INTO release_promotions (scope, version, previous, rollback, updated_at)
             VALUES ($1, $2, NULL, $3, $4)
             ON CONFLICT (scope) DO UPDATE SET
                 previous = CASE WHEN release_promotions.version = excluded.version
                     THEN release_promotions.previous ELSE release_promotions.version END,
                 version = excluded.version, rollback = excluded.rollback,
                 updated_at = excluded.updated_at
             RETURNING scope, version, previous, rollback",
        )
        .bind(scope)
        .bind(version)
        .bind(rollback)
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }
}
