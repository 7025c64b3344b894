//! Secrets: project variables, contexts (variables and restrictions), checkout keys, SSH keys,
//! known hosts and checkout tokens. Values arrive here already sealed (`src/secrets.rs`) and
//! leave sealed: the store never sees a plaintext secret.

use super::{Store, StoreResult, StoreTx};

/// A sealed variable (project or context).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EnvRow {
    pub name: String,
    pub value: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContextRow {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RestrictionRow {
    pub id: String,
    pub context_id: String,
    pub restriction_type: String,
    pub restriction_value: String,
    pub name: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckoutKeyRow {
    pub fingerprint: String,
    pub sha256_fingerprint: String,
    pub key_type: String,
    pub public_key: String,
    pub private_key: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SshKeyRow {
    pub fingerprint: String,
    pub md5_fingerprint: String,
    pub hostname: Option<String>,
    pub public_key: String,
    pub private_key: Vec<u8>,
    pub created_at: i64,
}

/// What a context check needs to know about a job's pipeline.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobPipelineRow {
    pub contexts: String,
    pub pipeline_id: String,
    pub pipeline_number: i64,
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub revision: String,
    pub project_id: String,
    pub project_slug: String,
    pub git_url: String,
    pub namespace: String,
}

const JOB_PIPELINE: &str = "SELECT j.contexts, p.id AS pipeline_id, p.number AS pipeline_number,
        p.branch, p.tag, p.revision, pr.id AS project_id, pr.slug AS project_slug, pr.git_url,
        pr.namespace
     FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id JOIN projects pr ON pr.id = p.project_id
     WHERE j.id = $1";

impl Store {
    /// Sets (creating or replacing) a project variable.
    pub async fn set_project_env(
        &self,
        project_id: &str,
        name: &str,
        sealed: &[u8],
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO project_env (project_id, name, value, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (project_id, name) DO UPDATE SET value = excluded.value,
                 created_at = excluded.created_at",
        )
        .bind(project_id)
        .bind(name)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The project's variables, by name.
    pub async fn project_env(&self, project_id: &str) -> StoreResult<Vec<EnvRow>> {
        Ok(sqlx::query_as(
            "SELECT name, value, created_at, created_at AS updated_at FROM project_env
             WHERE project_id = $1 ORDER BY name",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes a project variable; answers whether it existed.
    pub async fn delete_project_env(&self, project_id: &str, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM project_env WHERE project_id = $1 AND name = $2")
            .bind(project_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates a context; `false` if the namespace already has one of that name.
    pub async fn create_context(&self, row: &ContextRow) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO contexts (id, namespace, name, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (namespace, name) DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.namespace)
        .bind(&row.name)
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn contexts(&self, namespace: &str) -> StoreResult<Vec<ContextRow>> {
        Ok(sqlx::query_as(
            "SELECT id, namespace, name, created_at FROM contexts WHERE namespace = $1
             ORDER BY name",
        )
        .bind(namespace)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn context(&self, id: &str) -> StoreResult<Option<ContextRow>> {
        Ok(
            sqlx::query_as("SELECT id, namespace, name, created_at FROM contexts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Deletes a context with its variables and restrictions; answers whether it existed.
    pub async fn delete_context(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM context_env WHERE context_id = $1",
            "DELETE FROM context_restrictions WHERE context_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM contexts WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets a context variable; answers the row as stored.
    pub async fn set_context_env(
        &self,
        context_id: &str,
        name: &str,
        sealed: &[u8],
        now: i64,
    ) -> StoreResult<EnvRow> {
        Ok(sqlx::query_as(
            "INSERT INTO context_env (context_id, name, value, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (context_id, name) DO UPDATE SET value = excluded.value,
                 updated_at = excluded.updated_at
             RETURNING name, value, created_at, updated_at",
        )
        .bind(context_id)
        .bind(name)
        .bind(sealed)
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn context_env(&self, context_id: &str) -> StoreResult<Vec<EnvRow>> {
        Ok(sqlx::query_as(
            "SELECT name, value, created_at, updated_at FROM context_env WHERE context_id = $1
             ORDER BY name",
        )
        .bind(context_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delete_context_env(&self, context_id: &str, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM context_env WHERE context_id = $1 AND name = $2")
            .bind(context_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn add_restriction(&self, row: &RestrictionRow, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO context_restrictions
                 (id, context_id, restriction_type, restriction_value, name, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.context_id)
        .bind(&row.restriction_type)
        .bind(&row.restriction_value)
        .bind(&row.name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn restrictions(&self, context_id: &str) -> StoreResult<Vec<RestrictionRow>> {
        Ok(sqlx::query_as(
            "SELECT id, context_id, restriction_type, restriction_value, name
             FROM context_restrictions WHERE context_id = $1 ORDER BY created_at, id",
        )
        .bind(context_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delete_restriction(&self, context_id: &str, id: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM context_restrictions WHERE context_id = $1 AND id = $2")
                .bind(context_id)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn add_checkout_key(
        &self,
        project_id: &str,
        row: &CheckoutKeyRow,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO checkout_keys (project_id, fingerprint, sha256_fingerprint, key_type,
                 public_key, private_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(project_id)
        .bind(&row.fingerprint)
        .bind(&row.sha256_fingerprint)
        .bind(&row.key_type)
        .bind(&row.public_key)
        .bind(&row.private_key)
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The project's checkout keys, newest first (the first is the preferred one).
    pub async fn checkout_keys(&self, project_id: &str) -> StoreResult<Vec<CheckoutKeyRow>> {
        Ok(sqlx::query_as(
            "SELECT fingerprint, sha256_fingerprint, key_type, public_key, private_key, created_at
             FROM checkout_keys WHERE project_id = $1 ORDER BY created_at DESC, fingerprint",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes the checkout key of that fingerprint (either form).
    pub async fn delete_checkout_key(
        &self,
        project_id: &str,
        fingerprint: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM checkout_keys WHERE project_id = $1
                 AND (fingerprint = $2 OR sha256_fingerprint = $2)",
        )
        .bind(project_id)
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds an SSH key; `false` if the project has one of that fingerprint already.
    pub async fn add_ssh_key(&self, project_id: &str, row: &SshKeyRow) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO ssh_keys (project_id, fingerprint, md5_fingerprint, hostname, public_key,
                 private_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (project_id, fingerprint) DO NOTHING",
        )
        .bind(project_id)
        .bind(&row.fingerprint)
        .bind(&row.md5_fingerprint)
        .bind(&row.hostname)
        .bind(&row.public_key)
        .bind(&row.private_key)
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn ssh_keys(&self, project_id: &str) -> StoreResult<Vec<SshKeyRow>> {
        Ok(sqlx::query_as(
            "SELECT fingerprint, md5_fingerprint, hostname, public_key, private_key, created_at
             FROM ssh_keys WHERE project_id = $1 ORDER BY created_at, fingerprint",
        )
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delete_ssh_key(&self, project_id: &str, fingerprint: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM ssh_keys WHERE project_id = $1
                 AND (fingerprint = $2 OR md5_fingerprint = $2)",
        )
        .bind(project_id)
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The project's known_hosts text and sealed checkout token.
    pub async fn project_git_auth(
        &self,
        project_id: &str,
    ) -> StoreResult<Option<(String, Option<Vec<u8>>)>> {
        Ok(
            sqlx::query_as("SELECT known_hosts, checkout_token FROM projects WHERE id = $1")
                .bind(project_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Replaces the project's known hosts.
    pub async fn set_known_hosts(&self, project_id: &str, text: &str) -> StoreResult<()> {
        sqlx::query("UPDATE projects SET known_hosts = $2 WHERE id = $1")
            .bind(project_id)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores what the first fetch learned, unless someone set known hosts meanwhile (trust on
    /// first use must never overwrite a key already trusted).
    pub async fn learn_known_hosts(&self, project_id: &str, text: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE projects SET known_hosts = $2 WHERE id = $1 AND known_hosts = ''")
                .bind(project_id)
                .bind(text)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets or clears the project's sealed checkout token.
    pub async fn set_checkout_token(
        &self,
        project_id: &str,
        sealed: Option<&[u8]>,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE projects SET checkout_token = $2 WHERE id = $1")
            .bind(project_id)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The contexts and pipeline values of a job, for its task's config.
    pub async fn job_pipeline(&self, job_id: &str) -> StoreResult<Option<JobPipelineRow>> {
        Ok(sqlx::query_as(JOB_PIPELINE)
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}

impl StoreTx {
    /// [`Store::job_pipeline`] inside the transaction that queues the job.
    pub async fn job_pipeline(&mut self, job_id: &str) -> StoreResult<Option<JobPipelineRow>> {
        Ok(sqlx::query_as(JOB_PIPELINE)
            .bind(job_id)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    /// The context of that name in `namespace`, with its restrictions.
    pub async fn context_by_name(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> StoreResult<Option<(ContextRow, Vec<RestrictionRow>)>> {
        let context: Option<ContextRow> = sqlx::query_as(
            "SELECT id, namespace, name, created_at FROM contexts
             WHERE namespace = $1 AND name = $2",
        )
        .bind(namespace)
        .bind(name)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(context) = context else {
            return Ok(None);
        };
        let restrictions = sqlx::query_as(
            "SELECT id, context_id, restriction_type, restriction_value, name
             FROM context_restrictions WHERE context_id = $1 ORDER BY created_at, id",
        )
        .bind(&context.id)
        .fetch_all(&mut *self.tx)
        .await?;
        Ok(Some((context, restrictions)))
    }

    /// Ends a job that never got a task (a context refused it) as failed, with `message`.
    pub async fn fail_unqueued_job(
        &mut self,
        job_id: &str,
        message: &str,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'failed', message = $2, stopped_at = $3
             WHERE id = $1 AND status = 'blocked'",
        )
        .bind(job_id)
        .bind(message)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// The context of that name in `namespace` (for a task's config).
    pub async fn context_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> StoreResult<Option<ContextRow>> {
        Ok(sqlx::query_as(
            "SELECT id, namespace, name, created_at FROM contexts
             WHERE namespace = $1 AND name = $2",
        )
        .bind(namespace)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every namespace that has a project or a resource class.
    pub async fn namespaces(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT namespace FROM projects UNION SELECT namespace FROM resource_classes
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The project of id `id`.
    pub async fn project_by_id(&self, id: &str) -> StoreResult<Option<super::ProjectRow>> {
        Ok(
            sqlx::query_as("SELECT id, slug, git_url, namespace FROM projects WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
