//! Test results: `store_test_results` uploads (task token) and CircleCI's test listing (admin).
//!
//! The task-agent parses the JUnit XML and uploads the cases as the JSON of a
//! [`TestResults`]; the body is bounded, every field is checked, and the cases are stored in
//! one transaction, so a bad upload stores nothing.

use axum::extract::{DefaultBodyLimit, Path, Query, State as StateExt};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use bosun_api::task::{TestCase, TestResults};
use bosun_api::{StoredTests, TestItem, TestList};
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::State;
use crate::auth::{Access, Caller, TaskAuth};
use crate::error::{AppError, AppResult};
use crate::jobs;
use crate::store::{Owned, TaskStatus};
use crate::util::now_ms;

/// Largest upload body: about a million typical cases.
pub const MAX_BODY: usize = 256 << 20;
/// Most cases one job stores, all of its steps together.
pub const MAX_CASES_PER_JOB: i64 = 1_000_000;
/// Longest name, classname, file or source.
pub const MAX_FIELD: usize = 4096;
/// Longest message (the task-agent truncates longer ones first).
pub const MAX_MESSAGE: usize = 64 << 10;

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/api/v2/task/tests",
            put(store_tests).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v2/task/timings", get(timings))
        .route("/api/v2/job/{id}/tests", get(job_tests))
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/{number}/tests",
            get(project_job_tests),
        )
}

#[derive(Deserialize)]
struct StoreQuery {
    source: String,
}

/// Checks one case: bounded fields without control characters (messages may hold newlines and
/// tabs) and a finite, non-negative run time.
fn check_case(index: usize, case: &TestCase) -> Result<(), AppError> {
    let bad = |what: &str| AppError::bad_request(format!("test case {index}: {what}"));
    if case.name.is_empty() {
        return Err(bad("`name` is empty"));
    }
    for (field, value) in [
        ("name", Some(case.name.as_str())),
        ("classname", Some(case.classname.as_str())),
        ("file", case.file.as_deref()),
        ("source", Some(case.source.as_str())),
    ] {
        let Some(value) = value else { continue };
        if value.len() > MAX_FIELD {
            return Err(bad(&format!("`{field}` is longer than {MAX_FIELD} bytes")));
        }
        if value.chars().any(char::is_control) {
            return Err(bad(&format!("`{field}` holds control characters")));
        }
    }
    if case
        .message
        .as_ref()
        .is_some_and(|message| message.len() > MAX_MESSAGE)
    {
        return Err(bad(&format!(
            "`message` is longer than {MAX_MESSAGE} bytes"
        )));
    }
    if !case.run_time.is_finite() || case.run_time < 0.0 {
        return Err(bad(
            "`run_time` must be a finite number of seconds, at least 0",
        ));
    }
    Ok(())
}

async fn store_tests(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Query(query): Query<StoreQuery>,
    body: axum::body::Body,
) -> AppResult<Json<StoredTests>> {
    if task.status != TaskStatus::Running {
        return Err(AppError::unauthorized("invalid bearer token"));
    }
    if query.source.len() > MAX_FIELD {
        return Err(AppError::bad_request(format!(
            "`source` is longer than {MAX_FIELD} bytes"
        )));
    }
    let too_large = || {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("test results are limited to {MAX_BODY} bytes per step"),
        )
    };
    let bytes = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|err| {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                AppError::bad_request("the test results' body ended early")
            }
        })?
        .to_bytes();
    let mut results: TestResults = serde_json::from_slice(&bytes).map_err(|err| {
        AppError::bad_request(format!(
            "test results are not valid JSON of test cases: {err}"
        ))
    })?;
    for (index, case) in results.tests.iter_mut().enumerate() {
        // A case the uploader named no source of comes from the upload's `source`.
        if case.source.is_empty() {
            case.source.clone_from(&query.source);
        }
        check_case(index, case)?;
    }
    let stored = state.store.test_result_count(&task.job_id).await?;
    if stored + results.tests.len() as i64 > MAX_CASES_PER_JOB {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a job stores at most {MAX_CASES_PER_JOB} test cases"),
        ));
    }
    let node = i64::from(state.store.task_node(&task.task_id).await?);
    state
        .store
        .add_test_results(&task.task_id, &task.job_id, node, &results.tests, now_ms())
        .await?;
    Ok(Json(StoredTests {
        stored: results.tests.len() as u64,
    }))
}

/// The timings for the task's job: the test results of its most recent successful run (same
/// job, same branch, else the default branch), as a [`TestResults`]; 404 when there is none.
async fn timings(task: TaskAuth, StateExt(state): StateExt<State>) -> AppResult<Json<TestResults>> {
    if task.status != TaskStatus::Running {
        return Err(AppError::unauthorized("invalid bearer token"));
    }
    let tests = state.store.timings_for(&task.job_id).await?;
    if tests.is_empty() {
        return Err(AppError::not_found(
            "no earlier successful run of this job stored test results",
        ));
    }
    Ok(Json(TestResults { tests }))
}

pub(crate) async fn listing(state: &State, job_id: &str) -> AppResult<Json<TestList>> {
    let items = state
        .store
        .job_test_results(job_id)
        .await?
        .into_iter()
        .map(|row| TestItem {
            message: row.message,
            source: row.source,
            run_time: row.run_time,
            // CircleCI's document wants a string: "" when the report named no file.
            file: Some(row.file.unwrap_or_default()),
            result: row.result,
            name: row.name,
            classname: row.classname,
            node_index: row.node_index as u32,
            flaky: row.flaky,
        })
        .collect();
    Ok(Json(TestList {
        items,
        next_page_token: None,
    }))
}

async fn job_tests(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<TestList>> {
    if id.len() > 64 {
        return Err(AppError::not_found("no such job"));
    }
    caller
        .check_owned(&state, Owned::Job(&id), Access::Read)
        .await?;
    listing(&state, &id).await
}

async fn project_job_tests(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<TestList>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let job_id = jobs::job_by_number(&state, &caller, &slug, &number, Access::Read).await?;
    listing(&state, &job_id).await
}
