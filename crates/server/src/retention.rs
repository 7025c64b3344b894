//! Retention: caches, workspace layers and artifacts live for a set time from their creation
//! (`--cache-retention` 15 days, as CircleCI's caches; `--workspace-retention` 15 days;
//! `--artifact-retention` 30 days).
//!
//! Expiry takes effect at once: every read passes the oldest creation time still alive
//! ([`Retention::caches_after`] and friends) to the store, so an expired object is invisible
//! however long ago the sweep ran. The sweep ([`sweep_loop`], every `--sweep-interval`) then frees
//! the space: in batches of [`BATCH`], oldest first, it deletes each object's blob and then its
//! row, so a blob whose deletion failed keeps its row and is found again by the next sweep
//! (never an orphan no row names). A failure (a blob that cannot be deleted, the database) is
//! logged and ends that kind's sweep; the next sweep retries. The server never stops over it.

use std::time::Duration;

use crate::State;
use crate::blobs::{BlobKey, Blobs};
use crate::store::{Store, StoreError};
use crate::util::now_ms;

/// Rows fetched and deleted per batch.
pub const BATCH: i64 = 500;
/// Batches per kind per sweep: what is left waits for the next sweep, so one sweep stays short.
pub const MAX_BATCHES: usize = 200;

/// Default retention of caches: CircleCI keeps a cache 15 days from its creation.
pub const DEFAULT_CACHE_RETENTION: Duration = Duration::from_secs(15 * 24 * 3600);
/// Default retention of workspace layers.
pub const DEFAULT_WORKSPACE_RETENTION: Duration = Duration::from_secs(15 * 24 * 3600);
/// Default retention of artifacts.
pub const DEFAULT_ARTIFACT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default time between sweeps.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// How long each kind of object lives from its creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub caches: Duration,
    pub workspaces: Duration,
    pub artifacts: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            caches: DEFAULT_CACHE_RETENTION,
            workspaces: DEFAULT_WORKSPACE_RETENTION,
            artifacts: DEFAULT_ARTIFACT_RETENTION,
        }
    }
}

/// `keep` in milliseconds, saturating.
pub fn millis(keep: Duration) -> i64 {
    i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)
}

/// The creation time at or before which an object kept for `keep` has expired at `now`.
fn cutoff(now: i64, keep: Duration) -> i64 {
    now.saturating_sub(millis(keep))
}

impl Retention {
    /// Caches created after this are alive at `now`.
    pub fn caches_after(&self, now: i64) -> i64 {
        cutoff(now, self.caches)
    }
    /// Workspace layers created after this are alive at `now`.
    pub fn workspaces_after(&self, now: i64) -> i64 {
        cutoff(now, self.workspaces)
    }
    /// Artifacts created after this are alive at `now`.
    pub fn artifacts_after(&self, now: i64) -> i64 {
        cutoff(now, self.artifacts)
    }
}

/// The kinds of object the sweep deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Caches,
    WorkspaceLayers,
    Artifacts,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Caches, Kind::WorkspaceLayers, Kind::Artifacts];

    fn name(self) -> &'static str {
        match self {
            Kind::Caches => "cache(s)",
            Kind::WorkspaceLayers => "workspace layer(s)",
            Kind::Artifacts => "artifact(s)",
        }
    }
}

/// An expired object: its row's id, its blob, its size.
struct Expired {
    id: String,
    blob_key: String,
    size: i64,
}

async fn expired(store: &Store, kind: Kind, cutoff: i64) -> Result<Vec<Expired>, StoreError> {
    Ok(match kind {
        Kind::Caches => store
            .expired_caches(cutoff, BATCH)
            .await?
            .into_iter()
            .map(|row| Expired {
                id: row.id,
                blob_key: row.blob_key,
                size: row.size,
            })
            .collect(),
        Kind::WorkspaceLayers => store
            .expired_workspace_layers(cutoff, BATCH)
            .await?
            .into_iter()
            .map(|row| Expired {
                id: row.id,
                blob_key: row.blob_key,
                size: row.size,
            })
            .collect(),
        Kind::Artifacts => store
            .expired_artifacts(cutoff, BATCH)
            .await?
            .into_iter()
            .map(|row| Expired {
                id: row.id,
                blob_key: row.blob_key,
                size: row.size,
            })
            .collect(),
    })
}

async fn delete_row(store: &Store, kind: Kind, id: &str) -> Result<bool, StoreError> {
    match kind {
        Kind::Caches => store.delete_cache(id).await,
        Kind::WorkspaceLayers => store.delete_workspace_layer(id).await,
        Kind::Artifacts => store.delete_artifact(id).await,
    }
}

/// Deletes an object's blob (a blob already gone is fine) and then its row; `Err` describes
/// what failed, for the log.
pub(crate) async fn delete_object(
    blobs: &Blobs,
    blob_key: &str,
    delete_row: impl std::future::Future<Output = Result<bool, StoreError>>,
) -> Result<bool, String> {
    // A key that does not parse was never written by this server: only the row goes.
    if let Ok(key) = BlobKey::parse(blob_key) {
        blobs
            .delete(&key)
            .await
            .map_err(|err| format!("deleting blob {key}: {err}"))?;
    }
    delete_row.await.map_err(|err| err.to_string())
}

/// What one sweep freed, per kind: objects and bytes; and how many failures it met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub caches: (u64, u64),
    pub workspace_layers: (u64, u64),
    pub artifacts: (u64, u64),
    pub failures: u64,
}

/// Deletes what expired at `now`, in bounded batches; never fails (failures are logged and
/// counted, and retried by the next sweep).
pub(crate) async fn sweep_once(
    store: &Store,
    blobs: &Blobs,
    retention: &Retention,
    now: i64,
) -> Swept {
    let mut swept = Swept::default();
    for kind in Kind::ALL {
        let cutoff = match kind {
            Kind::Caches => retention.caches_after(now),
            Kind::WorkspaceLayers => retention.workspaces_after(now),
            Kind::Artifacts => retention.artifacts_after(now),
        };
        let (mut count, mut bytes) = (0u64, 0u64);
        for _ in 0..MAX_BATCHES {
            let batch = match expired(store, kind, cutoff).await {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!("retention sweep: listing expired {}: {err}", kind.name());
                    swept.failures += 1;
                    break;
                }
            };
            let full = batch.len() as i64 == BATCH;
            let mut failed = false;
            for object in batch {
                match delete_object(blobs, &object.blob_key, delete_row(store, kind, &object.id))
                    .await
                {
                    Ok(_) => {
                        count += 1;
                        bytes += object.size.max(0) as u64;
                    }
                    Err(err) => {
                        tracing::warn!(
                            "retention sweep: {} {}: {err}; retrying at the next sweep",
                            kind.name(),
                            object.id
                        );
                        swept.failures += 1;
                        failed = true;
                    }
                }
            }
            // After a failure the same rows would come back in the next batch: stop here.
            if !full || failed {
                break;
            }
        }
        match kind {
            Kind::Caches => swept.caches = (count, bytes),
            Kind::WorkspaceLayers => swept.workspace_layers = (count, bytes),
            Kind::Artifacts => swept.artifacts = (count, bytes),
        }
    }
    swept
}

/// Sweeps at start and then every `interval`, until the server stops.
pub(crate) async fn sweep_loop(state: State, interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        let swept = sweep_once(&state.store, &state.blobs, &state.retention, now).await;
        // Dev versions of orbs past their 90 days (reads skip them already; this frees them).
        match state.store.delete_expired_orb_versions(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("retention sweep deleted {n} expired orb dev version(s)"),
            Err(err) => tracing::warn!("retention sweep: expired orb dev versions: {err}"),
        }
        let freed = swept.caches.0 + swept.workspace_layers.0 + swept.artifacts.0;
        if freed > 0 {
            tracing::info!(
                "retention sweep freed {} cache(s) ({} bytes), {} workspace layer(s) ({} bytes), {} artifact(s) ({} bytes)",
                swept.caches.0,
                swept.caches.1,
                swept.workspace_layers.0,
                swept.workspace_layers.1,
                swept.artifacts.0,
                swept.artifacts.1
            );
        }
    }
}
