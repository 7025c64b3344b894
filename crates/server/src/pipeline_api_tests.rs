//! Pipeline listings through a real server: keyset pages stay exact while pipelines are being
//! added, a bad page token is a JSON 400, and members list only the projects they were given.

use std::collections::HashSet;

use serde_json::Value;

use crate::auth::hash_token;
use crate::http_tests::{ADMIN, TestServer, start};
use crate::openapi_tests::request;
use crate::store::{
    NewPipeline, PipelineState, PipelineStatus, Role, Store, UserRow, UserTokenRow, fixtures,
};
use crate::util::{new_id, now_ms};

async fn add_pipelines(store: &Store, project_id: &str, numbers: std::ops::RangeInclusive<i64>) {
    for number in numbers {
        let id = new_id();
        let mut tx = store.begin().await.unwrap();
        tx.insert_pipeline(&NewPipeline {
            id: &id,
            project_id,
            number,
            branch: Some("main"),
            tag: None,
            revision: "abc",
            state: PipelineState::Created,
            status: PipelineStatus::Success,
            errors: "[]",
            created_at: now_ms(),
            trigger_type: "api",
            actor_id: crate::store::BOOTSTRAP_ADMIN_ID,
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

async fn get_as(server: &TestServer, token: &str, url: &str) -> (u16, Value) {
    request(
        server,
        "GET",
        url,
        &format!("Circle-Token: {token}\r\n"),
        None,
    )
    .await
}

/// Every page of `url` as `token`: the pipelines' (project slug, number) in order.
async fn all_pages(server: &TestServer, token: &str, url: &str) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    let mut page_token: Option<String> = None;
    for _ in 0..100 {
        let sep = if url.contains('?') { '&' } else { '?' };
        let page_url = match &page_token {
            Some(t) => format!("{url}{sep}page-token={t}"),
            None => url.to_owned(),
        };
        let (status, page) = get_as(server, token, &page_url).await;
        assert_eq!(status, 200, "GET {page_url}: {page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 20, "a page holds at most 20");
        for item in items {
            seen.push((
                item["project_slug"].as_str().unwrap().to_owned(),
                item["number"].as_i64().unwrap(),
            ));
        }
        match page["next_page_token"].as_str() {
            Some(next) => page_token = Some(next.to_owned()),
            None => {
                assert!(page["next_page_token"].is_null(), "{page}");
                return seen;
            }
        }
    }
    panic!("{url}: more than 100 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_list_every_pipeline_once_while_new_ones_arrive() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    add_pipelines(&server.store, &project, 1..=250).await;

    // New pipelines keep arriving while the pages are read.
    let store = server.store.clone();
    let adder = {
        let project = project.clone();
        tokio::spawn(async move {
            for number in 251..=300 {
                add_pipelines(&store, &project, number..=number).await;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    for url in [
        "/api/v2/project/gh/acme/widgets/pipeline",
        "/api/v2/project/github/acme/widgets/pipeline",
        "/api/v2/pipeline?org-slug=gh/acme",
    ] {
        let seen = all_pages(&server, ADMIN, url).await;
        let numbers: Vec<i64> = seen.iter().map(|(_, n)| *n).collect();
        let unique: HashSet<i64> = numbers.iter().copied().collect();
        assert_eq!(
            unique.len(),
            numbers.len(),
            "{url}: a pipeline listed twice"
        );
        let mut originals: Vec<i64> = numbers.iter().copied().filter(|n| *n <= 250).collect();
        if url.contains("org-slug") {
            // Across projects the order is by creation time: pipelines made in the same
            // millisecond come in id order.
            originals.sort_unstable_by(|a, b| b.cmp(a));
        } else {
            assert!(
                numbers.windows(2).all(|w| w[0] > w[1]),
                "{url}: newest first"
            );
        }
        assert_eq!(
            originals,
            (1..=250).rev().collect::<Vec<_>>(),
            "{url}: each of the first 250 exactly once"
        );
    }
    adder.await.unwrap();

    let (status, answer) = get_as(
        &server,
        ADMIN,
        "/api/v2/project/gh/acme/widgets/pipeline?page-token=bm90LW91cnM",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("page-token"),
        "{answer}"
    );
}

#[tokio::test]
async fn members_list_only_their_projects_and_mine_only_their_own() {
    let server = start(|_| {}).await;
    let mine = fixtures::project(&server.store, "gh/acme/mine").await;
    let other = fixtures::project(&server.store, "gh/acme/other").await;
    add_pipelines(&server.store, &mine, 1..=3).await;
    add_pipelines(&server.store, &other, 1..=2).await;

    let user = UserRow {
        id: new_id(),
        login: "mia".into(),
        name: "Mia".into(),
        role: Role::Member,
        created_at: now_ms(),
    };
    assert!(server.store.create_user(&user).await.unwrap());
    let token = "bosun_user_test_token_for_mia_0123456789";
    let row = UserTokenRow {
        id: new_id(),
        user_id: user.id.clone(),
        login: user.login.clone(),
        label: "test".into(),
        created_at: now_ms(),
        expires_at: None,
        last_used_at: None,
    };
    server
        .store
        .create_user_token(&row, &hash_token(token))
        .await
        .unwrap();
    server
        .store
        .add_project_member(&user.id, &mine, now_ms())
        .await
        .unwrap();

    let seen = all_pages(&server, token, "/api/v2/pipeline?org-slug=gh/acme").await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter().all(|(slug, _)| slug == "gh/acme/mine"),
        "{seen:?}"
    );
    let (status, answer) = get_as(&server, token, "/api/v2/project/gh/acme/other/pipeline").await;
    assert_eq!(status, 403, "{answer}");

    // The admin sees both projects; the member triggered none of them.
    assert_eq!(
        all_pages(&server, ADMIN, "/api/v2/pipeline?org-slug=acme")
            .await
            .len(),
        5
    );
    assert!(
        all_pages(&server, token, "/api/v2/project/gh/acme/mine/pipeline/mine")
            .await
            .is_empty()
    );
    assert_eq!(
        all_pages(&server, ADMIN, "/api/v2/project/gh/acme/mine/pipeline/mine")
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn cancelling_a_workflow_cancels_every_job_that_had_not_ended() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(
        &server.store,
        &project,
        &[("build", &[]), ("test", &["build"])],
    )
    .await;
    let url = format!("/api/v2/workflow/{}/cancel", flow.id);
    let (status, answer) = request(
        &server,
        "POST",
        &url,
        &format!("Circle-Token: {ADMIN}\r\n"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["message"], "Accepted.");
    for job in flow.jobs.values() {
        let status = server.store.job_status(job).await.unwrap().unwrap();
        assert!(status.is_final(), "{job}: {status}");
        assert_ne!(status, crate::store::JobStatus::Success);
    }
    let (status, _) = request(
        &server,
        "POST",
        "/api/v2/workflow/0b6c6f3a-1c1e-4a6e-9a55-3e0e2f0b9d11/cancel",
        &format!("Circle-Token: {ADMIN}\r\n"),
        None,
    )
    .await;
    assert_eq!(status, 404);
}
