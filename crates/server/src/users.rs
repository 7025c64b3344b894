//! Users, their roles and personal API tokens: CircleCI's `GET /api/v2/me` and
//! `GET /api/v2/user/{id}`, and bosun's administration of them (CircleCI keeps users in its VCS
//! integration and has no API for it): `/api/v2/user` (admin), `/api/v2/token` (anyone, for
//! their own tokens; admins for anyone's).
//!
//! A token's secret is shown once, in the answer that creates it; the store keeps only its
//! SHA-256 ([`crate::auth::hash_token`]).

use axum::extract::{Path, Query, State as StateExt};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use bosun_api::Items;
use bosun_api::types as api;
use serde::Deserialize;

use crate::State;
use crate::auth::{Admin, Caller, generate_token, hash_token};
use crate::error::{AppError, AppResult};
use crate::store::{BOOTSTRAP_ADMIN_ID, Role, UserRow, UserTokenRow};
use crate::util::{new_id, now_ms, rfc3339};

/// Longest login.
const MAX_LOGIN: usize = 64;
/// Longest shown name and token label.
const MAX_NAME: usize = 200;
/// Longest lifetime a token may be given: ten years.
const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 366 * 24 * 3600;
/// Most personal tokens one user may hold.
const MAX_TOKENS_PER_USER: usize = 100;

pub fn routes() -> Router<State> {
    Router::new()
        .route("/api/v2/me", get(me))
        .route("/api/v2/user", get(list_users).post(create_user))
        .route("/api/v2/user/{user}", get(get_user).delete(delete_user))
        .route("/api/v2/user/{user}/role", put(set_role))
        .route(
            "/api/v2/user/{user}/project/{vcs}/{org}/{repo}",
            put(grant_project).delete(ungrant_project),
        )
        .route("/api/v2/token", get(list_tokens).post(create_token))
        .route("/api/v2/token/{id}", delete(revoke_token))
}

fn user_answer(user: &UserRow) -> api::User {
    api::User {
        id: user.id.clone(),
        login: user.login.clone(),
        name: user.name.clone(),
    }
}

async fn detail(state: &State, user: &UserRow) -> AppResult<api::UserDetail> {
    let projects = if user.role == Role::Member {
        state.store.member_projects(&user.id).await?
    } else {
        Vec::new()
    };
    Ok(api::UserDetail {
        id: user.id.clone(),
        login: user.login.clone(),
        name: user.name.clone(),
        role: user.role.to_string(),
        created_at: rfc3339(user.created_at),
        projects,
    })
}

fn token_answer(row: &UserTokenRow) -> api::UserToken {
    api::UserToken {
        id: row.id.clone(),
        user: row.login.clone(),
        label: row.label.clone(),
        created_at: rfc3339(row.created_at),
        expires_at: row.expires_at.map(rfc3339),
        last_used_at: row.last_used_at.map(rfc3339),
    }
}

/// The first `MAX_NAME` characters of something a client sent, for messages.
fn shown(text: &str) -> String {
    text.chars().take(MAX_NAME).collect()
}

/// A login: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
fn validate_login(login: &str) -> AppResult<()> {
    let ok = !login.is_empty()
        && login.len() <= MAX_LOGIN
        && login.as_bytes()[0].is_ascii_alphanumeric()
        && login
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "login `{}` is not valid: 1 to {MAX_LOGIN} of a-z, 0-9, `.`, `_`, `-`, \
             starting with a letter or digit",
            shown(login)
        )))
    }
}

fn parse_role(role: &str) -> AppResult<Role> {
    Role::parse(role).ok_or_else(|| {
        AppError::bad_request(format!(
            "role `{}` is not one of admin, member, viewer",
            shown(role)
        ))
    })
}

/// The user a path names: their id (a UUID) or their login. 404 if there is none.
async fn find_user(state: &State, user: &str) -> AppResult<UserRow> {
    if user.len() <= MAX_LOGIN {
        if let Some(row) = state.store.user(user).await? {
            return Ok(row);
        }
        if let Some(row) = state.store.user_by_login(user).await? {
            return Ok(row);
        }
    }
    Err(AppError::not_found(format!(
        "user `{}` not found",
        shown(user)
    )))
}

/// The bootstrap admin is what every admin token acts as: taking its role or deleting it would
/// lock the operator out.
fn not_bootstrap(user: &UserRow, what: &str) -> AppResult<()> {
    if user.id == BOOTSTRAP_ADMIN_ID {
        return Err(AppError::bad_request(format!(
            "user `{}` is the bootstrap admin every admin token acts as; it cannot {what}",
            user.login
        )));
    }
    Ok(())
}

/// `GET /api/v2/me`: the caller.
async fn me(caller: Caller) -> Json<api::User> {
    Json(user_answer(&caller.user))
}

/// `GET /api/v2/user/{id}`: any user, by id (or login), to any caller, as CircleCI answers it.
async fn get_user(
    _: Caller,
    StateExt(state): StateExt<State>,
    Path(user): Path<String>,
) -> AppResult<Json<api::User>> {
    Ok(Json(user_answer(&find_user(&state, &user).await?)))
}

/// `GET /api/v2/user`: every user with their role and projects (admin).
async fn list_users(
    _: Admin,
    StateExt(state): StateExt<State>,
) -> AppResult<Json<Items<api::UserDetail>>> {
    let mut items = Vec::new();
    for user in state.store.users().await? {
        items.push(detail(&state, &user).await?);
    }
    Ok(Json(Items::all(items)))
}

/// `POST /api/v2/user` (admin): 201 with the user; 409 if the login is taken.
async fn create_user(
    _: Admin,
    StateExt(state): StateExt<State>,
    Json(request): Json<api::CreateUser>,
) -> AppResult<(StatusCode, Json<api::UserDetail>)> {
    validate_login(&request.login)?;
    let role = parse_role(&request.role)?;
    let name = request.name.unwrap_or_else(|| request.login.clone());
    if name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "name must be at most {MAX_NAME} bytes without control characters"
        )));
    }
    let user = UserRow {
        id: new_id(),
        login: request.login,
        name,
        role,
        created_at: now_ms(),
    };
    if !state.store.create_user(&user).await? {
        return Err(AppError::conflict(format!(
            "user `{}` already exists",
            user.login
        )));
    }
    tracing::info!("created user {} ({})", user.login, user.role);
    Ok((StatusCode::CREATED, Json(detail(&state, &user).await?)))
}

/// `DELETE /api/v2/user/{user}` (admin): the user, their tokens and grants.
async fn delete_user(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path(user): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    let user = find_user(&state, &user).await?;
    not_bootstrap(&user, "be deleted")?;
    state.store.delete_user(&user.id).await?;
    tracing::info!("deleted user {}", user.login);
    Ok(Json(
        serde_json::json!({ "message": format!("user `{}` deleted", user.login) }),
    ))
}

/// `PUT /api/v2/user/{user}/role` (admin).
async fn set_role(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path(user): Path<String>,
    Json(request): Json<api::SetRole>,
) -> AppResult<Json<api::UserDetail>> {
    let mut user = find_user(&state, &user).await?;
    let role = parse_role(&request.role)?;
    if role != user.role {
        not_bootstrap(&user, "change its role")?;
    }
    state.store.set_user_role(&user.id, role).await?;
    user.role = role;
    Ok(Json(detail(&state, &user).await?))
}

/// `PUT /api/v2/user/{user}/project/{vcs}/{org}/{repo}` (admin): gives a member the project.
async fn grant_project(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path((user, vcs, org, repo)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::UserDetail>> {
    let user = find_user(&state, &user).await?;
    if user.role != Role::Member {
        return Err(AppError::bad_request(format!(
            "user `{}` is a `{}`, who reads every project already; only members are given projects",
            user.login, user.role
        )));
    }
    let project = crate::pipelines::find_project(&state, &format!("{vcs}/{org}/{repo}")).await?;
    state
        .store
        .add_project_member(&user.id, &project.id, now_ms())
        .await?;
    Ok(Json(detail(&state, &user).await?))
}

/// `DELETE /api/v2/user/{user}/project/{vcs}/{org}/{repo}` (admin).
async fn ungrant_project(
    _: Admin,
    StateExt(state): StateExt<State>,
    Path((user, vcs, org, repo)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::UserDetail>> {
    let user = find_user(&state, &user).await?;
    let project = crate::pipelines::find_project(&state, &format!("{vcs}/{org}/{repo}")).await?;
    if !state
        .store
        .remove_project_member(&user.id, &project.id)
        .await?
    {
        return Err(AppError::not_found(format!(
            "user `{}` was not given project `{}`",
            user.login, project.slug
        )));
    }
    Ok(Json(detail(&state, &user).await?))
}

/// The user whose tokens a request is about: `asked` (a login or id) or the caller. Only
/// admins act on others' tokens.
async fn token_owner(state: &State, caller: &Caller, asked: Option<&str>) -> AppResult<UserRow> {
    let Some(asked) = asked.filter(|asked| !asked.is_empty()) else {
        return Ok(caller.user.clone());
    };
    let user = find_user(state, asked).await?;
    if user.id != caller.user.id {
        caller.require(Role::Admin)?;
    }
    Ok(user)
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    user: Option<String>,
    /// `true`: every user's tokens (admin).
    #[serde(default)]
    all: bool,
}

/// `GET /api/v2/token[?user=LOGIN|?all=true]`: personal tokens without their secrets; the
/// caller's own unless an admin asks for another's or everyone's.
async fn list_tokens(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Query(query): Query<TokenQuery>,
) -> AppResult<Json<Items<api::UserToken>>> {
    let rows = if query.all {
        caller.require(Role::Admin)?;
        state.store.user_tokens(None).await?
    } else {
        let owner = token_owner(&state, &caller, query.user.as_deref()).await?;
        state.store.user_tokens(Some(&owner.id)).await?
    };
    Ok(Json(Items::all(rows.iter().map(token_answer).collect())))
}

/// `POST /api/v2/token`: a new personal token, its secret in this answer only (201).
async fn create_token(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Json(request): Json<api::CreateUserToken>,
) -> AppResult<(StatusCode, Json<api::CreatedUserToken>)> {
    let owner = token_owner(&state, &caller, request.user.as_deref()).await?;
    if request.label.len() > MAX_NAME || request.label.chars().any(char::is_control) {
        return Err(AppError::bad_request(format!(
            "label must be at most {MAX_NAME} bytes without control characters"
        )));
    }
    let now = now_ms();
    let expires_at = match request.expires_in_seconds {
        None => None,
        Some(0) => return Err(AppError::bad_request("expires_in_seconds must be above 0")),
        Some(secs) if secs > MAX_TOKEN_LIFETIME_SECS => {
            return Err(AppError::bad_request(format!(
                "expires_in_seconds must be at most {MAX_TOKEN_LIFETIME_SECS} (ten years)"
            )));
        }
        Some(secs) => Some(now + secs as i64 * 1000),
    };
    if state.store.user_tokens(Some(&owner.id)).await?.len() >= MAX_TOKENS_PER_USER {
        return Err(AppError::conflict(format!(
            "user `{}` has {MAX_TOKENS_PER_USER} tokens already; revoke one first",
            owner.login
        )));
    }
    let token = generate_token("bosun_pat_")?;
    let row = UserTokenRow {
        id: new_id(),
        user_id: owner.id.clone(),
        login: owner.login.clone(),
        label: request.label,
        created_at: now,
        expires_at,
        last_used_at: None,
    };
    state
        .store
        .create_user_token(&row, &hash_token(&token))
        .await?;
    tracing::info!("created token {} for user {}", row.id, owner.login);
    Ok((
        StatusCode::CREATED,
        Json(api::CreatedUserToken {
            info: token_answer(&row),
            token,
        }),
    ))
}

/// `DELETE /api/v2/token/{id}`: revokes a token at once (the owner's own, or any by an admin).
async fn revoke_token(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path(id): Path<String>,
) -> AppResult<Json<serde_json::Value>> {
    let missing = || AppError::not_found(format!("token `{}` not found", shown(&id)));
    if id.len() > 64 {
        return Err(missing());
    }
    let row = state.store.user_token(&id).await?.ok_or_else(missing)?;
    // Another user's token answers as a missing one: nothing tells a member which ids exist.
    if row.user_id != caller.user.id && caller.role() != Role::Admin {
        return Err(missing());
    }
    state.store.revoke_user_token(&id).await?;
    tracing::info!("revoked token {} of user {}", row.id, row.login);
    Ok(Json(
        serde_json::json!({ "message": format!("token {} revoked", row.id) }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_short_lower_case_names() {
        for good in ["alice", "a", "ci-bot", "j.doe_2", "0day"] {
            assert!(validate_login(good).is_ok(), "{good}");
        }
        for bad in ["", "Alice", "-x", ".x", "a b", "a/b", &"x".repeat(65), "é"] {
            assert!(validate_login(bad).is_err(), "{bad}");
        }
    }
}
