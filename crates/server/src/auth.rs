//! Tokens: random 256-bit values shown once, stored only as SHA-256 hashes. Three kinds
//! authenticate requests: user tokens (`Circle-Token`, Basic or `?circle-token=`: personal
//! tokens, and admin tokens acting as the bootstrap admin user), resource-class runner tokens
//! and per-task tokens (both `Authorization: Bearer`). A user's role and project grants decide
//! what their tokens may do ([`Caller`]).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::State;
use crate::error::AppError;
use crate::store::{BOOTSTRAP_ADMIN_ID, Owned, Role, Store, TaskStatus, UserRow};
use crate::util::now_ms;

/// Longest token we look at; anything longer is refused before hashing.
const MAX_TOKEN_LEN: usize = 256;

/// A fresh token: 32 random bytes, hex-encoded, with a prefix naming its kind.
pub fn generate_token(prefix: &str) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(format!("{prefix}{}", hex(&bytes)))
}

pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Makes sure an admin token exists: `BOSUN_ADMIN_TOKEN` if given, else one generated on first
/// start, printed once and written to `DATA_DIR/admin-token` (mode 0600).
pub async fn ensure_admin_token(
    store: &Store,
    data_dir: &Path,
    from_env: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(token) = from_env {
        if token.len() < 16 || token.len() > MAX_TOKEN_LEN {
            anyhow::bail!("BOSUN_ADMIN_TOKEN must be 16 to {MAX_TOKEN_LEN} characters long");
        }
        store.add_admin_token(&hash_token(token), now_ms()).await?;
        return Ok(());
    }
    if store.has_admin_token().await? {
        return Ok(());
    }
    let token = generate_token("bosun_admin_")?;
    let path = data_dir.join("admin-token");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{token}")?;
    store.add_admin_token(&hash_token(&token), now_ms()).await?;
    println!(
        "generated admin token (shown once, also in {}): {token}",
        path.display()
    );
    Ok(())
}

fn header_token<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name)?.to_str().ok()
}

fn bearer(parts: &Parts) -> Result<&str, AppError> {
    let value = header_token(parts, "authorization")
        .ok_or_else(|| AppError::unauthorized("missing bearer token"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| AppError::unauthorized("invalid bearer token"))?
        .trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(AppError::unauthorized("invalid bearer token"));
    }
    Ok(token)
}

/// A user's API token, the ways CircleCI accepts one: the `Circle-Token` header, HTTP Basic
/// with the token as the user name (`curl -u TOKEN:`), or the `circle-token` query parameter
/// (old v1.1 clients). The server logs no URI, so a token in a query string is not written
/// anywhere either.
fn circle_token(parts: &Parts) -> Option<String> {
    if let Some(token) = header_token(parts, "circle-token") {
        return Some(token.to_owned());
    }
    if let Some(value) = header_token(parts, "authorization") {
        if let Some(encoded) = value.strip_prefix("Basic ") {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let user = text.split(':').next().unwrap_or_default();
            return (!user.is_empty()).then(|| user.to_owned());
        }
    }
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "circle-token")
        .map(|(_, value)| value.into_owned())
}

/// The user a request acts for: any valid user token (a personal token, or an admin token,
/// which acts as the bootstrap admin), sent the ways [`circle_token`] reads. Handlers check the
/// role with [`Caller::require`] and project access with [`Caller::read`] / [`Caller::write`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRow,
}

impl FromRequestParts<State> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Caller, AppError> {
        let token = circle_token(parts)
            .ok_or_else(|| AppError::unauthorized("missing Circle-Token header"))?;
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AppError::unauthorized("invalid token"));
        }
        let hash = hash_token(&token);
        let user = if state.store.is_admin_token(&hash).await? {
            state.store.user(BOOTSTRAP_ADMIN_ID).await?
        } else {
            state.store.user_by_token(&hash, now_ms()).await?
        };
        crate::serve::mark_authenticated(parts, user.is_some());
        // An expired token answers as an unknown one: nothing tells a guesser which it was.
        user.map(|user| Caller { user })
            .ok_or_else(|| AppError::unauthorized("invalid token"))
    }
}

/// What a request does to a project: [`Access::Read`] needs any role (a member only on the
/// projects they were given), [`Access::Write`] (trigger, cancel, approve, env vars, keys)
/// needs admin, or member of that project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Caller {
    pub fn role(&self) -> Role {
        self.user.role
    }

    /// 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.user.role.includes(role) {
            Ok(())
        } else {
            Err(AppError::forbidden(format!(
                "this needs the `{role}` role; user `{}` is a `{}`",
                self.user.login, self.user.role
            )))
        }
    }

    /// 403 unless the caller may `access` project `project_id` (named `slug` in the message).
    pub async fn check_project(
        &self,
        state: &State,
        project_id: &str,
        slug: &str,
        access: Access,
    ) -> Result<(), AppError> {
        let allowed = match (self.user.role, access) {
            (Role::Admin, _) | (Role::Viewer, Access::Read) => true,
            (Role::Viewer, Access::Write) => false,
            (Role::Member, _) => {
                state
                    .store
                    .is_project_member(&self.user.id, project_id)
                    .await?
            }
        };
        if allowed {
            return Ok(());
        }
        let what = match access {
            Access::Read => "read",
            Access::Write => "change",
        };
        Err(AppError::forbidden(format!(
            "user `{}` ({}) may not {what} project `{slug}`",
            self.user.login, self.user.role
        )))
    }

    /// [`Caller::check_project`] for the project `owned` belongs to. An object that does not
    /// exist passes: the handler answers 404 for it as before.
    pub async fn check_owned(
        &self,
        state: &State,
        owned: Owned<'_>,
        access: Access,
    ) -> Result<(), AppError> {
        match state.store.project_of(owned).await? {
            Some((project_id, slug)) => self.check_project(state, &project_id, &slug, access).await,
            None => Ok(()),
        }
    }

    /// Whether the caller reads every project (admins and viewers) rather than only those
    /// given to them; listings filter by [`Store::member_projects`] otherwise.
    pub fn reads_all_projects(&self) -> bool {
        self.user.role != Role::Member
    }
}

/// A request by an admin (contexts, users, projects' creation): 403 for other roles.
pub struct Admin;

impl FromRequestParts<State> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Admin, AppError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Role::Admin)?;
        Ok(Admin)
    }
}

/// A request by an admin to the runner admin API (`/api/v3/runner/...` resource classes and
/// tokens). Other roles get 404, as CircleCI answers them there.
pub struct RunnerAdmin;

impl FromRequestParts<State> for RunnerAdmin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<RunnerAdmin, AppError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.role() != Role::Admin {
            return Err(AppError::not_found("not found"));
        }
        Ok(RunnerAdmin)
    }
}

/// A request carrying a resource-class runner token.
pub struct Runner {
    pub resource_class: String,
}

impl FromRequestParts<State> for Runner {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Runner, AppError> {
        let token = bearer(parts)?;
        let resource_class = state.store.runner_token_class(&hash_token(token)).await?;
        crate::serve::mark_authenticated(parts, resource_class.is_some());
        resource_class
            .map(|resource_class| Runner { resource_class })
            .ok_or_else(|| AppError::unauthorized("invalid bearer token"))
    }
}

/// A request carrying a task token; `status` is the task's status now.
pub struct TaskAuth {
    pub task_id: String,
    pub job_id: String,
    pub status: TaskStatus,
}

impl FromRequestParts<State> for TaskAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<TaskAuth, AppError> {
        let token = bearer(parts)?;
        let row = state.store.task_by_token(&hash_token(token)).await?;
        crate::serve::mark_authenticated(parts, row.is_some());
        match row {
            Some(row) => Ok(TaskAuth {
                task_id: row.task_id,
                job_id: row.job_id,
                status: row.status,
            }),
            None => Err(AppError::unauthorized("invalid bearer token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_to_fixed_vectors() {
        let a = generate_token("x_").unwrap();
        let b = generate_token("x_").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 + 64);
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
