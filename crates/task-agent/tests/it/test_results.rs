//! `store_test_results` through the real task-agent binary and a real socketpair, with the test
//! answering the upload as the launch-agent will once it relays test results.

use std::collections::HashMap;
use std::path::Path;

use bosun_protocol::task::{Step, StoreTestResultsStep, TaskSpec, TestResult, TestResults};
use bosun_protocol::{BlobKind, Incoming, Message, StepStatus, UploadOutcome};

use crate::harness::{Agent, Report, run, step, task};

/// A fake launch-agent that keeps test-results uploads, or fails them with `fail`.
#[derive(Default)]
struct Peer {
    uploads: Vec<(BlobKind, String, Vec<u8>)>,
    fail: Option<String>,
}

impl Peer {
    async fn run(&mut self, steps: Vec<Step>, dir: &Path) -> Report {
        self.run_task(&task(steps), dir).await
    }

    async fn run_task(&mut self, task: &TaskSpec, dir: &Path) -> Report {
        let mut agent = Agent::start(task, dir).await;
        let mut report = Report::default();
        let mut open: HashMap<u32, (BlobKind, String, Vec<u8>)> = HashMap::new();
        loop {
            match agent
                .next()
                .await
                .expect("task-agent closed the socket early")
            {
                Incoming::Message(Message::Upload { stream, kind, name }) => {
                    open.insert(stream, (kind, name, Vec::new()));
                }
                Incoming::Data { stream, bytes } if open.contains_key(&stream) => {
                    open.get_mut(&stream).unwrap().2.extend_from_slice(&bytes);
                }
                Incoming::Message(Message::End { stream, error }) if open.contains_key(&stream) => {
                    let upload = open.remove(&stream).unwrap();
                    let outcome = match (error, &self.fail) {
                        (Some(message), _) => UploadOutcome::Failed { message },
                        (None, Some(message)) => UploadOutcome::Failed {
                            message: message.clone(),
                        },
                        (None, None) => {
                            self.uploads.push(upload);
                            UploadOutcome::Stored
                        }
                    };
                    agent.send(Message::Uploaded { stream, outcome }).await;
                }
                other => {
                    let done = matches!(other, Incoming::Message(Message::TaskFinished { .. }));
                    report.record(other);
                    if done {
                        break;
                    }
                }
            }
        }
        let (exit, stderr) = agent.exit().await;
        report.exit = Some(exit);
        report.stderr = stderr;
        report
    }

    fn results(&self, index: usize) -> TestResults {
        assert_eq!(self.uploads[index].0, BlobKind::TestResults);
        serde_json::from_slice(&self.uploads[index].2).unwrap()
    }
}

fn store(path: &str) -> Step {
    Step::StoreTestResults(StoreTestResultsStep {
        name: "Uploading test results".into(),
        path: path.into(),
    })
}

fn samples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/junit")
        .display()
        .to_string()
}

#[tokio::test]
async fn a_directory_of_reports_is_uploaded_as_one_json_after_a_failed_step() {
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    let mut peer = Peer::default();
    let report = peer
        .run(
            vec![
                step(run(
                    "tests",
                    &format!(
                        "mkdir -p results/pytest results/rspec && cp {samples}/pytest.xml results/pytest/ \
                         && cp {samples}/rspec.xml results/rspec/results.xml && echo notes > results/notes.txt \
                         && ln -s {samples}/surefire.xml results/link.xml && exit 1"
                    ),
                )),
                store("results"),
            ],
            dir.path(),
        )
        .await;
    report.assert_clean_exit();
    assert_eq!(report.finished(0).0, StepStatus::Failed);
    let log = report.log(1);
    assert_eq!(report.finished(1).0, StepStatus::Success, "{log}");
    assert_eq!(peer.uploads.len(), 1);
    assert_eq!(peer.uploads[0].1, "results");
    let results = peer.results(0);
    assert_eq!(results.tests.len(), 7);
    assert_eq!(results.tests[0].source, "pytest/pytest.xml");
    assert_eq!(results.tests[0].name, "test_passes");
    assert_eq!(results.tests[4].source, "rspec/results.xml");
    assert_eq!(results.tests[5].result, TestResult::Failure);
    assert!(log.contains("Skipping "), "{log}");
    assert!(log.contains("link.xml: a symlink"), "{log}");
    assert!(
        log.contains("  pytest/pytest.xml: 4 test results: 1 passed, 1 failed, 1 error, 1 skipped"),
        "{log}"
    );
    assert!(
        log.contains("Found 7 test results: 2 passed, 2 failed, 1 error, 2 skipped (2 files"),
        "{log}"
    );
}

#[tokio::test]
async fn a_single_file_a_missing_path_and_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    let mut peer = Peer::default();
    let report = peer
        .run(
            vec![
                step(run(
                    "tests",
                    &format!("cp {samples}/go-junit-report.xml report.xml && mkdir empty"),
                )),
                store("report.xml"),
                store("missing"),
                store("empty"),
            ],
            dir.path(),
        )
        .await;
    report.assert_clean_exit();
    for index in 1..4 {
        assert_eq!(
            report.finished(index).0,
            StepStatus::Success,
            "{}",
            report.log(index)
        );
    }
    assert_eq!(peer.uploads.len(), 1);
    let results = peer.results(0);
    assert_eq!(results.tests.len(), 3);
    assert!(results.tests.iter().all(|case| case.source == "report.xml"));
    assert!(
        report.log(2).contains("No test results found at"),
        "{}",
        report.log(2)
    );
    assert!(
        report.log(3).contains("no *.xml files"),
        "{}",
        report.log(3)
    );
}

#[tokio::test]
async fn a_malformed_file_fails_the_step_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    let mut peer = Peer::default();
    let report = peer
        .run(
            vec![
                step(run(
                    "tests",
                    &format!(
                        "mkdir -p out/a out/b && cp {samples}/pytest.xml out/a/ \
                         && printf '<testsuite>\\n<testcase name=\"x\">\\n</testsuite>\\n' > out/b/bad.xml"
                    ),
                )),
                store("out"),
            ],
            dir.path(),
        )
        .await;
    report.assert_clean_exit();
    let log = report.log(1);
    assert_eq!(report.finished(1).0, StepStatus::Failed, "{log}");
    assert!(log.contains("task-agent: b/bad.xml:3: "), "{log}");
    assert!(log.contains("no test results were stored"), "{log}");
    assert!(peer.uploads.is_empty());
}

#[tokio::test]
async fn a_refused_upload_fails_the_step_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    let mut peer = Peer {
        fail: Some("the server does not support test_results uploads yet".into()),
        ..Peer::default()
    };
    let report = peer
        .run(
            vec![
                step(run(
                    "tests",
                    &format!("cp {samples}/jest-junit.xml junit.xml"),
                )),
                store("junit.xml"),
            ],
            dir.path(),
        )
        .await;
    report.assert_clean_exit();
    let log = report.log(1);
    assert_eq!(report.finished(1).0, StepStatus::Failed, "{log}");
    assert!(
        log.contains(
            "storing the test results: the server does not support test_results uploads yet"
        ),
        "{log}"
    );
}

#[tokio::test]
async fn secrets_are_masked_in_test_names_and_messages_before_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hunter2-Sup3rSecret";
    let mut task = task(vec![
        step(run(
            "tests",
            &format!(
                "printf '<testsuite>\\n<testcase name=\"login with {secret}\" classname=\"auth\">\\n\
                 <failure message=\"bad password {secret}\">trace {secret}</failure>\\n</testcase>\\n\
                 </testsuite>\\n' > results.xml"
            ),
        )),
        store("results.xml"),
    ]);
    task.secrets.0.insert("PASSWORD".into(), secret.into());
    let mut peer = Peer::default();
    let report = peer.run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(1).0,
        StepStatus::Success,
        "{}",
        report.log(1)
    );
    let json = String::from_utf8(peer.uploads[0].2.clone()).unwrap();
    assert!(!json.contains(secret), "{json}");
    let results = peer.results(0);
    assert_eq!(results.tests[0].name, "login with ********");
    let message = results.tests[0].message.as_deref().unwrap_or_default();
    assert!(message.contains("bad password ********"), "{message}");
}
