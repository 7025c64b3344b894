//! Artifacts: `store_artifacts` uploads (task token) and CircleCI's artifact listing (admin).
//!
//! An upload's body is streamed into the blob store under `artifacts/<task id>/<artifact id>`,
//! a key made of ids the server chose: the job's path is only a column, so no path a job writes
//! can name another object. The listing answers in CircleCI's shape, each `url` a bosun URL that
//! downloads the bytes with the same admin token.

use axum::extract::{DefaultBodyLimit, Path, Query, State as StateExt};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use bosun_api::{Artifact, ArtifactList};
use serde::{Deserialize, Serialize};

use crate::State;
use crate::auth::{Access, Caller, TaskAuth};
use crate::blobs::{BlobError, BlobKey, Overwrite};
use crate::error::{AppError, AppResult};
use crate::jobs;
use crate::store::{ArtifactRow, Owned, TaskStatus};
use crate::util::{new_id, now_ms};

/// Largest artifact by default (`--max-artifact-size`).
pub const DEFAULT_MAX_ARTIFACT_SIZE: u64 = 10 << 30;
/// Most artifacts one task stores.
pub const MAX_ARTIFACTS_PER_TASK: i64 = 10_000;
/// Longest artifact path.
pub const MAX_ARTIFACT_PATH: usize = 1024;

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/api/v2/task/artifact",
            put(store_artifact).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v2/job/{id}/artifacts", get(job_artifacts))
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/{number}/artifacts",
            get(project_job_artifacts),
        )
        .route("/api/v2/artifact/{id}", get(download_artifact))
}

#[derive(Deserialize)]
struct StoreQuery {
    path: String,
}

/// The artifact path a job gave, checked: relative, no `.`/`..`/empty segments, bounded.
pub fn check_path(path: &str) -> Result<(), AppError> {
    if path.is_empty() || path.len() > MAX_ARTIFACT_PATH || path.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "an artifact path must be 1 to {MAX_ARTIFACT_PATH} bytes without control characters"
        )));
    }
    if path.starts_with('/')
        || path
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(AppError::bad_request(format!(
            "artifact path `{path}` must be relative, without empty, `.` or `..` segments"
        )));
    }
    Ok(())
}

#[derive(Serialize)]
struct Stored {
    id: String,
    path: String,
    size: u64,
}

async fn store_artifact(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Query(query): Query<StoreQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> AppResult<Json<Stored>> {
    if task.status != TaskStatus::Running {
        return Err(AppError::unauthorized("invalid bearer token"));
    }
    check_path(&query.path)?;
    let limit = state.max_artifact_size;
    let too_large = || {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "artifact `{}` is larger than the server's limit of {limit} bytes (--max-artifact-size)",
                query.path
            ),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit) {
        crate::util::drain_refused(body).await;
        return Err(too_large());
    }
    if state.store.artifact_count(&task.task_id).await? >= MAX_ARTIFACTS_PER_TASK {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a task stores at most {MAX_ARTIFACTS_PER_TASK} artifacts"),
        ));
    }
    let id = new_id();
    let key = BlobKey::new(["artifacts", task.task_id.as_str(), id.as_str()])
        .map_err(|err| anyhow::anyhow!("artifact key: {err}"))?;
    let stored = match state
        .blobs
        .put_stream(&key, body.into_data_stream(), limit, Overwrite::Refused)
        .await
    {
        Ok(stored) => stored,
        Err(BlobError::TooLarge { .. }) => return Err(too_large()),
        Err(BlobError::Body { source, .. }) => {
            return Err(AppError::bad_request(format!(
                "the artifact's body ended early: {source}"
            )));
        }
        Err(err) => {
            tracing::error!("storing artifact `{}`: {err}", query.path);
            return Err(AppError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the server could not store the artifact (its log has the details)",
            ));
        }
    };
    let sha256: String = stored.sha256.iter().map(|b| format!("{b:02x}")).collect();
    state
        .store
        .add_artifact(&ArtifactRow {
            id: id.clone(),
            task_id: task.task_id.clone(),
            job_id: task.job_id.clone(),
            node_index: i64::from(state.store.task_node(&task.task_id).await?),
            path: query.path.clone(),
            size: stored.size as i64,
            sha256,
            blob_key: key.as_str().to_owned(),
            created_at: now_ms(),
        })
        .await?;
    Ok(Json(Stored {
        id,
        path: query.path,
        size: stored.size,
    }))
}

pub(crate) async fn listing(state: &State, job_id: &str) -> AppResult<Json<ArtifactList>> {
    let base = state.api_url.get().cloned().unwrap_or_default();
    let items = state
        .store
        .job_artifacts(job_id, state.retention.artifacts_after(now_ms()))
        .await?
        .into_iter()
        .map(|row| Artifact {
            url: format!("{}/api/v2/artifact/{}", base.trim_end_matches('/'), row.id),
            path: row.path,
            node_index: row.node_index as u32,
            size: Some(row.size as u64),
        })
        .collect();
    Ok(Json(ArtifactList {
        items,
        next_page_token: None,
    }))
}

async fn job_artifacts(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<ArtifactList>> {
    if id.len() > 64 {
        return Err(AppError::not_found("no such job"));
    }
    caller
        .check_owned(&state, Owned::Job(&id), Access::Read)
        .await?;
    listing(&state, &id).await
}

async fn project_job_artifacts(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<ArtifactList>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let job_id = jobs::job_by_number(&state, &caller, &slug, &number, Access::Read).await?;
    listing(&state, &job_id).await
}

async fn download_artifact(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<impl IntoResponse> {
    caller
        .check_owned(&state, Owned::Artifact(&id), Access::Read)
        .await?;
    let alive_after = state.retention.artifacts_after(now_ms());
    let Some(row) = state.store.artifact(&id, alive_after).await? else {
        return Err(AppError::not_found(format!("no artifact {id}")));
    };
    let key =
        BlobKey::parse(&row.blob_key).map_err(|err| anyhow::anyhow!("artifact {id} key: {err}"))?;
    let download = state
        .blobs
        .get(&key, None)
        .await
        .map_err(|err| anyhow::anyhow!("reading artifact {id}: {err}"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, download.size.to_string()),
        ],
        axum::body::Body::from_stream(download.stream),
    ))
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn artifact_paths_are_relative_and_plain() {
        for ok in ["a", "out/sub/a b.txt", "x..y/z"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(1025);
        for bad in [
            "",
            "/abs",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            "a\nb",
            long.as_str(),
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
