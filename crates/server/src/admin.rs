//! Admin API in the shapes the `circleci runner` CLI uses (design §3).

use axum::extract::{Path, Query, State as StateExt};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use bosun_api::{
    CreateResourceClass, CreateToken, Items, ResourceClass, RunnerInstance, RunningTaskCount,
    Token, UnclaimedTaskCount,
};
use serde::Deserialize;

use crate::State;
use crate::auth::{Caller, RunnerAdmin, generate_token, hash_token};
use crate::error::{AppError, AppResult};
use crate::store::{ResourceClassDeletion, ResourceClassRow, RunnerRow, TaskStatus};
use crate::util::{new_id, now_ms, rfc3339};

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/api/v3/runner/resource",
            get(list_resource_classes).post(create_resource_class),
        )
        .route(
            "/api/v3/runner/resource/{id}",
            delete(delete_resource_class),
        )
        .route(
            "/api/v3/runner/resource/{id}/force",
            delete(force_delete_resource_class),
        )
        .route("/api/v3/runner/token", get(list_tokens).post(create_token))
        .route("/api/v3/runner/token/{id}", delete(delete_token))
        .route("/api/v3/runner", get(list_instances))
        .route("/api/v3/runner/tasks", get(unclaimed_tasks))
        .route("/api/v3/runner/tasks/running", get(running_tasks))
}

/// A namespace as CircleCI spells one: 1 to 64 lowercase letters, digits, `_`, `-`.
pub fn valid_namespace(namespace: &str) -> bool {
    !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks `namespace/name` as CircleCI does: namespace of lowercase letters, digits, `_`, `-`;
/// name of letters, digits, `:`, `_`, `-`, `+`.
pub fn validate_resource_class(name: &str) -> Result<(&str, &str), AppError> {
    let (namespace, class) = name.split_once('/').ok_or_else(|| {
        AppError::bad_request(format!(
            "resource class `{name}` must look like `namespace/name`"
        ))
    })?;
    let namespace_ok = valid_namespace(namespace);
    let class_ok = !class.is_empty()
        && class.len() <= 128
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-' | b'+'));
    if !namespace_ok {
        return Err(AppError::bad_request(format!(
            "namespace `{namespace}` of resource class `{name}` may hold only lowercase letters, digits, `_` and `-`"
        )));
    }
    if !class_ok {
        return Err(AppError::bad_request(format!(
            "resource class name `{class}` of `{name}` may hold only letters, digits, `:`, `_`, `-` and `+`"
        )));
    }
    Ok((namespace, class))
}

#[derive(Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

async fn list_resource_classes(
    _: Caller,
    StateExt(state): StateExt<State>,
    Query(query): Query<NamespaceQuery>,
) -> AppResult<Json<Items<ResourceClass>>> {
    let namespace = query
        .namespace
        .ok_or_else(|| AppError::bad_request("query parameter `namespace` is required"))?;
    let rows = state.store.resource_classes(&namespace).await?;
    Ok(Json(Items {
        next_page_token: None,
        items: rows
            .into_iter()
            .map(|row| ResourceClass {
                id: row.id,
                resource_class: row.name,
                description: row.description,
            })
            .collect(),
    }))
}

async fn create_resource_class(
    _: RunnerAdmin,
    StateExt(state): StateExt<State>,
    Json(body): Json<CreateResourceClass>,
) -> AppResult<Json<ResourceClass>> {
    let namespace = validate_resource_class(&body.resource_class)?.0.to_owned();
    if body.description.len() > 1024 {
        return Err(AppError::bad_request(
            "description is longer than 1024 bytes",
        ));
    }
    let row = ResourceClassRow {
        id: new_id(),
        name: body.resource_class,
        description: body.description,
    };
    if !state
        .store
        .create_resource_class(&row, &namespace, now_ms())
        .await?
    {
        return Err(AppError::conflict(format!(
            "resource class `{}` already exists",
            row.name
        )));
    }
    Ok(Json(ResourceClass {
        id: row.id,
        resource_class: row.name,
        description: row.description,
    }))
}

async fn delete_resource_class(
    _: RunnerAdmin,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    remove_resource_class(&state, &id, false).await
}

async fn force_delete_resource_class(
    _: RunnerAdmin,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    remove_resource_class(&state, &id, true).await
}

async fn remove_resource_class(
    state: &State,
    id: &str,
    force: bool,
) -> AppResult<Json<serde_json::Value>> {
    match state.store.delete_resource_class(id, force).await? {
        ResourceClassDeletion::Deleted => {}
        ResourceClassDeletion::NotFound => {
            return Err(AppError::not_found(format!(
                "resource class {id} not found"
            )));
        }
        ResourceClassDeletion::HasTokens { name, tokens } => {
            return Err(AppError::conflict(format!(
                "resource class `{name}` still has {tokens} token(s): delete them first or use --force"
            )));
        }
    }
    Ok(Json(serde_json::json!({ "message": "ok" })))
}

#[derive(Deserialize)]
struct ResourceClassQuery {
    #[serde(rename = "resource-class")]
    resource_class: Option<String>,
    namespace: Option<String>,
}

async fn list_tokens(
    _: RunnerAdmin,
    StateExt(state): StateExt<State>,
    Query(query): Query<ResourceClassQuery>,
) -> AppResult<Json<Items<Token>>> {
    let resource_class = query
        .resource_class
        .ok_or_else(|| AppError::bad_request("query parameter `resource-class` is required"))?;
    let rows = state.store.runner_tokens(&resource_class).await?;
    Ok(Json(Items {
        next_page_token: None,
        items: rows
            .into_iter()
            .map(|row| Token {
                id: row.id,
                resource_class: row.resource_class,
                nickname: row.nickname,
                created_at: rfc3339(row.created_at),
                token: None,
            })
            .collect(),
    }))
}

async fn create_token(
    _: RunnerAdmin,
    StateExt(state): StateExt<State>,
    Json(body): Json<CreateToken>,
) -> AppResult<(StatusCode, Json<Token>)> {
    if body.nickname.is_empty() || body.nickname.len() > 128 {
        return Err(AppError::bad_request(
            "nickname must be 1 to 128 bytes long",
        ));
    }
    let class_id = state.store.resource_class_id(&body.resource_class).await?;
    let Some(class_id) = class_id else {
        return Err(AppError::not_found(format!(
            "resource class `{}` not found",
            body.resource_class
        )));
    };
    let token = generate_token("bosun_rc_")?;
    let id = new_id();
    let created_at = now_ms();
    state
        .store
        .create_runner_token(
            &id,
            &class_id,
            &body.nickname,
            &hash_token(&token),
            created_at,
        )
        .await?;
    Ok((
        StatusCode::OK,
        Json(Token {
            id,
            resource_class: body.resource_class,
            nickname: body.nickname,
            created_at: rfc3339(created_at),
            token: Some(token),
        }),
    ))
}

async fn delete_token(
    _: RunnerAdmin,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    if !state.store.delete_runner_token(&id).await? {
        return Err(AppError::not_found(format!("token {id} not found")));
    }
    Ok(Json(serde_json::json!({ "message": "ok" })))
}

/// Runners silent for 3 days drop out of the listing.
pub(crate) const INVENTORY_WINDOW_MS: i64 = 3 * 24 * 3600 * 1000;

async fn list_instances(
    _: Caller,
    StateExt(state): StateExt<State>,
    Query(query): Query<ResourceClassQuery>,
) -> AppResult<Json<Items<RunnerInstance>>> {
    let now = now_ms();
    let since = now - INVENTORY_WINDOW_MS;
    let rows = match (&query.resource_class, &query.namespace) {
        (Some(class), _) => state.store.runners_of_class(class, since).await?,
        (None, Some(namespace)) => state.store.runners_of_namespace(namespace, since).await?,
        (None, None) => {
            return Err(AppError::bad_request(
                "one of the query parameters `resource-class` or `namespace` is required",
            ));
        }
    };
    Ok(Json(Items {
        next_page_token: None,
        items: rows
            .into_iter()
            .map(|row| RunnerInstance {
                state: instance_state(&row, now, state.runner_offline_after),
                resource_class: row.resource_class,
                hostname: row.hostname,
                name: row.name,
                ip: row.ip,
                version: row.version,
                first_connected: rfc3339(row.first_connected),
                last_connected: rfc3339(row.last_connected),
                last_used: row.last_used.map(rfc3339),
                running_tasks: row.running.clamp(0, i64::from(u32::MAX)) as u32,
                capacity: row.capacity.clamp(1, i64::from(u32::MAX)) as u32,
            })
            .collect(),
    }))
}

/// An instance's state: `offline` when it has not been heard from within `offline_after`
/// (its claims long-poll for 30 s and a busy agent reports every 30 s), else `draining`,
/// `busy N/M` or `idle`.
pub(crate) fn instance_state(
    row: &RunnerRow,
    now: i64,
    offline_after: std::time::Duration,
) -> String {
    if now - row.last_connected > offline_after.as_millis() as i64 {
        "offline".into()
    } else if row.draining {
        "draining".into()
    } else if row.running > 0 {
        format!("busy {}/{}", row.running, row.capacity)
    } else {
        "idle".into()
    }
}

async fn count_tasks(
    state: &State,
    query: ResourceClassQuery,
    status: TaskStatus,
) -> AppResult<u64> {
    let class = query
        .resource_class
        .ok_or_else(|| AppError::bad_request("query parameter `resource-class` is required"))?;
    Ok(state.store.count_tasks(&class, status).await?)
}

async fn unclaimed_tasks(
    _: Caller,
    StateExt(state): StateExt<State>,
    Query(query): Query<ResourceClassQuery>,
) -> AppResult<Json<UnclaimedTaskCount>> {
    Ok(Json(UnclaimedTaskCount {
        unclaimed_task_count: count_tasks(&state, query, TaskStatus::Queued).await?,
    }))
}

async fn running_tasks(
    _: Caller,
    StateExt(state): StateExt<State>,
    Query(query): Query<ResourceClassQuery>,
) -> AppResult<Json<RunningTaskCount>> {
    Ok(Json(RunningTaskCount {
        running_runner_tasks: count_tasks(&state, query, TaskStatus::Running).await?,
    }))
}
