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
