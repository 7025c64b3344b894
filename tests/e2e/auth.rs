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
