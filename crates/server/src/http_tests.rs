//! HTTP-level tests of caches, workspaces and retention: a real server (`run`) on 127.0.0.1:0
//! in-process, the typed `bosun_api` client the launch-agent uses, raw TCP where the order of
//! bytes on the wire is the point, and rows made directly through the store (no git, no
//! agents: the end-to-end suite runs those).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bosun_api::task::WorkspaceManifest;
use bosun_api::{Auth, Body, Client, StatusCode};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::hash_token;
use crate::blobs::{Blobs, Location};
use crate::retention::{Retention, sweep_once};
use crate::store::{Store, TaskStatus, fixtures};
use crate::util::{new_id, now_ms};
use crate::{Config, run};

pub(crate) const ADMIN: &str = "bosun_admin_test_token_0123456789";

pub(crate) struct TestServer {
    pub(crate) addr: std::net::SocketAddr,
    client: Client,
    admin: Auth,
    pub(crate) store: Store,
    blob_dir: PathBuf,
    pub(crate) _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), data_dir.clone());
    config.admin_token = Some(ADMIN.into());
    config.min_free_space = 0;
    tweak(&mut config);
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let result = run(
            config,
            move |addr| {
                let _ = addr_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await;
        if let Err(err) = result {
            panic!("server failed: {err:#}");
        }
    });
    let addr = addr_rx.await.expect("the server listens");
    let url = format!("sqlite://{}", data_dir.join("bosun.db").display());
    let store = Store::open(&url).await.unwrap();
    TestServer {
        addr,
        client: Client::new(&format!("http://{addr}")).unwrap(),
        admin: Auth::CircleToken(ADMIN.into()),
        store,
        blob_dir: data_dir.join("blobs"),
        _dir: dir,
        stop: Some(stop_tx),
    }
}

impl TestServer {
    /// A running task of `job_id`, and the token that authenticates it.
    async fn task(&self, job_id: &str) -> (String, Auth) {
        let token = format!("bosun_task_{}", new_id());
        let id = fixtures::task(
            &self.store,
            job_id,
            TaskStatus::Running,
            &hash_token(&token),
        )
        .await;
        (id, Auth::Bearer(token))
    }

    /// Every file under the blob directory's `prefix`.
    fn blob_files(&self, prefix: &str) -> Vec<PathBuf> {
        files_under(&self.blob_dir.join(prefix))
    }

    async fn save(
        &self,
        auth: &Auth,
        key: &str,
        bytes: &'static [u8],
    ) -> Result<u64, bosun_api::ApiError> {
        let body = Body::sized(
            bytes.len() as u64,
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(bytes))]),
        );
        let stored = self.client.upload_cache(auth, key, body).await?;
        assert_eq!(stored.key, key);
        Ok(stored.size)
    }

    async fn persist(&self, auth: &Auth, bytes: &'static [u8]) -> String {
        let body = Body::sized(
            bytes.len() as u64,
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(bytes))]),
        );
        let stored = self
            .client
            .upload_workspace_layer(auth, body)
            .await
            .unwrap();
        assert_eq!(stored.size, bytes.len() as u64);
        stored.key
    }

    async fn restore(&self, auth: &Auth, prefixes: &[&str]) -> Option<(String, Vec<u8>)> {
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        let (key, download) = self.client.download_cache(auth, &prefixes).await.unwrap()?;
        let length = download.content_length();
        let bytes = download.bytes().await.unwrap().to_vec();
        assert_eq!(length, Some(bytes.len() as u64));
        Some((key, bytes))
    }

    async fn manifest(&self, auth: &Auth) -> WorkspaceManifest {
        let download = self.client.workspace_manifest(auth).await.unwrap();
        serde_json::from_slice(&download.bytes().await.unwrap()).unwrap()
    }

    /// Sends a request head (and no body) on a fresh connection; answers the status line and
    /// the answer's body, read until the server closes or 5 s pass.
    async fn raw_head_only(&self, head: &str) -> String {
        let mut socket = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let n = socket.read(&mut buffer).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&answer);
                if text.contains("\r\n\r\n") && text.contains("\"message\"") && text.ends_with('}')
                {
                    break;
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "no answer before the body was sent: {:?}",
            String::from_utf8_lossy(&answer)
        );
        String::from_utf8_lossy(&answer).into_owned()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn status(result: Result<impl std::fmt::Debug, bosun_api::ApiError>) -> StatusCode {
    result
        .expect_err("an error answer")
        .status()
        .expect("an HTTP status")
}

#[tokio::test]
async fn a_saved_key_and_an_oversized_archive_are_refused_before_the_body() {
    let server = start(|config| config.max_archive_size = 1 << 20).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(&server.store, &project, &[("build", &[])]).await;
    let (_, auth) = server.task(&flow.jobs["build"]).await;
    let Auth::Bearer(token) = &auth else {
        unreachable!()
    };

    assert_eq!(server.save(&auth, "deps-v1", b"hello").await.unwrap(), 5);
    // The key exists: 409 while the announced gigabyte is still unsent.
    let answer = server
        .raw_head_only(&format!(
            "PUT /api/v2/task/cache?key=deps-v1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1073741824\r\n\r\n"
        ))
        .await;
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("never overwritten"), "{answer}");
    // Through the typed client, the 409 arrives while the body is still open.
    let (sender, body) = Body::sized_channel(1 << 30, 4);
    sender.send(Bytes::from_static(b"more")).await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        server.client.upload_cache(&auth, "deps-v1", body),
    )
    .await
    .expect("the client sees the 409 before the body ends");
    assert_eq!(status(refused), StatusCode::CONFLICT);
    drop(sender);
    // Over --max-archive-size by its Content-Length: 413, also before the body.
    let answer = server
        .raw_head_only(&format!(
            "PUT /api/v2/task/cache?key=new HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 2097152\r\n\r\n"
        ))
        .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("--max-archive-size"), "{answer}");
    let answer = server
        .raw_head_only(&format!(
            "PUT /api/v2/task/workspace HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 2097152\r\n\r\n"
        ))
        .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Over the limit without a length: 413 once the stream passes it, and nothing is stored.
    let big: Vec<Result<Bytes, std::io::Error>> = (0..32)
        .map(|_| Ok(Bytes::from(vec![7u8; 64 << 10])))
        .collect();
    let upload = server
        .client
        .upload_cache(&auth, "big", Body::stream(futures_util::stream::iter(big)))
        .await;
    assert_eq!(status(upload), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(fixtures::count(&server.store, "caches").await, 1);
    assert_eq!(server.blob_files("caches").len(), 1);
    assert!(server.blob_files("staging").is_empty());

    // No key, or two: 400 with a message, before the body too.
    for query in ["", "?key=a&key=b"] {
        let answer = server
            .raw_head_only(&format!(
                "PUT /api/v2/task/cache{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
            ))
            .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    // Keys: 1 to 512 bytes, no control characters.
    for bad in [String::new(), "k".repeat(513), "a\nb".into()] {
        assert_eq!(
            status(server.save(&auth, &bad, b"x").await),
            StatusCode::BAD_REQUEST,
            "{bad:?}"
        );
    }
    assert_eq!(server.save(&auth, &"k".repeat(512), b"x").await.unwrap(), 1);
    let many: Vec<String> = (0..65).map(|i| format!("k{i}")).collect();
    assert_eq!(
        status(server.client.download_cache(&auth, &many).await),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status(server.client.download_cache(&auth, &[]).await),
        StatusCode::BAD_REQUEST
    );

    // A task that ended may not save or restore.
    let (ended, ended_auth) = server.task(&flow.jobs["build"]).await;
    fixtures::set_task_status(&server.store, &ended, TaskStatus::Success).await;
    assert_eq!(
        status(server.save(&ended_auth, "late", b"x").await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(
            server
                .client
                .download_cache(&ended_auth, &["deps".into()])
                .await
        ),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_restore_takes_the_newest_cache_of_the_first_prefix_that_matches() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let other = fixtures::project(&server.store, "gh/acme/other").await;
    let flow = fixtures::workflow(&server.store, &project, &[("build", &[])]).await;
    let foreign = fixtures::workflow(&server.store, &other, &[("build", &[])]).await;
    let (_, auth) = server.task(&flow.jobs["build"]).await;
    let (_, foreign_auth) = server.task(&foreign.jobs["build"]).await;

    server.save(&auth, "v1-linux-aaa", b"first").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    server.save(&auth, "v1-linux-bbb", b"second").await.unwrap();
    let odd = "v1 %_ é/+&=?x";
    server.save(&auth, odd, b"odd").await.unwrap();
    server
        .save(&foreign_auth, "v1-linux-zzz", b"foreign")
        .await
        .unwrap();

    assert_eq!(
        server.restore(&auth, &["nomatch", "v1-linux-", "v1"]).await,
        Some(("v1-linux-bbb".into(), b"second".to_vec()))
    );
    // The first prefix that matches wins, though a later one has a newer cache.
    assert_eq!(
        server.restore(&auth, &["v1-linux-a", "v1-linux-"]).await,
        Some(("v1-linux-aaa".into(), b"first".to_vec()))
    );
    // `%` and `_` are characters, and the key comes back exactly through the header.
    assert_eq!(
        server.restore(&auth, &["v1 %_"]).await,
        Some((odd.into(), b"odd".to_vec()))
    );
    assert_eq!(server.restore(&auth, &["v1_"]).await, None);
    assert_eq!(server.restore(&auth, &["x", "y"]).await, None);
    // Another project's caches are not this one's.
    assert_eq!(
        server.restore(&foreign_auth, &["v1-linux-"]).await,
        Some(("v1-linux-zzz".into(), b"foreign".to_vec()))
    );
    assert_eq!(server.restore(&foreign_auth, &["v1-linux-a"]).await, None);
    // A restore notes when the cache was last used.
    let used = server
        .store
        .latest_cache_with_prefix(&project, "v1-linux-aaa", 0)
        .await
        .unwrap()
        .unwrap();
    assert!(used.last_used_at.is_some());
}

#[tokio::test]
async fn of_two_concurrent_saves_of_one_key_exactly_one_is_stored() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(&server.store, &project, &[("a", &[]), ("b", &[])]).await;
    let (_, first) = server.task(&flow.jobs["a"]).await;
    let (_, second) = server.task(&flow.jobs["b"]).await;
    let mut uploads = Vec::new();
    let mut senders = Vec::new();
    for (auth, fill) in [(first, 1u8), (second, 2u8)] {
        let (sender, body) = Body::channel(4);
        let client = server.client.clone();
        uploads.push(tokio::spawn(async move {
            client.upload_cache(&auth, "race", body).await
        }));
        senders.push((sender, fill));
    }
    // Both pass the existence check before either body ends: both are staging their bytes.
    for (sender, fill) in &senders {
        sender.send(Bytes::from(vec![*fill; 1000])).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.blob_files("staging").len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "both uploads stage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (sender, fill) in senders {
        sender.send(Bytes::from(vec![fill; 1000])).await.unwrap();
        sender.finish().await;
    }
    let mut won = Vec::new();
    for upload in uploads {
        match upload.await.unwrap() {
            Ok(stored) => won.push(stored.size),
            Err(err) => assert_eq!(err.status(), Some(StatusCode::CONFLICT), "{err}"),
        }
    }
    assert_eq!(won, [2000], "exactly one save wins");
    assert_eq!(fixtures::count(&server.store, "caches").await, 1);
    assert_eq!(
        server.blob_files("caches").len(),
        1,
        "the loser's blob is deleted"
    );
    let (_, reader) = server.task(&flow.jobs["a"]).await;
    let (_, bytes) = server.restore(&reader, &["race"]).await.unwrap();
    assert_eq!(bytes.len(), 2000);
    assert!(
        bytes.iter().all(|b| *b == bytes[0]),
        "one upload's bytes, not a mix"
    );
}

#[tokio::test]
async fn a_workspace_manifest_holds_upstream_layers_only_and_serves_only_those() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(
        &server.store,
        &project,
        &[("a", &[]), ("b", &["a"]), ("c", &[]), ("d", &["b"])],
    )
    .await;
    let other = fixtures::workflow(&server.store, &project, &[("a", &[])]).await;

    let mut layers = std::collections::HashMap::new();
    for (flow, job, contents) in [
        (&flow, "a", &["a1", "a2"][..]),
        (&flow, "c", &["c1"][..]),
        (&flow, "b", &["b1"][..]),
        (&other, "a", &["f1"][..]),
    ] {
        let (task, auth) = server.task(&flow.jobs[job]).await;
        for name in contents {
            let id = server.persist(&auth, name.as_bytes()).await;
            layers.insert(name.to_string(), id);
        }
        fixtures::set_task_status(&server.store, &task, TaskStatus::Success).await;
    }
    let (_, d) = server.task(&flow.jobs["d"]).await;
    let own = server.persist(&d, b"d1").await;
    let manifest = server.manifest(&d).await;
    let seen: Vec<(&str, &str, u64, Vec<String>)> = manifest
        .layers
        .iter()
        .map(|l| {
            (
                l.id.as_str(),
                l.job_name.as_str(),
                l.size,
                l.requires.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (layers["a1"].as_str(), "a", 2, vec![]),
            (layers["a2"].as_str(), "a", 2, vec![]),
            (layers["b1"].as_str(), "b", 2, vec!["a".to_owned()]),
        ]
    );
    assert_eq!(manifest.layers[0].job_id, flow.jobs["a"]);
    for name in ["a1", "a2", "b1"] {
        let download = server
            .client
            .download_workspace_layer(&d, &layers[name])
            .await
            .unwrap()
            .expect("an upstream layer");
        assert_eq!(download.bytes().await.unwrap().as_ref(), name.as_bytes());
    }
    // Not upstream (c), another workflow's (f1), its own, or no layer at all: 404.
    for layer in [
        &layers["c1"],
        &layers["f1"],
        &own,
        &"no-such-layer".to_owned(),
    ] {
        assert!(
            server
                .client
                .download_workspace_layer(&d, layer)
                .await
                .unwrap()
                .is_none(),
            "{layer}"
        );
    }
    // A job with nothing upstream gets an empty list.
    let (_, a) = server.task(&flow.jobs["a"]).await;
    assert!(server.manifest(&a).await.layers.is_empty());
}

#[tokio::test]
async fn admins_list_and_delete_a_projects_caches() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(&server.store, &project, &[("build", &[])]).await;
    let (_, auth) = server.task(&flow.jobs["build"]).await;
    for key in ["v1-a", "v1-b", "v2-a"] {
        server.save(&auth, key, b"12345").await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let slug = "gh/acme/widgets";
    let list = server
        .client
        .project_caches(&server.admin, slug)
        .await
        .unwrap();
    let keys: Vec<&str> = list.items.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["v2-a", "v1-b", "v1-a"], "newest first");
    assert_eq!(list.next_page_token, None);
    let entry = &list.items[0];
    assert_eq!(
        (entry.size, entry.job_id.as_str()),
        (5, flow.jobs["build"].as_str())
    );
    let created = humantime::parse_rfc3339(&entry.created_at).unwrap();
    let expires = humantime::parse_rfc3339(&entry.expires_at).unwrap();
    assert_eq!(
        expires.duration_since(created).unwrap(),
        Duration::from_secs(15 * 24 * 3600)
    );
    assert!(entry.created_at.ends_with('Z'), "{}", entry.created_at);

    let deleted = server
        .client
        .delete_project_caches(&server.admin, slug, "v1-")
        .await
        .unwrap();
    assert_eq!((deleted.deleted, deleted.bytes), (2, 10));
    let keys: Vec<String> = server
        .client
        .project_caches(&server.admin, slug)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(keys, ["v2-a"]);
    assert_eq!(server.blob_files("caches").len(), 1);
    assert_eq!(server.restore(&auth, &["v1-"]).await, None);
    // A deleted key may be saved again.
    server.save(&auth, "v1-a", b"again").await.unwrap();
    let all = server
        .client
        .delete_project_caches(&server.admin, slug, "")
        .await
        .unwrap();
    assert_eq!((all.deleted, all.bytes), (2, 10));
    assert!(server.blob_files("caches").is_empty());

    assert_eq!(
        status(
            server
                .client
                .project_caches(&server.admin, "gh/acme/none")
                .await
        ),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(
            server
                .client
                .delete_project_caches(&server.admin, "gh/acme/none", "")
                .await
        ),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(server.client.project_caches(&Auth::None, slug).await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(server.client.project_caches(&auth, slug).await),
        StatusCode::UNAUTHORIZED,
        "a task token is not an admin token"
    );
}

#[tokio::test]
async fn expired_objects_vanish_from_reads_at_once_and_the_sweep_frees_them() {
    let keep = Duration::from_secs(2);
    let retention = Retention {
        caches: keep,
        workspaces: keep,
        artifacts: keep,
    };
    // Only the sweep at start runs: expiry alone must hide what expired.
    let server = start(|config| {
        config.retention = retention;
        config.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(&server.store, &project, &[("a", &[]), ("b", &["a"])]).await;
    let (a_task, a) = server.task(&flow.jobs["a"]).await;
    server.save(&a, "v1", b"cached").await.unwrap();
    let layer = server.persist(&a, b"layer").await;
    let artifact = Body::sized(
        4,
        futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"file"))]),
    );
    server
        .client
        .upload_artifact(&a, "out.txt", artifact)
        .await
        .unwrap();
    fixtures::set_task_status(&server.store, &a_task, TaskStatus::Success).await;
    let (_, b) = server.task(&flow.jobs["b"]).await;
    assert!(server.restore(&b, &["v1"]).await.is_some());
    assert_eq!(server.manifest(&b).await.layers.len(), 1);
    let artifacts = server
        .client
        .job_artifacts(&server.admin, &flow.jobs["a"])
        .await
        .unwrap();
    assert_eq!(artifacts.items.len(), 1);

    tokio::time::sleep(keep + Duration::from_millis(300)).await;
    assert_eq!(server.restore(&b, &["v1"]).await, None);
    assert!(server.manifest(&b).await.layers.is_empty());
    assert!(
        server
            .client
            .download_workspace_layer(&b, &layer)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        server
            .client
            .project_caches(&server.admin, "gh/acme/widgets")
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        server
            .client
            .job_artifacts(&server.admin, &flow.jobs["a"])
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        status(
            server
                .client
                .download_artifact(&server.admin, &artifacts.items[0].url)
                .await
        ),
        StatusCode::NOT_FOUND
    );
    // The rows and blobs are still there until a sweep.
    for table in ["caches", "workspace_layers", "artifacts"] {
        assert_eq!(fixtures::count(&server.store, table).await, 1, "{table}");
    }
    assert_eq!(server.blob_files("caches").len(), 1);

    let blobs = Blobs::open(&Location::Dir(server.blob_dir.clone()), 0).unwrap();
    let swept = sweep_once(&server.store, &blobs, &retention, now_ms()).await;
    assert_eq!(swept.caches, (1, 6));
    assert_eq!(swept.workspace_layers, (1, 5));
    assert_eq!(swept.artifacts, (1, 4));
    assert_eq!(swept.failures, 0);
    for table in ["caches", "workspace_layers", "artifacts"] {
        assert_eq!(fixtures::count(&server.store, table).await, 0, "{table}");
    }
    for prefix in ["caches", "workspaces", "artifacts"] {
        assert!(server.blob_files(prefix).is_empty(), "{prefix}");
    }
    assert_eq!(
        sweep_once(&server.store, &blobs, &retention, now_ms())
            .await
            .caches,
        (0, 0)
    );
}

#[tokio::test]
async fn the_background_sweep_runs_every_interval() {
    let keep = Duration::from_millis(300);
    let server = start(|config| {
        config.retention = Retention {
            caches: keep,
            workspaces: keep,
            artifacts: keep,
        };
        config.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(&server.store, &project, &[("a", &[])]).await;
    let (_, a) = server.task(&flow.jobs["a"]).await;
    server.save(&a, "v1", b"cached").await.unwrap();
    server.persist(&a, b"layer").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = fixtures::count(&server.store, "caches").await
            + fixtures::count(&server.store, "workspace_layers").await;
        if left == 0
            && server.blob_files("caches").is_empty()
            && server.blob_files("workspaces").is_empty()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} rows left after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn test_results_are_checked_whole_and_a_bad_upload_stores_nothing() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(&server.store, &project, &[("test", &[])]).await;
    let job = &flow.jobs["test"];
    let (_, auth) = server.task(job).await;
    let upload = |json: String| {
        let bytes = Bytes::from(json);
        server.client.upload_test_results(
            &auth,
            "results",
            Body::sized(
                bytes.len() as u64,
                futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]),
            ),
        )
    };
    let case = |name: &str, result: &str, run_time: &str| {
        format!(
            r#"{{"name":"{name}","classname":"c","result":"{result}","run_time":{run_time},"source":"unit"}}"#
        )
    };
    // One bad case (a negative run time, an unknown result, an empty name, a control
    // character) refuses the whole upload with a message naming the case.
    for (bad, expected) in [
        (case("b", "success", "-1"), "test case 1: `run_time`"),
        (case("b", "exploded", "0"), "not valid JSON of test cases"),
        (case("", "success", "0"), "test case 1: `name` is empty"),
        (
            case("a\\u0007b", "success", "0"),
            "test case 1: `name` holds control",
        ),
    ] {
        let json = format!(r#"{{"tests":[{},{bad}]}}"#, case("a", "success", "0.5"));
        let err = upload(json).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    assert_eq!(server.store.test_result_count(job).await.unwrap(), 0);
    let json = format!(
        r#"{{"tests":[{},{}]}}"#,
        case("a", "success", "0.5"),
        case("b", "failure", "1.25")
    );
    assert_eq!(upload(json).await.unwrap().stored, 2);
    let list = server
        .client
        .job_tests(&server.admin, job)
        .await
        .expect("listing");
    let names: Vec<(&str, &str)> = list
        .items
        .iter()
        .map(|t| (t.name.as_str(), t.result.as_str()))
        .collect();
    assert_eq!(names, [("a", "success"), ("b", "failure")]);
    assert!(list.items.iter().all(|t| !t.flaky && t.source == "unit"));
    // A case without a source takes the upload's.
    let json = r#"{"tests":[{"name":"c","classname":"c","result":"success"}]}"#;
    assert_eq!(upload(json.to_owned()).await.unwrap().stored, 1);
    let list = server.client.job_tests(&server.admin, job).await.unwrap();
    let c = list.items.iter().find(|t| t.name == "c").expect("case c");
    assert_eq!(c.source, "results");
    // Without a task token, nothing is stored.
    let err = server
        .client
        .upload_test_results(
            &Auth::None,
            "x",
            Body::sized(
                0,
                futures_util::stream::empty::<Result<Bytes, std::io::Error>>(),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn secrets_answer_circlecis_shapes_and_refuse_bad_input_naming_it() {
    use bosun_api::types::{
        ContextOwner, CreateContext, CreateEnvVar, CreateRestriction, CreateSshKey,
    };
    let server = start(|_| {}).await;
    fixtures::project(&server.store, "gh/acme/widgets").await;
    let (client, admin, slug) = (&server.client, &server.admin, "gh/acme/widgets");

    // Project variables: write-only, `xxxx` and the last four characters.
    let set = |name: &str, value: &str| CreateEnvVar {
        name: name.into(),
        value: value.into(),
    };
    let var = client
        .set_project_env(admin, slug, &set("API_TOKEN", "tok-123456789-wxyz"))
        .await
        .unwrap();
    assert_eq!(
        (var.name.as_str(), var.value.as_str()),
        ("API_TOKEN", "xxxxwxyz")
    );
    assert_eq!(
        status(client.set_project_env(admin, slug, &set("1BAD", "v")).await),
        StatusCode::BAD_REQUEST
    );
    let huge = "x".repeat(crate::project_secrets::MAX_VALUE_BYTES + 1);
    let err = client
        .set_project_env(admin, slug, &set("HUGE", &huge))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`HUGE`") && !err.contains("xxxxxxxx"), "{err}");
    let page = client.project_env(admin, slug).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.next_page_token, None);
    client
        .delete_project_env(admin, slug, "API_TOKEN")
        .await
        .unwrap();
    assert_eq!(
        status(client.delete_project_env(admin, slug, "API_TOKEN").await),
        StatusCode::NOT_FOUND
    );

    // Contexts of the organization `acme` (the project's namespace), by either owner form.
    let owner = |slug: &str| ContextOwner {
        id: None,
        slug: Some(slug.into()),
        owner_type: Some("organization".into()),
    };
    let context = client
        .create_context(
            admin,
            &CreateContext {
                name: "deploy".into(),
                owner: owner("gh/Acme"),
            },
        )
        .await
        .unwrap();
    let again = CreateContext {
        name: "deploy".into(),
        owner: owner("acme"),
    };
    assert_eq!(
        status(client.create_context(admin, &again).await),
        StatusCode::CONFLICT
    );
    let listed = client.contexts(admin, "acme").await.unwrap();
    assert_eq!(listed.items, vec![context.clone()]);
    let var = client
        .set_context_env(admin, &context.id, "DEPLOY_KEY", "k3y-value")
        .await
        .unwrap();
    assert_eq!(var.variable, "DEPLOY_KEY");
    assert_eq!(var.context_id, context.id);
    let vars = client.context_env(admin, &context.id).await.unwrap();
    assert_eq!(vars.items.len(), 1);

    // Restrictions: an expression is parsed and may read only pipeline values.
    let restrict = |kind: &str, value: &str| CreateRestriction {
        project_id: None,
        restriction_type: Some(kind.into()),
        restriction_value: Some(value.into()),
    };
    let made = client
        .add_context_restriction(
            admin,
            &context.id,
            &restrict("expression", r#"pipeline.git.branch == "main""#),
        )
        .await
        .unwrap();
    assert_eq!(made.restriction_type, "expression");
    for (kind, value, says) in [
        ("expression", r#"pipeline.git.branch == "main"#, "column"),
        (
            "expression",
            "pipeline.parameters.x == true",
            "pipeline.parameters.x",
        ),
        ("project", "gh/acme/nope", "does not exist"),
        ("group", "x", "restriction_type"),
    ] {
        let err = client
            .add_context_restriction(admin, &context.id, &restrict(kind, value))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{value}");
        assert!(err.to_string().contains(says), "{value}: {err}");
    }
    let by_slug = client
        .add_context_restriction(admin, &context.id, &restrict("project", slug))
        .await
        .unwrap();
    assert_eq!(by_slug.name, slug);
    let all = client
        .context_restrictions(admin, &context.id)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);
    client
        .delete_context_restriction(admin, &context.id, &made.id)
        .await
        .unwrap();
    client.delete_context(admin, &context.id).await.unwrap();
    assert_eq!(
        status(client.context_env(admin, &context.id).await),
        StatusCode::NOT_FOUND
    );

    // Checkout keys: ed25519, MD5 fingerprints unless `?digest=sha256`.
    let key = client.create_checkout_key(admin, slug).await.unwrap();
    assert!(
        key.public_key.starts_with("ssh-ed25519 "),
        "{}",
        key.public_key
    );
    assert_eq!(
        key.fingerprint.matches(':').count(),
        15,
        "{}",
        key.fingerprint
    );
    assert!(key.preferred);
    let path = "/api/v2/project/gh/acme/widgets/checkout-key?digest=sha256";
    let page: bosun_api::types::Page<bosun_api::types::CheckoutKey> =
        client.get(path, admin).await.unwrap();
    assert!(page.items[0].fingerprint.starts_with("SHA256:"));
    client
        .delete_checkout_key(admin, slug, &key.fingerprint)
        .await
        .unwrap();

    // SSH keys: garbage is refused without being echoed.
    let err = client
        .add_ssh_key(
            admin,
            slug,
            &CreateSshKey {
                hostname: None,
                private_key: "not-a-key-secret-material".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert!(!err.to_string().contains("secret-material"), "{err}");

    // Nothing of a value is in the database in the clear.
    let db = std::fs::read(server._dir.path().join("data/bosun.db")).unwrap();
    let wal = std::fs::read(server._dir.path().join("data/bosun.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        for value in ["tok-123456789-wxyz", "k3y-value", "wxyz"] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{value}"
            );
        }
    }
}

#[tokio::test]
async fn every_error_answer_is_a_json_message_even_axums_own() {
    let server = start(|_| {}).await;
    let token = format!("Circle-Token: {ADMIN}\r\n");
    let cases = [
        // No route.
        (
            "GET /api/v2/no-such-thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            "404",
            "there is no route GET /api/v2/no-such-thing",
        ),
        // A method the path does not take.
        (
            format!(
                "DELETE /api/v2/context HTTP/1.1\r\nHost: x\r\n{token}Connection: close\r\n\r\n"
            ),
            "405",
            "/api/v2/context does not take DELETE (it takes GET,HEAD,POST)",
        ),
        // A body that is not JSON, and one without a content type.
        (
            format!(
                "POST /api/v2/context HTTP/1.1\r\nHost: x\r\n{token}Content-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{{oops"
            ),
            "400",
            "JSON",
        ),
        (
            format!(
                "POST /api/v2/context HTTP/1.1\r\nHost: x\r\n{token}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
            "415",
            "Content-Type",
        ),
        // A body of the wrong shape.
        (
            format!(
                "POST /api/v2/context HTTP/1.1\r\nHost: x\r\n{token}Content-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{{\"nme\": \"x\"}}"
            ),
            "422",
            "name",
        ),
    ];
    for (request, code, says) in cases {
        let answer = server.raw_head_only(&request).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with(&format!("HTTP/1.1 {code}")), "{answer}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{answer}"
        );
        let json: serde_json::Value = serde_json::from_str(body.trim()).expect("a JSON body");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{code}: {message}");
        if code == "405" {
            assert!(head.to_ascii_lowercase().contains("allow:"), "{answer}");
        }
    }
}

#[tokio::test]
async fn escaped_slugs_and_vcs_aliases_reach_the_same_project() {
    use bosun_api::types::{CreateEnvVar, CreateProject, EnvVar, Page, Project};
    let server = start(|_| {}).await;
    let (client, admin) = (&server.client, &server.admin);
    // Created under the long name, stored under the short one.
    let created = client
        .create_project(
            admin,
            &CreateProject {
                slug: "github/acme/widgets".into(),
                git_url: "/dev/null".into(),
                namespace: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(created.slug, "gh/acme/widgets");
    let again = CreateProject {
        slug: "gh/acme/widgets".into(),
        git_url: "/dev/null".into(),
        namespace: None,
    };
    assert_eq!(
        status(client.create_project(admin, &again).await),
        StatusCode::CONFLICT
    );
    client
        .set_project_env(
            admin,
            "github/acme/widgets",
            &CreateEnvVar {
                name: "TOKEN".into(),
                value: "value-1234".into(),
            },
        )
        .await
        .unwrap();
    for slug in [
        "gh/acme/widgets",
        "github/acme/widgets",
        "GitHub/acme/widgets",
        "gh%2Facme%2Fwidgets",
        "github%2facme%2fwidgets",
    ] {
        let project: Project = client
            .get(&format!("/api/v2/project/{slug}"), admin)
            .await
            .unwrap_or_else(|err| panic!("{slug}: {err}"));
        assert_eq!(project.id, created.id, "{slug}");
        let vars: Page<EnvVar> = client
            .get(&format!("/api/v2/project/{slug}/envvar?x=1"), admin)
            .await
            .unwrap_or_else(|err| panic!("{slug}: {err}"));
        assert_eq!(vars.items[0].name, "TOKEN", "{slug}");
    }
    let missing: Result<Project, _> = client
        .get("/api/v2/project/bb%2Facme%2Fwidgets", admin)
        .await;
    assert_eq!(status(missing), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn v1_1_clients_manage_variables_and_keys_with_any_token_form() {
    use bosun_api::types::CreateEnvVar;
    let server = start(|_| {}).await;
    fixtures::project(&server.store, "gh/acme/widgets").await;
    let base = "/api/v1.1/project/github/acme/widgets";
    // Circle-Token header.
    let created: serde_json::Value = server
        .client
        .post(
            &format!("{base}/envvar"),
            &server.admin,
            &CreateEnvVar {
                name: "FOO".into(),
                value: "bar-secret-1234".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        created,
        serde_json::json!({"name": "FOO", "value": "xxxx1234"})
    );
    // `?circle-token=` and HTTP Basic with the token as the user name, on raw requests.
    let list = server
        .raw_head_only(&format!(
            "GET {base}/envvar?circle-token={ADMIN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    assert!(
        list.ends_with(r#"[{"name":"FOO","value":"xxxx1234"}]"#),
        "{list}"
    );
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:"))
    };
    let one = server
        .raw_head_only(&format!(
            "GET {base}/envvar/FOO HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert!(one.starts_with("HTTP/1.1 200"), "{one}");
    let wrong = server
        .raw_head_only(&format!(
            "GET {base}/envvar?circle-token=not-the-token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");

    let key: serde_json::Value = server
        .client
        .post(
            &format!("{base}/checkout-key"),
            &server.admin,
            &serde_json::json!({"type": "deploy-key"}),
        )
        .await
        .unwrap();
    assert!(
        key["public_key"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    assert!(key["time"].is_string() && key["preferred"] == true, "{key}");
    let keys: Vec<serde_json::Value> = server
        .client
        .get(&format!("{base}/checkout-key"), &server.admin)
        .await
        .unwrap();
    assert_eq!(keys, vec![key.clone()]);
    let fingerprint = key["fingerprint"].as_str().unwrap();
    let deleted: serde_json::Value = server
        .client
        .json::<(), _>(
            bosun_api::Method::DELETE,
            &format!("{base}/checkout-key/{fingerprint}"),
            &server.admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(deleted, serde_json::json!({"message": "OK"}));
    let deleted: serde_json::Value = server
        .client
        .json::<(), _>(
            bosun_api::Method::DELETE,
            &format!("{base}/envvar/FOO"),
            &server.admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(deleted, serde_json::json!({"message": "ok"}));
}

#[tokio::test]
async fn a_job_is_canceled_by_its_project_and_number() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(
        &server.store,
        &project,
        &[("build", &[]), ("test", &["build"])],
    )
    .await;
    let cancel = |path: String| {
        let client = &server.client;
        let admin = &server.admin;
        async move {
            client
                .json::<(), serde_json::Value>(bosun_api::Method::POST, &path, admin, None)
                .await
        }
    };
    // `test` is job number 2: blocked, so it ends `canceled` at once.
    let answer = cancel("/api/v2/project/github/acme/widgets/job/2/cancel".into())
        .await
        .unwrap();
    assert!(answer["message"].is_string(), "{answer}");
    assert_eq!(
        server.store.job_status(&flow.jobs["test"]).await.unwrap(),
        Some(crate::store::JobStatus::Canceled)
    );
    assert_eq!(
        status(cancel("/api/v2/project/gh/acme/widgets/job/2/cancel".into()).await),
        StatusCode::CONFLICT
    );
    assert_eq!(
        status(cancel("/api/v2/project/gh/acme/widgets/job/9/cancel".into()).await),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(cancel("/api/v2/project/gh/acme/widgets/job/two/cancel".into()).await),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_project_answers_circlecis_shape_and_its_organization_id_names_contexts() {
    use bosun_api::types::{Collaboration, ContextOwner, CreateContext, Project};
    let server = start(|_| {}).await;
    fixtures::project(&server.store, "gh/acme/widgets").await;
    let (client, admin) = (&server.client, &server.admin);
    let raw: serde_json::Value = client
        .get("/api/v2/project/gh/acme/widgets", admin)
        .await
        .unwrap();
    // CircleCI's required fields (https://circleci.com/docs/api/v2/index.html#operation/getProjectBySlug).
    for field in [
        "id",
        "name",
        "organization_id",
        "organization_name",
        "organization_slug",
        "slug",
        "vcs_info",
    ] {
        assert!(!raw[field].is_null(), "{field} in {raw}");
    }
    for field in ["vcs_url", "provider", "default_branch"] {
        assert!(raw["vcs_info"][field].is_string(), "{field} in {raw}");
    }
    let project: Project = serde_json::from_value(raw).unwrap();
    assert_eq!(
        (project.name.as_str(), project.organization_name.as_str()),
        ("widgets", "acme")
    );
    assert_eq!(project.organization_slug, "gh/acme");
    assert_eq!(project.vcs_info.as_ref().unwrap().provider, "GitHub");
    let org_id = uuid::Uuid::parse_str(&project.organization_id).expect("a UUID");
    let orgs: Vec<Collaboration> = client.collaborations(admin).await.unwrap();
    assert_eq!(orgs.len(), 1);
    assert_eq!(orgs[0].id, org_id.to_string());
    assert_eq!(
        (
            orgs[0].slug.as_str(),
            orgs[0].vcs_type.as_str(),
            orgs[0].name.as_str()
        ),
        ("gh/acme", "github", "acme")
    );

    let by_id = CreateContext {
        name: "deploy".into(),
        owner: ContextOwner {
            id: Some(org_id.to_string()),
            slug: None,
            owner_type: Some("organization".into()),
        },
    };
    let context = client.create_context(admin, &by_id).await.unwrap();
    let listed: bosun_api::types::Page<bosun_api::types::Context> = client
        .get(&format!("/api/v2/context?owner-id={org_id}"), admin)
        .await
        .unwrap();
    assert_eq!(listed.items, vec![context.clone()]);
    let by_slug = client.contexts(admin, "gh/acme").await.unwrap();
    assert_eq!(by_slug.items, vec![context]);
    let unknown = uuid::Uuid::new_v4();
    let missing: Result<bosun_api::types::Page<bosun_api::types::Context>, _> = client
        .get(&format!("/api/v2/context?owner-id={unknown}"), admin)
        .await;
    assert_eq!(status(missing), StatusCode::NOT_FOUND);
}
