//! `store_test_results` end to end (issue 10): a job writes JUnit XML reports (a pytest-style file
//! and a directory with a Surefire-style one), fails, and its results are stored anyway; the test
//! reads them through CircleCI's listing and `bosun tests`; a second run of the same job on the
//! same revision where the failed test passes makes it flaky.

use std::time::Duration;

use bosun_api::Auth;
use bosun_tests::{Fixture, bin_dir};

const CONFIG: &str = r#"version: 2.1
parameters:
  verdict:
    type: string
    default: fail
jobs:
  test:
    machine: true
    resource_class: e2e/tests
    steps:
      - run:
          name: write reports
          command: |
            mkdir -p results/unit results/it
            verdict=<< pipeline.parameters.verdict >>
            if [ "$verdict" = fail ]; then
              failure='<failure message="assert 1 == 2">AssertionError: assert 1 == 2
            at test_math.py:7</failure>'
            else
              failure=''
            fi
            cat > results/unit/pytest.xml <<XML
            <?xml version="1.0" encoding="utf-8"?>
            <testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="3" time="0.050">
            <testcase classname="tests.test_math" name="test_add" file="tests/test_math.py" line="3" time="0.001"/>
            <testcase classname="tests.test_math" name="test_flip" file="tests/test_math.py" line="6" time="0.020">$failure</testcase>
            <testcase classname="tests.test_math" name="test_later" file="tests/test_math.py" line="9" time="0.000"><skipped message="not yet"/></testcase>
            </testsuite></testsuites>
            XML
            cat > results/it/TEST-com.acme.ApiIT.xml <<XML
            <?xml version="1.0" encoding="UTF-8"?>
            <testsuite name="com.acme.ApiIT" time="1.5" tests="1" errors="0" skipped="0" failures="0">
              <properties><property name="java.version" value="17"/></properties>
              <testcase name="createsWidgets" classname="com.acme.ApiIT" time="1.5"/>
              <system-out>log line</system-out>
            </testsuite>
            XML
            [ "$verdict" = pass ]
      - store_test_results:
          path: results
workflows:
  main:
    jobs: [test]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_results_are_stored_after_a_failure_listed_and_a_flip_is_flaky() {
    let fixture = Fixture::new("e2e/tests", CONFIG).await;
    let server = &fixture.server;
    let (_, jobs) = fixture.run().await;
    let job = fixture.job(&jobs, "test");
    assert_eq!(job.status, "failed", "{}", fixture.agent.log_text());
    let detail = server.job(&job.id).await;
    assert_eq!(
        detail.steps[1].status, "success",
        "store_test_results runs after a failure"
    );
    let log = String::from_utf8_lossy(&server.step_log(&job.id, 1).await).into_owned();
    assert!(log.contains("4"), "the step counts what it found: {log}");

    let list = server
        .client
        .project_job_tests(&server.admin, &fixture.slug, job.job_number)
        .await
        .expect("tests listing");
    assert_eq!(list.next_page_token, None);
    let mut results: Vec<(String, String, String)> = list
        .items
        .iter()
        .map(|t| (t.classname.clone(), t.name.clone(), t.result.clone()))
        .collect();
    results.sort();
    assert_eq!(
        results,
        [
            (
                "com.acme.ApiIT".into(),
                "createsWidgets".into(),
                "success".into()
            ),
            (
                "tests.test_math".into(),
                "test_add".into(),
                "success".into()
            ),
            (
                "tests.test_math".into(),
                "test_flip".into(),
                "failure".into()
            ),
            (
                "tests.test_math".into(),
                "test_later".into(),
                "skipped".into()
            ),
        ]
    );
    let flip = list.items.iter().find(|t| t.name == "test_flip").unwrap();
    assert!(
        flip.message
            .as_deref()
            .unwrap_or("")
            .contains("assert 1 == 2"),
        "{flip:?}"
    );
    assert_eq!(flip.file.as_deref(), Some("tests/test_math.py"));
    assert!((flip.run_time - 0.020).abs() < 1e-9, "{flip:?}");
    assert!(!flip.flaky, "one run is not flaky yet");

    let token = match &server.admin {
        Auth::CircleToken(token) => token.clone(),
        _ => unreachable!(),
    };
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(bin_dir().join("bosun"))
            .args(["--host", &server.url, "--token", &token])
            .args(args)
            .output()
            .expect("bosun");
        assert!(
            output.status.success(),
            "bosun {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let report = cli(&["tests", &job.id]);
    assert!(
        report.starts_with("FAILED tests.test_math test_flip (tests/test_math.py)"),
        "failures first: {report}"
    );
    assert!(
        report.ends_with("4 tests: 2 passed, 1 failed, 1 skipped, 1.521s\n"),
        "{report}"
    );

    // Same job, same revision, and now the test passes: it is flaky, in both runs' listings.
    let mut parameters = serde_json::Map::new();
    parameters.insert("verdict".into(), "pass".into());
    let created = server
        .trigger_with(
            &fixture.slug,
            &bosun_api::TriggerPipeline {
                branch: Some("main".into()),
                tag: None,
                revision: None,
                parameters: Some(parameters),
            },
        )
        .await;
    server
        .wait_pipeline(&created.id, Duration::from_secs(120))
        .await;
    let jobs = server.jobs(&created.id).await;
    let again = fixture.job(&jobs, "test");
    assert_eq!(again.status, "success", "{}", fixture.agent.log_text());
    let list = server
        .client
        .job_tests(&server.admin, &again.id)
        .await
        .expect("tests listing");
    let flip = list.items.iter().find(|t| t.name == "test_flip").unwrap();
    assert_eq!(flip.result, "success");
    assert!(flip.flaky, "{flip:?}");
    assert_eq!(
        list.items.iter().filter(|t| t.flaky).count(),
        1,
        "only the test that flipped"
    );
    let flaky = cli(&["tests", &job.id, "--flaky"]);
    assert_eq!(
        flaky,
        "FLAKY tests.test_math test_flip (tests/test_math.py)\n1 flaky tests\n"
    );
}
