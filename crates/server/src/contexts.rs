//! Contexts, in CircleCI API v2's shapes: named sets of secret variables owned by an
//! organization (a bosun namespace), with restrictions (`project`: only these projects may use
//! it; `expression`: only pipelines for which the expression holds).
//!
//! A workflow job's `context:` is checked when the job would be queued ([`check_job`]): a
//! context that does not exist, or whose restrictions refuse the pipeline, fails the job before
//! any task exists, with a message naming the context and why. The values are read only when a
//! task of the job fetches its config ([`task_secrets`]), so a variable changed after the
//! pipeline started is the one the task gets, as on CircleCI.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State as StateExt};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use bosun_api::types as api;
use bosun_config::expr::{self, Value};
use serde::Deserialize;

use crate::State;
use crate::auth::{Admin, Caller};
use crate::error::{AppError, AppResult};
use crate::project_secrets::{project_env_aad, validate_env_name, validate_value};
use crate::store::{ContextRow, JobPipelineRow, RestrictionRow, StoreResult, StoreTx};
use crate::util::{new_id, now_ms, rfc3339};

/// Longest context name.
const MAX_CONTEXT_NAME: usize = 200;
/// Longest expression restriction.
const MAX_EXPRESSION: usize = 1000;
/// Most restrictions on one context.
const MAX_RESTRICTIONS: usize = 100;

/// The pipeline values an expression restriction may read (CircleCI's: pipeline values, not
/// pipeline parameters, and `job.ssh.enabled`).
pub const EXPRESSION_VARIABLES: &[&str] = &[
    "pipeline.id",
    "pipeline.number",
    "pipeline.project.git_url",
    "pipeline.project.type",
    "pipeline.project.slug",
    "pipeline.git.branch",
    "pipeline.git.tag",
    "pipeline.git.revision",
    "pipeline.trigger_source",
    "pipeline.trigger.type",
    "job.ssh.enabled",
];

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v2/me/collaborations", get(collaborations))
        .route("/api/v2/context", get(list_contexts).post(create_context))
        .route(
            "/api/v2/context/{id}",
            get(get_context).delete(delete_context),
        )
        .route(
            "/api/v2/context/{id}/environment-variable",
            get(list_context_env),
        )
        .route(
            "/api/v2/context/{id}/environment-variable/{name}",
            put(set_context_env).delete(delete_context_env),
        )
        .route(
            "/api/v2/context/{id}/restrictions",
            get(list_restrictions).post(add_restriction),
        )
        .route(
            "/api/v2/context/{id}/restrictions/{restriction_id}",
            delete(delete_restriction),
        )
}

pub(crate) fn context_env_aad(context_id: &str, name: &str) -> String {
    format!("context-env/{context_id}/{name}")
}

/// The namespace an owner names: a namespace itself, or `vcs/org` (CircleCI's org slug), whose
/// `org` lower-cased is the namespace, as for projects.
fn owner_namespace(owner: &str) -> Result<String, AppError> {
    let org = match owner.split('/').collect::<Vec<_>>().as_slice() {
        [namespace] => namespace.to_string(),
        [_vcs, org] => org.to_ascii_lowercase(),
        _ => String::new(),
    };
    if crate::admin::valid_namespace(&org) {
        Ok(org)
    } else {
        Err(AppError::bad_request(format!(
            "owner `{}` is not an organization: give its namespace or `vcs/org`",
            owner.chars().take(200).collect::<String>()
        )))
    }
}

/// The organizations: every namespace with a project or a resource class, as CircleCI names
/// them: `slug` is `vcs/org` of a project of the namespace whose organization is the namespace
/// (`gh/acme`, `vcs-type` `github`), else `circleci/NAMESPACE`; contexts take either back as
/// `owner-slug`.
async fn collaborations(
    _: Caller,
    StateExt(state): StateExt<State>,
) -> AppResult<Json<Vec<api::Collaboration>>> {
    let namespaces = state.store.namespaces().await?;
    let projects = state.store.projects(None).await?;
    Ok(Json(
        namespaces
            .into_iter()
            .map(|namespace| {
                let vcs = projects
                    .iter()
                    .filter(|project| project.namespace == namespace)
                    .find_map(|project| {
                        let mut parts = project.slug.split('/');
                        let vcs = parts.next()?;
                        let org = parts.next()?;
                        (org.to_ascii_lowercase() == namespace).then_some((vcs, org))
                    });
                let (vcs_type, slug) = match vcs {
                    Some((vcs, org)) => (crate::slug::vcs_type(vcs), format!("{vcs}/{org}")),
                    None => ("circleci", format!("circleci/{namespace}")),
                };
                api::Collaboration {
                    id: crate::slug::organization_id(&namespace),
                    vcs_type: vcs_type.to_owned(),
                    name: namespace.clone(),
                    avatar_url: String::new(),
                    slug,
                }
            })
            .collect(),
    ))
}

/// The namespace an owner names: an organization id (the UUID `GET /api/v2/me/collaborations`
/// and projects show), or what [`owner_namespace`] reads.
async fn resolve_owner(state: &State, owner: &str) -> AppResult<String> {
    if uuid::Uuid::parse_str(owner).is_ok() {
        for namespace in state.store.namespaces().await? {
            if crate::slug::organization_id(&namespace) == owner {
                return Ok(namespace);
            }
        }
        return Err(AppError::not_found(format!(
            "organization {owner} not found"
        )));
    }
    owner_namespace(owner)
}

fn context_answer(row: &ContextRow) -> api::Context {
    api::Context {
        id: row.id.clone(),
        name: row.name.clone(),
        created_at: rfc3339(row.created_at),
    }
}

async fn create_context(
    _: Admin,
    StateExt(state): StateExt<State>,
    Json(body): Json<api::CreateContext>,
) -> AppResult<Json<api::Context>> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > MAX_CONTEXT_NAME || name.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "a context name is 1 to {MAX_CONTEXT_NAME} characters on one line"
        )));
    }
    if let Some(kind) = body.owner.owner_type.as_deref() {
        if kind != "organization" {
            return Err(AppError::bad_request(format!(
                "owner type `{}` is not supported: contexts belong to an `organization`",
                kind.chars().take(64).collect::<String>()
            )));
        }
    }
    let owner = body
        .owner
        .slug
        .as_deref()
        .or(body.owner.id.as_deref())
        .ok_or_else(|| AppError::bad_request("owner needs an `id` or a `slug`"))?;
    let namespace = resolve_owner(&state, owner).await?;
    let row = ContextRow {
        id: new_id(),
        namespace,
        name: name.to_owned(),
        created_at: now_ms(),
    };
    if !state.store.create_context(&row).await? {
        return Err(AppError::conflict(format!(
            "organization `{}` already has a context named `{}`",
            row.namespace, row.name
        )));
    }
    tracing::info!(namespace = %row.namespace, context = %row.name, "context created");
    Ok(Json(context_answer(&row)))
}

#[derive(Deserialize)]
struct OwnerQuery {
    #[serde(rename = "owner-id")]
    owner_id: Option<String>,
    #[serde(rename = "owner-slug")]
    owner_slug: Option<String>,
    #[serde(rename = "owner-type")]
    owner_type: Option<String>,
}

async fn list_contexts(
    _: Caller,
    StateExt(state): StateExt<State>,
    Query(query): Query<OwnerQuery>,
) -> AppResult<Json<api::Page<api::Context>>> {
    if let Some(kind) = query.owner_type.as_deref() {
        if kind != "organization" && kind != "account" {
            return Err(AppError::bad_request(
                "owner-type is `organization` or `account`",
            ));
        }
    }
    let owner = query
        .owner_slug
        .as_deref()
        .or(query.owner_id.as_deref())
        .ok_or_else(|| AppError::bad_request("give `owner-slug` or `owner-id`"))?;
    let namespace = resolve_owner(&state, owner).await?;
    let rows = state.store.contexts(&namespace).await?;
    Ok(Json(api::Page {
        items: rows.iter().map(context_answer).collect(),
        next_page_token: None,
    }))
}

async fn find_context(state: &State, id: &str) -> AppResult<ContextRow> {
    state
        .store
        .context(id)
        .await?
        .ok_or_else(|| AppError::not_found("Context not found."))
}

async fn get_context(
    _: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<api::Context>> {
    Ok(Json(context_answer(&find_context(&state, &id).await?)))
}

async fn delete_context(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<api::MessageResponse>> {
    let context = find_context(&state, &id).await?;
    state.store.delete_context(&id).await?;
    tracing::info!(namespace = %context.namespace, context = %context.name, "context deleted");
    Ok(Json(api::MessageResponse {
        message: "Context deleted.".into(),
    }))
}

async fn list_context_env(
    _: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<api::Page<api::ContextEnvVar>>> {
    let context = find_context(&state, &id).await?;
    let rows = state.store.context_env(&context.id).await?;
    Ok(Json(api::Page {
        items: rows
            .into_iter()
            .map(|row| api::ContextEnvVar {
                variable: row.name,
                context_id: context.id.clone(),
                created_at: rfc3339(row.created_at),
                updated_at: rfc3339(row.updated_at),
            })
            .collect(),
        next_page_token: None,
    }))
}

async fn set_context_env(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path((id, name)): Path<(String, String)>,
    Json(body): Json<api::SetContextEnvVar>,
) -> AppResult<Json<api::ContextEnvVar>> {
    let context = find_context(&state, &id).await?;
    validate_env_name(&name)?;
    validate_value(&format!("`{name}`"), &body.value)?;
    let sealed = state
        .secrets
        .seal(&context_env_aad(&context.id, &name), body.value.as_bytes())?;
    let row = state
        .store
        .set_context_env(&context.id, &name, &sealed, now_ms())
        .await?;
    tracing::info!(context = %context.name, name = %name, "context variable set");
    Ok(Json(api::ContextEnvVar {
        variable: row.name,
        context_id: context.id,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }))
}

async fn delete_context_env(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path((id, name)): Path<(String, String)>,
) -> AppResult<Json<api::MessageResponse>> {
    let context = find_context(&state, &id).await?;
    if !state.store.delete_context_env(&context.id, &name).await? {
        return Err(AppError::not_found("Environment variable not found."));
    }
    Ok(Json(api::MessageResponse {
        message: "Environment variable deleted.".into(),
    }))
}

fn restriction_answer(row: &RestrictionRow) -> api::Restriction {
    api::Restriction {
        id: row.id.clone(),
        context_id: Some(row.context_id.clone()),
        project_id: (row.restriction_type == "project").then(|| row.restriction_value.clone()),
        name: row.name.clone(),
        restriction_type: row.restriction_type.clone(),
        restriction_value: row.restriction_value.clone(),
    }
}

async fn list_restrictions(
    _: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<api::Page<api::Restriction>>> {
    let context = find_context(&state, &id).await?;
    let rows = state.store.restrictions(&context.id).await?;
    Ok(Json(api::Page {
        items: rows.iter().map(restriction_answer).collect(),
        next_page_token: None,
    }))
}

/// Parses an expression restriction and checks that it reads only pipeline values.
fn check_expression(text: &str) -> Result<(), AppError> {
    if text.trim().is_empty() || text.len() > MAX_EXPRESSION {
        return Err(AppError::bad_request(format!(
            "an expression restriction is 1 to {MAX_EXPRESSION} bytes"
        )));
    }
    let parsed = expr::parse(text)
        .map_err(|err| AppError::bad_request(format!("expression restriction: {err}")))?;
    for variable in parsed.variables() {
        if !EXPRESSION_VARIABLES.contains(&variable.as_str()) {
            return Err(AppError::bad_request(format!(
                "expression restriction: `{variable}` is not a value a context restriction can \
                 read (it can read {})",
                EXPRESSION_VARIABLES.join(", ")
            )));
        }
    }
    Ok(())
}

async fn add_restriction(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
    Json(body): Json<api::CreateRestriction>,
) -> AppResult<(StatusCode, Json<api::Restriction>)> {
    let context = find_context(&state, &id).await?;
    if state.store.restrictions(&context.id).await?.len() >= MAX_RESTRICTIONS {
        return Err(AppError::bad_request(format!(
            "context `{}` has {MAX_RESTRICTIONS} restrictions, the most it may have",
            context.name
        )));
    }
    // CircleCI's deprecated form: `{"project_id": ...}` alone.
    let kind = body
        .restriction_type
        .as_deref()
        .unwrap_or(if body.project_id.is_some() {
            "project"
        } else {
            ""
        });
    let value = body
        .restriction_value
        .as_deref()
        .or(body.project_id.as_deref())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let (value, name) = match kind {
        "project" => {
            // A project's id, or (bosun) its slug.
            let project = match state.store.project_by_id(&value).await? {
                Some(project) => Some(project),
                None => state.store.project_by_slug(&value).await?,
            };
            let project = project.ok_or_else(|| {
                AppError::bad_request(format!(
                    "project `{}` of the restriction does not exist",
                    value.chars().take(200).collect::<String>()
                ))
            })?;
            if project.namespace != context.namespace {
                return Err(AppError::bad_request(format!(
                    "project `{}` belongs to organization `{}`, not to the context's `{}`",
                    project.slug, project.namespace, context.namespace
                )));
            }
            (project.id, project.slug)
        }
        "expression" => {
            check_expression(&value)?;
            (value.clone(), value)
        }
        other => {
            return Err(AppError::bad_request(format!(
                "restriction_type `{}` is not `project` or `expression`",
                other.chars().take(64).collect::<String>()
            )));
        }
    };
    let row = RestrictionRow {
        id: new_id(),
        context_id: context.id.clone(),
        restriction_type: kind.to_owned(),
        restriction_value: value,
        name,
    };
    state.store.add_restriction(&row, now_ms()).await?;
    tracing::info!(context = %context.name, kind = %row.restriction_type, "context restricted");
    let mut answer = restriction_answer(&row);
    answer.context_id = None;
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn delete_restriction(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path((id, restriction_id)): Path<(String, String)>,
) -> AppResult<Json<api::MessageResponse>> {
    let context = find_context(&state, &id).await?;
    if !state
        .store
        .delete_restriction(&context.id, &restriction_id)
        .await?
    {
        return Err(AppError::not_found("Restriction not found."));
    }
    Ok(Json(api::MessageResponse {
        message: "Restriction deleted.".into(),
    }))
}

/// The value an expression restriction reads for `name`; `None` for a name it may not read.
/// A pipeline without a branch (or tag) reads it as the empty string, as `<< pipeline.git.tag >>`
/// does in a config.
fn pipeline_value(job: &JobPipelineRow, name: &str) -> Option<Value> {
    let text = |s: &str| Some(Value::Str(s.to_owned()));
    match name {
        "pipeline.id" => text(&job.pipeline_id),
        "pipeline.number" => Some(Value::Number(job.pipeline_number as f64)),
        "pipeline.project.git_url" => text(&job.git_url),
        "pipeline.project.slug" => text(&job.project_slug),
        "pipeline.project.type" => {
            let vcs = job.project_slug.split('/').next().unwrap_or_default();
            text(match vcs {
                "gh" | "github" => "github",
                "bb" | "bitbucket" => "bitbucket",
                "gl" | "gitlab" => "gitlab",
                other => other,
            })
        }
        "pipeline.git.branch" => text(job.branch.as_deref().unwrap_or_default()),
        "pipeline.git.tag" => text(job.tag.as_deref().unwrap_or_default()),
        "pipeline.git.revision" => text(&job.revision),
        "pipeline.trigger_source" | "pipeline.trigger.type" => text("api"),
        "job.ssh.enabled" => Some(Value::Bool(false)),
        _ => None,
    }
}

/// Why a context refuses a job, or `None` if the restrictions let it through.
fn refusal(job: &JobPipelineRow, restrictions: &[RestrictionRow]) -> Option<String> {
    let projects: Vec<&RestrictionRow> = restrictions
        .iter()
        .filter(|r| r.restriction_type == "project")
        .collect();
    if !projects.is_empty()
        && !projects
            .iter()
            .any(|r| r.restriction_value == job.project_id)
    {
        let names: Vec<&str> = projects.iter().map(|r| r.name.as_str()).collect();
        return Some(format!(
            "it is restricted to the projects {}",
            names.join(", ")
        ));
    }
    for restriction in restrictions
        .iter()
        .filter(|r| r.restriction_type == "expression")
    {
        let verdict = expr::parse(&restriction.restriction_value)
            .and_then(|parsed| parsed.eval(&|name| pipeline_value(job, name)));
        match verdict {
            Ok(true) => {}
            Ok(false) => {
                return Some(format!(
                    "its restriction `{}` does not hold for this pipeline (branch `{}`, tag `{}`)",
                    restriction.restriction_value,
                    job.branch.as_deref().unwrap_or(""),
                    job.tag.as_deref().unwrap_or("")
                ));
            }
            Err(err) => {
                return Some(format!(
                    "its restriction `{}` cannot be evaluated: {err}",
                    restriction.restriction_value
                ));
            }
        }
    }
    None
}

/// Checks the contexts of a job about to be queued. `Ok(Some(message))` when one of them is
/// missing or refuses the job: the caller fails the job with that message instead of queueing
/// it.
pub(crate) async fn check_job(
    tx: &mut StoreTx,
    job_id: &str,
    job_name: &str,
) -> StoreResult<Option<String>> {
    let Some(job) = tx.job_pipeline(job_id).await? else {
        return Ok(None);
    };
    let names: Vec<String> = serde_json::from_str(&job.contexts).unwrap_or_default();
    for name in &names {
        match tx.context_by_name(&job.namespace, name).await? {
            None => {
                return Ok(Some(format!(
                    "job `{job_name}` uses context `{name}`, which does not exist in \
                     organization `{}`: unauthorized (create it with \
                     `bosun context create {name} --org {}`)",
                    job.namespace, job.namespace
                )));
            }
            Some((_, restrictions)) => {
                if let Some(reason) = refusal(&job, &restrictions) {
                    return Ok(Some(format!(
                        "job `{job_name}` may not use context `{name}`: unauthorized ({reason})"
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// The secret environment of a task of `job`: the project's variables, then those of the
/// job's contexts in the order it names them (a later context wins). Errors name a context
/// deleted since the job was queued.
pub(crate) async fn task_secrets(
    state: &State,
    job: &JobPipelineRow,
) -> AppResult<BTreeMap<String, String>> {
    let mut secrets = BTreeMap::new();
    for row in state.store.project_env(&job.project_id).await? {
        let value = state
            .secrets
            .open(&project_env_aad(&job.project_id, &row.name), &row.value)?;
        secrets.insert(row.name, value);
    }
    let names: Vec<String> = serde_json::from_str(&job.contexts).unwrap_or_default();
    for name in &names {
        let context = state
            .store
            .context_named(&job.namespace, name)
            .await?
            .ok_or_else(|| {
                AppError::conflict(format!(
                    "context `{name}` was deleted after this job was queued"
                ))
            })?;
        for row in state.store.context_env(&context.id).await? {
            let value = state
                .secrets
                .open(&context_env_aad(&context.id, &row.name), &row.value)?;
            secrets.insert(row.name, value);
        }
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::owner_namespace;

    #[test]
    fn owners_are_namespaces_or_vcs_org_slugs() {
        assert_eq!(owner_namespace("e2e").unwrap(), "e2e");
        assert_eq!(owner_namespace("gh/Acme").unwrap(), "acme");
        assert!(owner_namespace("gh/a/b").is_err());
        assert!(owner_namespace("Has Space").is_err());
    }
}
