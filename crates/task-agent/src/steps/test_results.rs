//! `store_test_results`: the JUnit XML file at `path`, or every `*.xml` file under the directory,
//! parsed here and uploaded as one [`TestResults`] (JSON, kind `test_results`, named by the
//! `path` as written).
//!
//! As on CircleCI, a missing `path` or a directory without XML files is not an error: the log
//! says so and the step succeeds. Symlinks are never followed and hidden directories are not
//! entered (CircleCI ignores them); each is skipped with a line in the log. Every file is parsed before anything is uploaded, so a malformed one fails the step
//! with `FILE:LINE: what` and stores nothing. A case's `source` is its file's path relative to
//! `path` (the file's name when `path` is the file): its directory is the reporter's, which is
//! what CircleCI shows. Memory: the cases and their JSON are held whole (bounded by
//! [`junit::MAX_CASES`] and the field limits); the JSON goes out in [`CHUNK`]-byte frames.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bosun_protocol::task::{StoreTestResultsStep, TestCase, TestResult, TestResults};
use bosun_protocol::{BlobKind, UploadOutcome};
use bytes::Bytes;
use tokio::sync::watch;

use super::{Job, StepResult};
use crate::junit::{self, Limits};
use crate::link::{Control, Lost, UploadStop};

/// Bytes of JSON per data frame.
const CHUNK: usize = 256 << 10;
/// Most XML files one step reads.
pub const MAX_FILES: usize = 10_000;

/// Parses and uploads the step's `path`; the step's log is stream `log`.
pub async fn execute(
    job: &Job,
    log: u32,
    step: &StoreTestResultsStep,
    control: &mut watch::Receiver<Control>,
) -> Result<StepResult, Lost> {
    let started = Instant::now();
    let root = job.step_dir(Some(&step.path));
    job.out
        .text(log, format!("Reading test results at {}\n", root.display()))
        .await?;
    let meta = match std::fs::symlink_metadata(&root) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            job.out
                .text(
                    log,
                    format!("No test results found at {}\n", root.display()),
                )
                .await?;
            return Ok(StepResult::success());
        }
        Err(err) => {
            return job
                .fail(
                    log,
                    format!("task-agent: cannot read {}: {err}\n", root.display()),
                )
                .await;
        }
    };
    let files = if meta.is_dir() {
        match walk(&root) {
            Ok(walked) => {
                for (skipped, why) in &walked.skipped {
                    job.out
                        .text(log, format!("Skipping {}: {why}\n", skipped.display()))
                        .await?;
                }
                walked.files
            }
            Err(message) => return job.fail(log, format!("task-agent: {message}\n")).await,
        }
    } else if meta.is_file() {
        let name = root
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![(root.clone(), name)]
    } else {
        return job
            .fail(
                log,
                format!(
                    "task-agent: {} is a symlink or special file: store_test_results reads files and directories\n",
                    root.display()
                ),
            )
            .await;
    };
    if files.is_empty() {
        job.out
            .text(
                log,
                format!(
                    "No test results found at {}: no *.xml files\n",
                    root.display()
                ),
            )
            .await?;
        return Ok(StepResult::success());
    }

    // Parsing is CPU and blocking I/O: off the runtime, all files before any upload.
    // A cancel is seen between files.
    let stop = control.clone();
    let parsed = tokio::task::spawn_blocking(move || parse_all(files, &stop)).await;
    let Parsed { tests, per_file } = match parsed {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(None)) => return super::canceled(&job.out, log, control).await,
        Ok(Err(Some(message))) => {
            return job
                .fail(
                    log,
                    format!("task-agent: {message}; no test results were stored\n"),
                )
                .await;
        }
        Err(err) => {
            return job
                .fail(
                    log,
                    format!("task-agent: parsing the test results failed: {err}\n"),
                )
                .await;
        }
    };
    for (name, counts) in &per_file {
        job.out
            .text(log, format!("  {name}: {}\n", counts.summary()))
            .await?;
    }
    let total = Counts::of(&tests);
    // Test names and failure messages are shown like log lines: the job's secrets are masked in
    // them too.
    let mut tests = tests;
    if let Some(patterns) = job.out.masks().current() {
        for case in &mut tests {
            case.name = patterns.mask_str(&case.name);
            if let Some(message) = case.message.as_mut() {
                *message = patterns.mask_str(message);
            }
        }
    }

    let json = match serde_json::to_vec(&TestResults { tests }) {
        Ok(json) => Bytes::from(json),
        Err(err) => {
            return job
                .fail(
                    log,
                    format!("task-agent: encoding the test results: {err}\n"),
                )
                .await;
        }
    };
    let size = json.len();
    let mut upload = job
        .out
        .upload(BlobKind::TestResults, step.path.clone())
        .await?;
    let mut offset = 0;
    while offset < json.len() {
        if !matches!(*control.borrow(), Control::Run) {
            upload.abort("the step was canceled".to_owned()).await?;
            return super::canceled(&job.out, log, control).await;
        }
        let end = (offset + CHUNK).min(json.len());
        match upload.write(json.slice(offset..end)).await {
            Ok(()) => {}
            Err(UploadStop::Answered) => break,
            Err(UploadStop::Lost) => return Err(Lost),
        }
        offset = end;
    }
    match upload.finish().await? {
        UploadOutcome::Stored => {}
        UploadOutcome::Exists => {
            return job
                .fail(
                    log,
                    format!(
                        "task-agent: test results `{}` were stored already\n",
                        step.path
                    ),
                )
                .await;
        }
        UploadOutcome::Failed { message } => {
            return job
                .fail(
                    log,
                    format!("task-agent: storing the test results: {message}\n"),
                )
                .await;
        }
    }
    job.out
        .text(
            log,
            format!(
                "Found {} ({} file{}, {size} bytes uploaded in {:.1}s)\n",
                total.summary(),
                per_file.len(),
                if per_file.len() == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64()
            ),
        )
        .await?;
    Ok(StepResult::success())
}

/// How many cases ended each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub skipped: usize,
}

impl Counts {
    pub fn of(tests: &[TestCase]) -> Counts {
        let mut counts = Counts::default();
        for test in tests {
            match test.result {
                TestResult::Success => counts.passed += 1,
                TestResult::Failure => counts.failed += 1,
                TestResult::Error => counts.errors += 1,
                TestResult::Skipped => counts.skipped += 1,
            }
        }
        counts
    }

    fn total(&self) -> usize {
        self.passed + self.failed + self.errors + self.skipped
    }

    /// `N test results: X passed, Y failed, Z errors, W skipped`.
    pub fn summary(&self) -> String {
        let total = self.total();
        format!(
            "{total} test result{}: {} passed, {} failed, {} error{}, {} skipped",
            if total == 1 { "" } else { "s" },
            self.passed,
            self.failed,
            self.errors,
            if self.errors == 1 { "" } else { "s" },
            self.skipped
        )
    }
}

/// Every case of a step's files, and each file's name and counts, in order.
struct Parsed {
    tests: Vec<TestCase>,
    per_file: Vec<(String, Counts)>,
}

/// Parses every file (path, name relative to the step's `path`) with one budget of cases and
/// text for the step; the first failure is the error, `None` if the step was stopped.
fn parse_all(
    files: Vec<(PathBuf, String)>,
    control: &watch::Receiver<Control>,
) -> Result<Parsed, Option<String>> {
    let mut tests = Vec::new();
    let mut per_file = Vec::new();
    let mut text_bytes = 0;
    for (path, name) in files {
        if !matches!(*control.borrow(), Control::Run) {
            return Err(None);
        }
        // One budget of cases and text for the whole step.
        let limits = Limits {
            max_cases: junit::MAX_CASES - tests.len(),
            max_text_bytes: junit::MAX_TEXT_BYTES - text_bytes,
            ..Limits::default()
        };
        let mut cases =
            junit::parse_file(&path, &name, &limits).map_err(|err| Some(err.to_string()))?;
        for case in &mut cases {
            case.source.clone_from(&name);
            text_bytes += junit::text_len(case);
        }
        per_file.push((name, Counts::of(&cases)));
        tests.append(&mut cases);
    }
    Ok(Parsed { tests, per_file })
}

/// A directory's `*.xml` regular files, each with its path relative to the directory, and what
/// was skipped.
#[derive(Debug, Default)]
pub struct Walked {
    pub files: Vec<(PathBuf, String)>,
    /// Each with why it was skipped.
    pub skipped: Vec<(PathBuf, &'static str)>,
}

const HIDDEN: &str = "a hidden directory, which is not read (as on CircleCI)";
const NOT_A_FILE: &str = "a symlink or special file, which is not read";

/// Lists the `*.xml` files under `root` without following symlinks or entering hidden
/// directories (CircleCI ignores `path/.dir/report.xml`), sorted by name, at most [`MAX_FILES`]
/// of them.
pub fn walk(root: &Path) -> Result<Walked, String> {
    let mut walked = Walked::default();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, at)) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}/{name}")
            };
            // `file_type` does not follow symlinks.
            let kind = entry
                .file_type()
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            if kind.is_dir() {
                if name.starts_with('.') {
                    walked.skipped.push((path, HIDDEN));
                } else {
                    pending.push((path, relative));
                }
            } else if !name.to_ascii_lowercase().ends_with(".xml") {
                continue;
            } else if kind.is_file() {
                if walked.files.len() >= MAX_FILES {
                    return Err(format!(
                        "{} holds more than {MAX_FILES} XML files: store_test_results reads at most {MAX_FILES} per step",
                        root.display()
                    ));
                }
                walked.files.push((path, relative));
            } else {
                walked.skipped.push((path, NOT_A_FILE));
            }
        }
    }
    walked.files.sort_by(|a, b| a.1.cmp(&b.1));
    walked.skipped.sort();
    Ok(walked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_finds_xml_files_and_skips_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pytest")).unwrap();
        std::fs::write(dir.path().join("pytest/results.xml"), "<testsuite/>").unwrap();
        std::fs::write(dir.path().join("a.XML"), "<testsuite/>").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link.xml")).unwrap();
        std::fs::create_dir(dir.path().join(".cache")).unwrap();
        std::fs::write(dir.path().join(".cache/old.xml"), "<testsuite/>").unwrap();
        let walked = walk(dir.path()).unwrap();
        let names: Vec<_> = walked.files.iter().map(|(_, name)| name.as_str()).collect();
        assert_eq!(names, ["a.XML", "pytest/results.xml"]);
        assert_eq!(
            walked.skipped,
            [
                (dir.path().join(".cache"), HIDDEN),
                (dir.path().join("link.xml"), NOT_A_FILE)
            ]
        );
    }

    #[test]
    fn summaries_count_each_result() {
        let counts = Counts {
            passed: 3,
            failed: 1,
            errors: 1,
            skipped: 0,
        };
        assert_eq!(
            counts.summary(),
            "5 test results: 3 passed, 1 failed, 1 error, 0 skipped"
        );
    }
}
