//! The JUnit parser on reports of the dialects in use: pytest's and cargo-nextest's were written
//! by the tools themselves (pytest 9.2 with `-o junit_family=xunit1`, nextest 0.9.143); the
//! others follow each tool's documented output.

use std::path::Path;

use bosun_protocol::task::{TestCase, TestResult};
use bosun_task_agent::junit::{Limits, parse_file};

fn sample(name: &str) -> Vec<TestCase> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/junit")
        .join(name);
    parse_file(&path, name, &Limits::default()).unwrap_or_else(|err| panic!("{err}"))
}

fn results(cases: &[TestCase]) -> Vec<TestResult> {
    cases.iter().map(|case| case.result).collect()
}

use TestResult::{Error, Failure, Skipped, Success};

#[test]
fn pytest() {
    let cases = sample("pytest.xml");
    assert_eq!(results(&cases), [Success, Failure, Skipped, Error]);
    assert_eq!(cases[0].name, "test_passes");
    assert_eq!(cases[0].classname, "tests.test_sample");
    assert_eq!(cases[0].file.as_deref(), Some("tests/test_sample.py"));
    assert_eq!(cases[0].run_time, 0.001);
    assert_eq!(cases[0].message, None);
    let failure = cases[1].message.as_deref().unwrap();
    assert!(
        failure
            .starts_with("AssertionError: strings differ & <that> is a problem\nassert 'a' == 'b'"),
        "{failure}"
    );
    assert!(
        failure.ends_with("tests/test_sample.py:14: AssertionError"),
        "{failure}"
    );
    assert!(
        cases[2]
            .message
            .as_deref()
            .unwrap()
            .starts_with("not on this platform\n"),
        "{:?}",
        cases[2].message
    );
    assert!(
        cases[3]
            .message
            .as_deref()
            .unwrap()
            .starts_with("failed on setup with \"RuntimeError: fixture setup failed\""),
        "{:?}",
        cases[3].message
    );
    assert!(cases.iter().all(|case| case.source.is_empty()));
}

#[test]
fn cargo_nextest() {
    let cases = sample("nextest.xml");
    assert_eq!(results(&cases), [Success, Failure]);
    assert_eq!(cases[1].name, "tests::fails");
    assert_eq!(cases[1].classname, "junitsample");
    assert_eq!(cases[1].file, None);
    assert_eq!(cases[1].run_time, 0.183);
    let message = cases[1].message.as_deref().unwrap();
    assert!(message.contains("strings differ"), "{message}");
    // `<system-out>` and `<system-err>` are not the message.
    assert!(!message.contains("running 1 test"), "{message}");
}

#[test]
fn jest_junit() {
    let cases = sample("jest-junit.xml");
    assert_eq!(results(&cases), [Success, Failure, Skipped]);
    assert_eq!(cases[1].classname, "math divides");
    let message = cases[1].message.as_deref().unwrap();
    assert!(message.starts_with("Error: expect(received)"), "{message}");
    assert!(
        message.ends_with("(/app/src/math.test.js:9:19)"),
        "{message}"
    );
    assert_eq!(cases[2].message, None);
    assert_eq!(cases[2].run_time, 0.0);
}

#[test]
fn maven_surefire() {
    let cases = sample("surefire.xml");
    assert_eq!(results(&cases), [Success, Failure, Error, Skipped]);
    assert_eq!(cases[1].classname, "com.example.CalculatorTest");
    assert_eq!(
        cases[1].message.as_deref(),
        Some(
            "expected: <0> but was: <1>\norg.opentest4j.AssertionFailedError: expected: <0> but was: <1>\n\tat com.example.CalculatorTest.dividesByZero(CalculatorTest.java:21)"
        )
    );
    assert_eq!(cases[2].run_time, 1001.5);
    assert_eq!(cases[3].run_time, 0.0);
    assert_eq!(cases[3].message.as_deref(), Some("no GPU"));
}

#[test]
fn go_junit_report() {
    let cases = sample("go-junit-report.xml");
    assert_eq!(results(&cases), [Success, Failure, Skipped]);
    assert_eq!(cases[1].name, "TestGet/missing_key");
    assert_eq!(cases[1].classname, "example.com/app/store");
    assert_eq!(
        cases[1].message.as_deref(),
        Some("Failed\nstore_test.go:42: got \"x\", want \"\"")
    );
    assert_eq!(cases[1].run_time, 0.01);
}

#[test]
fn phpunit() {
    let cases = sample("phpunit.xml");
    assert_eq!(results(&cases), [Success, Success, Failure, Error]);
    assert_eq!(cases[0].classname, "Tests.Unit.CartTest");
    // The data-provider suite names no file: its cases inherit the class suite's.
    for case in &cases {
        assert_eq!(case.file.as_deref(), Some("/app/tests/Unit/CartTest.php"));
    }
    assert!(
        cases[2]
            .message
            .as_deref()
            .unwrap()
            .contains("Failed asserting that 90 is identical to 80."),
        "{:?}",
        cases[2].message
    );
}

#[test]
fn rspec() {
    let cases = sample("rspec.xml");
    assert_eq!(results(&cases), [Success, Failure, Skipped]);
    assert_eq!(cases[1].name, "User rejects an empty email");
    assert_eq!(cases[1].file.as_deref(), Some("./spec/models/user_spec.rb"));
    let message = cases[1].message.as_deref().unwrap();
    assert!(
        message.starts_with("expected true, got false\nFailure/Error"),
        "{message}"
    );
    assert!(message.ends_with("in <top (required)>'"), "{message}");
}

#[test]
fn a_broken_file_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.xml");
    std::fs::write(
        &path,
        "<?xml version=\"1.0\"?>\n<testsuite>\n  <testcase name=\"a\">\n  </testsuit>\n",
    )
    .unwrap();
    let err = parse_file(&path, "reports/broken.xml", &Limits::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("reports/broken.xml:4: "),
        "{err}"
    );
}
