//! Users, their personal API tokens and the projects a member is given.

use super::rows::{UserRow, UserTokenRow};
use super::status::Role;
use super::{Store, StoreResult};

/// The user every admin token (`BOSUN_ADMIN_TOKEN`, `DATA_DIR/admin-token`) acts as; created by
/// migration 0010.
pub const BOOTSTRAP_ADMIN_ID: &str = "a0000000-0000-4000-8000-000000000001";

/// An object that belongs to a project, for [`Store::project_of`].
#[derive(Debug, Clone, Copy)]
pub enum Owned<'a> {
    Pipeline(&'a str),
    Workflow(&'a str),
    Job(&'a str),
    Artifact(&'a str),
}

impl Store {
    /// The project (`id`, `slug`) that `owned` belongs to; `None` if there is no such object.
    pub async fn project_of(&self, owned: Owned<'_>) -> StoreResult<Option<(String, String)>> {
        let (sql, id) = match owned {
            Owned::Pipeline(id) => (
                "SELECT p.id, p.slug FROM pipelines pl JOIN projects p ON p.id = pl.project_id
                 WHERE pl.id = $1",
                id,
            ),
            Owned::Workflow(id) => (
                "SELECT p.id, p.slug FROM workflows w JOIN pipelines pl ON pl.id = w.pipeline_id
                 JOIN projects p ON p.id = pl.project_id WHERE w.id = $1",
                id,
            ),
            Owned::Job(id) => (
                "SELECT p.id, p.slug FROM jobs j JOIN pipelines pl ON pl.id = j.pipeline_id
                 JOIN projects p ON p.id = pl.project_id WHERE j.id = $1",
                id,
            ),
            Owned::Artifact(id) => (
                "SELECT p.id, p.slug FROM artifacts a JOIN jobs j ON j.id = a.job_id
                 JOIN pipelines pl ON pl.id = j.pipeline_id
                 JOIN projects p ON p.id = pl.project_id WHERE a.id = $1",
                id,
            ),
        };
        Ok(sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The user whose personal token hashes to `hash`, unless the token expired by `now`.
    /// Records the token's use.
    pub async fn user_by_token(&self, hash: &str, now: i64) -> StoreResult<Option<UserRow>> {
        let user: Option<UserRow> = sqlx::query_as(
            "SELECT u.id, u.login, u.name, u.role, u.created_at FROM user_tokens t
             JOIN users u ON u.id = t.user_id
             WHERE t.hash = $1 AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if user.is_some() {
            sqlx::query("UPDATE user_tokens SET last_used_at = $2 WHERE hash = $1")
                .bind(hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
        }
        Ok(user)
    }

    /// The user `id`.
    pub async fn user(&self, id: &str) -> StoreResult<Option<UserRow>> {
        Ok(
            sqlx::query_as("SELECT id, login, name, role, created_at FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The user named `login`.
    pub async fn user_by_login(&self, login: &str) -> StoreResult<Option<UserRow>> {
        Ok(
            sqlx::query_as("SELECT id, login, name, role, created_at FROM users WHERE login = $1")
                .bind(login)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Every user, by login.
    pub async fn users(&self) -> StoreResult<Vec<UserRow>> {
        Ok(
            sqlx::query_as("SELECT id, login, name, role, created_at FROM users ORDER BY login")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Creates a user; `false` if the login is taken.
    pub async fn create_user(&self, user: &UserRow) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO users (id, login, name, role, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (login) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.login)
        .bind(&user.name)
        .bind(user.role)
        .bind(user.created_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() > 0)
    }

    /// Changes user `id`'s role; `false` if there is no such user.
    pub async fn set_user_role(&self, id: &str, role: Role) -> StoreResult<bool> {
        let updated = sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
            .bind(id)
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Deletes user `id` with their tokens and project grants; `false` if there is none.
    pub async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        for statement in [
            "DELETE FROM user_tokens WHERE user_id = $1",
            "DELETE FROM project_members WHERE user_id = $1",
        ] {
            sqlx::query(statement).bind(id).execute(&mut *tx).await?;
        }
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Stores a personal token of `token.user_id` by its hash.
    pub async fn create_user_token(&self, token: &UserTokenRow, hash: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO user_tokens (id, user_id, hash, label, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.user_id)
        .bind(hash)
        .bind(&token.label)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The personal tokens of `user_id` (every user's with `None`), oldest first, without
    /// their hashes.
    pub async fn user_tokens(&self, user_id: Option<&str>) -> StoreResult<Vec<UserTokenRow>> {
        Ok(sqlx::query_as(
            "SELECT t.id, t.user_id, u.login, t.label, t.created_at, t.expires_at, t.last_used_at
             FROM user_tokens t JOIN users u ON u.id = t.user_id
             WHERE $1 IS NULL OR t.user_id = $1 ORDER BY t.created_at, t.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Token `id`, without its hash.
    pub async fn user_token(&self, id: &str) -> StoreResult<Option<UserTokenRow>> {
        Ok(sqlx::query_as(
            "SELECT t.id, t.user_id, u.login, t.label, t.created_at, t.expires_at, t.last_used_at
             FROM user_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes token `id`: from now on it authenticates nothing. `false` if there is none.
    pub async fn revoke_user_token(&self, id: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM user_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Whether user `user_id` was given project `project_id`.
    pub async fn is_project_member(&self, user_id: &str, project_id: &str) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM project_members WHERE user_id = $1 AND project_id = $2)",
        )
        .bind(user_id)
        .bind(project_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Gives user `user_id` project `project_id` (idempotent).
    pub async fn add_project_member(
        &self,
        user_id: &str,
        project_id: &str,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO project_members (user_id, project_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, project_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(project_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes project `project_id` from user `user_id`; `false` if they did not have it.
    pub async fn remove_project_member(
        &self,
        user_id: &str,
        project_id: &str,
    ) -> StoreResult<bool> {
        let deleted =
            sqlx::query("DELETE FROM project_members WHERE user_id = $1 AND project_id = $2")
                .bind(user_id)
                .bind(project_id)
                .execute(&self.pool)
                .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// The slugs of the projects user `user_id` was given, sorted.
    pub async fn member_projects(&self, user_id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT p.slug FROM project_members m JOIN projects p ON p.id = m.project_id
             WHERE m.user_id = $1 ORDER BY p.slug",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
