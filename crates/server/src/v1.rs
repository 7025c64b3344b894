//! The API v1.1 routes CircleCI's clients still call for what v2 lacks: `GET /api/v1.1/me`,
//! `GET /api/v1.1/projects`, and a build's (job's) artifacts and tests by its number. Project
//! env vars and checkout keys under v1.1 live with their v2 routes (`project_secrets.rs`).
//!
//! v1.1 calls a job a build and its number `build_num`; the numbers are the v2 job numbers.

use axum::extract::{Path, State as StateExt};
use axum::routing::get;
use axum::{Json, Router};
use bosun_api::types as api;

use crate::State;
use crate::auth::{Access, Caller};
use crate::error::AppResult;
use crate::jobs;
use crate::store::Role;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v1.1/me", get(me))
        .route("/api/v1.1/projects", get(projects))
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

/// v1.1's name of a slug's VCS: `github`, `bitbucket`, else the prefix as it is.
fn vcs_type(vcs: &str) -> &str {
    match vcs {
        "gh" | "github" => "github",
        "bb" | "bitbucket" => "bitbucket",
        "gl" | "gitlab" => "gitlab",
        other => other,
    }
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
                    vcs_type: vcs_type(vcs).to_owned(),
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
