//! Signed releases of the agents (issue 15): admins publish a release (`cargo xtask release`
//! writes it; `bosun release publish` uploads it) and promote a version for the fleet or for one
//! resource class (a canary); runners read the release meant for them and download its files.
//!
//! The server never vouches for a release: it keeps the manifest's exact text and the ed25519
//! signature over it, and agents verify both against keys they trust before they run a byte of
//! it. What the server checks is only that each uploaded file is the one the manifest lists
//! (size and SHA-256), so a broken upload is refused here rather than by every agent.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State as StateExt};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use bosun_api::{
    Items, PromoteRelease, Promotion, PublishRelease, ReleaseManifest, ReleaseSummary,
    RunnerRelease,
};
use serde::Deserialize;

use crate::State;
use crate::auth::{Admin, Runner};
use crate::blobs::{BlobError, BlobKey, Overwrite};
use crate::error::{AppError, AppResult};
use crate::store::{PromotionRow, Published, ReleaseFileRow, ReleaseRow};
use crate::util::{now_ms, rfc3339};

/// Largest manifest accepted.
const MAX_MANIFEST: usize = 64 << 10;
/// Largest release file (a static launch-agent is a few MiB; this leaves room for debug builds).
const MAX_RELEASE_FILE: u64 = 512 << 20;
/// The files a release carries per platform.
const FILE_NAMES: &[&str] = &["launch-agent", "task-agent"];

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v2/release", get(list))
        .route(
            "/api/v2/release/{version}",
            put(publish).layer(DefaultBodyLimit::max(2 * MAX_MANIFEST)),
        )
        .route(
            "/api/v2/release/{version}/{platform}/{name}",
            put(upload_file).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v2/release/promote", post(promote))
        .route("/api/v2/release/rollback", post(rollback))
        .route("/api/v3/runner/release", get(runner_release))
        .route(
            "/api/v3/runner/release/{version}/{platform}/{name}",
            get(download_file),
        )
}

/// A version as releases spell it ([`bosun_api::is_release_version`]).
fn check_version(version: &str) -> Result<(), AppError> {
    if !bosun_api::is_release_version(version) {
        return Err(AppError::bad_request(format!(
            "`{}` is not a release version like 1.2.3 or 1.2.3-rc.1",
            version.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// `linux-<arch>`, the arch in lowercase letters, digits and `_`.
fn check_platform(platform: &str) -> Result<(), AppError> {
    let ok = platform.len() <= 40
        && platform.strip_prefix("linux-").is_some_and(|arch| {
            !arch.is_empty()
                && arch
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if !ok {
        return Err(AppError::bad_request(format!(
            "`{}` is not a platform like linux-x86_64",
            platform.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

/// The manifest's files, checked: what the release will hold.
fn manifest_files(version: &str, text: &str) -> Result<Vec<ReleaseFileRow>, AppError> {
    let manifest: ReleaseManifest = serde_json::from_str(text)
        .map_err(|err| AppError::bad_request(format!("the manifest is not valid: {err}")))?;
    if manifest.version != version {
        return Err(AppError::bad_request(format!(
            "the manifest is of version `{}`, not `{version}`",
            manifest.version.chars().take(64).collect::<String>()
        )));
    }
    if manifest.platforms.is_empty() {
        return Err(AppError::bad_request("the manifest lists no platform"));
    }
    let mut files = Vec::new();
    for (platform, entry) in &manifest.platforms {
        check_platform(platform)?;
        for name in FILE_NAMES {
            if !entry.files.contains_key(*name) {
                return Err(AppError::bad_request(format!(
                    "the manifest's {platform} has no `{name}`"
                )));
            }
        }
        for (name, file) in &entry.files {
            if !FILE_NAMES.contains(&name.as_str()) {
                return Err(AppError::bad_request(format!(
                    "the manifest's {platform} lists `{}`: a release holds only {}",
                    name.chars().take(64).collect::<String>(),
                    FILE_NAMES.join(" and ")
                )));
            }
            let hex = file.sha256.len() == 64
                && file
                    .sha256
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
            if !hex {
                return Err(AppError::bad_request(format!(
                    "the manifest's {platform}/{name} sha256 is not 64 lowercase hex digits"
                )));
            }
            if file.size == 0 || file.size > MAX_RELEASE_FILE {
                return Err(AppError::bad_request(format!(
                    "the manifest's {platform}/{name} size must be 1 to {MAX_RELEASE_FILE} bytes"
                )));
            }
            files.push(ReleaseFileRow {
                platform: platform.clone(),
                name: name.clone(),
                size: file.size as i64,
                sha256: file.sha256.clone(),
                uploaded: false,
            });
        }
    }
    Ok(files)
}

async fn summary(state: &State, row: &ReleaseRow) -> AppResult<ReleaseSummary> {
    let files = state.store.release_files(&row.version).await?;
    let promotions = state.store.promotions().await?;
    let mut platforms: Vec<String> = files.iter().map(|f| f.platform.clone()).collect();
    platforms.dedup();
    Ok(ReleaseSummary {
        version: row.version.clone(),
        created_at: rfc3339(row.created_at),
        complete: files.iter().all(|f| f.uploaded),
        platforms,
        promoted: promotions
            .iter()
            .filter(|p| p.version == row.version)
            .map(|p| scope_name(&p.scope))
            .collect(),
    })
}

/// [`summary`] of a release known to exist.
async fn summary_of(state: &State, version: &str) -> AppResult<ReleaseSummary> {
    let row = state
        .store
        .release(version)
        .await?
        .ok_or_else(|| anyhow::anyhow!("release {version} vanished"))?;
    summary(state, &row).await
}

fn scope_name(scope: &str) -> String {
    if scope.is_empty() {
        "fleet".to_owned()
    } else {
        scope.to_owned()
    }
}

async fn publish(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path(version): Path<String>,
    Json(body): Json<PublishRelease>,
) -> AppResult<Json<ReleaseSummary>> {
    check_version(&version)?;
    if body.manifest.len() > MAX_MANIFEST {
        return Err(AppError::bad_request(format!(
            "the manifest is larger than {MAX_MANIFEST} bytes"
        )));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(body.signature.trim())
        .ok()
        .filter(|bytes| bytes.len() == 64)
        .ok_or_else(|| {
            AppError::bad_request(
                "`signature` must be the 64 bytes of an ed25519 signature, base64",
            )
        })?;
    let files = manifest_files(&version, &body.manifest)?;
    let row = ReleaseRow {
        version: version.clone(),
        manifest: body.manifest,
        signature,
        created_at: now_ms(),
    };
    match state.store.insert_release(&row, &files).await? {
        Published::New => tracing::info!(version, "release published"),
        Published::Again => {}
        Published::Conflict => {
            return Err(AppError::conflict(format!(
                "release {version} is already published with another manifest: published releases never change"
            )));
        }
    }
    Ok(Json(summary_of(&state, &version).await?))
}

fn file_key(version: &str, platform: &str, name: &str) -> Result<BlobKey, AppError> {
    BlobKey::new(["releases", version, platform, name])
        .map_err(|err| anyhow::anyhow!("release file key: {err}").into())
}

/// The manifest's entry for the file, if the release lists it.
async fn listed_file(
    state: &State,
    version: &str,
    platform: &str,
    name: &str,
) -> AppResult<ReleaseFileRow> {
    check_version(version)?;
    check_platform(platform)?;
    let missing = || AppError::not_found(format!("release {version} has no {platform}/{name}"));
    if state.store.release(version).await?.is_none() {
        return Err(AppError::not_found(format!("no release {version}")));
    }
    state
        .store
        .release_files(version)
        .await?
        .into_iter()
        .find(|f| f.platform == platform && f.name == name)
        .ok_or_else(missing)
}

async fn upload_file(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path((version, platform, name)): Path<(String, String, String)>,
    body: Body,
) -> AppResult<Json<ReleaseSummary>> {
    let file = listed_file(&state, &version, &platform, &name).await?;
    if !file.uploaded {
        let key = file_key(&version, &platform, &name)?;
        let stored = match state
            .blobs
            .put_stream(
                &key,
                body.into_data_stream(),
                file.size as u64,
                Overwrite::Allowed,
            )
            .await
        {
            Ok(stored) => stored,
            Err(BlobError::TooLarge { .. }) => {
                return Err(AppError::bad_request(format!(
                    "{platform}/{name} is larger than the manifest's {} bytes",
                    file.size
                )));
            }
            Err(BlobError::Body { source, .. }) => {
                return Err(AppError::bad_request(format!(
                    "the upload of {platform}/{name} ended early: {source}"
                )));
            }
            Err(err) => return Err(anyhow::anyhow!("storing release file {key}: {err}").into()),
        };
        let sha256: String = stored.sha256.iter().map(|b| format!("{b:02x}")).collect();
        if stored.size != file.size as u64 || sha256 != file.sha256 {
            let _ = state.blobs.delete(&key).await;
            return Err(AppError::bad_request(format!(
                "{platform}/{name} is not the manifest's file: {} bytes with SHA-256 {sha256}, the manifest lists {} bytes with {}",
                stored.size, file.size, file.sha256
            )));
        }
        state
            .store
            .mark_release_file_uploaded(&version, &platform, &name)
            .await?;
    } else {
        crate::util::drain_refused(body).await;
    }
    Ok(Json(summary_of(&state, &version).await?))
}

async fn list(
    _: Admin,
    StateExt(state): StateExt<State>,
) -> AppResult<Json<Items<ReleaseSummary>>> {
    let mut items = Vec::new();
    for row in state.store.releases().await? {
        items.push(summary(&state, &row).await?);
    }
    Ok(Json(Items::all(items)))
}

/// The scope a promote or rollback names: `""` (the fleet) or an existing resource class.
async fn scope_of(state: &State, request: &PromoteRelease) -> AppResult<String> {
    match &request.resource_class {
        None => Ok(String::new()),
        Some(class) => {
            if class.len() > 256 || !state.store.resource_class_exists(class).await? {
                return Err(AppError::not_found(format!(
                    "no resource class `{}`",
                    class.chars().take(256).collect::<String>()
                )));
            }
            Ok(class.clone())
        }
    }
}

fn promotion(row: PromotionRow) -> Promotion {
    Promotion {
        scope: scope_name(&row.scope),
        version: row.version,
        previous: row.previous,
        rollback: row.rollback,
    }
}

async fn promote(
    _: Admin,
    StateExt(state): StateExt<State>,
    Json(body): Json<PromoteRelease>,
) -> AppResult<Json<Promotion>> {
    let Some(version) = body.version.as_deref() else {
        return Err(AppError::bad_request("`version` is required"));
    };
    check_version(version)?;
    let scope = scope_of(&state, &body).await?;
    let Some(row) = state.store.release(version).await? else {
        return Err(AppError::not_found(format!("no release {version}")));
    };
    if !summary(&state, &row).await?.complete {
        return Err(AppError::conflict(format!(
            "release {version} is not complete: upload all of its files first (bosun release publish)"
        )));
    }
    let promoted = state
        .store
        .promote(&scope, version, false, now_ms())
        .await?;
    tracing::info!(version, scope = %scope_name(&scope), "release promoted");
    state.promoted.notify_waiters();
    Ok(Json(promotion(promoted)))
}

async fn rollback(
    _: Admin,
    StateExt(state): StateExt<State>,
    Json(body): Json<PromoteRelease>,
) -> AppResult<Json<Promotion>> {
    let scope = scope_of(&state, &body).await?;
    let current = state
        .store
        .promotions()
        .await?
        .into_iter()
        .find(|p| p.scope == scope);
    let Some(previous) = current.and_then(|p| p.previous) else {
        return Err(AppError::conflict(format!(
            "{} has no earlier version to roll back to",
            scope_name(&scope)
        )));
    };
    let promoted = state
        .store
        .promote(&scope, &previous, true, now_ms())
        .await?;
    tracing::info!(version = %previous, scope = %scope_name(&scope), "release rolled back");
    state.promoted.notify_waiters();
    Ok(Json(promotion(promoted)))
}

/// The promotion that applies to `resource_class`: its own, else the fleet's.
pub(crate) async fn promotion_for(
    state: &State,
    resource_class: &str,
) -> AppResult<Option<PromotionRow>> {
    let promotions = state.store.promotions().await?;
    let own = promotions.iter().find(|p| p.scope == resource_class);
    let fleet = promotions.iter().find(|p| p.scope.is_empty());
    Ok(own.or(fleet).cloned())
}

#[derive(Deserialize)]
struct ReleaseQuery {
    os: String,
    arch: String,
    version: Option<String>,
}

/// `GET /api/v3/runner/release?os=&arch=[&version=]`: the release promoted for the runner's
/// resource class (or `version`), for its platform; 404 when there is none.
async fn runner_release(
    runner: Runner,
    StateExt(state): StateExt<State>,
    Query(query): Query<ReleaseQuery>,
) -> AppResult<Json<RunnerRelease>> {
    let platform = format!("{}-{}", query.os, query.arch);
    check_platform(&platform)?;
    let promoted = promotion_for(&state, &runner.resource_class).await?;
    let (version, rollback) = match (&query.version, &promoted) {
        (Some(version), promoted) => {
            check_version(version)?;
            let rollback = promoted
                .as_ref()
                .is_some_and(|p| p.version == *version && p.rollback);
            (version.clone(), rollback)
        }
        (None, Some(promoted)) => (promoted.version.clone(), promoted.rollback),
        (None, None) => {
            return Err(AppError::not_found(format!(
                "no release is promoted for {}",
                runner.resource_class
            )));
        }
    };
    let Some(row) = state.store.release(&version).await? else {
        return Err(AppError::not_found(format!("no release {version}")));
    };
    let files: Vec<ReleaseFileRow> = state
        .store
        .release_files(&version)
        .await?
        .into_iter()
        .filter(|f| f.platform == platform)
        .collect();
    if files.is_empty() || files.iter().any(|f| !f.uploaded) {
        return Err(AppError::not_found(format!(
            "release {version} has no complete {platform} build"
        )));
    }
    Ok(Json(RunnerRelease {
        version: version.clone(),
        manifest: row.manifest,
        signature: base64::engine::general_purpose::STANDARD.encode(&row.signature),
        rollback,
        files: files
            .into_iter()
            .map(|f| {
                let url = format!("/api/v3/runner/release/{version}/{platform}/{}", f.name);
                (f.name, url)
            })
            .collect(),
    }))
}

async fn download_file(
    _: Runner,
    StateExt(state): StateExt<State>,
    Path((version, platform, name)): Path<(String, String, String)>,
) -> AppResult<impl IntoResponse> {
    let file = listed_file(&state, &version, &platform, &name).await?;
    if !file.uploaded {
        return Err(AppError::not_found(format!(
            "release {version}'s {platform}/{name} is not uploaded"
        )));
    }
    let key = file_key(&version, &platform, &name)?;
    let download = state
        .blobs
        .get(&key, None)
        .await
        .map_err(|err| anyhow::anyhow!("reading release file {key}: {err}"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, download.size.to_string()),
        ],
        Body::from_stream(download.stream),
    ))
}
