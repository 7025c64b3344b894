//! Tokens: a resource class's token claims only its own class's tasks; bad tokens get 401.

use std::time::Duration;

use bosun_api::{Auth, ClaimRequest, Method, StatusCode, UnclaimedTaskCount};
use bosun_tests::{Server, git_repo, shared_tempdir};

fn claim_body() -> ClaimRequest {
    ClaimRequest {
        name: "probe".into(),
        hostname: "h".into(),
        ip: "127.0.0.1".into(),
        version: "0".into(),
        ..ClaimRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_one_class_cannot_claim_another_class_and_bad_tokens_get_401() {
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class("ns/a").await;
    server.resource_class("ns/b").await;
    let token_a = server.token("ns/a").await;
    let token_b = server.token("ns/b").await;
    let config = "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: ns/b\n    steps:\n      - run: echo hi\n";
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", config)]);
    server.project("local/ns/auth", &repo).await;
    let _pipeline = server.trigger("local/ns/auth", "main").await;

    let unclaimed: UnclaimedTaskCount = server
        .client
        .get("/api/v3/runner/tasks?resource-class=ns/b", &server.admin)
        .await
        .unwrap();
    assert_eq!(unclaimed.unclaimed_task_count, 1);

    // Class a's token waits out its long-poll and gets nothing.
    let answer = server
        .client
        .send_json(
            Method::POST,
            "/api/v3/runner/claim?wait=1s",
            &Auth::Bearer(token_a),
            Some(&claim_body()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::NO_CONTENT);

    // A made-up token and a malformed header are refused.
    for auth in [Auth::Bearer("bosun_rc_00000000".into()), Auth::None] {
        let err = server
            .client
            .send_json(
                Method::POST,
                "/api/v3/runner/claim",
                &auth,
                Some(&claim_body()),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED), "{err}");
    }
    // The admin token is not a runner token either.
    let err = server
        .client
        .send_json(
            Method::POST,
            "/api/v3/runner/claim",
            &Auth::Bearer("bosun-e2e-admin-token-0123456789".into()),
            Some(&claim_body()),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));

    // Class b's token gets the task, and with it a task token that reads only this task.
    let answer = server
        .client
        .send_json(
            Method::POST,
            "/api/v3/runner/claim?wait=5s",
            &Auth::Bearer(token_b.clone()),
            Some(&claim_body()),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let claim: bosun_api::ClaimResponse = answer.json().unwrap();
    assert_eq!(claim.resource_class, "ns/b");
    let spec: bosun_api::TaskSpec = server
        .client
        .get("/api/v2/task/config", &Auth::Bearer(claim.task_token))
        .await
        .unwrap();
    assert_eq!(spec.job_name, "build");
    assert_eq!(spec.task_id, claim.allocation);
    // A runner token is not a task token.
    let err = server
        .client
        .get::<bosun_api::TaskSpec>("/api/v2/task/config", &Auth::Bearer(token_b))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
}

/// Claims long-poll per resource class and a queued task wakes one of its class's, which
/// wakes the next when it took one (issue 16): tasks queued together are all claimed at once,
/// by claims of their own class, while the others go on waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_queued_together_are_all_claimed_at_once_by_their_class() {
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class("ns/a").await;
    server.resource_class("ns/b").await;
    let token_a = server.token("ns/a").await;
    let token_b = server.token("ns/b").await;
    let mut config = String::from("version: 2.1\njobs:\n");
    for (job, class) in [
        ("a1", "a"),
        ("a2", "a"),
        ("a3", "a"),
        ("a4", "a"),
        ("b1", "b"),
    ] {
        config.push_str(&format!(
            "  {job}:\n    machine: true\n    resource_class: ns/{class}\n    steps:\n      - run: true\n"
        ));
    }
    config.push_str("workflows:\n  main:\n    jobs: [a1, a2, a3, a4, b1]\n");
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    server.project("local/ns/fanout", &repo).await;

    let mut waiting = Vec::new();
    for (n, token) in [&token_a; 6].into_iter().chain([&token_b; 2]).enumerate() {
        let client = server.client.clone();
        let auth = Auth::Bearer(token.clone());
        waiting.push(tokio::spawn(async move {
            let body = ClaimRequest {
                name: format!("runner-{n}"),
                ..claim_body()
            };
            let started = std::time::Instant::now();
            let answer = client.claim(&auth, &body, Duration::from_secs(8)).await;
            (answer.unwrap().is_some(), started.elapsed())
        }));
    }
    // Every claim is waiting before the pipeline queues its five tasks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued_at = std::time::Instant::now();
    server.trigger("local/ns/fanout", "main").await;
    let mut claimed = Vec::new();
    for (n, claim) in waiting.into_iter().enumerate() {
        let (got, took) = claim.await.unwrap();
        if got {
            claimed.push(n);
            assert!(
                took < Duration::from_secs(6),
                "claim {n} got its task after {took:?}"
            );
        }
    }
    // Four of class a's six claims and one of class b's two got a task; the others waited out
    // their 8 s (no task for them).
    let a = claimed.iter().filter(|n| **n < 6).count();
    let b = claimed.iter().filter(|n| **n >= 6).count();
    assert_eq!((a, b), (4, 1), "claims that got a task: {claimed:?}");
    assert!(queued_at.elapsed() >= Duration::from_secs(6));
}
