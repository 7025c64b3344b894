//! Users, roles and personal tokens through a real server: users and tokens made through the
//! API as an operator would, each token form CircleCI accepts, what each role may and may not
//! do (viewers read only; members their projects; runner admin 404, elsewhere 403), revocation
//! and expiry (401), and no token's secret in the database file.

use serde_json::{Value, json};

use crate::http_tests::{ADMIN, TestServer, start};
use crate::openapi_tests::request;
use crate::store::fixtures;
use crate::util::{new_id, now_ms};

fn token_header(token: &str) -> String {
    format!("Circle-Token: {token}\r\n")
}

async fn call(
    server: &TestServer,
    token: &str,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|body| body.to_string());
    request(
        server,
        method,
        url,
        &token_header(token),
        body.as_deref().map(|body| ("application/json", body)),
    )
    .await
}

/// Creates user `login` with `role` and a token for them, both through the API as the admin.
async fn user_with_token(server: &TestServer, login: &str, role: &str) -> (String, String) {
    let (status, user) = call(
        server,
        ADMIN,
        "POST",
        "/api/v2/user",
        Some(json!({"login": login, "role": role})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["role"], role);
    let (status, token) = call(
        server,
        ADMIN,
        "POST",
        "/api/v2/token",
        Some(json!({"user": login, "label": "test"})),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    assert_eq!(token["user"], login);
    (
        user["id"].as_str().unwrap().to_owned(),
        token["token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn each_token_form_acts_as_its_user() {
    let server = start(|_| {}).await;
    let (id, token) = user_with_token(&server, "vera", "viewer").await;

    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{token}:"));
    for (url, headers) in [
        ("/api/v2/me".to_owned(), token_header(&token)),
        (
            "/api/v2/me".to_owned(),
            format!("Authorization: Basic {basic}\r\n"),
        ),
        (format!("/api/v2/me?circle-token={token}"), String::new()),
    ] {
        let (status, me) = request(&server, "GET", &url, &headers, None).await;
        assert_eq!(status, 200, "{headers}: {me}");
        assert_eq!(me, json!({"id": id, "login": "vera", "name": "vera"}));
    }
    // The admin token is the bootstrap admin; anyone may read a user by id or login.
    let (_, me) = call(&server, ADMIN, "GET", "/api/v2/me", None).await;
    assert_eq!(me["login"], "admin");
    let (status, by_login) = call(&server, &token, "GET", "/api/v2/user/vera", None).await;
    assert_eq!((status, &by_login["id"]), (200, &json!(id)));
    let (status, v1) = call(&server, &token, "GET", "/api/v1.1/me", None).await;
    assert_eq!(status, 200, "{v1}");
    assert_eq!(
        (&v1["login"], &v1["admin"]),
        (&json!("vera"), &json!(false))
    );

    let (status, answer) = call(&server, "bosun_pat_unknown", "GET", "/api/v2/me", None).await;
    assert_eq!(status, 401, "{answer}");
}

#[tokio::test]
async fn viewers_read_but_cannot_trigger_or_cancel() {
    let server = start(|_| {}).await;
    let project = fixtures::project(&server.store, "gh/acme/widgets").await;
    let flow = fixtures::workflow(&server.store, &project, &[("build", &[])]).await;
    let (_, viewer) = user_with_token(&server, "vera", "viewer").await;

    let (status, answer) = call(
        &server,
        &viewer,
        "GET",
        "/api/v2/project/gh/acme/widgets",
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(
        &server,
        &viewer,
        "GET",
        &format!("/api/v2/workflow/{}/job", flow.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let job = &flow.jobs["build"];
    for (method, url, body) in [
        (
            "POST",
            "/api/v2/project/gh/acme/widgets/pipeline".to_owned(),
            Some(json!({"branch": "main"})),
        ),
        ("POST", format!("/api/v2/job/{job}/cancel"), None),
        (
            "POST",
            "/api/v2/project/gh/acme/widgets/job/1/cancel".into(),
            None,
        ),
        ("POST", format!("/api/v2/workflow/{}/cancel", flow.id), None),
        (
            "POST",
            "/api/v2/project/gh/acme/widgets/envvar".into(),
            Some(json!({"name": "X", "value": "y"})),
        ),
        (
            "POST",
            "/api/v2/context".into(),
            Some(json!({"name": "c", "owner": {"slug": "acme", "type": "organization"}})),
        ),
        ("GET", "/api/v2/user".into(), None),
    ] {
        let (status, answer) = call(&server, &viewer, method, &url, body).await;
        assert_eq!(status, 403, "{method} {url}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("vera"),
            "{answer}"
        );
    }
    // Nothing was canceled by the refused calls.
    let status = server.store.job_status(job).await.unwrap().unwrap();
    assert!(!status.is_final(), "{status}");
    // Anyone reads the resource classes; changing them is the admin's, and the runner admin
    // API answers others 404, as CircleCI's does.
    let (status, answer) = call(
        &server,
        &viewer,
        "GET",
        "/api/v3/runner/resource?namespace=acme",
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(
        &server,
        &viewer,
        "POST",
        "/api/v3/runner/token",
        Some(json!({"resource_class": "acme/small", "nickname": "x"})),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
}

#[tokio::test]
async fn members_change_only_the_projects_they_were_given() {
    let server = start(|_| {}).await;
    let mine = fixtures::project(&server.store, "gh/acme/mine").await;
    fixtures::project(&server.store, "gh/acme/other").await;
    let flow = fixtures::workflow(&server.store, &mine, &[("build", &[])]).await;
    let (member_id, member) = user_with_token(&server, "mia", "member").await;
    let (status, granted) = call(
        &server,
        ADMIN,
        "PUT",
        "/api/v2/user/mia/project/github/acme/mine",
        None,
    )
    .await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["projects"], json!(["gh/acme/mine"]));

    for slug in ["gh/acme/other", "gh/acme/mine"] {
        let (status, answer) = call(
            &server,
            ADMIN,
            "POST",
            &format!("/api/v2/project/{slug}/envvar"),
            Some(json!({"name": "SECRET_NAME", "value": "v"})),
        )
        .await;
        assert_eq!(status, 201, "{answer}");
    }
    let (status, answer) = call(
        &server,
        &member,
        "GET",
        "/api/v2/project/gh/acme/other/envvar",
        None,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(!answer.to_string().contains("SECRET_NAME"), "{answer}");
    let (status, answer) = call(
        &server,
        &member,
        "GET",
        "/api/v2/project/gh/acme/mine/envvar",
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["items"][0]["name"], "SECRET_NAME");

    // Resource classes are the admin's: 404 for a member, as CircleCI answers.
    let (status, answer) = call(
        &server,
        &member,
        "POST",
        "/api/v3/runner/resource",
        Some(json!({"resource_class": "acme/big", "description": ""})),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        !server
            .store
            .resource_class_exists("acme/big")
            .await
            .unwrap()
    );

    // Their own project's workflow they may cancel.
    let (status, answer) = call(
        &server,
        &member,
        "POST",
        &format!("/api/v2/workflow/{}/cancel", flow.id),
        None,
    )
    .await;
    assert_eq!(status, 202, "{answer}");

    // v1.1's project list shows them only theirs; user administration stays the admin's.
    let (status, projects) = call(&server, &member, "GET", "/api/v1.1/projects", None).await;
    assert_eq!(status, 200, "{projects}");
    let slugs: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["gh/acme/mine"]);
    assert_eq!(projects[0]["vcs_type"], "github");
    let (status, _) = call(
        &server,
        &member,
        "POST",
        "/api/v2/token",
        Some(json!({"user": "admin"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &server,
        &member,
        "PUT",
        &format!("/api/v2/user/{member_id}/role"),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 403);

    // Taking the project back takes the access with it.
    let (status, _) = call(
        &server,
        ADMIN,
        "DELETE",
        "/api/v2/user/mia/project/gh/acme/mine",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &server,
        &member,
        "GET",
        "/api/v2/project/gh/acme/mine/envvar",
        None,
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn revoked_and_expired_tokens_get_401_and_no_secret_is_stored() {
    let server = start(|_| {}).await;
    let (user_id, token) = user_with_token(&server, "mia", "member").await;
    let (status, second) = call(
        &server,
        &token,
        "POST",
        "/api/v2/token",
        Some(json!({"label": "laptop", "expires_in_seconds": 30 * 86400})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let second_token = second["token"].as_str().unwrap().to_owned();
    let expires = humantime::parse_rfc3339(second["expires_at"].as_str().unwrap()).unwrap();
    let days = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs()
        / 86400;
    assert!((29..=30).contains(&days), "{second}");

    // A member lists only their own tokens, without secrets, and sees their use.
    let (status, list) = call(&server, &second_token, "GET", "/api/v2/token", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains(&token), "{list}");
    let (status, _) = call(&server, &token, "GET", "/api/v2/token?all=true", None).await;
    assert_eq!(status, 403);

    // Revoked: 401 at once, the other token still works.
    let first_id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, answer) = call(
        &server,
        &second_token,
        "DELETE",
        &format!("/api/v2/token/{first_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = call(&server, &token, "GET", "/api/v2/me", None).await;
    assert_eq!(status, 401);
    let (status, _) = call(&server, &second_token, "GET", "/api/v2/me", None).await;
    assert_eq!(status, 200);

    // Expired: a token whose time is up answers as an unknown one.
    let expired = "bosun_pat_expired_token_for_the_test_0123456789";
    let row = crate::store::UserTokenRow {
        id: new_id(),
        user_id: user_id.clone(),
        login: "mia".into(),
        label: "old".into(),
        created_at: now_ms() - 10_000,
        expires_at: Some(now_ms() - 1),
        last_used_at: None,
    };
    server
        .store
        .create_user_token(&row, &crate::auth::hash_token(expired))
        .await
        .unwrap();
    let (status, answer) = call(&server, expired, "GET", "/api/v2/me", None).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["message"], "invalid token");

    // Deleting the user ends every token of theirs.
    let (status, _) = call(&server, ADMIN, "DELETE", "/api/v2/user/mia", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&server, &second_token, "GET", "/api/v2/me", None).await;
    assert_eq!(status, 401);

    // The database holds hashes, never a token's secret.
    drop(server.store.clone());
    let db = std::fs::read(server._dir.path().join("data/bosun.db")).unwrap();
    let wal = std::fs::read(server._dir.path().join("data/bosun.db-wal")).unwrap_or_default();
    for secret in [&token, &second_token] {
        for bytes in [&db, &wal] {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "a token's secret is in the database"
            );
        }
    }
}

#[tokio::test]
async fn user_administration_refuses_what_would_lock_the_operator_out() {
    let server = start(|_| {}).await;
    user_with_token(&server, "mia", "member").await;
    for (method, url, body, expected) in [
        (
            "POST",
            "/api/v2/user",
            Some(json!({"login": "mia", "role": "viewer"})),
            409,
        ),
        (
            "POST",
            "/api/v2/user",
            Some(json!({"login": "Bad Name", "role": "viewer"})),
            400,
        ),
        (
            "POST",
            "/api/v2/user",
            Some(json!({"login": "ok", "role": "owner"})),
            400,
        ),
        ("DELETE", "/api/v2/user/admin", None, 400),
        (
            "PUT",
            "/api/v2/user/admin/role",
            Some(json!({"role": "viewer"})),
            400,
        ),
        ("DELETE", "/api/v2/user/nobody", None, 404),
        ("PUT", "/api/v2/user/mia/project/gh/acme/none", None, 404),
        (
            "POST",
            "/api/v2/token",
            Some(json!({"expires_in_seconds": 0})),
            400,
        ),
    ] {
        let (status, answer) = call(&server, ADMIN, method, url, body).await;
        assert_eq!(status, expected, "{method} {url}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    let (status, users) = call(&server, ADMIN, "GET", "/api/v2/user", None).await;
    assert_eq!(status, 200);
    let logins: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["login"].as_str().unwrap())
        .collect();
    assert_eq!(logins, ["admin", "mia"]);
    assert!(users["next_page_token"].is_null());
}
