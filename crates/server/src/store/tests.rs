//! Store tests on a real SQLite database in a temporary directory. The scheduler's tests
//! (claims, leases, cancel, roll-up) are in `scheduler.rs`.

use std::path::Path;

use super::*;

#[tokio::test]
async fn migration_4_counts_the_steps_of_jobs_made_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    // The schema as version 3 left it, with one job of three steps.
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for name in [
        "0001_initial.sql",
        "0002_continuations.sql",
        "0003_namespaces_and_continuation_keys.sql",
    ] {
        std::fs::copy(migrations.join(name), old.join(name)).unwrap();
    }
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for statement in [
            "INSERT INTO projects (id, slug, git_url, created_at) VALUES ('p', 'gh/a/b', '/x', 0)",
            "INSERT INTO pipelines (id, project_id, number, revision, state, status, created_at)
             VALUES ('pl', 'p', 1, 'abc', 'created', 'running', 0)",
            "INSERT INTO workflows (id, pipeline_id, name, position, status, created_at)
             VALUES ('w', 'pl', 'build', 0, 'running', 0)",
            r#"INSERT INTO jobs (id, workflow_id, pipeline_id, name, number, position, status,
                                resource_class, requires, spec)
               VALUES ('j', 'w', 'pl', 'build', 1, 0, 'blocked', 'a/b', '[]',
                       '{"steps": [{"run": {}}, {"run": {}}, {"checkout": {}}]}'),
                      ('k', 'w', 'pl', 'test', 2, 1, 'blocked', 'a/b', '[]', '{}')"#,
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.step_count("j").await.unwrap(), 3);
    assert_eq!(
        store.step_count("k").await.unwrap(),
        0,
        "a spec without steps"
    );
    assert_eq!(store.step_count("missing").await.unwrap(), 0);
    assert_eq!(
        store.job_status("j").await.unwrap(),
        Some(JobStatus::Blocked)
    );
}

#[tokio::test]
async fn a_resource_class_with_tokens_is_deleted_only_when_forced() {
    let (store, _dir) = test_store().await;
    let class = ResourceClassRow {
        id: "rc".into(),
        name: "acme/linux".into(),
        description: "".into(),
    };
    assert!(
        store
            .create_resource_class(&class, "acme", 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .create_resource_class(&class, "acme", 2)
            .await
            .unwrap()
    );
    store
        .create_runner_token("t", "rc", "first", "hash", 3)
        .await
        .unwrap();
    assert_eq!(
        store.runner_token_class("hash").await.unwrap().as_deref(),
        Some("acme/linux")
    );
    assert_eq!(
        store.delete_resource_class("rc", false).await.unwrap(),
        ResourceClassDeletion::HasTokens {
            name: "acme/linux".into(),
            tokens: 1
        }
    );
    assert_eq!(
        store.delete_resource_class("rc", true).await.unwrap(),
        ResourceClassDeletion::Deleted
    );
    assert_eq!(store.runner_token_class("hash").await.unwrap(), None);
    assert_eq!(
        store.delete_resource_class("rc", true).await.unwrap(),
        ResourceClassDeletion::NotFound
    );
}

#[tokio::test]
async fn admin_tokens_are_added_once_and_found_by_hash() {
    let (store, _dir) = test_store().await;
    assert!(!store.has_admin_token().await.unwrap());
    store.add_admin_token("h", 1).await.unwrap();
    store.add_admin_token("h", 2).await.unwrap();
    assert!(store.has_admin_token().await.unwrap());
    assert!(store.is_admin_token("h").await.unwrap());
    assert!(!store.is_admin_token("other").await.unwrap());
}

#[tokio::test]
async fn a_namespace_lists_its_own_runners_and_wildcards_in_its_name_match_nothing_else() {
    let (store, _dir) = test_store().await;
    for (class, name) in [
        ("a_b/linux", "one"),
        ("axb/linux", "two"),
        ("a_b/arm", "three"),
    ] {
        store
            .runner_seen(&RunnerSeen {
                resource_class: class,
                name,
                hostname: "host",
                ip: "127.0.0.1",
                version: "1",
                running: 0,
                capacity: 1,
                draining: false,
                now: 100,
            })
            .await
            .unwrap();
    }
    let names = |rows: Vec<RunnerRow>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.runners_of_namespace("a_b", 0).await.unwrap()),
        ["three", "one"]
    );
    assert!(
        store
            .runners_of_namespace("a%", 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .runners_of_namespace("a\\", 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        names(store.runners_of_class("axb/linux", 0).await.unwrap()),
        ["two"]
    );
    assert!(
        store
            .runners_of_class("axb/linux", 101)
            .await
            .unwrap()
            .is_empty(),
        "silent since"
    );
}

#[tokio::test]
async fn statuses_are_stored_as_circleci_strings() {
    let (store, _dir) = test_store().await;
    for status in StepStatus::ALL {
        let text: String = sqlx::query_scalar("SELECT ?")
            .bind(status)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(text, status.as_str());
    }
    let unknown: Result<JobStatus, sqlx::Error> = sqlx::query_scalar("SELECT 'paused'")
        .fetch_one(&store.pool)
        .await;
    let error = unknown.expect_err("an unknown status is an error, not a default");
    assert!(
        error.to_string().contains("`paused` is not a JobStatus"),
        "{error}"
    );
}

fn cache(project_id: &str, job_id: &str, task_id: &str, key: &str, created_at: i64) -> CacheRow {
    CacheRow {
        id: crate::util::new_id(),
        project_id: project_id.to_owned(),
        key: key.to_owned(),
        size: key.len() as i64,
        sha256: "00".into(),
        blob_key: format!("caches/{project_id}/{key}"),
        job_id: job_id.to_owned(),
        task_id: task_id.to_owned(),
        created_at,
        last_used_at: None,
    }
}

#[tokio::test]
async fn cache_prefixes_are_literal_and_the_most_recent_match_wins() {
    let (store, _dir) = test_store().await;
    let project = fixtures::project(&store, "gh/acme/a").await;
    let other = fixtures::project(&store, "gh/acme/b").await;
    let flow = fixtures::workflow(&store, &project, &[("build", &[])]).await;
    let job = &flow.jobs["build"];
    let task = fixtures::task(&store, job, TaskStatus::Running, "h").await;
    let keys = [
        ("a%b", 1),
        ("axb", 2),
        ("a_b", 3),
        ("a%bc", 4),
        ("aXb", 5),
        ("a\\b", 6),
        ("v1-é", 7),
        ("v1-\u{10FFFF}x", 8),
    ];
    for (key, at) in keys {
        let inserted = store
            .add_cache(&cache(&project, job, &task, key, at), 0)
            .await
            .unwrap();
        assert_eq!(inserted, CacheInsert::Inserted { replaced: None });
    }
    // The other project's newest cache is not this one's.
    store
        .add_cache(&cache(&other, job, &task, "a%zzz", 100), 0)
        .await
        .unwrap();
    let latest = |prefix: &'static str, after: i64| {
        let store = store.clone();
        let project = project.clone();
        async move {
            store
                .latest_cache_with_prefix(&project, prefix, after)
                .await
                .unwrap()
                .map(|row| row.key)
        }
    };
    assert_eq!(latest("a%", 0).await.as_deref(), Some("a%bc"));
    assert_eq!(latest("a%b", 0).await.as_deref(), Some("a%bc"));
    assert_eq!(latest("a%b", 0).await.as_deref(), Some("a%bc"));
    assert_eq!(latest("a_", 0).await.as_deref(), Some("a_b"));
    assert_eq!(latest("a\\", 0).await.as_deref(), Some("a\\b"));
    assert_eq!(latest("ax", 0).await.as_deref(), Some("axb"));
    assert_eq!(latest("a", 0).await.as_deref(), Some("a\\b"));
    assert_eq!(latest("", 0).await.as_deref(), Some("v1-\u{10FFFF}x"));
    assert_eq!(latest("v1-", 0).await.as_deref(), Some("v1-\u{10FFFF}x"));
    assert_eq!(latest("v1-é", 0).await.as_deref(), Some("v1-é"));
    assert_eq!(latest("b", 0).await, None);
    assert_eq!(latest("a%bcd", 0).await, None);
    // Expired caches (created at or before the cutoff) are invisible at once.
    assert_eq!(latest("a%", 3).await.as_deref(), Some("a%bc"));
    assert_eq!(latest("a%", 4).await, None);
    assert!(store.cache_exists(&project, "a%b", 0).await.unwrap());
    assert!(!store.cache_exists(&project, "a%b", 1).await.unwrap());
    assert!(!store.cache_exists(&project, "a%", 0).await.unwrap());

    // The listing: newest first, live only.
    let listed: Vec<String> = store
        .project_caches(&project, 4, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.key)
        .collect();
    assert_eq!(listed, ["v1-\u{10FFFF}x", "v1-é", "a\\b", "aXb"]);

    // Pages of a prefix, in key order, after a key.
    let page = |after: Option<&'static str>| {
        let store = store.clone();
        let project = project.clone();
        async move {
            store
                .caches_with_prefix(&project, "a", after, 2)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.key)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None).await, ["a%b", "a%bc"]);
    assert_eq!(page(Some("a%bc")).await, ["aXb", "a\\b"]);
    assert_eq!(page(Some("a\\b")).await, ["a_b", "axb"]);
    assert!(page(Some("axb")).await.is_empty());
}

#[tokio::test]
async fn a_cache_key_is_saved_once_and_an_expired_one_gives_way() {
    let (store, _dir) = test_store().await;
    let project = fixtures::project(&store, "gh/acme/a").await;
    let flow = fixtures::workflow(&store, &project, &[("build", &[])]).await;
    let job = &flow.jobs["build"];
    let task = fixtures::task(&store, job, TaskStatus::Running, "h").await;
    let first = cache(&project, job, &task, "k", 10);
    assert_eq!(
        store.add_cache(&first, 0).await.unwrap(),
        CacheInsert::Inserted { replaced: None }
    );
    let mut second = cache(&project, job, &task, "k", 20);
    second.blob_key = "caches/p/second".into();
    assert_eq!(
        store.add_cache(&second, 0).await.unwrap(),
        CacheInsert::Exists
    );
    // Once the first expired (alive only after 10), the second replaces it.
    assert_eq!(
        store.add_cache(&second, 10).await.unwrap(),
        CacheInsert::Inserted {
            replaced: Some(first.blob_key.clone())
        }
    );
    let row = store
        .latest_cache_with_prefix(&project, "k", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.id, second.id);
    store.touch_cache(&row.id, 99).await.unwrap();
    let row = store
        .latest_cache_with_prefix(&project, "k", 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_used_at, Some(99));
    assert_eq!(
        store
            .expired_caches(20, 10)
            .await
            .unwrap()
            .iter()
            .map(|row| &row.id)
            .collect::<Vec<_>>(),
        [&second.id]
    );
    assert!(store.expired_caches(19, 10).await.unwrap().is_empty());
    assert!(store.delete_cache(&second.id).await.unwrap());
    assert!(!store.delete_cache(&second.id).await.unwrap());
    assert_eq!(fixtures::count(&store, "caches").await, 0);
}

#[tokio::test]
async fn workspace_layers_keep_their_jobs_order_and_only_succeeded_tasks_count() {
    let (store, _dir) = test_store().await;
    let project = fixtures::project(&store, "gh/acme/a").await;
    let flow = fixtures::workflow(&store, &project, &[("a", &[]), ("b", &["a"])]).await;
    let a = &flow.jobs["a"];
    let b = &flow.jobs["b"];
    let ok = fixtures::task(&store, a, TaskStatus::Success, "h1").await;
    let failed = fixtures::task(&store, b, TaskStatus::Failed, "h2").await;
    let layer = |job: &str, task: &str, at: i64| LayerRow {
        id: crate::util::new_id(),
        workflow_id: flow.id.clone(),
        job_id: job.to_owned(),
        task_id: task.to_owned(),
        seq: 0,
        size: 1,
        sha256: "00".into(),
        blob_key: "workspaces/x/y".into(),
        created_at: at,
    };
    let first = layer(a, &ok, 10);
    let second = layer(a, &ok, 11);
    let of_failed = layer(b, &failed, 5);
    assert_eq!(store.add_workspace_layer(&first).await.unwrap(), 1);
    assert_eq!(store.add_workspace_layer(&second).await.unwrap(), 2);
    assert_eq!(store.add_workspace_layer(&of_failed).await.unwrap(), 1);
    assert_eq!(store.job_layer_count(a).await.unwrap(), 2);
    let ids = |rows: Vec<LayerRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.workflow_layers(&flow.id, 0).await.unwrap()),
        [first.id.clone(), second.id.clone()]
    );
    assert_eq!(
        ids(store.workflow_layers(&flow.id, 10).await.unwrap()),
        [second.id.as_str()]
    );
    assert!(
        store
            .workflow_layers(&flow.id, 11)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(store.expired_workspace_layers(10, 2).await.unwrap()),
        [of_failed.id.clone(), first.id.clone()]
    );
    assert!(store.delete_workspace_layer(&first.id).await.unwrap());
    assert_eq!(fixtures::count(&store, "workspace_layers").await, 2);
}

#[tokio::test]
async fn a_release_is_published_once_and_promotions_remember_what_a_rollback_returns_to() {
    let (store, _dir) = test_store().await;
    let release = |version: &str, manifest: &str| ReleaseRow {
        version: version.into(),
        manifest: manifest.into(),
        signature: vec![0; 64],
        created_at: 1,
    };
    assert_eq!(
        store
            .insert_release(&release("1.0.0", "m1"), &[])
            .await
            .unwrap(),
        Published::New
    );
    assert_eq!(
        store
            .insert_release(&release("1.0.0", "m1"), &[])
            .await
            .unwrap(),
        Published::Again
    );
    assert_eq!(
        store
            .insert_release(&release("1.0.0", "other"), &[])
            .await
            .unwrap(),
        Published::Conflict
    );
    assert_eq!(
        store.release("1.0.0").await.unwrap().unwrap().manifest,
        "m1"
    );
    store
        .insert_release(&release("2.0.0", "m2"), &[])
        .await
        .unwrap();

    let first = store.promote("", "1.0.0", false, 1).await.unwrap();
    assert_eq!(first.previous, None);
    let second = store.promote("", "2.0.0", false, 2).await.unwrap();
    assert_eq!(second.previous.as_deref(), Some("1.0.0"));
    // The same version again keeps what a rollback returns to.
    let again = store.promote("", "2.0.0", false, 3).await.unwrap();
    assert_eq!(again.previous.as_deref(), Some("1.0.0"));
    let back = store.promote("", "1.0.0", true, 4).await.unwrap();
    assert_eq!(
        (back.previous.as_deref(), back.rollback),
        (Some("2.0.0"), true)
    );
    // A resource class's promotion is its own.
    store
        .promote("acme/canary", "2.0.0", false, 5)
        .await
        .unwrap();
    let all = store.promotions().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].version, "1.0.0");
    assert_eq!(all[1].scope, "acme/canary");
}

#[tokio::test]
async fn orb_versions_are_immutable_dev_versions_are_replaced_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("orbs.db").display());
    let store = Store::open(&url).await.unwrap();
    let row = |version: &str, source: &str, created_at: i64, expires_at: Option<i64>| {
        let n: Vec<i64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
        OrbVersionRow {
            namespace: "acme".into(),
            name: "tools".into(),
            version: version.into(),
            major: n.first().copied(),
            minor: n.get(1).copied(),
            patch: n.get(2).copied(),
            source: source.into(),
            sha256: format!("sha-{source}"),
            origin: String::new(),
            created_at,
            expires_at,
        }
    };
    let published = store.insert_orb_version(&row("1.0.0", "a", 10, None)).await;
    assert_eq!(published.unwrap(), OrbPublished::New);
    // The same version again, even with other content: refused, the first kept.
    let again = store.insert_orb_version(&row("1.0.0", "b", 20, None)).await;
    assert_eq!(again.unwrap(), OrbPublished::Exists);
    let kept = store
        .orb_version("acme", "tools", "1.0.0", 30)
        .await
        .unwrap();
    assert_eq!(kept.unwrap().source, "a");

    let dev = store
        .insert_orb_version(&row("dev:x", "d1", 10, Some(100)))
        .await;
    assert_eq!(dev.unwrap(), OrbPublished::New);
    let dev = store
        .insert_orb_version(&row("dev:x", "d2", 20, Some(110)))
        .await;
    assert_eq!(dev.unwrap(), OrbPublished::Replaced);
    let live = store
        .orb_version("acme", "tools", "dev:x", 105)
        .await
        .unwrap();
    assert_eq!(live.unwrap().source, "d2");
    // Expired: not read, not listed, and swept.
    assert!(
        store
            .orb_version("acme", "tools", "dev:x", 110)
            .await
            .unwrap()
            .is_none()
    );
    let versions = store.orb_versions("acme", "tools", 110).await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(store.delete_expired_orb_versions(110).await.unwrap(), 1);
    let listed = store.orbs(Some("acme"), 110).await.unwrap();
    assert_eq!((listed.len(), listed[0].versions), (1, 1));
    assert!(store.orbs(Some("other"), 110).await.unwrap().is_empty());
}
