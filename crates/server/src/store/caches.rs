//! Caches: one row per saved key of a project, found by key prefix.
//!
//! Expiry is a server setting (`--cache-retention`), not a column: every read takes the oldest
//! creation time still alive (`created_after`), so an expired cache is invisible at once and a
//! changed retention applies to caches saved before it, and the sweep deletes what is older.
//!
//! Prefix matches are key ranges, `key >= p AND key < successor(p)` ([`prefix_successor`]),
//! which the `(project_id, key)` index serves, plus `substr(key, 1, length(p)) = p`, which says
//! exactly what a prefix is whatever the collation. No `LIKE`: `%` and `_` in keys are just
//! characters. (SQLite compares text bytewise, which for UTF-8 is code point order; a PostgreSQL
//! backend declares `key` `COLLATE "C"` for the range to mean the same.)

use super::{Store, StoreResult};

/// One saved cache.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CacheRow {
    pub id: String,
    pub project_id: String,
    pub key: String,
    pub size: i64,
    pub sha256: String,
    pub blob_key: String,
    pub job_id: String,
    pub task_id: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// What [`Store::add_cache`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheInsert {
    /// The row is in. `replaced` is the blob key of an expired cache of the same key (not yet
    /// swept) whose row it replaced: the caller deletes that blob.
    Inserted { replaced: Option<String> },
    /// A live cache of that key exists (a concurrent save won): nothing was written.
    Exists,
}

/// The project and workflow a job belongs to: caches are the project's, workspaces the
/// workflow's.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobScope {
    pub project_id: String,
    pub workflow_id: String,
}

const CACHE_COLUMNS: &str =
    "id, project_id, key, size, sha256, blob_key, job_id, task_id, created_at, last_used_at";

/// The smallest string greater than every string that starts with `prefix` (in code point
/// order, which is UTF-8 byte order): its last character raised by one, dropping trailing
/// characters that cannot be raised. `None` when there is none (the empty prefix, or one made
/// only of U+10FFFF): then there is no upper bound.
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        // Surrogates are not characters; the next one after them is U+E000.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A prefix condition on `key`, and the values to bind for it, in order, from placeholder
/// `$first` on: the lower bound (the prefix), its length, and the upper bound when there is one.
struct PrefixMatch {
    clause: String,
    prefix: String,
    length: i64,
    upper: Option<String>,
}

impl PrefixMatch {
    fn new(prefix: &str, first: usize) -> PrefixMatch {
        let upper = prefix_successor(prefix);
        let (p, n, u) = (first, first + 1, first + 2);
        let clause = if upper.is_some() {
            format!("key >= ${p} AND key < ${u} AND substr(key, 1, ${n}) = ${p}")
        } else {
            format!("key >= ${p} AND substr(key, 1, ${n}) = ${p}")
        };
        PrefixMatch {
            clause,
            prefix: prefix.to_owned(),
            length: prefix.chars().count() as i64,
            upper,
        }
    }

    /// The placeholder after this condition's last.
    fn next(&self, first: usize) -> usize {
        first + if self.upper.is_some() { 3 } else { 2 }
    }

    fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
        let query = query.bind(&self.prefix).bind(self.length);
        match &self.upper {
            Some(upper) => query.bind(upper),
            None => query,
        }
    }
}

impl Store {
    /// The project and workflow of job `job_id`.
    pub async fn job_scope(&self, job_id: &str) -> StoreResult<Option<JobScope>> {
        Ok(sqlx::query_as(
            "SELECT p.project_id, j.workflow_id FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
              WHERE j.id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether project `project_id` has a live cache (created after `created_after`) of `key`.
    pub async fn cache_exists(
        &self,
        project_id: &str,
        key: &str,
        created_after: i64,
    ) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM caches
                             WHERE project_id = $1 AND key = $2 AND created_at > $3)",
        )
        .bind(project_id)
        .bind(key)
        .bind(created_after)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records a saved cache, unless a live one of its key exists. An expired row of the key
    /// (created at or before `created_after`, not swept yet) gives way.
    pub async fn add_cache(&self, row: &CacheRow, created_after: i64) -> StoreResult<CacheInsert> {
        let mut tx = self.pool.begin().await?;
        let replaced: Option<String> = sqlx::query_scalar(
            "DELETE FROM caches WHERE project_id = $1 AND key = $2 AND created_at <= $3
             RETURNING blob_key",
        )
        .bind(&row.project_id)
        .bind(&row.key)
        .bind(created_after)
        .fetch_optional(&mut *tx)
        .await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO caches ({CACHE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (project_id, key) DO NOTHING"
        ))
        .bind(&row.id)
        .bind(&row.project_id)
        .bind(&row.key)
        .bind(row.size)
        .bind(&row.sha256)
        .bind(&row.blob_key)
        .bind(&row.job_id)
        .bind(&row.task_id)
        .bind(row.created_at)
        .bind(row.last_used_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Dropping the transaction rolls the deletion back too: it cannot have deleted the
            // live row that won, and an expired one it deleted is the sweep's again.
            return Ok(CacheInsert::Exists);
        }
        tx.commit().await?;
        Ok(CacheInsert::Inserted { replaced })
    }

    /// The most recently saved live cache of project `project_id` whose key starts with
    /// `prefix`.
    pub async fn latest_cache_with_prefix(
        &self,
        project_id: &str,
        prefix: &str,
        created_after: i64,
    ) -> StoreResult<Option<CacheRow>> {
        let matching = PrefixMatch::new(prefix, 2);
        let sql = format!(
            "SELECT {CACHE_COLUMNS} FROM caches
              WHERE project_id = $1 AND {} AND created_at > ${}
              ORDER BY created_at DESC, id DESC LIMIT 1",
            matching.clause,
            matching.next(2)
        );
        let query = matching.bind(sqlx::query_as(&sql).bind(project_id));
        Ok(query.bind(created_after).fetch_optional(&self.pool).await?)
    }

    /// Notes that cache `id` was restored at `now`.
    pub async fn touch_cache(&self, id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE caches SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Project `project_id`'s live caches, newest first, at most `limit`.
    pub async fn project_caches(
        &self,
        project_id: &str,
        created_after: i64,
        limit: i64,
    ) -> StoreResult<Vec<CacheRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {CACHE_COLUMNS} FROM caches WHERE project_id = $1 AND created_at > $2
              ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(project_id)
        .bind(created_after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Up to `limit` caches of project `project_id` (live or not) whose key starts with `prefix`
    /// and comes after `after` (a key; `None` to start), in key order: pages for a deletion
    /// that keeps going past rows it could not delete.
    pub async fn caches_with_prefix(
        &self,
        project_id: &str,
        prefix: &str,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<CacheRow>> {
        let matching = PrefixMatch::new(prefix, 2);
        let after_n = matching.next(2);
        let sql = format!(
            "SELECT {CACHE_COLUMNS} FROM caches
              WHERE project_id = $1 AND {} AND key > ${after_n}
              ORDER BY key LIMIT ${}",
            matching.clause,
            after_n + 1
        );
        let query = matching.bind(sqlx::query_as(&sql).bind(project_id));
        // Keys are never empty, so "after the empty key" is the start.
        Ok(query
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Deletes cache `id`'s row; `false` if it was gone.
    pub async fn delete_cache(&self, id: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM caches WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Up to `limit` caches created at or before `cutoff`, oldest first: the sweep's batch.
    pub async fn expired_caches(&self, cutoff: i64, limit: i64) -> StoreResult<Vec<CacheRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {CACHE_COLUMNS} FROM caches WHERE created_at <= $1
              ORDER BY created_at, id LIMIT $2"
        ))
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn a_prefix_successor_bounds_exactly_the_strings_that_start_with_it() {
        assert_eq!(prefix_successor("v1-"), Some("v1.".to_owned()));
        assert_eq!(prefix_successor("a%"), Some("a&".to_owned()));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        assert_eq!(prefix_successor("a\u{10FFFF}"), Some("b".to_owned()));
        assert_eq!(prefix_successor("\u{D7FF}"), Some("\u{E000}".to_owned()));
        for (prefix, inside, outside) in [
            ("v1-", "v1-\u{10FFFF}zz", "v1."),
            ("a\u{10FFFF}", "a\u{10FFFF}\u{10FFFF}", "b"),
            ("é", "éz", "ê"),
        ] {
            let upper = prefix_successor(prefix).unwrap();
            assert!(
                inside.as_bytes() < upper.as_bytes(),
                "{inside:?} < {upper:?}"
            );
            assert!(
                outside.as_bytes() >= upper.as_bytes(),
                "{outside:?} >= {upper:?}"
            );
        }
    }
}
