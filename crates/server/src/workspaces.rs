//! Workspaces: `persist_to_workspace` uploads layers, `attach_workspace` reads the manifest of
//! the layers upstream of its job and downloads each (task token).
//!
//! A layer is one persist of one job, stored under `workspaces/<workflow id>/<layer id>` (ids
//! the server made). A job's manifest ([`manifest`]) holds the layers of every job it requires,
//! directly or transitively, in dependency order; a layer is downloaded only through the
//! manifest of the task asking, so no task reads another workflow's layers, or those of a job
//! it does not require.

use std::collections::{BTreeSet, HashMap};

use axum::extract::{DefaultBodyLimit, Path, State as StateExt};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use bosun_api::StoredBlob;
use bosun_api::task::{WorkspaceLayer, WorkspaceManifest};

use crate::State;
use crate::auth::TaskAuth;
use crate::blobs::{BlobError, BlobKey};
use crate::caches::{hex, running_scope, store_archive};
use crate::error::{AppError, AppResult};
use crate::store::{JobListRow, LayerRow};
use crate::util::{new_id, now_ms};

/// Most layers one job persists.
pub const MAX_LAYERS_PER_JOB: i64 = 1000;

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/api/v2/task/workspace",
            put(persist_layer)
                .get(workspace_manifest)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v2/task/workspace/{layer}", get(download_layer))
}

/// A workflow job as the manifest needs it.
#[derive(Debug, Clone)]
pub struct WorkflowJob {
    pub id: String,
    pub name: String,
    /// The names of the jobs it requires directly.
    pub requires: Vec<String>,
}

impl From<&JobListRow> for WorkflowJob {
    fn from(row: &JobListRow) -> WorkflowJob {
        WorkflowJob {
            id: row.id.clone(),
            name: row.name.clone(),
            requires: serde_json::from_str(&row.requires).unwrap_or_default(),
        }
    }
}

/// Every job `index` requires, directly or transitively (never itself, even in a cycle, which
/// compiled workflows do not have).
fn upstream(
    index: usize,
    jobs: &[WorkflowJob],
    by_name: &HashMap<&str, Vec<usize>>,
    memo: &mut HashMap<usize, BTreeSet<usize>>,
    visiting: &mut BTreeSet<usize>,
) -> BTreeSet<usize> {
    if let Some(done) = memo.get(&index) {
        return done.clone();
    }
    let mut all = BTreeSet::new();
    if !visiting.insert(index) {
        return all;
    }
    for name in &jobs[index].requires {
        for &required in by_name.get(name.as_str()).into_iter().flatten() {
            if required == index || visiting.contains(&required) {
                continue;
            }
            all.insert(required);
            all.extend(upstream(required, jobs, by_name, memo, visiting));
        }
    }
    visiting.remove(&index);
    all.remove(&index);
    memo.insert(index, all.clone());
    all
}

/// The manifest of job `job_id` of a workflow of `jobs`, from the workflow's live `layers`:
/// the layers of every job it requires directly or transitively, each job's layers together
/// and in the order it stored them (`seq`), a job after every job of the manifest it requires,
/// and of the jobs ready at once the one whose first layer was stored first. Its own layers
/// are not in it. Answers each entry with its row (the blob to read).
pub fn manifest(
    job_id: &str,
    jobs: &[WorkflowJob],
    layers: Vec<LayerRow>,
) -> Vec<(WorkspaceLayer, LayerRow)> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        by_name.entry(job.name.as_str()).or_default().push(index);
    }
    let Some(own) = jobs.iter().position(|job| job.id == job_id) else {
        return Vec::new();
    };
    let mut memo = HashMap::new();
    let mut visiting = BTreeSet::new();
    let wanted = upstream(own, jobs, &by_name, &mut memo, &mut visiting);
    let index_of: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(index, job)| (job.id.as_str(), index))
        .collect();
    // The layers of each wanted job, in the order it stored them.
    let mut of_job: HashMap<usize, Vec<LayerRow>> = HashMap::new();
    for layer in layers {
        if let Some(&index) = index_of.get(layer.job_id.as_str()) {
            if wanted.contains(&index) {
                of_job.entry(index).or_default().push(layer);
            }
        }
    }
    for stored in of_job.values_mut() {
        stored.sort_by(|a, b| (a.seq, a.created_at, &a.id).cmp(&(b.seq, b.created_at, &b.id)));
    }
    // Jobs with layers, by when their first layer was stored.
    let mut pending: Vec<usize> = of_job.keys().copied().collect();
    let first = |index: &usize| {
        let layer = &of_job[index][0];
        (layer.created_at, layer.id.clone())
    };
    pending.sort_by_key(first);
    let with_layers: BTreeSet<usize> = pending.iter().copied().collect();
    let mut needs: HashMap<usize, BTreeSet<usize>> = HashMap::new();
    for &index in &pending {
        let required = upstream(index, jobs, &by_name, &mut memo, &mut visiting);
        needs.insert(
            index,
            required.intersection(&with_layers).copied().collect(),
        );
    }
    let mut order: Vec<usize> = Vec::with_capacity(pending.len());
    let mut placed: BTreeSet<usize> = BTreeSet::new();
    while !pending.is_empty() {
        // The first pending job whose requirements are placed; in a cycle (which compiled
        // workflows do not have) the first pending job, so the loop always ends.
        let next = pending
            .iter()
            .position(|index| needs[index].is_subset(&placed))
            .unwrap_or(0);
        let index = pending.remove(next);
        placed.insert(index);
        order.push(index);
    }
    let position: HashMap<usize, usize> = order
        .iter()
        .enumerate()
        .map(|(at, &index)| (index, at))
        .collect();
    let mut out = Vec::new();
    for index in order {
        let mut requires: Vec<usize> = needs[&index].iter().copied().collect();
        requires.sort_by_key(|required| position[required]);
        let requires: Vec<String> = requires
            .into_iter()
            .map(|required| jobs[required].name.clone())
            .collect();
        for layer in of_job.remove(&index).unwrap_or_default() {
            out.push((
                WorkspaceLayer {
                    id: layer.id.clone(),
                    job_name: jobs[index].name.clone(),
                    job_id: layer.job_id.clone(),
                    size: layer.size.max(0) as u64,
                    requires: requires.clone(),
                },
                layer,
            ));
        }
    }
    out
}

/// The manifest of a running task's job.
async fn task_manifest(
    state: &State,
    task: &TaskAuth,
) -> AppResult<Vec<(WorkspaceLayer, LayerRow)>> {
    let scope = running_scope(state, task).await?;
    let jobs: Vec<WorkflowJob> = state
        .store
        .jobs_of_workflow(&scope.workflow_id)
        .await?
        .iter()
        .map(WorkflowJob::from)
        .collect();
    let layers = state
        .store
        .workflow_layers(
            &scope.workflow_id,
            state.retention.workspaces_after(now_ms()),
        )
        .await?;
    Ok(manifest(&task.job_id, &jobs, layers))
}

async fn persist_layer(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> AppResult<Json<StoredBlob>> {
    let scope = running_scope(&state, &task).await?;
    if state.store.job_layer_count(&task.job_id).await? >= MAX_LAYERS_PER_JOB {
        return Err(AppError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("a job persists at most {MAX_LAYERS_PER_JOB} workspace layers"),
        ));
    }
    let id = new_id();
    let blob_key = BlobKey::new(["workspaces", scope.workflow_id.as_str(), id.as_str()])
        .map_err(|err| anyhow::anyhow!("workspace blob key: {err}"))?;
    let stored = store_archive(&state, "the workspace layer", &blob_key, &headers, body).await?;
    let row = LayerRow {
        id: id.clone(),
        workflow_id: scope.workflow_id,
        job_id: task.job_id.clone(),
        task_id: task.task_id.clone(),
        seq: 0,
        size: stored.size as i64,
        sha256: hex(&stored.sha256),
        blob_key: blob_key.as_str().to_owned(),
        created_at: now_ms(),
    };
    if let Err(err) = state.store.add_workspace_layer(&row).await {
        if let Err(err) = state.blobs.delete(&blob_key).await {
            tracing::warn!("deleting the unused blob {blob_key}: {err}");
        }
        return Err(err.into());
    }
    Ok(Json(StoredBlob {
        key: id,
        size: stored.size,
    }))
}

async fn workspace_manifest(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
) -> AppResult<Json<WorkspaceManifest>> {
    let layers = task_manifest(&state, &task).await?;
    Ok(Json(WorkspaceManifest {
        layers: layers.into_iter().map(|(layer, _)| layer).collect(),
    }))
}

async fn download_layer(
    task: TaskAuth,
    StateExt(state): StateExt<State>,
    Path(layer): Path<String>,
) -> AppResult<Response> {
    let gone = || {
        AppError::not_found(format!(
            "workspace layer {layer} is not upstream of this job or has expired"
        ))
    };
    if layer.len() > 64 {
        return Err(gone());
    }
    let layers = task_manifest(&state, &task).await?;
    let Some((_, row)) = layers.into_iter().find(|(entry, _)| entry.id == layer) else {
        return Err(gone());
    };
    let key = BlobKey::parse(&row.blob_key)
        .map_err(|err| anyhow::anyhow!("workspace layer {layer} key: {err}"))?;
    let download = match state.blobs.get(&key, None).await {
        Ok(download) => download,
        Err(BlobError::NotFound { .. }) => return Err(gone()),
        Err(err) => return Err(anyhow::anyhow!("reading workspace layer {layer}: {err}").into()),
    };
    let mut response = axum::body::Body::from_stream(download.stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zstd"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(download.size));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(spec: &[(&str, &[&str])]) -> Vec<WorkflowJob> {
        spec.iter()
            .map(|(name, requires)| WorkflowJob {
                id: format!("id-{name}"),
                name: name.to_string(),
                requires: requires.iter().map(|r| r.to_string()).collect(),
            })
            .collect()
    }

    fn layer(id: &str, job: &str, seq: i64, created_at: i64) -> LayerRow {
        LayerRow {
            id: id.to_owned(),
            workflow_id: "w".into(),
            job_id: format!("id-{job}"),
            task_id: "t".into(),
            seq,
            size: 1,
            sha256: "00".into(),
            blob_key: format!("workspaces/w/{id}"),
            created_at,
        }
    }

    fn order(job: &str, jobs: &[WorkflowJob], layers: &[LayerRow]) -> Vec<(String, Vec<String>)> {
        manifest(&format!("id-{job}"), jobs, layers.to_vec())
            .into_iter()
            .map(|(entry, row)| {
                assert_eq!(entry.id, row.id);
                assert_eq!(entry.job_id, row.job_id);
                (entry.id, entry.requires)
            })
            .collect()
    }

    fn owned(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(id, requires)| {
                (
                    id.to_string(),
                    requires.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_diamond_applies_in_dependency_order_with_transitive_requires() {
        // a -> (b, c) -> d -> e; x stands apart.
        let jobs = jobs(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &["b", "c"]),
            ("e", &["d"]),
            ("x", &[]),
        ]);
        // c's first layer was stored before b's; a stored two, the second in the same
        // millisecond as the first; d stored one whose clock reads earlier than its upstream's
        // (a clock stepped back): dependency order still wins.
        let layers = [
            layer("a1", "a", 1, 10),
            layer("a2", "a", 2, 10),
            layer("c1", "c", 1, 20),
            layer("b1", "b", 1, 21),
            layer("c2", "c", 2, 22),
            layer("d1", "d", 1, 5),
            layer("x1", "x", 1, 1),
            layer("e1", "e", 1, 40),
        ];
        assert_eq!(
            order("d", &jobs, &layers),
            owned(&[
                ("a1", &[]),
                ("a2", &[]),
                ("c1", &["a"]),
                ("c2", &["a"]),
                ("b1", &["a"]),
            ])
        );
        assert_eq!(
            order("e", &jobs, &layers),
            owned(&[
                ("a1", &[]),
                ("a2", &[]),
                ("c1", &["a"]),
                ("c2", &["a"]),
                ("b1", &["a"]),
                ("d1", &["a", "c", "b"]),
            ])
        );
        assert!(order("a", &jobs, &layers).is_empty(), "nothing upstream");
        assert!(
            order("x", &jobs, &layers).is_empty(),
            "its own layers are not in it"
        );
        assert!(order("ghost", &jobs, &layers).is_empty());
    }

    #[test]
    fn a_job_without_layers_still_links_its_upstream() {
        // a -> m (persists nothing) -> z, and a cycle's members (never compiled) end the loop.
        let jobs = jobs(&[
            ("a", &[]),
            ("m", &["a", "missing"]),
            ("z", &["m"]),
            ("p", &["q"]),
            ("q", &["p"]),
            ("r", &["p"]),
        ]);
        let layers = [
            layer("a1", "a", 1, 10),
            layer("p1", "p", 1, 11),
            layer("q1", "q", 1, 12),
        ];
        assert_eq!(order("z", &jobs, &layers), owned(&[("a1", &[])]));
        let cyclic = order("r", &jobs, &layers);
        let mut ids: Vec<&str> = cyclic.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["p1", "q1"], "both, in some order");
    }
}
