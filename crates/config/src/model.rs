//! The compiled pipeline: what a config file means, independent of how it was written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest `parallelism` a job may ask for (each index becomes a task).
pub const MAX_PARALLELISM: u32 = 1000;

/// A compiled config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// The `version` key exactly as written: `2`, `2.0` or `2.1`.
    pub version: String,
    /// `setup: true`: a dynamic-configuration setup config. Its workflows run first; a job of
    /// theirs continues the pipeline with a generated config (which must not be a setup config).
    #[serde(default)]
    pub setup: bool,
    /// Every job of the `jobs` map, by key.
    pub jobs: BTreeMap<String, Job>,
    /// Workflows in document order. A config without `workflows` has a single workflow
    /// named `workflow` that runs the job `build`.
    pub workflows: Vec<Workflow>,
}

/// A job of the `jobs` map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its key in `jobs`.
    pub name: String,
    /// Where it runs.
    pub executor: Executor,
    /// `resource_class`, as written.
    pub resource_class: Option<String>,
    /// Job-level `environment`.
    pub environment: BTreeMap<String, String>,
    /// `working_directory`.
    pub working_directory: Option<String>,
    /// Default shell of its `run` steps.
    pub shell: Option<String>,
    /// `parallelism`: how many copies of the job run (1 by default).
    pub parallelism: u32,
    /// The steps, in order; never empty, but for a `type: no-op` job.
    pub steps: Vec<Step>,
    /// `type: no-op`: a job that runs nothing and succeeds once its requirements have (a gate
    /// other jobs require). It has no executor and no steps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_op: bool,
    /// The orb defining the job (`namespace/name@X.Y.Z`), for a job of a registry orb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orb: Option<String>,
    /// The executor the job names (`executor: node/default`), if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_name: Option<String>,
    /// The orb defining that executor, for an executor of a registry orb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_orb: Option<String>,
}

/// The executor of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Executor {
    /// `machine: true` (or a `machine:` map): the runner's own machine.
    Machine,
    /// `docker:`: the first image of the list is the primary container.
    Docker {
        /// The primary container's image.
        image: String,
    },
    /// `macos:`: a macOS machine with the given Xcode.
    Macos {
        /// `xcode`, as written.
        xcode: String,
    },
    /// `machine:` with a Windows image (`windows-server-2022-gui:current`).
    Windows {
        /// The machine image.
        image: String,
    },
}

/// A step of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    /// `checkout`: check the project's code out.
    Checkout {
        /// Where to check out, relative to the working directory (default: there).
        path: Option<String>,
    },
    /// `run`: run a command.
    Run(Run),
    /// `save_cache`: archive `paths` under `key` (a template like `v1-{{ checksum "f" }}`).
    SaveCache {
        /// `name`, shown in the UI.
        name: Option<String>,
        /// `key` template.
        key: String,
        /// `paths` to archive.
        paths: Vec<String>,
        /// `when` it runs.
        when: When,
    },
    /// `restore_cache`: restore the most recent cache matching the first key (by prefix) that
    /// matches.
    RestoreCache {
        /// `name`, shown in the UI.
        name: Option<String>,
        /// `key` or `keys` templates, in order.
        keys: Vec<String>,
    },
    /// `persist_to_workspace`: add `paths` (relative to `root`) to the workflow's workspace.
    PersistToWorkspace {
        /// `name`, shown in the UI.
        name: Option<String>,
        /// `root` directory.
        root: String,
        /// `paths`, relative to `root`.
        paths: Vec<String>,
    },
    /// `attach_workspace`: extract the workflow's workspace at `at`.
    AttachWorkspace {
        /// `name`, shown in the UI.
        name: Option<String>,
        /// `at` directory.
        at: String,
    },
    /// `store_artifacts`: upload `path` as artifacts.
    StoreArtifacts {
        /// `name`, shown in the UI.
        name: Option<String>,
        /// `path` to upload.
        path: String,
        /// `destination` prefix.
        destination: Option<String>,
        /// `when`; `always` unless the step says otherwise: CircleCI stores artifacts after a
        /// failed step too.
        when: When,
    },
    /// `store_test_results`: collect JUnit XML files under `path`.
    StoreTestResults {
        /// `name`, shown in the UI.
        name: Option<String>,
        /// `path` to a file or a directory.
        path: String,
    },
    /// `add_ssh_keys`: install the project's SSH keys.
    AddSshKeys {
        /// `name`, shown in the UI.
        name: Option<String>,
        /// `fingerprints` to install (all keys if empty).
        fingerprints: Vec<String>,
    },
    /// `setup_remote_docker`: a remote Docker engine for the job.
    SetupRemoteDocker {
        /// `name`, shown in the UI.
        name: Option<String>,
        /// `version`, as written.
        version: Option<String>,
        /// `docker_layer_caching`.
        docker_layer_caching: bool,
    },
}

impl Step {
    /// The step's key in the config (`run`, `save_cache`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Checkout { .. } => "checkout",
            Step::Run(_) => "run",
            Step::SaveCache { .. } => "save_cache",
            Step::RestoreCache { .. } => "restore_cache",
            Step::PersistToWorkspace { .. } => "persist_to_workspace",
            Step::AttachWorkspace { .. } => "attach_workspace",
            Step::StoreArtifacts { .. } => "store_artifacts",
            Step::StoreTestResults { .. } => "store_test_results",
            Step::AddSshKeys { .. } => "add_ssh_keys",
            Step::SetupRemoteDocker { .. } => "setup_remote_docker",
        }
    }
}

/// A `run` step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// `name`, shown in the UI (default: derived from the command by whoever displays it).
    pub name: Option<String>,
    /// `command`, the script to run.
    pub command: String,
    /// `shell` for this step (default: the job's).
    pub shell: Option<String>,
    /// Step-level `environment`.
    pub environment: BTreeMap<String, String>,
    /// `working_directory` for this step.
    pub working_directory: Option<String>,
    /// `background: true`: start it and carry on with the next step.
    pub background: bool,
    /// `no_output_timeout`, in seconds (default: the runner's, 10 minutes).
    pub no_output_timeout_secs: Option<u64>,
    /// `when`: on which outcome of the previous steps it runs.
    pub when: When,
    /// `max_auto_reruns`: how many times a failed run is run again (0 to 5).
    #[serde(default)]
    pub max_auto_reruns: u32,
    /// `auto_rerun_delay`, in seconds: the wait before each rerun (at most 10 minutes).
    #[serde(default)]
    pub auto_rerun_delay_secs: u64,
}

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Only if every previous step succeeded (the default).
    #[default]
    OnSuccess,
    /// Only if a previous step failed.
    OnFail,
    /// Whatever happened before.
    Always,
}

/// A workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workflow {
    /// Its key in `workflows`.
    pub name: String,
    /// Its jobs, in document order.
    pub jobs: Vec<WorkflowJob>,
}

/// A job entry of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowJob {
    /// Its name in the workflow: the `name:` override, or else the job key.
    pub name: String,
    /// The job it runs: a key of [`Pipeline::jobs`].
    pub job: String,
    /// Names (in this workflow) of the entries that must succeed first.
    pub requires: Vec<String>,
    /// `context`: the contexts whose environment variables the job gets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    /// `type: approval`: a manual approval gate, not a job (`job` is its name, not a key of
    /// [`Pipeline::jobs`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
}
