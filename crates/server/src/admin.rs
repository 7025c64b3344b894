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
use crate::auth::{Admin, generate_token, hash_token};
use crate::error::{AppError, AppResult};
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
    _: Admin,
    StateExt(state): StateExt<State>,
    Query(query): Query<NamespaceQuery>,
) -> AppResult<Json<Items<ResourceClass>>> {
    let namespace = query
        .namespace
        .ok_or_else(|| AppError::bad_request("query parameter `namespace` is required"))?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, name, description FROM resource_classes WHERE namespace = ? ORDER BY name",
    )
    .bind(&namespace)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Items {
        items: rows
            .into_iter()
            .map(|(id, resource_class, description)| ResourceClass {
                id,
                resource_class,
                description,
            })
            .collect(),
    }))
}

async fn create_resource_class(
    _: Admin,
    StateExt(state): StateExt<State>,
    Json(body): Json<CreateResourceClass>,
) -> AppResult<Json<ResourceClass>> {
    let (namespace, _) = validate_resource_class(&body.resource_class)?;
    if body.description.len() > 1024 {
        return Err(AppError::bad_request(
            "description is longer than 1024 bytes",
        ));
    }
    let id = new_id();
    let inserted = sqlx::query(
        "INSERT INTO resource_classes (id, name, namespace, description, created_at)
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&id)
    .bind(&body.resource_class)
    .bind(namespace)
    .bind(&body.description)
    .bind(now_ms())
    .execute(&state.db)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(AppError::conflict(format!(
            "resource class `{}` already exists",
            body.resource_class
        )));
    }
    Ok(Json(ResourceClass {
        id,
        resource_class: body.resource_class,
        description: body.description,
    }))
}

async fn delete_resource_class(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    remove_resource_class(&state, &id, false).await
}

async fn force_delete_resource_class(
    _: Admin,
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
    let mut tx = state.db.begin().await?;
    let exists: Option<String> =
        sqlx::query_scalar("SELECT name FROM resource_classes WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(name) = exists else {
        return Err(AppError::not_found(format!(
            "resource class {id} not found"
        )));
    };
    let tokens: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM runner_tokens WHERE resource_class_id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if tokens > 0 && !force {
        return Err(AppError::conflict(format!(
            "resource class `{name}` still has {tokens} token(s): delete them first or use --force"
        )));
    }
    sqlx::query("DELETE FROM runner_tokens WHERE resource_class_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM resource_classes WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(serde_json::json!({ "message": "ok" })))
}

#[derive(Deserialize)]
struct ResourceClassQuery {
    #[serde(rename = "resource-class")]
    resource_class: Option<String>,
    namespace: Option<String>,
}

async fn list_tokens(
    _: Admin,
    StateExt(state): StateExt<State>,
    Query(query): Query<ResourceClassQuery>,
) -> AppResult<Json<Items<Token>>> {
    let resource_class = query
        .resource_class
        .ok_or_else(|| AppError::bad_request("query parameter `resource-class` is required"))?;
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT t.id, rc.name, t.nickname, t.created_at FROM runner_tokens t
         JOIN resource_classes rc ON rc.id = t.resource_class_id
         WHERE rc.name = ? ORDER BY t.created_at",
    )
    .bind(&resource_class)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Items {
        items: rows
            .into_iter()
            .map(|(id, resource_class, nickname, created_at)| Token {
                id,
                resource_class,
                nickname,
                created_at: rfc3339(created_at),
                token: None,
            })
            .collect(),
    }))
}

async fn create_token(
    _: Admin,
    StateExt(state): StateExt<State>,
    Json(body): Json<CreateToken>,
) -> AppResult<(StatusCode, Json<Token>)> {
    if body.nickname.is_empty() || body.nickname.len() > 128 {
        return Err(AppError::bad_request(
            "nickname must be 1 to 128 bytes long",
        ));
    }
    let class_id: Option<String> =
        sqlx::query_scalar("SELECT id FROM resource_classes WHERE name = ?")
            .bind(&body.resource_class)
            .fetch_optional(&state.db)
            .await?;
    let Some(class_id) = class_id else {
        return Err(AppError::not_found(format!(
            "resource class `{}` not found",
            body.resource_class
        )));
    };
    let token = generate_token("bosun_rc_")?;
    let id = new_id();
    let created_at = now_ms();
    sqlx::query(
        "INSERT INTO runner_tokens (id, resource_class_id, nickname, hash, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&class_id)
    .bind(&body.nickname)
    .bind(hash_token(&token))
    .bind(created_at)
    .execute(&state.db)
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
    _: Admin,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    let deleted = sqlx::query("DELETE FROM runner_tokens WHERE id = ?")
        .bind(&id)
        .execute(&state.db)
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(AppError::not_found(format!("token {id} not found")));
    }
    Ok(Json(serde_json::json!({ "message": "ok" })))
}

/// Runners silent for 3 days drop out of the listing.
const INVENTORY_WINDOW_MS: i64 = 3 * 24 * 3600 * 1000;

type InstanceRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

async fn list_instances(
    _: Admin,
    StateExt(state): StateExt<State>,
    Query(query): Query<ResourceClassQuery>,
) -> AppResult<Json<Items<RunnerInstance>>> {
    let since = now_ms() - INVENTORY_WINDOW_MS;
    let select = "SELECT resource_class, hostname, name, ip, version, first_connected, last_connected, last_used FROM runners";
    let rows: Vec<InstanceRow> = match (&query.resource_class, &query.namespace) {
        (Some(class), _) => {
            sqlx::query_as(&format!(
                "{select} WHERE resource_class = ? AND last_connected >= ? ORDER BY name"
            ))
            .bind(class)
            .bind(since)
            .fetch_all(&state.db)
            .await?
        }
        (None, Some(namespace)) => {
            sqlx::query_as(&format!(
                "{select} WHERE resource_class LIKE ? ESCAPE '\\' AND last_connected >= ? ORDER BY resource_class, name"
            ))
            .bind(format!("{}/%", namespace.replace('%', "\\%").replace('_', "\\_")))
            .bind(since)
            .fetch_all(&state.db)
            .await?
        }
        (None, None) => {
            return Err(AppError::bad_request(
                "one of the query parameters `resource-class` or `namespace` is required",
            ));
        }
    };
    Ok(Json(Items {
        items: rows
            .into_iter()
            .map(
                |(resource_class, hostname, name, ip, version, first, last, used)| RunnerInstance {
                    resource_class,
                    hostname,
                    name,
                    ip,
                    version,
                    first_connected: rfc3339(first),
                    last_connected: rfc3339(last),
                    last_used: used.map(rfc3339),
                },
            )
            .collect(),
    }))
}

async fn count_tasks(state: &State, query: ResourceClassQuery, status: &str) -> AppResult<u64> {
    let class = query
        .resource_class
        .ok_or_else(|| AppError::bad_request("query parameter `resource-class` is required"))?;
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE resource_class = ? AND status = ?")
            .bind(class)
            .bind(status)
            .fetch_one(&state.db)
            .await?;
    Ok(count as u64)
}

async fn unclaimed_tasks(
    _: Admin,
    StateExt(state): StateExt<State>,
    Query(query): Query<ResourceClassQuery>,
) -> AppResult<Json<UnclaimedTaskCount>> {
    Ok(Json(UnclaimedTaskCount {
        unclaimed_task_count: count_tasks(&state, query, "queued").await?,
    }))
}

async fn running_tasks(
    _: Admin,
    StateExt(state): StateExt<State>,
    Query(query): Query<ResourceClassQuery>,
) -> AppResult<Json<RunningTaskCount>> {
    Ok(Json(RunningTaskCount {
        running_runner_tasks: count_tasks(&state, query, "running").await?,
    }))
}
