//! Projects, pipeline triggers (CircleCI's v2 shape) and the read side: pipelines, workflows,
//! jobs, steps and logs.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State as StateExt};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use bosun_api::task as spec;
use bosun_api::types as api;
use bosun_api::{Items, TaskSpec};
use serde::Deserialize;

use crate::State;
use crate::auth::{Access, Admin, Caller};
use crate::error::{AppError, AppResult};
use crate::store::{
    NewJob, NewPipeline, Owned, PipelineCursor, PipelineFilter, PipelineRow, PipelineState,
    PipelineStatus, ProjectRow, StoreTx, WorkflowRow,
};
use crate::util::{new_id, now_ms, rfc3339};
use crate::{git, logs, pagination, scheduler};

pub(crate) const CONFIG_PATH: &str = ".circleci/config.yml";

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v2/project", post(create_project))
        .route("/api/v2/project/{vcs}/{org}/{repo}", get(get_project))
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/pipeline",
            get(project_pipelines).post(trigger_pipeline),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/pipeline/mine",
            get(my_project_pipelines),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/pipeline/{number}",
            get(project_pipeline),
        )
        .route("/api/v2/pipeline", get(org_pipelines))
        .route("/api/v2/pipeline/{id}", get(get_pipeline))
        .route("/api/v2/pipeline/{id}/config", get(pipeline_config))
        .route("/api/v2/workflow/{id}", get(get_workflow))
        .route("/api/v2/pipeline/{id}/workflow", get(pipeline_workflows))
        .route("/api/v2/workflow/{id}/job", get(workflow_jobs))
        .route("/api/v2/job/{id}", get(get_job))
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/job/{number}",
            get(project_job),
        )
        .route("/api/v2/job/{id}/step/{index}/log", get(step_log))
}

/// `vcs/org/repo`, each part of letters, digits, `.`, `_`, `-`.
fn validate_slug(slug: &str) -> Result<(), AppError> {
    let parts: Vec<&str> = slug.split('/').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 100
                && !p.starts_with('.')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "project slug `{slug}` must look like `vcs/org/repo` (letters, digits, `.`, `_`, `-`)"
        )))
    }
}

/// The namespace a new project belongs to: the one asked for, else the slug's organization,
/// lower-cased (`gh/Acme/widgets` -> `acme`).
fn project_namespace(slug: &str, given: Option<&str>) -> Result<String, AppError> {
    match given {
        Some(namespace) if crate::admin::valid_namespace(namespace) => Ok(namespace.to_owned()),
        Some(namespace) => Err(AppError::bad_request(format!(
            "namespace `{namespace}` may hold only lowercase letters, digits, `_` and `-` (at most 64)"
        ))),
        None => {
            let org = slug.split('/').nth(1).unwrap_or_default();
            let namespace = org.to_ascii_lowercase();
            if crate::admin::valid_namespace(&namespace) {
                Ok(namespace)
            } else {
                Err(AppError::bad_request(format!(
                    "the organization `{org}` of project `{slug}` is not a namespace name \
                     (lowercase letters, digits, `_`, `-`): give the project's `namespace`"
                )))
            }
        }
    }
}

/// Creates a project. It belongs to one namespace, whose resource classes alone its jobs may
/// use. A namespace with no resource class yet is accepted (runners are often set up after the
/// project), with a warning in the answer: the project's pipelines fail to start, naming the
/// namespace, until a class of it exists.
async fn create_project(
    _: Admin,
    StateExt(state): StateExt<State>,
    Json(body): Json<api::CreateProject>,
) -> AppResult<(StatusCode, Json<api::Project>)> {
    validate_slug(&body.slug)?;
    git::validate_url(&body.git_url).map_err(AppError::bad_request)?;
    let namespace = project_namespace(&body.slug, body.namespace.as_deref())?;
    // Stored with the vcs part's short form: `github/acme/x` is `gh/acme/x`.
    let slug = crate::slug::canonical(&body.slug);
    if state.store.project_by_slug(&slug).await?.is_some() {
        return Err(AppError::conflict(format!(
            "project `{slug}` already exists"
        )));
    }
    let project = ProjectRow {
        id: new_id(),
        slug,
        git_url: body.git_url,
        namespace,
    };
    if !state.store.create_project(&project, now_ms()).await? {
        return Err(AppError::conflict(format!(
            "project `{}` already exists",
            project.slug
        )));
    }
    let namespace = project.namespace.clone();
    let slug = project.slug.clone();
    let classes = state.store.count_resource_classes(&namespace).await?;
    let warning = (classes == 0).then(|| {
        format!(
            "namespace `{namespace}` has no resource class yet: jobs of `{}` run only on \
             `{namespace}/NAME` resource classes (create one with \
             `bosun runner resource-class create {namespace}/NAME`)",
            slug
        )
    });
    tracing::info!(project = %slug, namespace = %namespace, "project created");
    let mut answer = project_answer(project);
    answer.warning = warning;
    Ok((StatusCode::CREATED, Json(answer)))
}

/// A project in CircleCI's shape (plus bosun's fields). `vcs_info.default_branch` is `main`
/// until [`get_project`] reads the mirror's.
fn project_answer(row: ProjectRow) -> api::Project {
    let mut parts = row.slug.splitn(3, '/');
    let (vcs, org, repo) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    api::Project {
        name: repo.to_owned(),
        organization_name: org.to_owned(),
        organization_slug: format!("{vcs}/{org}"),
        organization_id: crate::slug::organization_id(&row.namespace),
        vcs_info: Some(api::VcsInfo {
            vcs_url: row.git_url.clone(),
            provider: crate::slug::provider(&row.slug).to_owned(),
            default_branch: "main".to_owned(),
        }),
        id: row.id,
        slug: row.slug,
        git_url: row.git_url,
        namespace: row.namespace,
        warning: None,
    }
}

pub(crate) async fn find_project(state: &State, slug: &str) -> AppResult<api::Project> {
    let row = state
        .store
        .project_by_slug(slug)
        .await?
        .ok_or_else(|| AppError::not_found(format!("project `{slug}` not found")))?;
    Ok(project_answer(row))
}

/// Project `slug`, if `caller` may `access` it (403 otherwise, 404 if there is none).
pub(crate) async fn project_for(
    state: &State,
    caller: &Caller,
    slug: &str,
    access: Access,
) -> AppResult<api::Project> {
    let project = find_project(state, slug).await?;
    caller
        .check_project(state, &project.id, &project.slug, access)
        .await?;
    Ok(project)
}

async fn get_project(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo)): Path<(String, String, String)>,
) -> AppResult<Json<api::Project>> {
    let mut project = project_for(
        &state,
        &caller,
        &format!("{vcs}/{org}/{repo}"),
        Access::Read,
    )
    .await?;
    // The repository's default branch, once a pipeline fetched it into the mirror.
    let mirror = state.repo_dir.join(format!("{}.git", project.id));
    if mirror.join("HEAD").exists() {
        if let Ok(Some(branch)) = git::default_branch(&mirror).await {
            if let Some(info) = project.vcs_info.as_mut() {
                info.default_branch = branch;
            }
        }
    }
    Ok(Json(project))
}

fn check_ref(kind: &str, name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && !name.contains("..")
        && !name.chars().any(|c| c.is_control() || c == ' ' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "`{name}` is not a valid {kind} name"
        )))
    }
}

/// The commit a trigger asks for.
pub(crate) struct Resolved {
    pub branch: Option<String>,
    pub tag: Option<String>,
    pub revision: String,
}

async fn resolve_trigger(
    state: &State,
    project: &api::Project,
    body: &api::TriggerPipeline,
) -> AppResult<(std::path::PathBuf, Resolved)> {
    if body.branch.is_some() && body.tag.is_some() {
        return Err(AppError::bad_request(
            "give either `branch` or `tag`, not both",
        ));
    }
    let mirror =
        crate::project_secrets::sync_project_mirror(state, &project.id, &project.git_url).await?;
    let (branch, tag, reference) = match (&body.branch, &body.tag) {
        (_, Some(tag)) => {
            check_ref("tag", tag)?;
            (None, Some(tag.clone()), format!("refs/tags/{tag}"))
        }
        (Some(branch), None) => {
            check_ref("branch", branch)?;
            (Some(branch.clone()), None, format!("refs/heads/{branch}"))
        }
        (None, None) => {
            let branch = git::default_branch(&mirror).await?.ok_or_else(|| {
                AppError::bad_request(format!(
                    "the repository of project {} has no default branch: pass a branch",
                    project.slug
                ))
            })?;
            let reference = format!("refs/heads/{branch}");
            (Some(branch), None, reference)
        }
    };
    let tip = git::resolve_commit(&mirror, &reference)
        .await?
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "{} not found in the repository of project {}",
                reference.trim_start_matches("refs/"),
                project.slug
            ))
        })?;
    let revision = match &body.revision {
        None => tip,
        Some(revision) => {
            let valid = revision.len() >= 4
                && revision.len() <= 64
                && revision.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(AppError::bad_request(format!(
                    "revision `{revision}` is not a commit id"
                )));
            }
            let full = git::resolve_commit(&mirror, revision)
                .await?
                .ok_or_else(|| {
                    AppError::bad_request(format!(
                        "revision {revision} not found in the repository of project {}",
                        project.slug
                    ))
                })?;
            if !git::is_ancestor(&mirror, &full, &tip).await? {
                return Err(AppError::bad_request(format!(
                    "revision {full} is not on {}",
                    reference.trim_start_matches("refs/")
                )));
            }
            full
        }
    };
    Ok((
        mirror,
        Resolved {
            branch,
            tag,
            revision,
        },
    ))
}

async fn trigger_pipeline(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    Json(body): Json<api::TriggerPipeline>,
) -> AppResult<(StatusCode, Json<api::PipelineCreated>)> {
    let slug = format!("{vcs}/{org}/{repo}");
    let project = project_for(&state, &caller, &slug, Access::Write).await?;
    let (mirror, resolved) = resolve_trigger(&state, &project, &body).await?;

    // The number first: the config may use `<< pipeline.number >>`. A number lost to a failed
    // request leaves a gap, as on CircleCI.
    let pipeline_id = new_id();
    let number = state.store.next_pipeline_number(&project.id).await?;
    let context = pipeline_context(
        &project,
        &resolved,
        &pipeline_id,
        number,
        body.parameters.clone().unwrap_or_default(),
    );

    // Compile before writing the pipeline; a config error still makes one, in state `errored`.
    // The file and its processed form are kept for `GET /api/v2/pipeline/{id}/config`.
    let mut config_text: Option<(String, String)> = None;
    let mut resolved_orbs = String::from("[]");
    let compiled = match git::read_file(&mirror, &resolved.revision, CONFIG_PATH).await {
        Ok(Some(text)) => match compile_with_orbs(&state, &text, CONFIG_PATH, context).await {
            Ok(compiled) => {
                config_text = Some((text, compiled.yaml));
                resolved_orbs = compiled.orbs;
                compiled.runnable.map(|()| compiled.pipeline)
            }
            Err(err) => {
                config_text = Some((text, String::new()));
                Err(err)
            }
        },
        Ok(None) => Err(format!(
            "{CONFIG_PATH} not found at revision {}",
            resolved.revision
        )),
        Err(err) => Err(format!("{err:#}")),
    };
    let compiled = match compiled {
        Ok(pipeline) => match check_resource_classes(&state, &pipeline, &project).await {
            Ok(()) => Ok(pipeline),
            Err(message) => Err(message),
        },
        Err(message) => Err(message),
    };

    let now = now_ms();
    let mut tx = state.store.begin().await?;
    // First, so this transaction holds the write lock from its start and two triggers of one
    // project never read the same job number.
    let mut next_job = tx.lock_next_job_number(&project.id).await?;
    let (state_name, status, errors) = match &compiled {
        Ok(_) => (
            PipelineState::Created,
            PipelineStatus::Running,
            "[]".to_owned(),
        ),
        Err(message) => (
            PipelineState::Errored,
            PipelineStatus::Error,
            serde_json::to_string(&[api::PipelineError {
                kind: "config".into(),
                message: message.clone(),
            }])
            .unwrap_or_default(),
        ),
    };
    tx.insert_pipeline(&NewPipeline {
        id: &pipeline_id,
        project_id: &project.id,
        number,
        branch: resolved.branch.as_deref(),
        tag: resolved.tag.as_deref(),
        revision: &resolved.revision,
        state: state_name,
        status,
        errors: &errors,
        created_at: now,
        trigger_type: "api",
        actor_id: &caller.user.id,
    })
    .await?;
    if let Some((source, compiled)) = &config_text {
        tx.set_pipeline_config(&pipeline_id, source, compiled)
            .await?;
        tx.set_pipeline_orbs(&pipeline_id, &resolved_orbs).await?;
    }

    let mut queued = false;
    if let Ok(pipeline) = &compiled {
        // A setup config's jobs may continue the pipeline: they are marked, and each of their
        // tasks gets a fresh continuation key when it fetches its config (only the key's hash is
        // stored, see `continuation::issue_key`), plus the URL to post it to.
        let mut environment = BTreeMap::new();
        if pipeline.setup {
            environment.insert(
                "BOSUN_API_URL".to_owned(),
                state.api_url.get().cloned().unwrap_or_default(),
            );
        }
        queued = add_workflows(
            &mut tx,
            pipeline,
            &AddWorkflows {
                pipeline_id: &pipeline_id,
                pipeline_number: number,
                first_position: 0,
                project: &project,
                resolved: &resolved,
                environment: &environment,
                continuation: pipeline.setup,
            },
            &mut next_job,
            now,
        )
        .await?;
        if pipeline.workflows.is_empty() {
            tx.set_pipeline_status(&pipeline_id, PipelineStatus::Success)
                .await?;
        }
    }
    commit_jobs(&state, tx, &project.id, next_job, queued).await?;
    tracing::info!(pipeline = %pipeline_id, project = %slug, number, state = state_name.as_str(), "pipeline created");
    Ok((
        StatusCode::CREATED,
        Json(api::PipelineCreated {
            id: pipeline_id,
            number: number as u64,
            state: state_name.to_string(),
            created_at: rfc3339(now),
        }),
    ))
}

/// Where [`add_workflows`] adds a compiled config's workflows.
pub(crate) struct AddWorkflows<'a> {
    pub pipeline_id: &'a str,
    pub pipeline_number: i64,
    /// Position of the first workflow added (after the pipeline's existing ones).
    pub first_position: i64,
    pub project: &'a api::Project,
    pub resolved: &'a Resolved,
    /// Added to every job's environment (the API URL of setup configs). Never a secret: it is
    /// stored in the job's spec.
    pub environment: &'a BTreeMap<String, String>,
    /// Whether the jobs may continue the pipeline (a setup config's): their tasks get a
    /// continuation key with their config.
    pub continuation: bool,
}

/// Inserts a compiled (and checked) config's workflows and jobs into a pipeline, numbering jobs
/// from `next_job`, and queues what can start. Returns whether a job was queued.
pub(crate) async fn add_workflows(
    tx: &mut StoreTx,
    pipeline: &bosun_config::Pipeline,
    add: &AddWorkflows<'_>,
    next_job: &mut i64,
    now: i64,
) -> AppResult<bool> {
    let mut queued = false;
    for (position, workflow) in pipeline.workflows.iter().enumerate() {
        let workflow_id = new_id();
        tx.insert_workflow(
            &workflow_id,
            add.pipeline_id,
            &workflow.name,
            add.first_position + position as i64,
            now,
        )
        .await?;
        for (job_position, entry) in workflow.jobs.iter().enumerate() {
            let Some(job) = pipeline.jobs.get(&entry.job) else {
                continue; // The compiler checked every reference.
            };
            let job_id = new_id();
            let job_number = *next_job;
            *next_job += 1;
            let mut task = task_spec(
                job,
                entry,
                &TaskContext {
                    job_id: &job_id,
                    job_number: job_number as u64,
                    pipeline_id: add.pipeline_id,
                    pipeline_number: add.pipeline_number as u64,
                    workflow_id: &workflow_id,
                    project: add.project,
                    resolved: add.resolved,
                },
            );
            task.environment
                .extend(add.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
            let resource_class = job.resource_class.clone().unwrap_or_default();
            let requires = serde_json::to_string(&entry.requires).unwrap_or_else(|_| "[]".into());
            let spec = serde_json::to_string(&task).map_err(|err| anyhow::anyhow!(err))?;
            let contexts = serde_json::to_string(&entry.context).unwrap_or_else(|_| "[]".into());
            tx.insert_job(&NewJob {
                id: &job_id,
                workflow_id: &workflow_id,
                pipeline_id: add.pipeline_id,
                name: &entry.name,
                number: job_number,
                position: job_position as i64,
                resource_class: &resource_class,
                requires: &requires,
                spec: &spec,
                step_count: task.steps.len() as i64,
                continuation: add.continuation,
                parallelism: i64::from(job.parallelism.max(1)),
                contexts: &contexts,
            })
            .await?;
        }
        queued |= scheduler::advance_workflow(tx, &workflow_id).await?;
    }
    Ok(queued)
}

/// Ends a transaction that added jobs: advances the project's job counter, commits, and wakes
/// long-polling claims when a job was queued.
pub(crate) async fn commit_jobs(
    state: &State,
    mut tx: StoreTx,
    project_id: &str,
    next_job: i64,
    queued: bool,
) -> AppResult<()> {
    tx.set_next_job_number(project_id, next_job).await?;
    tx.commit().await?;
    if queued {
        state.queued.wake();
    }
    Ok(())
}

/// A configuration compiled with its orbs resolved ([`compile_with_orbs`]).
pub(crate) struct Compiled {
    pub pipeline: bosun_config::Pipeline,
    /// The processed YAML, headed by the orbs it resolved as `circleci config process` prints
    /// them.
    pub yaml: String,
    /// The orbs it resolved, as stored (JSON).
    pub orbs: String,
    /// Whether bosun's runners can run it ([`check_runnable`]).
    pub runnable: Result<(), String>,
}

/// Compiles a pipeline's configuration with its orbs resolved through the registry, and checks
/// that bosun's runners can run it; the error to show when it does not compile.
pub(crate) async fn compile_with_orbs(
    state: &State,
    text: &str,
    file: &str,
    mut context: bosun_config::PipelineContext,
) -> Result<Compiled, String> {
    let orbs = crate::orbs::resolve_config(state, text, file)
        .await
        .map_err(|e| e.to_string())?;
    let recorded = crate::orbs::recorded(&orbs);
    let header = orbs.header();
    context.orbs = orbs.shared();
    let (pipeline, yaml) = bosun_config::compile_pipeline_processed(text, file, &context)
        .map_err(|e| e.to_string())?;
    let runnable = check_runnable(&pipeline);
    Ok(Compiled {
        pipeline,
        yaml: format!("{header}{yaml}"),
        orbs: recorded,
        runnable,
    })
}

/// What `<< pipeline.* >>` means for one pipeline (a trigger or its continuation).
pub(crate) fn pipeline_context(
    project: &api::Project,
    resolved: &Resolved,
    pipeline_id: &str,
    number: i64,
    parameters: serde_json::Map<String, serde_json::Value>,
) -> bosun_config::PipelineContext {
    bosun_config::PipelineContext {
        parameters,
        branch: resolved.branch.clone(),
        tag: resolved.tag.clone(),
        revision: Some(resolved.revision.clone()),
        number: Some(number as u64),
        id: Some(pipeline_id.to_owned()),
        git_url: Some(project.git_url.clone()),
        trigger_source: Some("api".into()),
        project_slug: Some(project.slug.clone()),
        orb_dir: None,
        orbs: None,
    }
}

/// Machine runners run `machine` jobs of a runner resource class.
/// The most nodes (`parallelism`) one job runs as.
pub const MAX_PARALLELISM: u32 = 100;

/// Whether bosun's task-agent runs this kind of step.
fn step_runnable(step: &bosun_config::Step) -> bool {
    matches!(
        step,
        bosun_config::Step::Checkout { .. }
            | bosun_config::Step::Run(_)
            | bosun_config::Step::StoreArtifacts { .. }
            | bosun_config::Step::SaveCache { .. }
            | bosun_config::Step::RestoreCache { .. }
            | bosun_config::Step::PersistToWorkspace { .. }
            | bosun_config::Step::AttachWorkspace { .. }
            | bosun_config::Step::StoreTestResults { .. }
            | bosun_config::Step::AddSshKeys { .. }
    )
}

pub(crate) fn check_runnable(pipeline: &bosun_config::Pipeline) -> Result<(), String> {
    for workflow in &pipeline.workflows {
        for entry in &workflow.jobs {
            let Some(job) = pipeline.jobs.get(&entry.job) else {
                return Err(format!("job `{}` is not defined", entry.job));
            };
            if entry.approval {
                return Err(format!(
                    "workflow `{}` job `{}` is an approval job: bosun does not run approvals yet",
                    workflow.name, entry.name
                ));
            }
            if job.no_op {
                continue; // Succeeds without a runner once its requirements have.
            }
            let refused = match &job.executor {
                bosun_config::Executor::Docker { image } => {
                    Some(format!("the docker image `{image}`"))
                }
                bosun_config::Executor::Macos { xcode } => {
                    Some(format!("a macOS executor (xcode {xcode})"))
                }
                bosun_config::Executor::Windows { image } => {
                    Some(format!("a Windows machine executor (image `{image}`)"))
                }
                bosun_config::Executor::Machine => None,
            };
            if let Some(executor) = refused {
                // Name where it came from: the job's orb, and the executor it named (and that
                // executor's orb, when another).
                let from = job
                    .orb
                    .as_ref()
                    .map(|orb| format!(" (from the orb {orb})"))
                    .unwrap_or_default();
                let via = match (&job.executor_name, &job.executor_orb) {
                    (Some(name), Some(orb)) if job.orb.as_ref() != Some(orb) => {
                        format!("the executor `{name}` of the orb {orb}, ")
                    }
                    (Some(name), _) => format!("the executor `{name}`, "),
                    (None, _) => String::new(),
                };
                return Err(format!(
                    "job `{}`{from} uses {via}{executor}: bosun's machine runners run `machine: true` jobs",
                    entry.job
                ));
            }
            for (i, step) in job.steps.iter().enumerate() {
                if !step_runnable(step) {
                    return Err(format!(
                        "job `{}` step {} `{}` is not supported by bosun's task-agent yet",
                        entry.job,
                        i + 1,
                        step.kind()
                    ));
                }
            }
            match &job.resource_class {
                None => {
                    return Err(format!(
                        "job `{}` has no resource_class: runner jobs need `resource_class: namespace/name`",
                        entry.job
                    ));
                }
                Some(class) if !class.contains('/') => {
                    return Err(format!(
                        "job `{}` uses resource_class `{class}`: runner jobs need `namespace/name`",
                        entry.job
                    ));
                }
                Some(_) => {}
            }
            if job.parallelism > MAX_PARALLELISM {
                return Err(format!(
                    "job `{}` has parallelism {}: bosun runs at most {MAX_PARALLELISM} nodes of a job",
                    entry.job, job.parallelism
                ));
            }
        }
    }
    Ok(())
}

/// Every job's resource class must exist and belong to the project's namespace: runners serve
/// only the organization that owns their namespace. The namespace is checked first, so the
/// answer for another namespace's class is the same whether that class exists or not.
pub(crate) async fn check_resource_classes(
    state: &State,
    pipeline: &bosun_config::Pipeline,
    project: &api::Project,
) -> Result<(), String> {
    for workflow in &pipeline.workflows {
        for entry in &workflow.jobs {
            let Some(class) = pipeline
                .jobs
                .get(&entry.job)
                .and_then(|j| j.resource_class.as_ref())
            else {
                continue;
            };
            let namespace = class.split_once('/').map(|(ns, _)| ns).unwrap_or_default();
            if namespace != project.namespace {
                return Err(format!(
                    "job `{}` uses resource class `{class}` of namespace `{namespace}`, but project \
                     `{}` belongs to namespace `{}`: a project's jobs run only on resource classes \
                     of its own namespace",
                    entry.job, project.slug, project.namespace
                ));
            }
            match state.store.resource_class_exists(class).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "job `{}` uses resource class `{class}`, which does not exist",
                        entry.job
                    ));
                }
                Err(err) => {
                    tracing::error!("checking resource class `{class}`: {err}");
                    return Err(format!(
                        "job `{}`: resource class `{class}` could not be checked (internal database error)",
                        entry.job
                    ));
                }
            }
        }
    }
    Ok(())
}

struct TaskContext<'a> {
    job_id: &'a str,
    job_number: u64,
    pipeline_id: &'a str,
    pipeline_number: u64,
    workflow_id: &'a str,
    project: &'a api::Project,
    resolved: &'a Resolved,
}

fn spec_when(when: bosun_config::When) -> spec::When {
    match when {
        bosun_config::When::OnSuccess => spec::When::OnSuccess,
        bosun_config::When::OnFail => spec::When::OnFail,
        bosun_config::When::Always => spec::When::Always,
    }
}

/// Maps a compiled job to the task spec a task-agent runs.
fn task_spec(
    job: &bosun_config::Job,
    entry: &bosun_config::WorkflowJob,
    ctx: &TaskContext<'_>,
) -> TaskSpec {
    let steps = job
        .steps
        .iter()
        // `check_runnable` refused every other step before a task was made.
        .filter_map(|step| match step {
            bosun_config::Step::Checkout { path } => {
                Some(spec::Step::Checkout(spec::CheckoutStep {
                    name: "Checkout code".into(),
                    path: path.clone(),
                }))
            }
            bosun_config::Step::Run(run) => Some(spec::Step::Run(spec::RunStep {
                name: run
                    .name
                    .clone()
                    .unwrap_or_else(|| default_step_name(&run.command)),
                command: run.command.clone(),
                shell: run.shell.clone(),
                environment: run.environment.clone(),
                working_directory: run.working_directory.clone(),
                background: run.background,
                no_output_timeout_secs: run.no_output_timeout_secs,
                max_auto_reruns: run.max_auto_reruns,
                auto_rerun_delay_secs: run.auto_rerun_delay_secs,
                when: spec_when(run.when),
            })),
            bosun_config::Step::StoreArtifacts {
                name,
                path,
                destination,
                when,
            } => Some(spec::Step::StoreArtifacts(spec::StoreArtifactsStep {
                name: name
                    .clone()
                    .unwrap_or_else(|| "Uploading artifacts".to_owned()),
                path: path.clone(),
                destination: destination.clone(),
                when: spec_when(*when),
            })),
            // CircleCI's default step names.
            bosun_config::Step::SaveCache {
                name,
                key,
                paths,
                when,
            } => Some(spec::Step::SaveCache(spec::SaveCacheStep {
                name: name.clone().unwrap_or_else(|| "Saving Cache".to_owned()),
                key: key.clone(),
                paths: paths.clone(),
                when: spec_when(*when),
            })),
            bosun_config::Step::RestoreCache { name, keys } => {
                Some(spec::Step::RestoreCache(spec::RestoreCacheStep {
                    name: name.clone().unwrap_or_else(|| "Restoring Cache".to_owned()),
                    keys: keys.clone(),
                }))
            }
            bosun_config::Step::PersistToWorkspace { name, root, paths } => Some(
                spec::Step::PersistToWorkspace(spec::PersistToWorkspaceStep {
                    name: name
                        .clone()
                        .unwrap_or_else(|| "Persisting to Workspace".to_owned()),
                    root: root.clone(),
                    paths: paths.clone(),
                }),
            ),
            bosun_config::Step::AttachWorkspace { name, at } => {
                Some(spec::Step::AttachWorkspace(spec::AttachWorkspaceStep {
                    name: name
                        .clone()
                        .unwrap_or_else(|| "Attaching Workspace".to_owned()),
                    at: at.clone(),
                }))
            }
            bosun_config::Step::StoreTestResults { name, path } => {
                Some(spec::Step::StoreTestResults(spec::StoreTestResultsStep {
                    name: name
                        .clone()
                        .unwrap_or_else(|| "Uploading test results".to_owned()),
                    path: path.clone(),
                }))
            }
            bosun_config::Step::AddSshKeys { name, fingerprints } => {
                Some(spec::Step::AddSshKeys(spec::AddSshKeysStep {
                    name: name
                        .clone()
                        .unwrap_or_else(|| "Install additional SSH keys".to_owned()),
                    fingerprints: fingerprints.clone(),
                }))
            }
            _ => None,
        })
        .collect();
    TaskSpec {
        task_id: String::new(),
        job_id: ctx.job_id.to_owned(),
        job_name: entry.name.clone(),
        build_num: ctx.job_number,
        pipeline_id: ctx.pipeline_id.to_owned(),
        pipeline_number: ctx.pipeline_number,
        workflow_id: ctx.workflow_id.to_owned(),
        project_slug: ctx.project.slug.clone(),
        repository_url: ctx.project.git_url.clone(),
        branch: ctx.resolved.branch.clone(),
        tag: ctx.resolved.tag.clone(),
        revision: ctx.resolved.revision.clone(),
        // Each node's task gets its own index when it asks for its config.
        parallel_index: 0,
        parallel_total: job.parallelism.max(1),
        environment: job
            .environment
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        working_directory: job.working_directory.clone(),
        shell: job.shell.clone(),
        steps,
        // Filled in by `GET /api/v2/task/config` alone: never stored with the job.
        secrets: Default::default(),
        checkout_auth: None,
        ssh_keys: Vec::new(),
    }
}

/// CircleCI names an unnamed `run` step after its command.
fn default_step_name(command: &str) -> String {
    let first = command.trim().lines().next().unwrap_or("").trim();
    let mut name: String = first.chars().take(80).collect();
    if name.len() < first.len() || command.trim().lines().count() > 1 {
        name.push('…');
    }
    if name.is_empty() { "run".into() } else { name }
}

/// A pipeline in CircleCI's shape (plus bosun's `status`).
fn pipeline_answer(row: PipelineRow) -> api::Pipeline {
    let provider = crate::slug::provider(&row.project_slug).to_owned();
    api::Pipeline {
        id: row.id,
        number: row.number as u64,
        state: row.state.to_string(),
        status: row.status.to_string(),
        errors: serde_json::from_str(&row.errors).unwrap_or_default(),
        vcs: Some(api::Vcs {
            provider_name: provider,
            target_repository_url: row.git_url.clone(),
            origin_repository_url: row.git_url,
            branch: row.branch,
            tag: row.tag,
            revision: row.revision,
        }),
        trigger: Some(api::Trigger {
            kind: row.trigger_type,
            received_at: rfc3339(row.created_at),
            actor: api::Actor {
                login: row.actor_login,
                avatar_url: String::new(),
            },
        }),
        project_slug: row.project_slug,
        created_at: rfc3339(row.created_at),
        updated_at: Some(rfc3339(row.updated_at.unwrap_or(row.created_at))),
    }
}

/// `?branch=&page-token=&org-slug=&mine=` of the pipeline lists.
#[derive(Deserialize)]
struct PipelineQuery {
    branch: Option<String>,
    #[serde(rename = "page-token")]
    page_token: Option<String>,
    #[serde(rename = "org-slug")]
    org_slug: Option<String>,
    /// `true` (pycircleci sends Python's `True`).
    mine: Option<String>,
}

/// One page of `filter`'s pipelines after `query`'s page token.
async fn pipeline_page(
    state: &State,
    filter: PipelineFilter<'_>,
    page_token: Option<&str>,
) -> AppResult<Json<Items<api::Pipeline>>> {
    let after = page_token
        .filter(|token| !token.is_empty())
        .map(pagination::decode)
        .transpose()?;
    let mut rows = state
        .store
        .list_pipelines(&filter, after.as_ref(), pagination::PAGE_SIZE + 1)
        .await?;
    let more = rows.len() as i64 > pagination::PAGE_SIZE;
    rows.truncate(pagination::PAGE_SIZE as usize);
    let next_page_token = match rows.last() {
        Some(last) if more => Some(pagination::encode(&PipelineCursor {
            created_at: last.created_at,
            id: last.id.clone(),
            number: last.number,
        })),
        _ => None,
    };
    Ok(Json(Items {
        items: rows.into_iter().map(pipeline_answer).collect(),
        next_page_token,
    }))
}

/// `GET /api/v2/project/{slug}/pipeline[?branch=]`: the project's pipelines, newest first.
async fn project_pipelines(
    caller: Caller,
    state: StateExt<State>,
    path: Path<(String, String, String)>,
    query: Query<PipelineQuery>,
) -> AppResult<Json<Items<api::Pipeline>>> {
    project_pipeline_page(caller, state, path, query, false).await
}

/// `GET /api/v2/project/{slug}/pipeline/mine`: the project's pipelines the caller triggered.
async fn my_project_pipelines(
    caller: Caller,
    state: StateExt<State>,
    path: Path<(String, String, String)>,
    query: Query<PipelineQuery>,
) -> AppResult<Json<Items<api::Pipeline>>> {
    project_pipeline_page(caller, state, path, query, true).await
}

/// A page of one project's pipelines: `?branch=`'s, or with `mine` the caller's.
async fn project_pipeline_page(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo)): Path<(String, String, String)>,
    Query(query): Query<PipelineQuery>,
    mine: bool,
) -> AppResult<Json<Items<api::Pipeline>>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let project = project_for(&state, &caller, &slug, Access::Read).await?;
    let filter = PipelineFilter {
        project_id: Some(&project.id),
        branch: if mine { None } else { query.branch.as_deref() },
        actor_id: mine.then_some(caller.user.id.as_str()),
        ..PipelineFilter::default()
    };
    pipeline_page(&state, filter, query.page_token.as_deref()).await
}

/// `GET /api/v2/pipeline?org-slug=[&mine=true]`: the organization's pipelines the caller may
/// read, newest first. `org-slug` is CircleCI's (`gh/acme`, `github/acme`) or a bosun
/// namespace (`acme`); without it, every project the caller may read.
async fn org_pipelines(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Query(query): Query<PipelineQuery>,
) -> AppResult<Json<Items<api::Pipeline>>> {
    let org = query
        .org_slug
        .as_deref()
        .unwrap_or_default()
        .trim_matches('/');
    if org.len() > 200 {
        return Err(AppError::bad_request("org-slug is too long"));
    }
    let prefix = org.contains('/').then(|| {
        format!(
            "{}/",
            crate::slug::canonical(&format!("{org}/x")).trim_end_matches("/x")
        )
    });
    let mine = query
        .mine
        .as_deref()
        .is_some_and(|mine| mine.eq_ignore_ascii_case("true"));
    let filter = PipelineFilter {
        slug_prefix: prefix.as_deref(),
        namespace: (!org.is_empty() && !org.contains('/')).then_some(org),
        actor_id: mine.then_some(caller.user.id.as_str()),
        member_id: (!caller.reads_all_projects()).then_some(caller.user.id.as_str()),
        ..PipelineFilter::default()
    };
    pipeline_page(&state, filter, query.page_token.as_deref()).await
}

/// `GET /api/v2/project/{slug}/pipeline/{number}`.
async fn project_pipeline(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::Pipeline>> {
    let slug = format!("{vcs}/{org}/{repo}");
    let project = project_for(&state, &caller, &slug, Access::Read).await?;
    let Ok(number) = number.parse::<i64>() else {
        return Err(AppError::bad_request(format!(
            "pipeline number `{number}` is not a number"
        )));
    };
    let row = state
        .store
        .pipeline_by_number(&project.id, number)
        .await?
        .ok_or_else(|| AppError::not_found(format!("project {slug} has no pipeline {number}")))?;
    Ok(Json(pipeline_answer(row)))
}

async fn get_pipeline(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<api::Pipeline>> {
    caller
        .check_owned(&state, Owned::Pipeline(&id), Access::Read)
        .await?;
    let row = state
        .store
        .pipeline(&id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("pipeline {id} not found")))?;
    Ok(Json(pipeline_answer(row)))
}

/// `GET /api/v2/pipeline/{id}/config`: the configuration the pipeline ran, as read from the
/// repository and as compiled (for a setup pipeline that continued, the continued one, with
/// the setup configuration beside it).
async fn pipeline_config(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<api::PipelineConfig>> {
    caller
        .check_owned(&state, Owned::Pipeline(&id), Access::Read)
        .await?;
    let row = state.store.pipeline_config(&id).await?.ok_or_else(|| {
        AppError::not_found(format!(
            "pipeline {id} not found, or it read no configuration"
        ))
    })?;
    Ok(Json(api::PipelineConfig {
        source: row.source,
        compiled: row.compiled,
        setup_config: row.setup_source,
        compiled_setup_config: row.setup_compiled,
        orbs: serde_json::from_str(&row.orbs).unwrap_or_default(),
    }))
}

fn workflow_answer(row: WorkflowRow, pipeline_id: &str, started_by: &str) -> api::Workflow {
    api::Workflow {
        id: row.id,
        name: row.name,
        pipeline_id: pipeline_id.to_owned(),
        pipeline_number: row.pipeline_number as u64,
        project_slug: row.project_slug,
        status: row.status.to_string(),
        started_by: started_by.to_owned(),
        created_at: rfc3339(row.created_at),
        stopped_at: row.stopped_at.map(rfc3339),
    }
}

async fn pipeline_workflows(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<Items<api::Workflow>>> {
    caller
        .check_owned(&state, Owned::Pipeline(&id), Access::Read)
        .await?;
    let pipeline = state
        .store
        .pipeline(&id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("pipeline {id} not found")))?;
    let rows = state.store.workflows(&id).await?;
    Ok(Json(Items::all(
        rows.into_iter()
            .map(|row| workflow_answer(row, &id, &pipeline.actor_id))
            .collect(),
    )))
}

/// `GET /api/v2/workflow/{id}`.
async fn get_workflow(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<api::Workflow>> {
    caller
        .check_owned(&state, Owned::Workflow(&id), Access::Read)
        .await?;
    let (pipeline_id, actor_id, row) = state
        .store
        .workflow(&id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("workflow {id} not found")))?;
    Ok(Json(workflow_answer(row, &pipeline_id, &actor_id)))
}

async fn workflow_jobs(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<Items<api::Job>>> {
    caller
        .check_owned(&state, Owned::Workflow(&id), Access::Read)
        .await?;
    let Some((_, _, workflow)) = state.store.workflow(&id).await? else {
        return Err(AppError::not_found(format!("workflow {id} not found")));
    };
    let rows = state.store.jobs_of_workflow(&id).await?;
    let ids: BTreeMap<String, String> = rows
        .iter()
        .map(|row| (row.name.clone(), row.id.clone()))
        .collect();
    Ok(Json(Items::all(
        rows.into_iter()
            .map(|row| {
                let requires: Vec<String> = serde_json::from_str(&row.requires).unwrap_or_default();
                api::Job {
                    id: row.id,
                    name: row.name,
                    project_slug: workflow.project_slug.clone(),
                    kind: "build".into(),
                    job_number: row.number as u64,
                    status: row.status.to_string(),
                    started_at: row.started_at.map(rfc3339),
                    stopped_at: row.stopped_at.map(rfc3339),
                    dependencies: requires
                        .iter()
                        .filter_map(|r| ids.get(r).cloned())
                        .collect(),
                }
            })
            .collect(),
    )))
}

/// `GET /api/v2/project/{slug}/job/{number}`: job details in CircleCI's shape (its required
/// fields), found by the project's job number.
async fn project_job(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, number)): Path<(String, String, String, String)>,
) -> AppResult<Json<serde_json::Value>> {
    let slug = format!("{vcs}/{org}/{repo}");
    project_for(&state, &caller, &slug, Access::Read).await?;
    let Ok(number) = number.parse::<i64>() else {
        return Err(AppError::bad_request(format!(
            "job number `{number}` is not a number"
        )));
    };
    let not_found = || AppError::not_found(format!("project {slug} has no job {number}"));
    let Some(job_id) = state.store.job_by_number(&slug, number).await? else {
        return Err(not_found());
    };
    let (Some(row), Some(details)) = (
        state.store.job(&job_id).await?,
        state.store.job_details(&job_id).await?,
    ) else {
        return Err(not_found());
    };
    let base = state.api_url.get().cloned().unwrap_or_default();
    let organization = slug.split('/').nth(1).unwrap_or_default().to_owned();
    let name = slug.split('/').nth(2).unwrap_or_default().to_owned();
    let duration = match (details.started_at, details.stopped_at) {
        (Some(started), Some(stopped)) => serde_json::json!((stopped - started).max(0)),
        _ => serde_json::Value::Null,
    };
    let time = |ms: Option<i64>| ms.map(rfc3339).map_or(serde_json::Value::Null, Into::into);
    let messages: Vec<serde_json::Value> = row
        .message
        .iter()
        .map(|message| serde_json::json!({"type": "bosun", "message": message}))
        .collect();
    Ok(Json(serde_json::json!({
        "web_url": format!("{}/api/v2/job/{}", base.trim_end_matches('/'), row.id),
        "project": {
            "id": details.project_id,
            "slug": details.project_slug,
            "name": name,
            "external_url": "",
        },
        "parallel_runs": details
            .nodes
            .iter()
            .map(|(node, status)| serde_json::json!({"index": node, "status": status.as_str()}))
            .collect::<Vec<_>>(),
        "started_at": time(details.started_at),
        "latest_workflow": {"id": row.workflow_id, "name": details.workflow_name},
        "name": row.name,
        "executor": {"type": "machine", "resource_class": row.resource_class},
        "parallelism": details.parallelism,
        "status": row.status.to_string(),
        "number": row.number,
        "pipeline": {"id": row.pipeline_id},
        "duration": duration,
        "created_at": rfc3339(details.created_at),
        "messages": messages,
        "contexts": [],
        "organization": {"name": organization},
        "queued_at": time(details.queued_at),
        "stopped_at": time(details.stopped_at),
        "id": row.id,
    })))
}

#[derive(Deserialize)]
struct NodeQuery {
    /// Which node of a parallel job (0 by default).
    #[serde(default)]
    node: u32,
}

/// The task of node `node` of job `id`; a node the job does not have is a 404.
async fn node_task(state: &State, id: &str, node: u32) -> AppResult<Option<String>> {
    let parallelism = state.store.job_parallelism(id).await?;
    if node >= parallelism {
        return Err(AppError::not_found(format!(
            "job {id} has {parallelism} node{}: there is no node {node}",
            if parallelism == 1 { "" } else { "s" }
        )));
    }
    Ok(state.store.node_task(id, node).await?)
}

async fn get_job(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
    Query(query): Query<NodeQuery>,
) -> AppResult<Json<api::JobDetail>> {
    caller
        .check_owned(&state, Owned::Job(&id), Access::Read)
        .await?;
    let row = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| AppError::not_found(format!("job {id} not found")))?;
    let parallelism = state.store.job_parallelism(&row.id).await?;
    let mut steps = Vec::new();
    if let Some(task_id) = node_task(&state, &row.id, query.node).await? {
        for step in state.store.steps(&task_id).await? {
            let index = step.idx.clamp(0, i64::from(u32::MAX)) as u32;
            steps.push(api::StepInfo {
                index,
                name: step.name,
                status: step.status.to_string(),
                exit_code: step.exit_code,
                duration_ms: step.duration_ms.map(|d| d.max(0) as u64),
                // A log that cannot be read (the server's log says why) does not hide the job.
                log_length: state.logs.length(&task_id, index).await.unwrap_or(0),
            });
        }
    }
    Ok(Json(api::JobDetail {
        id: row.id,
        name: row.name,
        job_number: row.number as u64,
        status: row.status.to_string(),
        pipeline_id: row.pipeline_id,
        workflow_id: row.workflow_id,
        resource_class: row.resource_class,
        message: row.message,
        parallelism,
        node: query.node,
        steps,
    }))
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
    limit: Option<u64>,
    #[serde(default)]
    node: u32,
}

async fn step_log(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((id, index)): Path<(String, u32)>,
    Query(query): Query<LogQuery>,
) -> AppResult<impl IntoResponse> {
    caller
        .check_owned(&state, Owned::Job(&id), Access::Read)
        .await?;
    let Some(task_id) = node_task(&state, &id, query.node).await? else {
        return Err(AppError::not_found(format!("job {id} has no log yet")));
    };
    let page = state
        .logs
        .read_stream(
            &task_id,
            index,
            query.offset,
            query.limit.unwrap_or(logs::MAX_LOG_PAGE),
        )
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, page.length.to_string()),
        ],
        axum::body::Body::from_stream(page.stream),
    ))
}

#[cfg(test)]
mod tests {
    use super::{check_runnable, step_runnable};

    /// Every step of every real config in the corpus that compiles is one the task-agent runs,
    /// or one of the kinds still open (test results, SSH keys, remote Docker). Prints what is
    /// left, so a closing note can quote it.
    #[test]
    fn the_corpus_steps_left_to_build_are_only_the_open_kinds() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/corpus/configs"
        );
        // CI always has the corpus beside the checkout: a missing one fails rather than passes.
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
            panic!("the corpus is missing: {dir} (../shared/corpus beside the checkout): {e}")
        });
        let (mut compiled, mut runnable) = (0, 0);
        let mut left = std::collections::BTreeMap::<&str, usize>::new();
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(pipeline) = bosun_config::compile(&text, "config.yml") else {
                continue;
            };
            compiled += 1;
            let mut all = true;
            for step in pipeline.jobs.values().flat_map(|job| &job.steps) {
                if !step_runnable(step) {
                    all = false;
                    *left.entry(step.kind()).or_default() += 1;
                }
            }
            runnable += usize::from(all);
        }
        println!(
            "{compiled} corpus configs compile; {runnable} use only steps bosun runs; left: {left:?}"
        );
        assert!(
            compiled > 0,
            "the corpus at {dir} has no config that compiles"
        );
        for kind in left.keys() {
            assert!(
                matches!(*kind, "setup_remote_docker"),
                "corpus configs use `{kind}`, which the task-agent should run by now"
            );
        }
    }

    fn job(steps: &str) -> String {
        format!(
            "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: a/b\n    steps:\n{steps}"
        )
    }

    #[test]
    fn blob_steps_and_ssh_keys_run_and_remote_docker_is_still_refused() {
        for step in [
            "      - store_artifacts:\n          path: out\n",
            "      - save_cache:\n          key: k\n          paths: [x]\n",
            "      - restore_cache:\n          keys: [k]\n",
            "      - persist_to_workspace:\n          root: .\n          paths: [x]\n",
            "      - attach_workspace:\n          at: .\n",
            "      - store_test_results:\n          path: out\n",
            "      - add_ssh_keys\n",
            "      - add_ssh_keys:\n          fingerprints: [\"SHA256:abc\"]\n",
        ] {
            let pipeline = bosun_config::compile(&job(step), "c.yml").unwrap();
            assert_eq!(check_runnable(&pipeline), Ok(()), "{step}");
        }
        let docker = job("      - setup_remote_docker\n");
        let pipeline = bosun_config::compile(&docker, "c.yml").unwrap();
        assert_eq!(
            check_runnable(&pipeline).unwrap_err(),
            "job `build` step 1 `setup_remote_docker` is not supported by bosun's task-agent yet"
        );
    }
}
