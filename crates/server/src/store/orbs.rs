//! Orb versions, upstream lookups and URL orbs (`orbs.rs` has the rules).

use super::{Store, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrbVersionRow {
    pub namespace: String,
    pub name: String,
    /// `X.Y.Z` or `dev:LABEL`.
    pub version: String,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub patch: Option<i64>,
    pub source: String,
    pub sha256: String,
    /// `''` published here, else the upstream it was cached from.
    pub origin: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl OrbVersionRow {
    /// `(X, Y, Z)` of a released version; `None` for a dev version.
    pub fn number(&self) -> Option<(u64, u64, u64)> {
        Some((
            u64::try_from(self.major?).ok()?,
            u64::try_from(self.minor?).ok()?,
            u64::try_from(self.patch?).ok()?,
        ))
    }
}

/// One orb of a listing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrbListRow {
    pub namespace: String,
    pub name: String,
    pub versions: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UrlOrbRow {
    pub sha256: String,
    pub source: String,
    pub fetched_at: i64,
}

/// What [`Store::insert_orb_version`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrbPublished {
    New,
    /// A dev version replaced.
    Replaced,
    /// The (immutable) version exists.
    Exists,
}

const VERSION_COLUMNS: &str = "namespace, name, version, major, minor, patch, source, sha256, \
                               origin, created_at, expires_at";

impl Store {
    /// Stores an orb version. Released versions are never replaced; a dev version is.
    pub async fn insert_orb_version(&self, row: &OrbVersionRow) -> StoreResult<OrbPublished> {
        let dev = row.expires_at.is_some();
        let conflict = if dev {
            "ON CONFLICT (namespace, name, version) DO UPDATE SET source = excluded.source, \
             sha256 = excluded.sha256, origin = excluded.origin, created_at = excluded.created_at, \
             expires_at = excluded.expires_at"
        } else {
            "ON CONFLICT (namespace, name, version) DO NOTHING"
        };
        let existed = dev
            && self
                .orb_version(&row.namespace, &row.name, &row.version, i64::MIN)
                .await?
                .is_some();
        let affected = sqlx::query(&format!(
            "INSERT INTO orb_versions ({VERSION_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) {conflict}"
        ))
        .bind(&row.namespace)
        .bind(&row.name)
        .bind(&row.version)
        .bind(row.major)
        .bind(row.minor)
        .bind(row.patch)
        .bind(&row.source)
        .bind(&row.sha256)
        .bind(&row.origin)
        .bind(row.created_at)
        .bind(row.expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(match (affected, existed) {
            (0, _) => OrbPublished::Exists,
            (_, true) => OrbPublished::Replaced,
            _ => OrbPublished::New,
        })
    }

    /// One version of an orb, unless it expired before `now`.
    pub async fn orb_version(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        now: i64,
    ) -> StoreResult<Option<OrbVersionRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM orb_versions
             WHERE namespace = $1 AND name = $2 AND version = $3
               AND (expires_at IS NULL OR expires_at > $4)"
        ))
        .bind(namespace)
        .bind(name)
        .bind(version)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every live version of an orb, newest first, without their sources.
    pub async fn orb_versions(
        &self,
        namespace: &str,
        name: &str,
        now: i64,
    ) -> StoreResult<Vec<OrbVersionRow>> {
        Ok(sqlx::query_as(
            "SELECT namespace, name, version, major, minor, patch, '' AS source, sha256, origin,
                    created_at, expires_at
             FROM orb_versions
             WHERE namespace = $1 AND name = $2 AND (expires_at IS NULL OR expires_at > $3)
             ORDER BY created_at DESC, version DESC",
        )
        .bind(namespace)
        .bind(name)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The orbs with a live version, of one namespace or all, by name.
    pub async fn orbs(&self, namespace: Option<&str>, now: i64) -> StoreResult<Vec<OrbListRow>> {
        Ok(sqlx::query_as(
            "SELECT namespace, name, COUNT(*) AS versions, MAX(created_at) AS updated_at
             FROM orb_versions
             WHERE ($1 IS NULL OR namespace = $1) AND (expires_at IS NULL OR expires_at > $2)
             GROUP BY namespace, name
             ORDER BY namespace, name",
        )
        .bind(namespace)
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes dev versions that expired before `now`; answers how many.
    pub async fn delete_expired_orb_versions(&self, now: i64) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM orb_versions WHERE expires_at IS NOT NULL AND expires_at <= $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// What the upstream answered for a moving reference, and when.
    pub async fn orb_lookup(&self, reference: &str) -> StoreResult<Option<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT version, fetched_at FROM orb_lookups WHERE reference = $1")
                .bind(reference)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_orb_lookup(
        &self,
        reference: &str,
        version: &str,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO orb_lookups (reference, version, fetched_at) VALUES ($1, $2, $3)
             ON CONFLICT (reference) DO UPDATE SET version = excluded.version,
                                                   fetched_at = excluded.fetched_at",
        )
        .bind(reference)
        .bind(version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn url_orb(&self, url: &str) -> StoreResult<Option<UrlOrbRow>> {
        Ok(
            sqlx::query_as("SELECT sha256, source, fetched_at FROM url_orbs WHERE url = $1")
                .bind(url)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn set_url_orb(&self, url: &str, row: &UrlOrbRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO url_orbs (url, sha256, source, fetched_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (url) DO UPDATE SET sha256 = excluded.sha256, source = excluded.source,
                                             fetched_at = excluded.fetched_at",
        )
        .bind(url)
        .bind(&row.sha256)
        .bind(&row.source)
        .bind(row.fetched_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The namespaces of the projects `user_id` is a member of.
    pub async fn member_namespaces(&self, user_id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT p.namespace FROM projects p
             JOIN project_members m ON m.project_id = p.id
             WHERE m.user_id = $1 ORDER BY p.namespace",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The orbs pipeline `id`'s configuration resolved (JSON).
    pub async fn pipeline_orbs(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT orbs FROM pipeline_configs WHERE pipeline_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records the orbs a pipeline resolved (JSON), after its configuration was stored.
    pub async fn set_pipeline_orbs(&self, id: &str, orbs: &str) -> StoreResult<()> {
        sqlx::query("UPDATE pipeline_configs SET orbs = $2 WHERE pipeline_id = $1")
            .bind(id)
            .bind(orbs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl super::StoreTx {
    /// [`Store::set_pipeline_orbs`] inside a transaction.
    pub async fn set_pipeline_orbs(&mut self, id: &str, orbs: &str) -> StoreResult<()> {
        sqlx::query("UPDATE pipeline_configs SET orbs = $2 WHERE pipeline_id = $1")
            .bind(id)
            .bind(orbs)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
