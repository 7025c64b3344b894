//! The task spec: what a task-agent executes. The server compiles a job into it, the
//! launch-agent forwards it unchanged, and the task-agent runs it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One task: a job (or one parallel index of it) ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: String,
    pub job_id: String,
    /// The job's name in its workflow (`CIRCLE_JOB`).
    pub job_name: String,
    /// The project's job number (`CIRCLE_BUILD_NUM`).
    pub build_num: u64,
    pub pipeline_id: String,
    pub pipeline_number: u64,
    pub workflow_id: String,
    pub project_slug: String,
    pub repository_url: String,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The full commit id the pipeline runs (`CIRCLE_SHA1`).
    pub revision: String,
    pub parallel_index: u32,
    pub parallel_total: u32,
    /// Job-level environment, already merged from the executor and the job.
    pub environment: BTreeMap<String, String>,
    /// The job's `working_directory`; `None` means the task's own directory.
    pub working_directory: Option<String>,
    /// The job's default shell for `run` steps; `None` means `/bin/bash -eo pipefail`.
    pub shell: Option<String>,
    pub steps: Vec<Step>,
    /// Secret environment: the project's variables, then those of the job's contexts in the
    /// order the job names them (a later one wins). Below [`TaskSpec::environment`] and every
    /// step's `environment`, above the built-ins; every value is masked in the job's logs.
    /// Filled in only in the answer to `GET /api/v2/task/config`, never stored with the job.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
    /// How `checkout` authenticates to the repository, if it needs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_auth: Option<CheckoutAuth>,
    /// The project's additional SSH keys that the job's `add_ssh_keys` steps may install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<SshKey>,
}

/// Secret name/value pairs. Its `Debug` shows names only, so a spec that is logged by mistake
/// leaks nothing.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A secret string whose `Debug` is redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"********\"")
    }
}

/// Credentials for `checkout`, used for its git commands alone (later steps never see them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutAuth {
    /// The project's checkout (deploy) key, an OpenSSH private key, for `ssh://` and
    /// `user@host:path` URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_private_key: Option<SecretString>,
    /// `known_hosts` lines the repository's host must match (`StrictHostKeyChecking=yes`). The
    /// server learns them on its first fetch (trust on first use) and enforces them after.
    #[serde(default)]
    pub known_hosts: Vec<String>,
    /// A token for `https://` URLs, given to git through a credential helper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_token: Option<SecretString>,
}

/// One of the project's additional SSH keys (`add_ssh_keys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshKey {
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The MD5 fingerprint (`aa:bb:...`), which older CircleCI configs name.
    pub md5_fingerprint: String,
    /// The host the key is for (an `~/.ssh/config` `Host` entry); `None` means every host.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The OpenSSH private key.
    pub private_key: SecretString,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    Checkout(CheckoutStep),
    Run(RunStep),
    StoreArtifacts(StoreArtifactsStep),
    SaveCache(SaveCacheStep),
    RestoreCache(RestoreCacheStep),
    PersistToWorkspace(PersistToWorkspaceStep),
    AttachWorkspace(AttachWorkspaceStep),
    StoreTestResults(StoreTestResultsStep),
    AddSshKeys(AddSshKeysStep),
}

impl Step {
    /// The name shown for the step.
    pub fn name(&self) -> &str {
        match self {
            Step::Checkout(step) => &step.name,
            Step::Run(step) => &step.name,
            Step::StoreArtifacts(step) => &step.name,
            Step::SaveCache(step) => &step.name,
            Step::RestoreCache(step) => &step.name,
            Step::PersistToWorkspace(step) => &step.name,
            Step::AttachWorkspace(step) => &step.name,
            Step::StoreTestResults(step) => &step.name,
            Step::AddSshKeys(step) => &step.name,
        }
    }

    /// When the step runs with respect to earlier failures.
    pub fn when(&self) -> When {
        match self {
            Step::Checkout(_) => When::OnSuccess,
            Step::Run(step) => step.when,
            Step::StoreArtifacts(step) => step.when,
            Step::SaveCache(step) => step.when,
            // As on CircleCI, test results are stored after a failed step too.
            Step::StoreTestResults(_) => When::Always,
            Step::RestoreCache(_)
            | Step::PersistToWorkspace(_)
            | Step::AttachWorkspace(_)
            | Step::AddSshKeys(_) => When::OnSuccess,
        }
    }
}

/// `checkout`: clone the project's repository at the task's revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutStep {
    pub name: String,
    /// Where to check out, relative to the job's working directory; `None` means `.`.
    pub path: Option<String>,
}

/// `run`: one shell command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStep {
    pub name: String,
    pub command: String,
    pub shell: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    pub working_directory: Option<String>,
    #[serde(default)]
    pub background: bool,
    /// Seconds without output before the step is stopped; `None` means the default (10 min).
    pub no_output_timeout_secs: Option<u64>,
    #[serde(default)]
    pub when: When,
    /// How many times a failed run is run again (`max_auto_reruns`, 0 to 5).
    #[serde(default)]
    pub max_auto_reruns: u32,
    /// Seconds to wait before each rerun (`auto_rerun_delay`).
    #[serde(default)]
    pub auto_rerun_delay_secs: u64,
}

/// `store_artifacts`: upload a file, or every regular file under a directory, as artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreArtifactsStep {
    pub name: String,
    /// A file or a directory, relative to the job's working directory (`~` is `$HOME`).
    pub path: String,
    /// The prefix of the artifacts' paths; `None` means the `path` as written, as on CircleCI.
    pub destination: Option<String>,
    #[serde(default = "always")]
    pub when: When,
}

/// `save_cache`: archive `paths` under the key `key` renders to, unless that key exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveCacheStep {
    pub name: String,
    /// The key template, rendered by the task-agent (`{{ checksum "f" }}`, `{{ .Branch }}`, ...).
    pub key: String,
    /// Paths relative to the job's working directory, absolute, or starting with `~`.
    pub paths: Vec<String>,
    #[serde(default)]
    pub when: When,
}

/// `restore_cache`: the most recently saved cache whose key starts with the first of `keys`
/// (rendered) that matches any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreCacheStep {
    pub name: String,
    /// Key templates, tried in order; each is a prefix.
    pub keys: Vec<String>,
}

/// `persist_to_workspace`: add `paths` (globs relative to `root`) to the workflow's workspace
/// as one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistToWorkspaceStep {
    pub name: String,
    /// Relative to the job's working directory, absolute, or starting with `~`.
    pub root: String,
    pub paths: Vec<String>,
}

/// `attach_workspace`: apply the layers of every job this job requires, directly or not, at
/// `at`, in dependency order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachWorkspaceStep {
    pub name: String,
    /// Relative to the job's working directory, absolute, or starting with `~`.
    pub at: String,
}

/// `store_test_results`: parse the JUnit XML file at `path`, or every one under the directory,
/// and upload the test cases as one [`TestResults`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreTestResultsStep {
    pub name: String,
    /// A file or a directory, relative to the job's working directory (`~` is `$HOME`).
    pub path: String,
}

/// `add_ssh_keys`: install the project's SSH keys with these fingerprints (SHA-256 or MD5
/// form; empty means all of them) into the job user's `~/.ssh` for this task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddSshKeysStep {
    pub name: String,
    #[serde(default)]
    pub fingerprints: Vec<String>,
}

/// What a workspace download with no keys answers: the layers an `attach_workspace` applies,
/// in the order to apply them (a layer comes after every layer of the jobs its job requires;
/// one job's layers in the order it persisted them). The server writes it; the launch-agent
/// relays it as bytes; the task-agent reads it and then downloads each layer by its `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceManifest {
    pub layers: Vec<WorkspaceLayer>,
}

/// One `persist_to_workspace` of an upstream job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceLayer {
    /// The layer's id: the key to download it with.
    pub id: String,
    /// The workflow job that persisted it (its name in the workflow).
    pub job_name: String,
    pub job_id: String,
    /// Its archive's size in bytes.
    pub size: u64,
    /// The names of the jobs of this manifest that `job_name` requires, directly or
    /// transitively: a path of theirs that this layer persists again is overwritten, not a
    /// conflict. Two layers of jobs neither of which requires the other that persist one path
    /// are CircleCI's conflict, and the attach fails naming the path and both jobs.
    pub requires: Vec<String>,
}

fn always() -> When {
    When::Always
}

/// A step's `when` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    #[default]
    OnSuccess,
    OnFail,
    Always,
}

/// What one `store_test_results` step uploads (kind `test_results`, as JSON): every test case
/// the task-agent parsed from the step's JUnit XML files. Parsing happens in the task-agent, so
/// the server only checks and stores these rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResults {
    pub tests: Vec<TestCase>,
}

/// One test case, in CircleCI's fields (`GET /api/v2/project/{slug}/{job-number}/tests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    pub name: String,
    #[serde(default)]
    pub classname: String,
    /// The test's source file, when the report names one.
    #[serde(default)]
    pub file: Option<String>,
    pub result: TestResult,
    /// The failure, error or skip message, if any (bounded by the task-agent).
    #[serde(default)]
    pub message: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub run_time: f64,
    /// Where the case came from: the results file's path relative to the step's `path`
    /// (CircleCI names the reporter's subdirectory here).
    #[serde(default)]
    pub source: String,
}

/// How a test case ended, in CircleCI's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestResult {
    Success,
    Failure,
    Skipped,
    Error,
}

impl TestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TestResult::Success => "success",
            TestResult::Failure => "failure",
            TestResult::Skipped => "skipped",
            TestResult::Error => "error",
        }
    }
}
