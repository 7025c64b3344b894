//! Conformance of bosun's CircleCI API v2 answers to CircleCI's OpenAPI document: a real server
//! in-process, a project whose pipeline was triggered from a local git repository and whose
//! first job ran (claimed, with an artifact and test results, completed), secrets and contexts;
//! then every route of [`CASES`] is called and its answer checked with [`openapi::check`].
//! Requests go over raw TCP so 4xx bodies, content types and malformed JSON are under the
//! test's control.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http_tests::{ADMIN, TestServer, start};
use crate::openapi;

/// One call: `url` and `body` may hold `{name}` placeholders filled from the fixture.
struct Case {
    method: &'static str,
    /// The path as the document writes it.
    spec: &'static str,
    url: &'static str,
    body: Option<&'static str>,
    status: u16,
}

const fn case(
    method: &'static str,
    spec: &'static str,
    url: &'static str,
    body: Option<&'static str>,
    status: u16,
) -> Case {
    Case {
        method,
        spec,
        url,
        body,
        status,
    }
}

/// The routes bosun has, in order (later rows read what earlier ones made).
const CASES: &[Case] = &[
    case(
        "GET",
        "/project/{project-slug}",
        "/api/v2/project/{slug}",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}",
        "/api/v2/project/gh%2Facme%2Fwidgets",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}",
        "/api/v2/project/gh/acme/nope",
        None,
        404,
    ),
    case(
        "POST",
        "/project/{project-slug}/envvar",
        "/api/v2/project/{slug}/envvar",
        Some(r#"{"name": "API_TOKEN", "value": "tok-123456789"}"#),
        201,
    ),
    case(
        "GET",
        "/project/{project-slug}/envvar",
        "/api/v2/project/{slug}/envvar",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/envvar/{name}",
        "/api/v2/project/{slug}/envvar/API_TOKEN",
        None,
        200,
    ),
    case(
        "DELETE",
        "/project/{project-slug}/envvar/{name}",
        "/api/v2/project/{slug}/envvar/API_TOKEN",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/envvar/{name}",
        "/api/v2/project/{slug}/envvar/API_TOKEN",
        None,
        404,
    ),
    case(
        "POST",
        "/project/{project-slug}/envvar",
        "/api/v2/project/{slug}/envvar",
        Some(r#"{"name": "1BAD", "value": "v"}"#),
        400,
    ),
    case(
        "POST",
        "/project/{project-slug}/checkout-key",
        "/api/v2/project/{slug}/checkout-key",
        Some(r#"{"type": "deploy-key"}"#),
        201,
    ),
    case(
        "GET",
        "/project/{project-slug}/checkout-key",
        "/api/v2/project/{slug}/checkout-key",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/checkout-key/{fingerprint}",
        "/api/v2/project/{slug}/checkout-key/{fingerprint}",
        None,
        200,
    ),
    case(
        "GET",
        "/context",
        "/api/v2/context?owner-slug=gh/acme",
        None,
        200,
    ),
    case(
        "GET",
        "/context",
        "/api/v2/context?owner-id={org_id}",
        None,
        200,
    ),
    case(
        "POST",
        "/context",
        "/api/v2/context",
        Some(r#"{"name": "other", "owner": {"slug": "gh/acme", "type": "organization"}}"#),
        200,
    ),
    case(
        "POST",
        "/context",
        "/api/v2/context",
        Some(r#"{"name": "deploy", "owner": {"slug": "gh/acme", "type": "organization"}}"#),
        409,
    ),
    case(
        "GET",
        "/context/{context-id}",
        "/api/v2/context/{context}",
        None,
        200,
    ),
    case(
        "GET",
        "/context/{context-id}",
        "/api/v2/context/{unknown}",
        None,
        404,
    ),
    case(
        "PUT",
        "/context/{context-id}/environment-variable/{env-var-name}",
        "/api/v2/context/{context}/environment-variable/OTHER_KEY",
        Some(r#"{"value": "other-value"}"#),
        200,
    ),
    case(
        "GET",
        "/context/{context-id}/environment-variable",
        "/api/v2/context/{context}/environment-variable",
        None,
        200,
    ),
    case(
        "POST",
        "/context/{context_id}/restrictions",
        "/api/v2/context/{context}/restrictions",
        Some(r#"{"restriction_type": "project", "restriction_value": "{project_id}"}"#),
        201,
    ),
    case(
        "POST",
        "/context/{context_id}/restrictions",
        "/api/v2/context/{context}/restrictions",
        Some(r#"{"restriction_type": "group", "restriction_value": "x"}"#),
        400,
    ),
    case(
        "GET",
        "/context/{context_id}/restrictions",
        "/api/v2/context/{context}/restrictions",
        None,
        200,
    ),
    case(
        "GET",
        "/context/{context_id}/restrictions",
        "/api/v2/context/{unknown}/restrictions",
        None,
        404,
    ),
    case("GET", "/me", "/api/v2/me", None, 200),
    case("GET", "/user/{id}", "/api/v2/user/{user}", None, 200),
    case("GET", "/user/{id}", "/api/v2/user/{unknown}", None, 404),
    case(
        "GET",
        "/me/collaborations",
        "/api/v2/me/collaborations",
        None,
        200,
    ),
    case(
        "GET",
        "/pipeline/{pipeline-id}",
        "/api/v2/pipeline/{pipeline}",
        None,
        200,
    ),
    case(
        "GET",
        "/pipeline/{pipeline-id}",
        "/api/v2/pipeline/{unknown}",
        None,
        404,
    ),
    case(
        "GET",
        "/pipeline/{pipeline-id}/workflow",
        "/api/v2/pipeline/{pipeline}/workflow",
        None,
        200,
    ),
    case(
        "GET",
        "/workflow/{id}/job",
        "/api/v2/workflow/{workflow}/job",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/job/{job-number}",
        "/api/v2/project/{slug}/job/1",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/job/{job-number}",
        "/api/v2/project/{slug}/job/2",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/job/{job-number}",
        "/api/v2/project/{slug}/job/99",
        None,
        404,
    ),
    case(
        "GET",
        "/project/{project-slug}/{job-number}/artifacts",
        "/api/v2/project/{slug}/1/artifacts",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/{job-number}/tests",
        "/api/v2/project/{slug}/1/tests",
        None,
        200,
    ),
    case(
        "POST",
        "/project/{project-slug}/job/{job-number}/cancel",
        "/api/v2/project/{slug}/job/2/cancel",
        None,
        200,
    ),
    case(
        "POST",
        "/project/{project-slug}/job/{job-number}/cancel",
        "/api/v2/project/{slug}/job/2/cancel",
        None,
        409,
    ),
    case(
        "POST",
        "/workflow/{id}/cancel",
        "/api/v2/workflow/{workflow}/cancel",
        None,
        202,
    ),
    case(
        "POST",
        "/project/{project-slug}/pipeline",
        "/api/v2/project/{slug}/pipeline",
        Some(r#"{"branch": "main"}"#),
        201,
    ),
    case(
        "POST",
        "/project/{project-slug}/pipeline",
        "/api/v2/project/{slug}/pipeline",
        Some(r#"{"branch": "no-such-branch"}"#),
        400,
    ),
    case(
        "GET",
        "/workflow/{id}/job",
        "/api/v2/workflow/{workflow}/job",
        None,
        200,
    ),
    case(
        "GET",
        "/pipeline/{pipeline-id}/workflow",
        "/api/v2/pipeline/{pipeline}/workflow",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/pipeline",
        "/api/v2/project/{slug}/pipeline",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/pipeline",
        "/api/v2/project/{slug}/pipeline?branch=main",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/pipeline/mine",
        "/api/v2/project/{slug}/pipeline/mine",
        None,
        200,
    ),
    case(
        "GET",
        "/project/{project-slug}/pipeline/{pipeline-number}",
        "/api/v2/project/{slug}/pipeline/1",
        None,
        200,
    ),
    case(
        "GET",
        "/pipeline",
        "/api/v2/pipeline?org-slug=gh/acme",
        None,
        200,
    ),
    case(
        "GET",
        "/pipeline/{pipeline-id}/config",
        "/api/v2/pipeline/{pipeline}/config",
        None,
        200,
    ),
    case(
        "GET",
        "/workflow/{id}",
        "/api/v2/workflow/{workflow}",
        None,
        200,
    ),
    case(
        "GET",
        "/workflow/{id}",
        "/api/v2/workflow/{unknown}",
        None,
        404,
    ),
];

#[test]
fn every_case_names_an_operation_of_the_document() {
    for case in CASES {
        assert!(
            openapi::has_operation(case.method, case.spec),
            "{} {} is not in CircleCI's document",
            case.method,
            case.spec
        );
        for name in placeholders(case.url)
            .into_iter()
            .chain(case.body.map(placeholders).unwrap_or_default())
        {
            assert!(
                PLACEHOLDERS.contains(&name),
                "{}: unknown placeholder {{{name}}}",
                case.url
            );
        }
    }
}

/// Mismatches between today's answers and the document, as `METHOD SPEC-PATH: error`: each is
/// expected to fail until its route is fixed, and a fixed one must leave this list (the test
/// fails on both an unknown mismatch and a listed one that no longer happens).
const KNOWN_MISMATCHES: &[&str] = &[];

#[tokio::test]
async fn answers_validate_against_circlecis_openapi_document() {
    let server = start(|_| {}).await;
    let fixture = populate(&server).await;
    let mut failures = Failures::default();
    for case in CASES {
        let url = fixture.fill(case.url);
        let body = case.body.map(|body| fixture.fill(body));
        let (status, answer) = call(&server, case.method, &url, body.as_deref()).await;
        let key = format!("{} {}", case.method, case.spec);
        let detail = format!("{} {url} answered {status}: {answer}", case.method);
        if status != case.status {
            failures.add(
                &key,
                &format!("answered {status}, expected {}", case.status),
                &detail,
            );
            continue;
        }
        if let Err(errors) = openapi::check(case.method, case.spec, status, &answer) {
            for error in errors {
                failures.add(&key, &error, &detail);
            }
        }
        if status >= 400 {
            check_error_body(&key, &answer, &mut failures);
        }
        // A list's items are what the schema describes: an empty one would check nothing.
        let items = answer.get("items").unwrap_or(&answer);
        if items.as_array().is_some_and(Vec::is_empty) {
            failures.add(
                &key,
                "an empty list: the fixture should have made rows",
                &detail,
            );
        }
    }
    failures.assert_only(KNOWN_MISMATCHES);
}

/// Failures by a key that holds no ids (`METHOD SPEC-PATH: error`), each with the answer.
#[derive(Default)]
struct Failures(std::collections::BTreeMap<String, String>);

impl Failures {
    fn add(&mut self, key: &str, error: &str, detail: &str) {
        self.0.insert(format!("{key}: {error}"), detail.to_owned());
    }

    /// Panics unless the failures are exactly `known`, listing the differences.
    fn assert_only(&self, known: &[&str]) {
        let unexpected: Vec<String> = self
            .0
            .iter()
            .filter(|(key, _)| !known.contains(&key.as_str()))
            .map(|(key, detail)| format!("{key}\n    ({detail})"))
            .collect();
        let fixed: Vec<&&str> = known
            .iter()
            .filter(|key| !self.0.contains_key(**key))
            .collect();
        assert!(
            unexpected.is_empty() && fixed.is_empty(),
            "answers that do not match CircleCI's document:\n{}\n\nlisted as known but no longer \
             failing (remove them from KNOWN_MISMATCHES):\n{fixed:#?}",
            unexpected.join("\n")
        );
    }
}

/// Axum's own refusals (no route, wrong method, no content type, malformed JSON) answer
/// `{"message": ...}` too, and that message holds nothing of the server's insides.
#[tokio::test]
async fn refusals_are_json_messages_without_internal_detail() {
    let server = start(|_| {}).await;
    let token = format!("Circle-Token: {ADMIN}\r\n");
    let requests = [
        (
            "GET /api/v2/no-such-thing".to_owned(),
            String::new(),
            404,
            None,
        ),
        (
            "DELETE /api/v2/me/collaborations".into(),
            String::new(),
            405,
            None,
        ),
        (
            "POST /api/v2/context".into(),
            "Content-Length: 2\r\n\r\n{}".into(),
            415,
            Some("/context"),
        ),
        (
            "POST /api/v2/context".into(),
            "Content-Type: application/json\r\nContent-Length: 5\r\n\r\n{oops".into(),
            400,
            Some("/context"),
        ),
    ];
    let mut failures = Failures::default();
    for (line, rest, expected, spec) in requests {
        let rest = if rest.is_empty() {
            "\r\n".to_owned()
        } else {
            rest
        };
        let raw = format!("{line} HTTP/1.1\r\nHost: x\r\n{token}Connection: close\r\n{rest}");
        let (status, answer) = exchange(&server, &raw).await;
        let detail = format!("{line} answered {status}: {answer}");
        if status != expected {
            failures.add(
                &line,
                &format!("answered {status}, expected {expected}"),
                &detail,
            );
            continue;
        }
        if let Some(spec) = spec {
            if let Err(errors) = openapi::check("POST", spec, status, &answer) {
                for error in errors {
                    failures.add(&line, &error, &detail);
                }
            }
        }
        check_error_body(&line, &answer, &mut failures);
        if status == 405
            && !answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("GET")
        {
            failures.add(
                &line,
                "the message does not name the methods it takes",
                &detail,
            );
        }
    }
    failures.assert_only(&[]);
}

/// An error body is exactly `{"message": "<non-empty>"}` and names no SQL, file or source.
fn check_error_body(key: &str, answer: &Value, failures: &mut Failures) {
    let detail = answer.to_string();
    let message = answer["message"].as_str().unwrap_or_default();
    let only_message = answer.as_object().is_some_and(|o| o.len() == 1);
    if message.is_empty() || !only_message {
        failures.add(key, "not a {\"message\": ...} body", &detail);
    }
    let lower = message.to_ascii_lowercase();
    for leak in [
        "sqlite", "select ", "insert ", "/tmp/", "/work/", ".rs:", "panicked",
    ] {
        if lower.contains(leak) {
            failures.add(key, &format!("the message shows `{leak}`"), &detail);
        }
    }
}

/// The ids the cases' placeholders name.
struct Fixture(HashMap<&'static str, String>);

impl Fixture {
    fn fill(&self, template: &str) -> String {
        let mut text = template.to_owned();
        for (name, value) in &self.0 {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }
}

/// The placeholders [`populate`] fills.
const PLACEHOLDERS: &[&str] = &[
    "slug",
    "project_id",
    "org_id",
    "pipeline",
    "workflow",
    "fingerprint",
    "context",
    "unknown",
    "user",
];

/// The `{name}` placeholders of `template` (JSON braces hold quotes or spaces, never only a
/// name).
fn placeholders(template: &str) -> Vec<&str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
        .filter(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .collect()
}

/// `.circleci/config.yml` of the test repository: `test` waits for `build`, so after `build`
/// ran `test` is still there to read and cancel.
const CONFIG: &str = "version: 2.1
jobs:
  build:
    machine: true
    resource_class: acme/linux
    steps:
      - run: echo build
  test:
    machine: true
    resource_class: acme/linux
    steps:
      - run: echo test
workflows:
  main:
    jobs:
      - build
      - test:
          requires: [build]
";

/// A project of a local git repository, its first pipeline with job 1 run to success (an
/// artifact, two test results) and job 2 blocked, a context with a variable and a restriction,
/// and a checkout key.
async fn populate(server: &TestServer) -> Fixture {
    let repo = server_dir(server).join("origin");
    git_repo(&repo);
    let slug = "gh/acme/widgets";
    ok(
        server,
        "POST",
        "/api/v3/runner/resource",
        json!({"resource_class": "acme/linux"}),
    )
    .await;
    ok(
        server,
        "POST",
        "/api/v2/project",
        json!({"slug": slug, "git_url": repo.display().to_string()}),
    )
    .await;
    let pipeline = ok(
        server,
        "POST",
        &format!("/api/v2/project/{slug}/pipeline"),
        json!({"branch": "main"}),
    )
    .await;
    let pipeline_id = text(&pipeline, "id");
    let workflows = get(server, &format!("/api/v2/pipeline/{pipeline_id}/workflow")).await;
    let workflow_id = text(&workflows["items"][0], "id");
    run_first_job(server).await;

    let key = ok(
        server,
        "POST",
        &format!("/api/v2/project/{slug}/checkout-key"),
        json!({"type": "deploy-key"}),
    )
    .await;
    let context = ok(
        server,
        "POST",
        "/api/v2/context",
        json!({"name": "deploy", "owner": {"slug": "gh/acme", "type": "organization"}}),
    )
    .await;
    let context_id = text(&context, "id");
    let put = format!("/api/v2/context/{context_id}/environment-variable/DEPLOY_KEY");
    ok(server, "PUT", &put, json!({"value": "k3y-value"})).await;
    ok(
        server,
        "POST",
        &format!("/api/v2/context/{context_id}/restrictions"),
        json!({"restriction_type": "expression", "restriction_value": "pipeline.git.branch == \"main\""}),
    )
    .await;
    let project = get(server, &format!("/api/v2/project/{slug}")).await;
    let fixture = Fixture(HashMap::from([
        ("slug", slug.to_owned()),
        ("project_id", text(&project, "id")),
        ("org_id", text(&project, "organization_id")),
        ("pipeline", pipeline_id),
        ("workflow", workflow_id),
        ("fingerprint", text(&key, "fingerprint")),
        ("context", context_id),
        ("unknown", uuid::Uuid::new_v4().to_string()),
        ("user", crate::store::BOOTSTRAP_ADMIN_ID.to_owned()),
    ]));
    assert!(PLACEHOLDERS.iter().all(|name| fixture.0.contains_key(name)));
    fixture
}

/// Claims job 1 as a runner would, stores an artifact and test results, and completes it.
async fn run_first_job(server: &TestServer) {
    let token = ok(
        server,
        "POST",
        "/api/v3/runner/token",
        json!({"resource_class": "acme/linux", "nickname": "conformance"}),
    )
    .await;
    let runner = format!("Authorization: Bearer {}\r\n", text(&token, "token"));
    let claim = r#"{"name":"r1","hostname":"h","ip":"127.0.0.1","version":"1"}"#;
    let (status, claimed) = request(
        server,
        "POST",
        "/api/v3/runner/claim",
        &runner,
        Some(("application/json", claim)),
    )
    .await;
    assert_eq!(status, 200, "claim: {claimed}");
    let task = format!("Authorization: Bearer {}\r\n", text(&claimed, "task_token"));
    let uploads = [
        ("/api/v2/task/artifact?path=out/report.txt", "application/octet-stream", "report".to_owned()),
        (
            "/api/v2/task/tests?source=unit",
            "application/json",
            r#"{"tests":[{"name":"a","classname":"c","result":"success","run_time":0.5,"source":"unit"},{"name":"b","classname":"c","result":"failure","run_time":1,"source":"unit","message":"boom"}]}"#.to_owned(),
        ),
    ];
    for (url, content_type, body) in &uploads {
        let (status, answer) = request(server, "PUT", url, &task, Some((content_type, body))).await;
        assert!((200..300).contains(&status), "{url}: {status} {answer}");
    }
    let complete = r#"{"status":"success"}"#;
    let (status, answer) = request(
        server,
        "POST",
        "/api/v2/task/complete",
        &task,
        Some(("application/json", complete)),
    )
    .await;
    assert!((200..300).contains(&status), "complete: {status} {answer}");
}

fn server_dir(server: &TestServer) -> &Path {
    server._dir.path()
}

/// A git repository at `dir` with [`CONFIG`] committed on `main`.
fn git_repo(dir: &Path) {
    std::fs::create_dir_all(dir.join(".circleci")).unwrap();
    std::fs::write(dir.join(".circleci/config.yml"), CONFIG).unwrap();
    for args in [
        &["init", "--quiet", "--initial-branch=main"][..],
        &["add", "."],
        &["commit", "--quiet", "-m", "first"],
    ] {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no `{field}` in {value}"))
        .to_owned()
}

/// An admin call that must succeed (2xx); answers its body.
async fn ok(server: &TestServer, method: &str, url: &str, body: Value) -> Value {
    let (status, answer) = call(server, method, url, Some(&body.to_string())).await;
    assert!(
        (200..300).contains(&status),
        "{method} {url}: {status} {answer}"
    );
    answer
}

async fn get(server: &TestServer, url: &str) -> Value {
    let (status, answer) = call(server, "GET", url, None).await;
    assert_eq!(status, 200, "GET {url}: {answer}");
    answer
}

/// An admin call with an optional JSON body.
async fn call(server: &TestServer, method: &str, url: &str, body: Option<&str>) -> (u16, Value) {
    let auth = format!("Circle-Token: {ADMIN}\r\n");
    request(
        server,
        method,
        url,
        &auth,
        body.map(|b| ("application/json", b)),
    )
    .await
}

pub(crate) async fn request(
    server: &TestServer,
    method: &str,
    url: &str,
    headers: &str,
    body: Option<(&str, &str)>,
) -> (u16, Value) {
    let body_headers = match body {
        Some((content_type, body)) => format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => "Content-Length: 0\r\n\r\n".to_owned(),
    };
    let raw = format!(
        "{method} {url} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n{body_headers}"
    );
    exchange(server, &raw).await
}

/// Sends `raw` on a fresh connection and reads the answer to its end: the status and the body
/// as JSON (`null` when empty).
async fn exchange(server: &TestServer, raw: &str) -> (u16, Value) {
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut answer))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let answer = String::from_utf8(answer).expect("a UTF-8 answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    if body.trim().is_empty() {
        return (status, Value::Null);
    }
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("{status}: not JSON ({err}): {body}"));
    (status, json)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
