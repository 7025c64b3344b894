//! Caches: `save_cache` uploads and `restore_cache` downloads (task token), and the admin
//! listing and deletion behind `bosun cache list|delete`.
//!
//! A cache belongs to the project of the task's pipeline. Its bytes go through `put_stream` into
//! `caches/<project id>/<cache id>`, ids the server made: the job's key is only a column, so no
//! key names another object. A key is saved once and never overwritten: a save of a key that
//! exists is answered 409 before the body is read (the agent stops sending), and of two
//! concurrent saves the unique index lets one row in; the other's blob is deleted and it gets
//! 409. A restore names up to [`MAX_RESTORE_KEYS`] prefixes; for the first that matches any live
//! cache the most recent one is streamed, its key in [`bosun_api::CACHE_KEY_HEADER`].

use axum::extract::{DefaultBodyLimit, Path, RawQuery, State as StateExt};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use bosun_api::{CACHE_KEY_HEADER, CacheDeleted, CacheEntry, CacheList, StoredBlob};

use crate::State;
use crate::auth::{Access, Caller, TaskAuth};
use crate::blobs::{BlobError, BlobKey, Overwrite, Stored};
use crate::error::{AppError, AppResult};
use crate::retention::{delete_object, millis};
use crate::store::{CacheInsert, CacheRow, JobScope, TaskStatus};
use crate::util::{new_id, now_ms, rfc3339};

/// Longest cache key, and longest restore prefix, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Most prefixes one restore tries.
pub const MAX_RESTORE_KEYS: usize = 64;
/// Most caches one listing answers (newest first).
pub const MAX_LISTED: i64 = 10_000;
/// Caches deleted per page of an admin deletion.
const DELETE_PAGE: i64 = 500;

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/api/v2/task/cache",
            put(save_cache)
                .get(restore_cache)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/cache",
            get(list_caches).delete(delete_caches),
        )
}

/// A cache key (`what` = "cache key") or restore prefix as the job rendered it, checked:
/// at most [`MAX_KEY_LEN`] bytes, no control characters, and not empty unless `may_be_empty`.
pub fn check_key(key: &str, what: &str, may_be_empty: bool) -> Result<(), AppError> {
    if (key.is_empty() && !may_be_empty)
        || key.len() > MAX_KEY_LEN
        || key.chars().any(char::is_control)
    {
        let low = if may_be_empty { 0 } else { 1 };
        return Err(AppError::bad_request(format!(
            "a {what} must be {low} to {MAX_KEY_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// The running task's project and workflow; a task that does not run (any more) may not touch
/// them.
pub async fn running_scope(state: &State, task: &TaskAuth) -> AppResult<JobScope> {
    if task.status != TaskStatus::Running {
        return Err(AppError::unauthorized("invalid bearer token"));
    }
    state
        .store
        .job_scope(&task.job_id)
        .await?
        .ok_or_else(|| AppError::not_found("the task's job is gone"))
}

/// The `Content-Length` a request announced, if it did.
fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
}

fn too_large(what: &str, limit: u64) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{what} is larger than the server's limit of {limit} bytes (--max-archive-size)"),
    )
}

/// Streams an archive's body into `key`, bounded by `--max-archive-size` (refused at once when
/// its `Content-Length` says it is over). `what` names it in errors.
pub async fn store_archive(
    state: &State,
    what: &str,
    key: &BlobKey,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> AppResult<Stored> {
    let limit = state.max_archive_size;
    if announced_length(headers).is_some_and(|length| length > limit) {
        crate::util::drain_refused(body).await;
        return Err(too_large(what, limit));
    }
    match state
        .blobs
        .put_stream(key, body.into_data_stream(), limit, Overwrite::Refused)
        .await
    {
        Ok(stored) => Ok(stored),
        Err(BlobError::TooLarge { .. }) => Err(too_large(what, limit)),
        Err(BlobError::Body { source, .. }) => Err(AppError::bad_request(format!(
            "the body of {what} ended early: {source}"
        ))),
        Err(err) => {
            tracing::error!("storing {what}: {err}");
            Err(AppError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("the server could not store {what} (its log has the details)"),
            ))
        }
    }
}

pub fn hex(sha256: &[u8; 32]) -> String {
    sha256.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one value of parameter `name` of a raw query (missing: the empty string), or 400 naming
/// it when it is given more than once. Read by hand, so that a malformed query is answered with
/// `{"message"}` as every other error.
fn single_value(raw: Option<&str>, name: &str) -> AppResult<String> {
    let mut values = query_values(raw, name);
    if values.len() > 1 {
        return Err(AppError::bad_request(format!(
            "query parameter `{name}` is given more than once"
        )));
    }
    Ok(values.pop().unwrap_or_default())
}

fn exists(key: &str) -> AppError {
    AppError::conflict(format!(
        "cache key `{key}` exists: a cache is never overwritten"
    ))
}

async fn save_cache(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> AppResult<Json<StoredBlob>> {
    let scope = running_scope(&state, &task).await?;
    if raw
        .as_ref()
        .is_some_and(|raw| raw.len() > 3 * MAX_KEY_LEN + 64)
    {
        return Err(AppError::bad_request("the query is too long"));
    }
    let key = single_value(raw.as_deref(), "key")?;
    check_key(&key, "cache key", false)?;
    let alive_after = state.retention.caches_after(now_ms());
    // Before a byte of the body is read: the agent stops sending on this answer.
    if state
        .store
        .cache_exists(&scope.project_id, &key, alive_after)
        .await?
    {
        return Err(exists(&key));
    }
    let id = new_id();
    let blob_key = BlobKey::new(["caches", scope.project_id.as_str(), id.as_str()])
        .map_err(|err| anyhow::anyhow!("cache blob key: {err}"))?;
    let what = format!("cache `{}`", key);
    let stored = store_archive(&state, &what, &blob_key, &headers, body).await?;
    let row = CacheRow {
        id,
        project_id: scope.project_id,
        key: key.clone(),
        size: stored.size as i64,
        sha256: hex(&stored.sha256),
        blob_key: blob_key.as_str().to_owned(),
        job_id: task.job_id.clone(),
        task_id: task.task_id.clone(),
        created_at: now_ms(),
        last_used_at: None,
    };
    let inserted = state
        .store
        .add_cache(&row, state.retention.caches_after(now_ms()))
        .await;
    let inserted = match inserted {
        Ok(inserted) => inserted,
        Err(err) => {
            discard(&state, &blob_key).await;
            return Err(err.into());
        }
    };
    match inserted {
        CacheInsert::Exists => {
            // A concurrent save of the same key won the race.
            discard(&state, &blob_key).await;
            Err(exists(&key))
        }
        CacheInsert::Inserted { replaced } => {
            if let Some(replaced) = replaced.and_then(|key| BlobKey::parse(&key).ok()) {
                discard(&state, &replaced).await;
            }
            Ok(Json(StoredBlob {
                key,
                size: stored.size,
            }))
        }
    }
}

/// Deletes a blob no row names (any more); a failure is only logged: the blob is an orphan.
async fn discard(state: &State, key: &BlobKey) {
    if let Err(err) = state.blobs.delete(key).await {
        tracing::warn!("deleting the unused blob {key}: {err}");
    }
}

/// The values of every `name` parameter of a raw query, in order, decoded.
pub fn query_values(raw: Option<&str>, name: &str) -> Vec<String> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .collect()
}

async fn restore_cache(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    RawQuery(raw): RawQuery,
) -> AppResult<Response> {
    let scope = running_scope(&state, &task).await?;
    // Bounded before decoding: 64 prefixes of 512 bytes, percent-encoded, fit in this.
    if raw
        .as_ref()
        .is_some_and(|raw| raw.len() > 3 * MAX_KEY_LEN * MAX_RESTORE_KEYS + 1024)
    {
        return Err(AppError::bad_request("the query is too long"));
    }
    let prefixes = query_values(raw.as_deref(), "key");
    if prefixes.is_empty() || prefixes.len() > MAX_RESTORE_KEYS {
        return Err(AppError::bad_request(format!(
            "a restore names 1 to {MAX_RESTORE_KEYS} keys (`?key=a&key=b`)"
        )));
    }
    for prefix in &prefixes {
        check_key(prefix, "restore key", true)?;
    }
    let alive_after = state.retention.caches_after(now_ms());
    for prefix in &prefixes {
        let Some(row) = state
            .store
            .latest_cache_with_prefix(&scope.project_id, prefix, alive_after)
            .await?
        else {
            continue;
        };
        let key = BlobKey::parse(&row.blob_key)
            .map_err(|err| anyhow::anyhow!("cache {} blob key: {err}", row.id))?;
        let download = match state.blobs.get(&key, None).await {
            Ok(download) => download,
            // The sweep or an admin deleted it in between: as if it had not matched.
            Err(BlobError::NotFound { .. }) => continue,
            Err(err) => return Err(anyhow::anyhow!("reading cache {}: {err}", row.id).into()),
        };
        state.store.touch_cache(&row.id, now_ms()).await?;
        let matched = HeaderValue::from_str(&bosun_api::encode_component(&row.key))
            .map_err(|err| anyhow::anyhow!("cache key header: {err}"))?;
        let mut response = axum::body::Body::from_stream(download.stream).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/zstd"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(download.size));
        headers.insert(CACHE_KEY_HEADER, matched);
        return Ok(response);
    }
    Err(AppError::not_found(
        "no cache of this project has a key starting with any of the given keys",
    ))
}

/// The project of `vcs/org/repo` if `caller` may `access` it; 403 or 404.
async fn project_id(
    state: &State,
    caller: &Caller,
    vcs: &str,
    org: &str,
    repo: &str,
    access: Access,
) -> AppResult<String> {
    let slug = format!("{vcs}/{org}/{repo}");
    let project = crate::pipelines::project_for(state, caller, &slug, access).await?;
    Ok(project.id)
}

async fn list_caches(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo)): Path<(String, String, String)>,
) -> AppResult<Json<CacheList>> {
    let project_id = project_id(&state, &caller, &vcs, &org, &repo, Access::Read).await?;
    let keep = millis(state.retention.caches);
    let rows = state
        .store
        .project_caches(
            &project_id,
            state.retention.caches_after(now_ms()),
            MAX_LISTED,
        )
        .await?;
    Ok(Json(CacheList {
        items: rows
            .into_iter()
            .map(|row| CacheEntry {
                key: row.key,
                size: row.size.max(0) as u64,
                created_at: rfc3339(row.created_at),
                job_id: row.job_id,
                expires_at: rfc3339(row.created_at.saturating_add(keep)),
            })
            .collect(),
        next_page_token: None,
    }))
}

async fn delete_caches(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> AppResult<Json<CacheDeleted>> {
    if raw
        .as_ref()
        .is_some_and(|raw| raw.len() > 3 * MAX_KEY_LEN + 64)
    {
        return Err(AppError::bad_request("the query is too long"));
    }
    let prefix = single_value(raw.as_deref(), "prefix")?;
    check_key(&prefix, "key prefix", true)?;
    let project_id = project_id(&state, &caller, &vcs, &org, &repo, Access::Write).await?;
    let (mut deleted, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    let mut after: Option<String> = None;
    loop {
        let page = state
            .store
            .caches_with_prefix(&project_id, &prefix, after.as_deref(), DELETE_PAGE)
            .await?;
        let full = page.len() as i64 == DELETE_PAGE;
        for row in &page {
            match delete_object(
                &state.blobs,
                &row.blob_key,
                state.store.delete_cache(&row.id),
            )
            .await
            {
                Ok(true) => {
                    deleted += 1;
                    bytes += row.size.max(0) as u64;
                }
                // A concurrent deletion (the sweep, another admin) took it.
                Ok(false) => {}
                Err(err) => {
                    tracing::error!("deleting cache {} (`{}`): {err}", row.id, row.key);
                    failed += 1;
                }
            }
        }
        if !full {
            break;
        }
        after = page.last().map(|row| row.key.clone());
    }
    if failed > 0 {
        return Err(AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "deleted {deleted} cache(s) ({bytes} bytes); {failed} could not be deleted (the server's log has the details)"
            ),
        ));
    }
    Ok(Json(CacheDeleted { deleted, bytes }))
}
