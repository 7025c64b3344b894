//! Users, roles and personal tokens end to end (issue 13), through the `bosun` CLI as an
//! operator would use it: the admin makes a viewer and a member and their tokens; the member
//! runs a real pipeline (a launch-agent and task-agent run it) and is its actor; the viewer
//! reads the job by `SLUG/NUMBER` (logs, artifacts, tests, and v1.1's listings) but cannot
//! trigger or cancel; a revoked token is refused.

use bosun_api::{Auth, Method};
use bosun_tests::{Fixture, bin_dir};

const CONFIG: &str = r#"version: 2.1
jobs:
  build:
    machine: true
    resource_class: e2e/users
    steps:
      - run: |
          echo "built by the member"
          mkdir -p out results
          echo widget > out/widget.txt
          cat > results/junit.xml <<XML
          <testsuite name="unit" tests="1"><testcase classname="unit" name="works" file="t.py" time="0.1"/></testsuite>
          XML
      - store_artifacts:
          path: out
      - store_test_results:
          path: results
workflows:
  main:
    jobs: [build]
"#;

/// `bosun ARGS` as the holder of `token`.
fn bosun_as(server: &bosun_tests::Server, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin_dir().join("bosun"))
        .args(args)
        .env("BOSUN_HOST", &server.url)
        .env("BOSUN_TOKEN", token)
        .output()
        .expect("bosun")
}

fn ok(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The secret of a `bosun token create` output (`token:   …`).
fn token_of(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("token:"))
        .map(|token| token.trim().to_owned())
        .unwrap_or_else(|| panic!("no token in {output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_personal_tokens_through_the_cli() {
    let fixture = Fixture::new("e2e/users", CONFIG).await;
    let server = &fixture.server;
    let slug = fixture.slug.as_str();

    server.cli_ok(&["user", "create", "vera", "--role", "viewer"], "");
    server.cli_ok(&["user", "create", "mia", "--role", "member"], "");
    let granted = server.cli_ok(&["user", "grant", "mia", slug], "");
    assert!(granted.contains(slug), "{granted}");
    let vera = token_of(&server.cli_ok(
        &["token", "create", "--user", "vera", "--expires", "30d"],
        "",
    ));
    let mia = token_of(&server.cli_ok(&["token", "create", "--user", "mia"], ""));
    let users = server.cli_ok(&["user", "list"], "");
    for line in ["admin", "mia ", "vera"] {
        assert!(users.contains(line), "{users}");
    }

    // The member runs the pipeline and is its actor.
    let run = bosun_as(server, &mia, &["pipeline", "run", slug, "--follow"]);
    let out = ok(&run, "the member's pipeline");
    assert!(out.contains("success"), "{out}");
    let pipelines = server
        .client
        .json::<(), serde_json::Value>(
            Method::GET,
            &format!("/api/v2/project/{slug}/pipeline"),
            &server.admin,
            None,
        )
        .await
        .expect("pipeline list");
    assert_eq!(pipelines["items"][0]["trigger"]["actor"]["login"], "mia");

    // The viewer reads the pipeline and the job by slug and number.
    let status = ok(
        &bosun_as(server, &vera, &["pipeline", "status", &format!("{slug}/1")]),
        "pipeline status",
    );
    assert!(
        status.contains("pipeline #1") && status.contains("job build #1"),
        "{status}"
    );
    let job = format!("{slug}/1");
    let logs = ok(&bosun_as(server, &vera, &["job", "logs", &job]), "logs");
    assert!(logs.contains("built by the member"), "{logs}");
    let artifacts = ok(&bosun_as(server, &vera, &["artifacts", &job]), "artifacts");
    assert!(artifacts.contains("widget.txt"), "{artifacts}");
    let tests = ok(&bosun_as(server, &vera, &["tests", &job]), "tests");
    assert!(tests.contains("1 tests: 1 passed"), "{tests}");
    let auth = Auth::CircleToken(vera.clone());
    for (path, needle) in [
        (
            format!("/api/v1.1/project/{slug}/1/artifacts"),
            "widget.txt",
        ),
        (format!("/api/v1.1/project/{slug}/1/tests"), "works"),
        ("/api/v1.1/me".to_owned(), "vera"),
        ("/api/v1.1/projects".to_owned(), slug),
    ] {
        let answer = server
            .client
            .json::<(), serde_json::Value>(Method::GET, &path, &auth, None)
            .await
            .unwrap_or_else(|err| panic!("{path}: {err}"));
        assert!(answer.to_string().contains(needle), "{path}: {answer}");
    }

    // ...but cannot trigger or cancel: a usage error (exit 2) naming the refusal.
    for args in [
        vec!["pipeline", "run", slug],
        vec!["job", "cancel", job.as_str()],
        vec!["user", "list"],
    ] {
        let refused = bosun_as(server, &vera, &args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("403") || stderr.contains("vera"),
            "{args:?}: {stderr}"
        );
    }

    // Each user lists only their own tokens; a revoked one is refused at once.
    let listed = ok(&bosun_as(server, &vera, &["token", "list"]), "token list");
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(
        !listed.contains(&vera),
        "a listing shows no secret: {listed}"
    );
    let id = listed.split_whitespace().next().unwrap().to_owned();
    ok(
        &bosun_as(server, &vera, &["token", "revoke", &id]),
        "revoke",
    );
    let refused = bosun_as(server, &vera, &["job", "logs", &job]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The member's token still works; deleting the member ends it.
    ok(
        &bosun_as(server, &mia, &["job", "logs", &job]),
        "member logs",
    );
    server.cli_ok(&["user", "delete", "mia"], "");
    let refused = bosun_as(server, &mia, &["job", "logs", &job]);
    assert_eq!(refused.status.code(), Some(2));
}
