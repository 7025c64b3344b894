//! The typed methods put the same requests on the wire as the hand-written calls they replace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosun_api::{
    Auth, ClaimRequest, Client, CreateProject, InstanceFilter, StepEvent, TriggerPipeline,
};
use http_body_util::BodyExt;

use crate::serve;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    uri: String,
    auth: String,
    content_type: String,
    body: Vec<u8>,
}

async fn recording_server(answers: fn(&str) -> Response) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = {
        let seen = seen.clone();
        Router::new().fallback(move |request: Request| {
            let seen = seen.clone();
            async move {
                let (parts, body) = request.into_parts();
                let header = |name: &str| {
                    parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let auth = match (header("authorization"), header("circle-token")) {
                    (bearer, _) if !bearer.is_empty() => bearer,
                    (_, circle) if !circle.is_empty() => format!("Circle-Token {circle}"),
                    _ => String::new(),
                };
                let body: Bytes = body.collect().await.expect("body").to_bytes();
                let uri = parts.uri.to_string();
                let answer = answers(parts.uri.path());
                seen.lock().expect("lock").push(Seen {
                    method: parts.method.to_string(),
                    uri,
                    auth,
                    content_type: header("content-type"),
                    body: body.to_vec(),
                });
                answer
            }
        })
    };
    let addr = serve(app).await;
    let client = Client::new(&format!("http://{addr}")).expect("client");
    (client, seen)
}

fn json(value: serde_json::Value) -> Response {
    axum::Json(value).into_response()
}

fn answers(path: &str) -> Response {
    match path {
        "/api/v3/runner/claim" => StatusCode::NO_CONTENT.into_response(),
        "/api/v2/task/heartbeat" => json(serde_json::json!({"cancel": true, "lease_secs": 30})),
        "/api/v2/task/log" => json(serde_json::json!({"length": 5})),
        "/api/v2/project/local/acme/widgets/pipeline" => json(serde_json::json!({
            "id": "p1", "number": 1, "state": "created", "created_at": "now"
        })),
        "/api/v2/project" => json(serde_json::json!({
            "id": "pr1", "slug": "local/acme/widgets", "git_url": "/git", "namespace": "acme"
        })),
        "/api/v3/runner" => json(serde_json::json!({"items": []})),
        "/api/v2/job/j%201/cancel" => json(serde_json::json!({"message": "canceling"})),
        "/api/v2/job/j1/step/2/log" => "page".into_response(),
        _ => json(serde_json::json!({})),
    }
}

#[tokio::test]
async fn typed_methods_send_what_the_hand_written_calls_sent() {
    let (client, seen) = recording_server(answers).await;
    let runner = Auth::Bearer("runner-token".into());
    let task = Auth::Bearer("task-token".into());
    let admin = Auth::CircleToken("admin-token".into());
    let claim = ClaimRequest {
        name: "r".into(),
        hostname: "h".into(),
        ip: "1.2.3.4".into(),
        version: "0".into(),
        ..ClaimRequest::default()
    };
    assert_eq!(
        client
            .claim(&runner, &claim, Duration::from_secs(30))
            .await
            .expect("claim"),
        None
    );
    let beat = client
        .heartbeat(&task, Duration::from_millis(500))
        .await
        .expect("heartbeat");
    assert!(beat.cancel);
    let stored = client
        .append_log(&task, 3, 40, Bytes::from_static(b"zstd!"))
        .await
        .expect("log");
    assert_eq!(stored.length, 5);
    client
        .step_event(
            &task,
            &StepEvent {
                step: 0,
                name: "s".into(),
                status: "running".into(),
                exit_code: None,
                duration_ms: None,
            },
        )
        .await
        .expect("step");
    client
        .create_project(
            &admin,
            &CreateProject {
                slug: "local/acme/widgets".into(),
                git_url: "/git".into(),
                namespace: None,
            },
        )
        .await
        .expect("project");
    let created = client
        .trigger_pipeline(
            &admin,
            "local/acme/widgets",
            &TriggerPipeline {
                branch: Some("main".into()),
                ..TriggerPipeline::default()
            },
        )
        .await
        .expect("trigger");
    assert_eq!(created.id, "p1");
    client
        .instances(&admin, InstanceFilter::ResourceClass("acme/linux"))
        .await
        .expect("instances");
    assert_eq!(
        client.cancel_job(&admin, "j 1").await.expect("cancel"),
        Some("canceling".into())
    );
    assert_eq!(
        client
            .step_log_page(&admin, "j1", 2, 7)
            .await
            .expect("page")
            .as_ref(),
        b"page"
    );
    client
        .delete_resource_class(&admin, "rc1")
        .await
        .expect("delete");
    client
        .force_delete_resource_class(&admin, "rc1")
        .await
        .expect("force delete");

    let seen = seen.lock().expect("lock").clone();
    let wire: Vec<(String, String, String, String, String)> = seen
        .iter()
        .map(|s| {
            (
                s.method.clone(),
                s.uri.clone(),
                s.auth.clone(),
                s.content_type.clone(),
                String::from_utf8_lossy(&s.body).into_owned(),
            )
        })
        .collect();
    let expected = [
        (
            "POST",
            "/api/v3/runner/claim?wait=30s",
            "Bearer runner-token",
            "application/json",
            r#"{"name":"r","hostname":"h","ip":"1.2.3.4","version":"0","running":0,"capacity":1,"draining":false}"#,
        ),
        (
            "POST",
            "/api/v2/task/heartbeat?wait=1s",
            "Bearer task-token",
            "application/json",
            "{}",
        ),
        (
            "POST",
            "/api/v2/task/log?step=3&offset=40",
            "Bearer task-token",
            "application/zstd",
            "zstd!",
        ),
        (
            "POST",
            "/api/v2/task/step",
            "Bearer task-token",
            "application/json",
            r#"{"step":0,"name":"s","status":"running","exit_code":null,"duration_ms":null}"#,
        ),
        (
            "POST",
            "/api/v2/project",
            "Circle-Token admin-token",
            "application/json",
            r#"{"slug":"local/acme/widgets","git_url":"/git"}"#,
        ),
        (
            "POST",
            "/api/v2/project/local/acme/widgets/pipeline",
            "Circle-Token admin-token",
            "application/json",
            r#"{"branch":"main"}"#,
        ),
        (
            "GET",
            "/api/v3/runner?resource-class=acme%2Flinux",
            "Circle-Token admin-token",
            "",
            "",
        ),
        (
            "POST",
            "/api/v2/job/j%201/cancel",
            "Circle-Token admin-token",
            "",
            "",
        ),
        (
            "GET",
            "/api/v2/job/j1/step/2/log?offset=7",
            "Circle-Token admin-token",
            "",
            "",
        ),
        (
            "DELETE",
            "/api/v3/runner/resource/rc1",
            "Circle-Token admin-token",
            "",
            "",
        ),
        (
            "DELETE",
            "/api/v3/runner/resource/rc1/force",
            "Circle-Token admin-token",
            "",
            "",
        ),
    ];
    let expected: Vec<(String, String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d, e)| {
            (
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.to_string(),
                e.to_string(),
            )
        })
        .collect();
    assert_eq!(wire, expected);
}
