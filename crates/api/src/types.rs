//! Request and response bodies. Field names follow CircleCI's public API where it has one.

use serde::{Deserialize, Serialize};

/// A CircleCI-style list answer: `{"items": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Items<T> {
    pub items: Vec<T>,
    /// CircleCI's page token: pass it back as `page-token` for the next page; null on the last.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

impl<T> Items<T> {
    /// Every item in one page.
    pub fn all(items: Vec<T>) -> Items<T> {
        Items {
            items,
            next_page_token: None,
        }
    }
}

/// Error bodies: `{"message": "..."}`, as CircleCI answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

// ---- runner API (launch-agent <-> server) ----

/// `POST /api/v3/runner/claim` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimRequest {
    pub name: String,
    pub hostname: String,
    pub ip: String,
    pub version: String,
    /// bosun's: tasks the agent runs now (for the inventory's `busy N/M`).
    #[serde(default)]
    pub running: u32,
    /// bosun's: tasks it runs at once (`runner.max_concurrent_tasks`).
    #[serde(default = "one")]
    pub capacity: u32,
    /// bosun's: it drains (claims nothing more; its running tasks finish).
    #[serde(default)]
    pub draining: bool,
    /// bosun's, from agents that update themselves: the release version the agent last heard
    /// was promoted for it (`""`: none). A claim whose version is no longer the promoted one is
    /// answered 204 at once, so the agent looks again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_seen: Option<String>,
}

impl Default for ClaimRequest {
    fn default() -> ClaimRequest {
        ClaimRequest {
            name: String::new(),
            hostname: String::new(),
            ip: String::new(),
            version: String::new(),
            running: 0,
            capacity: 1,
            draining: false,
            release_seen: None,
        }
    }
}

/// `POST /api/v3/runner/claim` answer when a task was claimed (204 otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResponse {
    pub task_token: String,
    pub agent_version: String,
    pub resource_class: String,
    pub allocation: String,
    #[serde(default)]
    pub warning: Option<String>,
}

/// `POST /api/v2/task/heartbeat` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Set when someone canceled the job: the launch-agent stops the task.
    pub cancel: bool,
    /// Seconds the lease now lasts without another heartbeat.
    pub lease_secs: u64,
}

/// `POST /api/v2/task/log` answer: the stored length of the step's log after the append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAppendResponse {
    pub length: u64,
    /// Set once the task's log reached one of the server's limits (`--max-step-log`,
    /// `--max-job-log`): the sentence to end the job with. The server stores nothing more of this
    /// task and the launch-agent stops it. Absent from older servers' answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
}

/// `POST /api/v2/task/step` body: a step started or finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    pub step: u32,
    pub name: String,
    /// `running`, `success`, `failed`, `canceled`, `skipped`.
    pub status: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// `POST /api/v2/task/complete` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// `success`, `failed`, `canceled` or `infrastructure_fail`.
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
}

// ---- admin API (the `circleci runner` CLI's shapes) ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateResourceClass {
    pub resource_class: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceClass {
    pub id: String,
    pub resource_class: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateToken {
    pub resource_class: String,
    pub nickname: String,
}

/// A runner token. `token` is present only in the answer to its creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub resource_class: String,
    pub nickname: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// One runner instance of `GET /api/v3/runner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerInstance {
    pub resource_class: String,
    pub hostname: String,
    pub name: String,
    pub ip: String,
    pub version: String,
    pub first_connected: String,
    pub last_connected: String,
    #[serde(default)]
    pub last_used: Option<String>,
    /// bosun's: `idle`, `busy N/M`, `draining` or `offline` (not heard from for a while).
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub running_tasks: u32,
    #[serde(default = "one")]
    pub capacity: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnclaimedTaskCount {
    pub unclaimed_task_count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTaskCount {
    pub running_runner_tasks: u64,
}

// ---- projects and pipelines ----

/// `POST /api/v2/project` body (bosun's own: CircleCI creates projects from its VCS integration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateProject {
    /// `vcs/org/repo`, e.g. `local/acme/widgets`.
    pub slug: String,
    pub git_url: String,
    /// The namespace whose resource classes the project's jobs may use; the slug's organization
    /// (lower-cased) when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A project: CircleCI's fields (`GET /api/v2/project/{slug}`) and bosun's (`git_url`,
/// `namespace`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub slug: String,
    /// The repository part of the slug.
    #[serde(default)]
    pub name: String,
    /// The organization part of the slug.
    #[serde(default)]
    pub organization_name: String,
    /// `vcs/org`.
    #[serde(default)]
    pub organization_slug: String,
    /// A UUID naming the organization (its namespace).
    #[serde(default)]
    pub organization_id: String,
    #[serde(default)]
    pub vcs_info: Option<VcsInfo>,
    pub git_url: String,
    /// The one namespace whose resource classes the project's jobs run on.
    #[serde(default)]
    pub namespace: String,
    /// Set at creation when the namespace has no resource class yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A project's repository, in CircleCI's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcsInfo {
    pub vcs_url: String,
    /// `GitHub`, `Bitbucket` or `CircleCI`.
    pub provider: String,
    pub default_branch: String,
}

/// `POST /api/v2/project/{slug}/pipeline` body, as CircleCI's v2 API takes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerPipeline {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// bosun's addition: run this exact commit (it must be on the branch or tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /api/v2/project/{slug}/pipeline` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineCreated {
    pub id: String,
    pub number: u64,
    pub state: String,
    pub created_at: String,
}

/// `POST /api/v2/pipeline/continue` body, as CircleCI's continuation orb sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuePipeline {
    #[serde(rename = "continuation-key")]
    pub continuation_key: String,
    /// The configuration to continue with, as YAML text.
    pub configuration: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vcs {
    /// `GitHub`, `Bitbucket`, `GitLab` or `CircleCI`, from the project slug.
    #[serde(default)]
    pub provider_name: String,
    #[serde(default)]
    pub target_repository_url: String,
    pub origin_repository_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub revision: String,
}

/// A pipeline's `trigger`: how and by whom it was started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// `api`, `webhook`, `explicit` or `scheduled_pipeline`.
    #[serde(rename = "type")]
    pub kind: String,
    pub received_at: String,
    pub actor: Actor,
}

/// Who triggered a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub login: String,
    pub avatar_url: String,
}

/// `GET /api/v2/pipeline/{id}/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    pub source: String,
    pub compiled: String,
    #[serde(
        rename = "setup-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub setup_config: Option<String>,
    #[serde(
        rename = "compiled-setup-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub compiled_setup_config: Option<String>,
    /// The orbs the configuration resolved, each reference as written and the exact version it
    /// resolved to (bosun's addition; `compiled` starts with the same as comments, as
    /// `circleci config process` prints them).
    #[serde(default)]
    pub orbs: Vec<ResolvedOrbRef>,
}

/// A reference a configuration resolved: `circleci/slack@4.12` to `circleci/slack@4.12.5`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedOrbRef {
    pub reference: String,
    pub version: String,
}

/// `PUT /api/v2/orb/{namespace}/{name}/{version}`: the published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrbPublished {
    /// `namespace/name@version`.
    pub orb: String,
    pub sha256: String,
    /// Whether a dev version was replaced.
    #[serde(default)]
    pub replaced: bool,
    pub created_at: String,
}

/// One orb of `GET /api/v2/orb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrbListing {
    /// `namespace/name`.
    pub name: String,
    pub versions: u64,
    /// The highest released version, if any.
    pub latest: Option<String>,
    pub updated_at: String,
}

/// One version of `GET /api/v2/orb/{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrbVersionInfo {
    pub version: String,
    pub sha256: String,
    pub created_at: String,
    /// A dev version's expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The registry it was cached from; absent for a version published here.
    #[serde(default)]
    pub upstream: Option<String>,
}

/// `GET /api/v2/orb/{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrbInfo {
    /// `namespace/name`.
    pub name: String,
    pub latest: Option<String>,
    /// Newest first.
    pub versions: Vec<OrbVersionInfo>,
}

/// `GET /api/v2/orb/{namespace}/{name}/{version}` and `GET /api/v2/orb/resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrbSource {
    /// The reference as asked.
    pub reference: String,
    /// What it resolved to (`namespace/name@X.Y.Z`, or the URL).
    pub version: String,
    pub source: String,
}

/// `GET /api/v2/pipeline/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub id: String,
    pub number: u64,
    pub project_slug: String,
    /// CircleCI's pipeline state: `created` or `errored`.
    pub state: String,
    /// bosun's summary of all workflows: `running`, `success`, `failed`, `canceled`, `error`.
    pub status: String,
    pub errors: Vec<PipelineError>,
    #[serde(default)]
    pub vcs: Option<Vcs>,
    #[serde(default)]
    pub trigger: Option<Trigger>,
    pub created_at: String,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// One workflow of `GET /api/v2/pipeline/{id}/workflow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    pub pipeline_id: String,
    pub pipeline_number: u64,
    pub project_slug: String,
    /// `running`, `success`, `failed`, `canceled`, `not_run`.
    pub status: String,
    /// The id of the user who triggered the pipeline.
    #[serde(default)]
    pub started_by: String,
    pub created_at: String,
    #[serde(default)]
    pub stopped_at: Option<String>,
}

/// One job of `GET /api/v2/workflow/{id}/job`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub project_slug: String,
    /// `build` (bosun has no approval jobs yet).
    #[serde(rename = "type", default)]
    pub kind: String,
    pub job_number: u64,
    /// `blocked`, `queued`, `running`, `success`, `failed`, `canceled`, `not_run`,
    /// `infrastructure_fail`.
    pub status: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub stopped_at: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
}

fn one() -> u32 {
    1
}

/// `GET /api/v2/job/{id}[?node=N]`: a job with the steps of one of its nodes (node 0 by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub id: String,
    pub name: String,
    pub job_number: u64,
    pub status: String,
    pub pipeline_id: String,
    pub workflow_id: String,
    pub resource_class: String,
    #[serde(default)]
    pub message: Option<String>,
    /// How many nodes the job runs as (`parallelism`).
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Which node's steps `steps` are.
    #[serde(default)]
    pub node: u32,
    pub steps: Vec<StepInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    pub index: u32,
    pub name: String,
    /// `running`, `success`, `failed`, `canceled`, `skipped`.
    pub status: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Bytes of log stored for the step so far.
    pub log_length: u64,
}

/// Whether a job status is final.
pub fn job_status_is_final(status: &str) -> bool {
    matches!(
        status,
        "success" | "failed" | "canceled" | "not_run" | "infrastructure_fail"
    )
}

/// One artifact in `GET /api/v2/project/{slug}/{job-number}/artifacts`: CircleCI's fields, and
/// bosun's `size` on top.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The artifact's path, as `store_artifacts` named it (`destination/relative/path`).
    pub path: String,
    pub node_index: u32,
    /// Where its bytes download from, with the same token.
    pub url: String,
    /// Its size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
}

/// One saved cache of a project, in `GET /api/v2/project/{slug}/cache`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The key it was saved under (rendered: no templates).
    pub key: String,
    /// Its archive's size in bytes.
    pub size: u64,
    /// When it was saved (RFC 3339, UTC).
    pub created_at: String,
    /// The job that saved it.
    pub job_id: String,
    /// When the retention sweep deletes it (RFC 3339, UTC).
    pub expires_at: String,
}

/// A project's caches, newest first, in CircleCI's paginated shape (bosun answers one page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheList {
    pub items: Vec<CacheEntry>,
    pub next_page_token: Option<String>,
}

/// What `DELETE /api/v2/project/{slug}/cache?prefix=` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDeleted {
    /// How many caches (keys) were deleted.
    pub deleted: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What the server answers to a stored cache or workspace layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBlob {
    /// The cache key, or the workspace layer's id.
    pub key: String,
    pub size: u64,
}

/// One test case in `GET /api/v2/project/{slug}/{job-number}/tests`: CircleCI's fields, and
/// bosun's `node_index` and `flaky` on top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestItem {
    pub message: Option<String>,
    pub source: String,
    /// Seconds.
    pub run_time: f64,
    pub file: Option<String>,
    /// `success`, `failure`, `skipped` or `error`.
    pub result: String,
    pub name: String,
    pub classname: String,
    #[serde(default)]
    pub node_index: u32,
    /// bosun's addition: the same test of the same job and revision both failed and passed.
    #[serde(default)]
    pub flaky: bool,
}

/// A job's test results, in CircleCI's paginated shape (bosun answers one page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestList {
    pub items: Vec<TestItem>,
    pub next_page_token: Option<String>,
}

/// What the server answers to a stored `store_test_results` upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTests {
    /// Test cases stored.
    pub stored: u64,
}

/// A job's artifacts, in CircleCI's paginated shape (bosun answers one page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactList {
    pub items: Vec<Artifact>,
    pub next_page_token: Option<String>,
}

// ---- secrets: project variables, contexts, checkout and SSH keys ----

/// A CircleCI-style page: `{"items": [...], "next_page_token": null}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// `{"message": "..."}` success answers (deletes), as CircleCI's `MessageResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    pub message: String,
}

/// `POST /api/v2/project/{slug}/envvar` body.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateEnvVar {
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for CreateEnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateEnvVar")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A project variable as reads show it: `value` is `xxxx` and the last four characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    #[serde(rename = "created-at", default)]
    pub created_at: Option<String>,
}

/// The owner of a new context: an organization by `id` or `slug` (bosun: its namespace, or
/// `vcs/org` whose `org` lower-cased is the namespace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextOwner {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub owner_type: Option<String>,
}

/// `POST /api/v2/context` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateContext {
    pub name: String,
    pub owner: ContextOwner,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// `PUT /api/v2/context/{id}/environment-variable/{name}` body.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SetContextEnvVar {
    pub value: String,
}

impl std::fmt::Debug for SetContextEnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetContextEnvVar { .. }")
    }
}

/// A context variable: names and dates only, never the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextEnvVar {
    pub variable: String,
    pub context_id: String,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /api/v2/context/{id}/restrictions` body. `restriction_type` is `project` (value: the
/// project's id; bosun also takes its slug) or `expression`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateRestriction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restriction_value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restriction {
    pub id: String,
    /// In listings; the answer that creates one has none (CircleCI's `restriction_created`
    /// allows no other fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    pub name: String,
    pub restriction_type: String,
    pub restriction_value: String,
}

/// `POST /api/v2/project/{slug}/checkout-key` body (`deploy-key`; `user-key` needs a VCS
/// integration bosun does not have).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateCheckoutKey {
    #[serde(rename = "type")]
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutKey {
    #[serde(rename = "public-key")]
    pub public_key: String,
    #[serde(rename = "type")]
    pub key_type: String,
    /// MD5, colon-separated hex, as CircleCI shows it.
    pub fingerprint: String,
    pub preferred: bool,
    #[serde(rename = "created-at")]
    pub created_at: String,
}

/// `POST /api/v2/project/{slug}/ssh-key` body (bosun's; CircleCI's v1.1 shape): an OpenSSH
/// private key, for `hostname` or every host.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSshKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub private_key: String,
}

impl std::fmt::Debug for CreateSshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSshKey")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshKeyInfo {
    /// `SHA256:...`.
    pub fingerprint: String,
    /// `aa:bb:...`, the form older configs name in `add_ssh_keys`.
    pub md5_fingerprint: String,
    pub hostname: Option<String>,
    pub public_key: String,
    pub created_at: String,
}

/// `GET|PUT /api/v2/project/{slug}/known-hosts` (bosun's): the host keys `checkout` and the
/// server's fetches enforce, as `known_hosts` lines; empty means trust on first use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownHosts {
    pub known_hosts: Vec<String>,
}

/// `PUT /api/v2/project/{slug}/checkout-token` body (bosun's): a token for `https://`
/// repositories; `null` removes it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutToken {
    pub token: Option<String>,
}

impl std::fmt::Debug for CheckoutToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckoutToken { .. }")
    }
}

/// `GET /api/v2/me/collaborations`: the organizations the caller belongs to. In bosun an
/// organization is a namespace; `slug` and `name` are the namespace, as contexts' `owner-slug`
/// takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collaboration {
    pub id: String,
    #[serde(rename = "vcs-type")]
    pub vcs_type: String,
    pub name: String,
    pub avatar_url: String,
    pub slug: String,
}

// ---- users, roles and personal API tokens ----

/// `GET /api/v2/me` and `GET /api/v2/user/{id}`, CircleCI's `User`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub login: String,
    pub name: String,
}

/// A user as bosun's user administration shows it (`GET /api/v2/user`, bosun's): CircleCI's
/// fields plus the role and the projects a member was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDetail {
    pub id: String,
    pub login: String,
    pub name: String,
    /// `admin`, `member` or `viewer`.
    pub role: String,
    pub created_at: String,
    /// The slugs of the projects a `member` was given (empty for the other roles, who read
    /// every project).
    #[serde(default)]
    pub projects: Vec<String>,
}

/// `POST /api/v2/user` body (bosun's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUser {
    pub login: String,
    /// Shown name; the login if absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `admin`, `member` or `viewer`.
    pub role: String,
}

/// `PUT /api/v2/user/{user}/role` body (bosun's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRole {
    pub role: String,
}

/// `POST /api/v2/token` body (bosun's): a personal API token for `user` (the caller if
/// absent; only admins make tokens for others).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUserToken {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub label: String,
    /// Seconds from now until the token stops working; never if absent.
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

/// A personal API token, without its secret (`GET /api/v2/token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserToken {
    pub id: String,
    /// The owner's login.
    pub user: String,
    pub label: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// `POST /api/v2/token` answer: the token's secret, shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedUserToken {
    #[serde(flatten)]
    pub info: UserToken,
    pub token: String,
}

impl std::fmt::Debug for CreatedUserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedUserToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

// ---- API v1.1, for what v2 lacks ----

/// `GET /api/v1.1/me`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Me {
    pub login: String,
    pub name: String,
    pub avatar_url: String,
    /// Whether the user is an admin.
    pub admin: bool,
    /// bosun's addition: the user's id, as `GET /api/v2/me` answers it.
    pub id: String,
}

/// One entry of `GET /api/v1.1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Project {
    pub vcs_url: String,
    /// `github`, `bitbucket`, … as the slug's prefix names it.
    pub vcs_type: String,
    /// The organization.
    pub username: String,
    pub reponame: String,
    pub following: bool,
    /// bosun's addition: the project slug.
    pub slug: String,
}

/// One entry of `GET /api/v1.1/project/{vcs}/{org}/{repo}/{build_num}/artifacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Artifact {
    pub path: String,
    pub pretty_path: String,
    pub node_index: u32,
    pub url: String,
}

/// `GET /api/v1.1/project/{vcs}/{org}/{repo}/{build_num}/tests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V1Tests {
    pub tests: Vec<V1Test>,
}

/// One test case of [`V1Tests`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V1Test {
    pub classname: String,
    pub name: String,
    pub file: Option<String>,
    /// `success`, `failure`, `skipped` or `error`.
    pub result: String,
    pub run_time: f64,
    pub message: Option<String>,
    pub source: String,
    pub source_type: String,
}

// ---- releases (issue 15) ----

/// Whether `version` is spelled as a release version: `1.2.3`, `1.2.3-rc.1`, `1.2.3+build` (a
/// digit first; letters, digits, `.`, `-`, `+`; at most 64 bytes), which is also safe as a file
/// name and a URL path segment.
pub fn is_release_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

/// A release's `manifest.json`, as `cargo xtask release` writes it. Its exact bytes are what
/// `manifest.json.sig` signs (ed25519), so it travels as text and is parsed only after the
/// signature checked out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    pub version: String,
    /// Per platform (`linux-x86_64`, `linux-s390x`, ...): its files.
    pub platforms: std::collections::BTreeMap<String, ReleasePlatform>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasePlatform {
    /// Per file name (`launch-agent`, `task-agent`): its size and SHA-256.
    pub files: std::collections::BTreeMap<String, ReleaseFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseFile {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// `PUT /api/v2/release/{version}` body: the manifest's text and its signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishRelease {
    pub manifest: String,
    /// The 64 signature bytes of `manifest.json.sig`, base64.
    pub signature: String,
}

/// One release as `GET /api/v2/release` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseSummary {
    pub version: String,
    pub created_at: String,
    /// Every file of the manifest is uploaded (only a complete release can be promoted).
    pub complete: bool,
    pub platforms: Vec<String>,
    /// Where it is promoted: `fleet` and/or resource classes `NS/NAME`.
    pub promoted: Vec<String>,
}

/// `POST /api/v2/release/promote` and `/rollback` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromoteRelease {
    /// The version to promote (promote only).
    #[serde(default)]
    pub version: Option<String>,
    /// One resource class (a canary) instead of the whole fleet.
    #[serde(default)]
    pub resource_class: Option<String>,
}

/// What a promote or rollback did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    /// `fleet` or the resource class.
    pub scope: String,
    pub version: String,
    pub previous: Option<String>,
    pub rollback: bool,
}

/// `GET /api/v3/runner/release?os=&arch=[&version=]` answer (runner token): the release meant
/// for the caller's resource class (or the version asked for), with what verifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerRelease {
    pub version: String,
    /// The manifest's exact text (what the signature signs).
    pub manifest: String,
    /// base64 of the 64 signature bytes.
    pub signature: String,
    /// Set when an admin rolled back to this version: an agent may then go down to it.
    pub rollback: bool,
    /// Per file name: the path to download it from (runner token).
    pub files: std::collections::BTreeMap<String, String>,
}
