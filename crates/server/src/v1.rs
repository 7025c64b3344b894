//! The API v1.1 routes CircleCI's clients still call for what v2 lacks: `GET /api/v1.1/me`,
//! `GET /api/v1.1/projects`, a project's builds (jobs) newest first, one build, and a build's
//! artifacts and tests by its number. Project
//! env vars and checkout keys under v1.1 live with their v2 routes (`project_secrets.rs`).
//!
//! v1.1 calls a job a build and its number `build_num`; the numbers are the v2 job numbers.

use axum::extract::{Path, Query, State as StateExt};
use axum::routing::get;
use axum::{Json, Router};
use bosun_api::types as api;

use crate::State;
use crate::auth::{Access, Caller};
use crate::error::{AppError, AppResult};
use crate::jobs;
use crate::store::{BuildRow, JobStatus, Role};
use crate::util::rfc3339;

/// Builds in one v1.1 page by default, and at most (CircleCI's).
const DEFAULT_LIMIT: i64 = 30;
const MAX_LIMIT: i64 = 100;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v1.1/me", get(me))
        .route("/api/v1.1/projects", get(projects))
        .route("/api/v1.1/project/{vcs}/{org}/{repo}", get(builds))
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/{build_num}",
            get(build),
        )
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/{build_num}/artifacts",
            get(build_artifacts),
        )
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/{build_num}/tests",
            get(build_tests),
        )
}

async fn me(caller: Caller) -> Json<api::V1Me> {
    Json(api::V1Me {
        login: caller.user.login.clone(),
        name: caller.user.name.clone(),
        avatar_url: String::new(),
        admin: caller.role() == Role::Admin,
        id: caller.user.id.clone(),
    })
}

#[derive(serde::Deserialize)]
struct BuildsQuery {
    limit: Option<String>,
    offset: Option<String>,
    /// `completed`, `successful`, `failed` or `running`.
    filter: Option<String>,
}

/// A query number: `name` must be a whole number from 0 to `max`.
fn number(name: &str, value: Option<&str>, default: i64, max: i64) -> AppResult<i64> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.parse::<i64>() {
        Ok(n) if (0..=max).contains(&n) => Ok(n),
        _ => Err(AppError::bad_request(format!(
            "`{name}` must be a whole number from 0 to {max}"
        ))),
    }
}

/// `GET /api/v1.1/project/{vcs}/{org}/{repo}[?limit=&offset=&filter=]`: the project's builds
/// (jobs), newest first.
async fn builds(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    Query(query): Query<BuildsQuery>,
) -> AppResult<Json<Vec<serde_json::Value>>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let project = crate::pipelines::project_for(&state, &caller, &slug, Access::Read).await?;
    let limit = number("limit", query.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = number("offset", query.offset.as_deref(), 0, i64::MAX)?;
    use JobStatus::*;
    let statuses: Option<&[JobStatus]> = match query.filter.as_deref() {
        None | Some("") => None,
        Some("completed") => Some(&[
            Success,
            Failed,
            Canceled,
            InfrastructureFail,
            NotRun,
            Timedout,
        ]),
        Some("successful") => Some(&[Success]),
        Some("failed") => Some(&[Failed, InfrastructureFail, Timedout]),
        Some("running") => Some(&[Running]),
        Some(other) => {
            return Err(AppError::bad_request(format!(
                "filter `{}` is not one of completed, successful, failed, running",
                other.chars().take(50).collect::<String>()
            )));
        }
    };
    let rows = state
        .store
        .project_builds(&project.id, statuses, limit, offset)
        .await?;
    let base = state.api_url.get().cloned().unwrap_or_default();
    Ok(Json(
        rows.iter().map(|row| build_answer(&base, row)).collect(),
    ))
}

/// `GET /api/v1.1/project/{vcs}/{org}/{repo}/{build_num}`: one build (job).
async fn build(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<serde_json::Value>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let project = crate::pipelines::project_for(&state, &caller, &slug, Access::Read).await?;
    let missing = || AppError::not_found(format!("project {slug} has no build {number}"));
    let build_num = number.parse::<i64>().map_err(|_| missing())?;
    let row = state
        .store
        .project_build(&project.id, build_num)
        .await?
        .ok_or_else(missing)?;
    let base = state.api_url.get().cloned().unwrap_or_default();
    Ok(Json(build_answer(&base, &row)))
}

/// v1.1's `lifecycle`, `status` and `outcome` of a job status.
fn v1_states(status: JobStatus) -> (&'static str, &'static str, Option<&'static str>) {
    match status {
        JobStatus::Blocked | JobStatus::OnHold => ("not_running", "not_running", None),
        JobStatus::Queued => ("queued", "queued", None),
        JobStatus::Running => ("running", "running", None),
        JobStatus::NotRun => ("not_run", "not_run", None),
        ended => ("finished", ended.as_str(), Some(ended.as_str())),
    }
}

/// A build in v1.1's shape (CircleCI's "build summary" and build detail fields).
fn build_answer(base: &str, row: &BuildRow) -> serde_json::Value {
    let (lifecycle, status, outcome) = v1_states(row.status);
    let mut parts = row.slug.splitn(3, '/');
    let vcs = parts.next().unwrap_or_default();
    let org = parts.next().unwrap_or_default();
    let repo = parts.next().unwrap_or_default();
    let time = |ms: Option<i64>| ms.map(rfc3339);
    let millis = match (row.started_at, row.stopped_at) {
        (Some(started), Some(stopped)) => Some((stopped - started).max(0)),
        _ => None,
    };
    serde_json::json!({
        "build_num": row.number,
        "build_url": format!("{}/api/v2/job/{}", base.trim_end_matches('/'), row.id),
        "vcs_url": row.git_url,
        "vcs_type": crate::slug::vcs_type(vcs),
        "username": org,
        "reponame": repo,
        "branch": row.branch,
        "vcs_tag": row.tag,
        "vcs_revision": row.revision,
        "why": row.trigger_type,
        "user": {"login": row.actor},
        "lifecycle": lifecycle,
        "status": status,
        "outcome": outcome,
        "queued_at": rfc3339(row.created_at),
        "start_time": time(row.started_at),
        "stop_time": time(row.stopped_at),
        "build_time_millis": millis,
        "job_name": row.name,
        "workflows": {
            "job_name": row.name,
            "job_id": row.id,
            "workflow_id": row.workflow_id,
            "workflow_name": row.workflow_name,
        },
    })
}

/// The projects the caller reads: every one for admins and viewers, a member's given ones.
async fn projects(
    caller: Caller,
    StateExt(state): StateExt<State>,
) -> AppResult<Json<Vec<api::V1Project>>> {
    let member = (!caller.reads_all_projects()).then_some(caller.user.id.as_str());
    let rows = state.store.projects(member).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| {
                let mut parts = row.slug.splitn(3, '/');
                let vcs = parts.next().unwrap_or_default();
                let org = parts.next().unwrap_or_default();
                let repo = parts.next().unwrap_or_default();
                api::V1Project {
                    vcs_url: row.git_url.clone(),
                    vcs_type: crate::slug::vcs_type(vcs).to_owned(),
                    username: org.to_owned(),
                    reponame: repo.to_owned(),
                    following: true,
                    slug: row.slug.clone(),
                }
            })
            .collect(),
    ))
}

async fn build_artifacts(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<Vec<api::V1Artifact>>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let job_id = jobs::job_by_number(&state, &caller, &slug, &number, Access::Read).await?;
    let Json(list) = crate::artifacts::listing(&state, &job_id).await?;
    Ok(Json(
        list.items
            .into_iter()
            .map(|artifact| api::V1Artifact {
                pretty_path: artifact.path.clone(),
                path: artifact.path,
                node_index: artifact.node_index,
                url: artifact.url,
            })
            .collect(),
    ))
}

async fn build_tests(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::V1Tests>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let job_id = jobs::job_by_number(&state, &caller, &slug, &number, Access::Read).await?;
    let Json(list) = crate::test_results::listing(&state, &job_id).await?;
    Ok(Json(api::V1Tests {
        tests: list
            .items
            .into_iter()
            .map(|test| api::V1Test {
                classname: test.classname,
                name: test.name,
                file: test.file,
                result: test.result,
                run_time: test.run_time,
                message: test.message,
                source_type: test.source.clone(),
                source: test.source,
            })
            .collect(),
    }))
}
