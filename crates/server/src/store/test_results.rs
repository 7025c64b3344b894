//! Test results: a row per test case, found by job; flaky tests across runs of one job on one
//! revision.

use bosun_api::task::{TestCase, TestResult};

use super::{Store, StoreResult};

/// One stored test case.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TestRow {
    pub node_index: i64,
    pub name: String,
    pub classname: String,
    pub file: Option<String>,
    pub result: String,
    pub message: Option<String>,
    pub run_time: f64,
    pub source: String,
    /// Whether the same test (classname and name) of a job of the same name, project and
    /// revision both failed and passed, counting this job's runs too.
    pub flaky: bool,
}

/// Rows inserted per statement: SQLite allows 32,766 bound values, and a row binds 11.
const BATCH: usize = 1000;

impl Store {
    /// Stores `tests`, all or none, for task `task_id` of job `job_id`.
    pub async fn add_test_results(
        &self,
        task_id: &str,
        job_id: &str,
        node_index: i64,
        tests: &[TestCase],
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for batch in tests.chunks(BATCH) {
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO test_results (task_id, job_id, node_index, name, classname, file, result, message, run_time, source, created_at) ",
            );
            query.push_values(batch, |mut row, test| {
                row.push_bind(task_id)
                    .push_bind(job_id)
                    .push_bind(node_index)
                    .push_bind(&test.name)
                    .push_bind(&test.classname)
                    .push_bind(&test.file)
                    .push_bind(test.result.as_str())
                    .push_bind(&test.message)
                    .push_bind(test.run_time)
                    .push_bind(&test.source)
                    .push_bind(now);
            });
            query.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The test cases of the most recent successful run of job `job_id`'s job (same name, same
    /// project) on the job's branch, else on `main` or `master`; empty when there is none. The
    /// timings `circleci tests split --split-by=timings` uses.
    pub async fn timings_for(&self, job_id: &str) -> StoreResult<Vec<TestCase>> {
        let source: Option<String> = sqlx::query_scalar(
            "WITH this AS (
                 SELECT jobs.name, pipelines.project_id, pipelines.branch, jobs.number
                   FROM jobs JOIN pipelines ON pipelines.id = jobs.pipeline_id
                  WHERE jobs.id = $1
             )
             SELECT jobs.id FROM jobs
               JOIN pipelines ON pipelines.id = jobs.pipeline_id
               JOIN this ON jobs.name = this.name AND pipelines.project_id = this.project_id
              WHERE jobs.status = 'success' AND jobs.id <> $1
                AND EXISTS (SELECT 1 FROM test_results t WHERE t.job_id = jobs.id)
                AND (pipelines.branch = this.branch OR pipelines.branch IN ('main', 'master'))
              ORDER BY (pipelines.branch = this.branch) DESC, jobs.number DESC
              LIMIT 1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(source) = source else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String, Option<String>, String, f64)> = sqlx::query_as(
            "SELECT name, classname, file, result, run_time FROM test_results
              WHERE job_id = $1 ORDER BY id",
        )
        .bind(&source)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, classname, file, result, run_time)| TestCase {
                name,
                classname,
                file,
                result: match result.as_str() {
                    "failure" => TestResult::Failure,
                    "skipped" => TestResult::Skipped,
                    "error" => TestResult::Error,
                    _ => TestResult::Success,
                },
                message: None,
                run_time,
                source: String::new(),
            })
            .collect())
    }

    /// How many test cases job `job_id` stored.
    pub async fn test_result_count(&self, job_id: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM test_results WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Job `job_id`'s test cases, in the order they were stored, each marked flaky when the
    /// same test of a job with the same name, project and revision both failed and passed.
    pub async fn job_test_results(&self, job_id: &str) -> StoreResult<Vec<TestRow>> {
        Ok(sqlx::query_as(
            "WITH this AS (
                 SELECT jobs.name AS job_name, pipelines.project_id, pipelines.revision
                   FROM jobs JOIN pipelines ON pipelines.id = jobs.pipeline_id
                  WHERE jobs.id = $1
             ),
             runs AS (
                 SELECT jobs.id FROM jobs
                   JOIN pipelines ON pipelines.id = jobs.pipeline_id
                   JOIN this ON jobs.name = this.job_name
                            AND pipelines.project_id = this.project_id
                            AND pipelines.revision = this.revision
             )
             SELECT t.node_index, t.name, t.classname, t.file, t.result, t.message, t.run_time,
                    t.source,
                    (EXISTS (SELECT 1 FROM test_results o
                               WHERE o.classname = t.classname AND o.name = t.name
                                 AND o.job_id IN (SELECT id FROM runs)
                                 AND o.result IN ('failure', 'error'))
                     AND EXISTS (SELECT 1 FROM test_results o
                               WHERE o.classname = t.classname AND o.name = t.name
                                 AND o.job_id IN (SELECT id FROM runs)
                                 AND o.result = 'success')) AS flaky
               FROM test_results t
              WHERE t.job_id = $1
              ORDER BY t.id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
