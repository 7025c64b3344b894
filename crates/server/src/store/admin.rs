//! Admin tokens, resource classes, runner tokens and the runner inventory.

use super::rows::{ResourceClassDeletion, ResourceClassRow, RunnerRow, RunnerSeen, RunnerTokenRow};
use super::status::TaskStatus;
use super::{Store, StoreResult};

impl Store {
    /// Stores an admin token's hash; one already stored is kept as it is.
    pub async fn add_admin_token(&self, hash: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO admin_tokens (hash, created_at) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether any admin token exists.
    pub async fn has_admin_token(&self) -> StoreResult<bool> {
        let found: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM admin_tokens)")
            .fetch_one(&self.pool)
            .await?;
        Ok(found)
    }

    /// Whether `hash` is an admin token's.
    pub async fn is_admin_token(&self, hash: &str) -> StoreResult<bool> {
        let found: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM admin_tokens WHERE hash = $1)")
                .bind(hash)
                .fetch_one(&self.pool)
                .await?;
        Ok(found)
    }

    /// The resource class (`namespace/name`) of the runner token whose hash is `hash`.
    pub async fn runner_token_class(&self, hash: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT rc.name FROM runner_tokens t JOIN resource_classes rc ON rc.id = t.resource_class_id
             WHERE t.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The resource classes of `namespace`, by name.
    pub async fn resource_classes(&self, namespace: &str) -> StoreResult<Vec<ResourceClassRow>> {
        Ok(sqlx::query_as(
            "SELECT id, name, description FROM resource_classes WHERE namespace = $1 ORDER BY name",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many resource classes `namespace` has.
    pub async fn count_resource_classes(&self, namespace: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM resource_classes WHERE namespace = $1")
                .bind(namespace)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The id of resource class `name`.
    pub async fn resource_class_id(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM resource_classes WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Creates a resource class; `false` if one of that name exists.
    pub async fn create_resource_class(
        &self,
        row: &ResourceClassRow,
        namespace: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO resource_classes (id, name, namespace, description, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(namespace)
        .bind(&row.description)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() > 0)
    }

    /// Deletes resource class `id`, and with `force` its tokens; without, only a class that has
    /// none.
    pub async fn delete_resource_class(
        &self,
        id: &str,
        force: bool,
    ) -> StoreResult<ResourceClassDeletion> {
        let mut tx = self.pool.begin().await?;
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM resource_classes WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(name) = name else {
            return Ok(ResourceClassDeletion::NotFound);
        };
        let tokens: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM runner_tokens WHERE resource_class_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if tokens > 0 && !force {
            return Ok(ResourceClassDeletion::HasTokens { name, tokens });
        }
        sqlx::query("DELETE FROM runner_tokens WHERE resource_class_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM resource_classes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ResourceClassDeletion::Deleted)
    }

    /// The tokens of resource class `name`, oldest first.
    pub async fn runner_tokens(&self, resource_class: &str) -> StoreResult<Vec<RunnerTokenRow>> {
        Ok(sqlx::query_as(
            "SELECT t.id, rc.name AS resource_class, t.nickname, t.created_at FROM runner_tokens t
             JOIN resource_classes rc ON rc.id = t.resource_class_id
             WHERE rc.name = $1 ORDER BY t.created_at",
        )
        .bind(resource_class)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a runner token of resource class `class_id` (its id) by its hash.
    pub async fn create_runner_token(
        &self,
        id: &str,
        class_id: &str,
        nickname: &str,
        hash: &str,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO runner_tokens (id, resource_class_id, nickname, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(class_id)
        .bind(nickname)
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes runner token `id`; `false` if there was none.
    pub async fn delete_runner_token(&self, id: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM runner_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Registers a claiming runner, or refreshes what it said about itself.
    pub async fn runner_seen(&self, runner: &RunnerSeen<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO runners (resource_class, name, hostname, ip, version, first_connected, last_connected,
                                  running, capacity, draining)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (resource_class, name) DO UPDATE SET
               hostname = excluded.hostname, ip = excluded.ip, version = excluded.version,
               last_connected = excluded.last_connected, running = excluded.running,
               capacity = excluded.capacity, draining = excluded.draining",
        )
        .bind(runner.resource_class)
        .bind(runner.name)
        .bind(runner.hostname)
        .bind(runner.ip)
        .bind(runner.version)
        .bind(runner.now)
        .bind(runner.now)
        .bind(runner.running)
        .bind(runner.capacity)
        .bind(runner.draining)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runner `name` of `resource_class` was just given a task.
    pub async fn runner_used(&self, resource_class: &str, name: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE runners SET last_used = $3, running = running + 1
             WHERE resource_class = $1 AND name = $2",
        )
        .bind(resource_class)
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The runners of resource class `resource_class` heard from since `since`, by name.
    pub async fn runners_of_class(
        &self,
        resource_class: &str,
        since: i64,
    ) -> StoreResult<Vec<RunnerRow>> {
        Ok(sqlx::query_as(
            "SELECT resource_class, hostname, name, ip, version, first_connected, last_connected, last_used,
                    running, capacity, draining
             FROM runners WHERE resource_class = $1 AND last_connected >= $2 ORDER BY name",
        )
        .bind(resource_class)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The runners of every resource class of `namespace` heard from since `since`.
    pub async fn runners_of_namespace(
        &self,
        namespace: &str,
        since: i64,
    ) -> StoreResult<Vec<RunnerRow>> {
        Ok(sqlx::query_as(
            "SELECT resource_class, hostname, name, ip, version, first_connected, last_connected, last_used,
                    running, capacity, draining
             FROM runners WHERE resource_class LIKE $1 ESCAPE '\\' AND last_connected >= $2
             ORDER BY resource_class, name",
        )
        .bind(format!(
            "{}/%",
            namespace
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many tasks of `resource_class` are `status`.
    /// Tasks of `status` by resource class, for `/metrics`.
    pub async fn tasks_by_class(&self, status: TaskStatus) -> StoreResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT resource_class, COUNT(*) FROM tasks WHERE status = $1
             GROUP BY resource_class ORDER BY resource_class",
        )
        .bind(status)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every runner heard from since `since`, for `/metrics`.
    pub async fn runners_since(&self, since: i64) -> StoreResult<Vec<RunnerRow>> {
        Ok(sqlx::query_as(
            "SELECT resource_class, hostname, name, ip, version, first_connected, last_connected, last_used,
                    running, capacity, draining
             FROM runners WHERE last_connected >= $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn count_tasks(&self, resource_class: &str, status: TaskStatus) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE resource_class = $1 AND status = $2",
        )
        .bind(resource_class)
        .bind(status)
        .fetch_one(&self.pool)
        .await?;
        Ok(count.max(0) as u64)
    }
}
