//! A project's secrets, in CircleCI API v2's shapes where it has them: environment variables
//! (`/envvar`, write-only: reads show `xxxx` and the last four characters), checkout keys
//! (`/checkout-key`: deploy keys the server generates; the user adds the public half to the git
//! host), and bosun's own `/ssh-key` (additional keys for `add_ssh_keys`), `/known-hosts` and
//! `/checkout-token`. Every value is sealed before it is stored (`crate::secrets`).

use axum::extract::{Path, Query, State as StateExt};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bosun_api::types as api;

use crate::State;
use crate::auth::{Access, Caller};
use crate::error::{AppError, AppResult};
use crate::pipelines::project_for;
use crate::secrets::masked_value;
use crate::store::{CheckoutKeyRow, SshKeyRow};
use crate::util::{now_ms, rfc3339};

/// Longest variable value kept (a PEM private key fits many times over).
pub const MAX_VALUE_BYTES: usize = 128 << 10;
/// Longest variable name.
const MAX_NAME_LEN: usize = 256;

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/envvar",
            get(list_env).post(set_env),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/envvar/{name}",
            get(get_env).delete(delete_env),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/checkout-key",
            get(list_checkout_keys).post(create_checkout_key),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/checkout-key/{fingerprint}",
            get(get_checkout_key).delete(delete_checkout_key),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/ssh-key",
            get(list_ssh_keys).post(add_ssh_key),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/ssh-key/{fingerprint}",
            delete(delete_ssh_key),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/known-hosts",
            get(get_known_hosts).put(set_known_hosts),
        )
        .route(
            "/api/v2/project/{vcs}/{org}/{repo}/checkout-token",
            post(set_checkout_token).put(set_checkout_token),
        )
}

type SlugPath = Path<(String, String, String)>;

fn slug((vcs, org, repo): &(String, String, String)) -> String {
    format!("{vcs}/{org}/{repo}")
}

/// CircleCI's rule for variable names: a letter or `_`, then letters, digits, `_`.
pub(crate) fn validate_env_name(name: &str) -> Result<(), AppError> {
    let mut bytes = name.bytes();
    let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_');
    if first_ok
        && name.len() <= MAX_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        Ok(())
    } else {
        Err(AppError::bad_request(format!(
            "environment variable name `{}` must start with a letter or `_` and hold only \
             letters, digits and `_` (at most {MAX_NAME_LEN})",
            name.chars().take(MAX_NAME_LEN).collect::<String>()
        )))
    }
}

/// Bounds a secret value; the error never quotes it.
pub(crate) fn validate_value(what: &str, value: &str) -> Result<(), AppError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(AppError::bad_request(format!(
            "the value of {what} is {} bytes: at most {MAX_VALUE_BYTES} are kept",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(AppError::bad_request(format!(
            "the value of {what} holds a NUL byte, which no environment variable can"
        )));
    }
    Ok(())
}

pub(crate) fn project_env_aad(project_id: &str, name: &str) -> String {
    format!("project-env/{project_id}/{name}")
}

pub(crate) fn checkout_key_aad(project_id: &str, fingerprint: &str) -> String {
    format!("checkout-key/{project_id}/{fingerprint}")
}

pub(crate) fn ssh_key_aad(project_id: &str, fingerprint: &str) -> String {
    format!("ssh-key/{project_id}/{fingerprint}")
}

pub(crate) fn checkout_token_aad(project_id: &str) -> String {
    format!("checkout-token/{project_id}")
}

async fn set_env(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
    Json(body): Json<api::CreateEnvVar>,
) -> AppResult<(StatusCode, Json<api::EnvVar>)> {
    let project = project_for(&state, &caller, &slug(&path), Access::Write).await?;
    validate_env_name(&body.name)?;
    validate_value(&format!("`{}`", body.name), &body.value)?;
    let sealed = state.secrets.seal(
        &project_env_aad(&project.id, &body.name),
        body.value.as_bytes(),
    )?;
    let now = now_ms();
    state
        .store
        .set_project_env(&project.id, &body.name, &sealed, now)
        .await?;
    tracing::info!(project = %project.slug, name = %body.name, "project variable set");
    Ok((
        StatusCode::CREATED,
        Json(api::EnvVar {
            value: masked_value(&body.value),
            name: body.name,
            created_at: Some(rfc3339(now)),
        }),
    ))
}

async fn project_env_vars(state: &State, project_id: &str) -> AppResult<Vec<api::EnvVar>> {
    let rows = state.store.project_env(project_id).await?;
    rows.into_iter()
        .map(|row| {
            let value = state
                .secrets
                .open(&project_env_aad(project_id, &row.name), &row.value)?;
            Ok(api::EnvVar {
                value: masked_value(&value),
                name: row.name,
                created_at: Some(rfc3339(row.created_at)),
            })
        })
        .collect()
}

async fn list_env(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
) -> AppResult<Json<api::Page<api::EnvVar>>> {
    let project = project_for(&state, &caller, &slug(&path), Access::Read).await?;
    Ok(Json(api::Page {
        items: project_env_vars(&state, &project.id).await?,
        next_page_token: None,
    }))
}

async fn get_env(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, name)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::EnvVar>> {
    let project = project_for(
        &state,
        &caller,
        &format!("{vcs}/{org}/{repo}"),
        Access::Read,
    )
    .await?;
    project_env_vars(&state, &project.id)
        .await?
        .into_iter()
        .find(|var| var.name == name)
        .map(Json)
        .ok_or_else(|| AppError::not_found("Environment variable not found."))
}

async fn delete_env(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, name)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::MessageResponse>> {
    let project = project_for(
        &state,
        &caller,
        &format!("{vcs}/{org}/{repo}"),
        Access::Write,
    )
    .await?;
    if !state.store.delete_project_env(&project.id, &name).await? {
        return Err(AppError::not_found("Environment variable not found."));
    }
    tracing::info!(project = %project.slug, name = %name, "project variable deleted");
    Ok(Json(api::MessageResponse {
        message: "Environment variable deleted.".into(),
    }))
}

/// `?digest=sha256|md5`: which fingerprint listings show (CircleCI's; MD5 by default).
#[derive(serde::Deserialize)]
struct DigestQuery {
    digest: Option<String>,
}

impl DigestQuery {
    fn sha256(&self) -> Result<bool, AppError> {
        match self.digest.as_deref() {
            None | Some("md5") => Ok(false),
            Some("sha256") => Ok(true),
            Some(_) => Err(AppError::bad_request("digest is `sha256` or `md5`")),
        }
    }
}

fn checkout_key_answer(row: &CheckoutKeyRow, preferred: bool, sha256: bool) -> api::CheckoutKey {
    api::CheckoutKey {
        public_key: row.public_key.clone(),
        key_type: row.key_type.clone(),
        fingerprint: if sha256 {
            row.sha256_fingerprint.clone()
        } else {
            row.fingerprint.clone()
        },
        preferred,
        created_at: rfc3339(row.created_at),
    }
}

async fn create_checkout_key(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
    Json(body): Json<api::CreateCheckoutKey>,
) -> AppResult<(StatusCode, Json<api::CheckoutKey>)> {
    let project = project_for(&state, &caller, &slug(&path), Access::Write).await?;
    match body.key_type.as_str() {
        "deploy-key" => {}
        "user-key" => {
            return Err(AppError::bad_request(
                "`user-key` checkout keys need a VCS user integration, which bosun does not \
                 have: create a `deploy-key` and add its public key to the repository",
            ));
        }
        other => {
            return Err(AppError::bad_request(format!(
                "checkout key type `{}` is not `deploy-key` or `user-key`",
                other.chars().take(64).collect::<String>()
            )));
        }
    }
    let pair = crate::sshkeys::generate_ed25519(&format!("bosun deploy key for {}", project.slug))?;
    let row = CheckoutKeyRow {
        fingerprint: pair.fingerprint_md5.clone(),
        sha256_fingerprint: pair.fingerprint_sha256.clone(),
        key_type: "deploy-key".into(),
        public_key: pair.public_openssh.clone(),
        private_key: state.secrets.seal(
            &checkout_key_aad(&project.id, &pair.fingerprint_md5),
            pair.private_openssh.as_bytes(),
        )?,
        created_at: now_ms(),
    };
    state.store.add_checkout_key(&project.id, &row).await?;
    tracing::info!(project = %project.slug, fingerprint = %row.fingerprint, "checkout key created");
    Ok((
        StatusCode::CREATED,
        Json(checkout_key_answer(&row, true, false)),
    ))
}

async fn list_checkout_keys(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
    Query(query): Query<DigestQuery>,
) -> AppResult<Json<api::Page<api::CheckoutKey>>> {
    let sha256 = query.sha256()?;
    let project = project_for(&state, &caller, &slug(&path), Access::Read).await?;
    let rows = state.store.checkout_keys(&project.id).await?;
    Ok(Json(api::Page {
        items: rows
            .iter()
            .enumerate()
            .map(|(i, row)| checkout_key_answer(row, i == 0, sha256))
            .collect(),
        next_page_token: None,
    }))
}

async fn get_checkout_key(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, fingerprint)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::CheckoutKey>> {
    let project = project_for(
        &state,
        &caller,
        &format!("{vcs}/{org}/{repo}"),
        Access::Read,
    )
    .await?;
    let rows = state.store.checkout_keys(&project.id).await?;
    rows.iter()
        .enumerate()
        .find(|(_, row)| row.fingerprint == fingerprint || row.sha256_fingerprint == fingerprint)
        .map(|(i, row)| {
            let sha256 = row.sha256_fingerprint == fingerprint;
            Json(checkout_key_answer(row, i == 0, sha256))
        })
        .ok_or_else(|| AppError::not_found("Checkout key not found."))
}

async fn delete_checkout_key(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, fingerprint)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::MessageResponse>> {
    let project = project_for(
        &state,
        &caller,
        &format!("{vcs}/{org}/{repo}"),
        Access::Write,
    )
    .await?;
    if !state
        .store
        .delete_checkout_key(&project.id, &fingerprint)
        .await?
    {
        return Err(AppError::not_found("Checkout key not found."));
    }
    Ok(Json(api::MessageResponse {
        message: "Checkout key deleted.".into(),
    }))
}

fn ssh_key_answer(row: &SshKeyRow) -> api::SshKeyInfo {
    api::SshKeyInfo {
        fingerprint: row.fingerprint.clone(),
        md5_fingerprint: row.md5_fingerprint.clone(),
        hostname: row.hostname.clone(),
        public_key: row.public_key.clone(),
        created_at: rfc3339(row.created_at),
    }
}

async fn add_ssh_key(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
    Json(body): Json<api::CreateSshKey>,
) -> AppResult<(StatusCode, Json<api::SshKeyInfo>)> {
    let project = project_for(&state, &caller, &slug(&path), Access::Write).await?;
    let hostname = body.hostname.filter(|h| !h.trim().is_empty());
    if let Some(host) = &hostname {
        let ok = host.len() <= 253
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*' | b'?')
            });
        if !ok {
            return Err(AppError::bad_request(
                "hostname must be a host name or an ssh_config pattern (letters, digits, `.`, `-`, `_`, `*`, `?`)",
            ));
        }
    }
    let parsed = crate::sshkeys::parse_private_key(&body.private_key)
        .map_err(|err| AppError::bad_request(format!("private_key: {err}")))?;
    let row = SshKeyRow {
        fingerprint: parsed.fingerprint_sha256.clone(),
        md5_fingerprint: parsed.fingerprint_md5.clone(),
        hostname,
        public_key: parsed.public_openssh.clone(),
        private_key: state.secrets.seal(
            &ssh_key_aad(&project.id, &parsed.fingerprint_sha256),
            body.private_key.as_bytes(),
        )?,
        created_at: now_ms(),
    };
    if !state.store.add_ssh_key(&project.id, &row).await? {
        return Err(AppError::conflict(format!(
            "project `{}` already has the SSH key {}",
            project.slug, row.fingerprint
        )));
    }
    tracing::info!(project = %project.slug, fingerprint = %row.fingerprint, "SSH key added");
    Ok((StatusCode::CREATED, Json(ssh_key_answer(&row))))
}

async fn list_ssh_keys(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
) -> AppResult<Json<api::Page<api::SshKeyInfo>>> {
    let project = project_for(&state, &caller, &slug(&path), Access::Read).await?;
    let rows = state.store.ssh_keys(&project.id).await?;
    Ok(Json(api::Page {
        items: rows.iter().map(ssh_key_answer).collect(),
        next_page_token: None,
    }))
}

async fn delete_ssh_key(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((vcs, org, repo, fingerprint)): Path<(String, String, String, String)>,
) -> AppResult<Json<api::MessageResponse>> {
    let project = project_for(
        &state,
        &caller,
        &format!("{vcs}/{org}/{repo}"),
        Access::Write,
    )
    .await?;
    if !state
        .store
        .delete_ssh_key(&project.id, &fingerprint)
        .await?
    {
        return Err(AppError::not_found("SSH key not found."));
    }
    Ok(Json(api::MessageResponse {
        message: "SSH key deleted.".into(),
    }))
}

fn known_hosts_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn get_known_hosts(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
) -> AppResult<Json<api::KnownHosts>> {
    let project = project_for(&state, &caller, &slug(&path), Access::Read).await?;
    let (text, _) = state
        .store
        .project_git_auth(&project.id)
        .await?
        .unwrap_or_default();
    Ok(Json(api::KnownHosts {
        known_hosts: known_hosts_lines(&text),
    }))
}

async fn set_known_hosts(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
    Json(body): Json<api::KnownHosts>,
) -> AppResult<Json<api::KnownHosts>> {
    let project = project_for(&state, &caller, &slug(&path), Access::Write).await?;
    let lines = crate::sshkeys::parse_known_hosts(&body.known_hosts.join("\n"))
        .map_err(|err| AppError::bad_request(format!("known_hosts: {err}")))?;
    let text = lines.join("\n");
    state.store.set_known_hosts(&project.id, &text).await?;
    tracing::info!(project = %project.slug, lines = lines.len(), "known hosts set");
    Ok(Json(api::KnownHosts { known_hosts: lines }))
}

async fn set_checkout_token(
    caller: Caller,
    StateExt(state): StateExt<State>,
    path: SlugPath,
    Json(body): Json<api::CheckoutToken>,
) -> AppResult<Json<api::MessageResponse>> {
    let project = project_for(&state, &caller, &slug(&path), Access::Write).await?;
    let sealed = match body.token.as_deref() {
        Some(token) => {
            validate_value("the checkout token", token)?;
            if token.is_empty() || token.chars().any(char::is_control) {
                return Err(AppError::bad_request(
                    "the checkout token must be non-empty, on one line",
                ));
            }
            Some(
                state
                    .secrets
                    .seal(&checkout_token_aad(&project.id), token.as_bytes())?,
            )
        }
        None => None,
    };
    let message = if sealed.is_some() {
        "Checkout token set."
    } else {
        "Checkout token removed."
    };
    state
        .store
        .set_checkout_token(&project.id, sealed.as_deref())
        .await?;
    Ok(Json(api::MessageResponse {
        message: message.into(),
    }))
}

/// How the project's repository is reached: its preferred (newest) checkout key, its known
/// hosts and its checkout token, opened; `None` when it has none of them.
pub(crate) async fn git_auth(
    state: &State,
    project_id: &str,
) -> AppResult<Option<crate::git::GitAuth>> {
    let (known_hosts, token) = state
        .store
        .project_git_auth(project_id)
        .await?
        .unwrap_or_default();
    let key = match state.store.checkout_keys(project_id).await?.first() {
        Some(row) => Some(state.secrets.open(
            &checkout_key_aad(project_id, &row.fingerprint),
            &row.private_key,
        )?),
        None => None,
    };
    let token = match token {
        Some(sealed) => Some(
            state
                .secrets
                .open(&checkout_token_aad(project_id), &sealed)?,
        ),
        None => None,
    };
    let known_hosts = known_hosts_lines(&known_hosts);
    if key.is_none() && token.is_none() && known_hosts.is_empty() {
        return Ok(None);
    }
    Ok(Some(crate::git::GitAuth {
        ssh_private_key: key,
        known_hosts,
        https_token: token,
    }))
}

/// Fetches the project's mirror with its credentials, keeping the host keys a first fetch
/// learned (trust on first use).
pub(crate) async fn sync_project_mirror(
    state: &State,
    project_id: &str,
    git_url: &str,
) -> AppResult<std::path::PathBuf> {
    // Even without credentials: an ssh URL's host key is learned on first use and enforced after.
    let auth = git_auth(state, project_id)
        .await?
        .unwrap_or(crate::git::GitAuth {
            ssh_private_key: None,
            known_hosts: Vec::new(),
            https_token: None,
        });
    let synced = crate::git::sync_mirror(&state.repo_dir, project_id, git_url, Some(&auth))
        .await
        .map_err(|err| {
            // git's message tells the user why their URL failed; the server's own directories
            // stay out of it.
            let repos = state.repo_dir.display().to_string();
            AppError::bad_request(format!("{err:#}").replace(&repos, "<mirrors>"))
        })?;
    if !synced.learned_known_hosts.is_empty() {
        let text = synced.learned_known_hosts.join("\n");
        if state.store.learn_known_hosts(project_id, &text).await? {
            tracing::info!(
                project = %project_id,
                "trusting the repository host's key on first use: {}",
                synced.learned_known_hosts.join(" | ")
            );
        }
    }
    Ok(synced.mirror)
}

/// What `checkout` and `add_ssh_keys` need, opened for one task: the preferred checkout key,
/// the known hosts and the checkout token when the job checks out, and the SSH keys its
/// `add_ssh_keys` steps name. A job with neither step gets nothing.
pub(crate) async fn task_credentials(
    state: &State,
    project_id: &str,
    steps: &[bosun_api::task::Step],
) -> AppResult<(
    Option<bosun_api::task::CheckoutAuth>,
    Vec<bosun_api::task::SshKey>,
)> {
    use bosun_api::task::{CheckoutAuth, SecretString, SshKey, Step};
    let checks_out = steps.iter().any(|step| matches!(step, Step::Checkout(_)));
    let mut checkout_auth = None;
    if checks_out {
        checkout_auth = git_auth(state, project_id).await?.map(|auth| CheckoutAuth {
            ssh_private_key: auth.ssh_private_key.map(SecretString),
            known_hosts: auth.known_hosts,
            https_token: auth.https_token.map(SecretString),
        });
    }
    // `None`: every key; otherwise the fingerprints named, in either form.
    let mut wanted: Option<Vec<&str>> = Some(Vec::new());
    let mut any_step = false;
    for step in steps {
        if let Step::AddSshKeys(step) = step {
            any_step = true;
            if step.fingerprints.is_empty() {
                wanted = None;
            } else if let Some(list) = wanted.as_mut() {
                list.extend(step.fingerprints.iter().map(String::as_str));
            }
        }
    }
    let mut ssh_keys = Vec::new();
    if any_step {
        for row in state.store.ssh_keys(project_id).await? {
            let named = match &wanted {
                None => true,
                Some(list) => list.iter().any(|fp| {
                    let fp = fp.strip_prefix("MD5:").unwrap_or(fp);
                    *fp == row.fingerprint || fp.eq_ignore_ascii_case(&row.md5_fingerprint)
                }),
            };
            if named {
                ssh_keys.push(SshKey {
                    private_key: SecretString(
                        state
                            .secrets
                            .open(&ssh_key_aad(project_id, &row.fingerprint), &row.private_key)?,
                    ),
                    fingerprint: row.fingerprint,
                    md5_fingerprint: row.md5_fingerprint,
                    hostname: row.hostname,
                });
            }
        }
    }
    Ok((checkout_auth, ssh_keys))
}

/// CircleCI API v1.1's project variable and checkout key routes, which clients still call:
/// the same implementation, v1.1's shapes (bare arrays, `{"name", "value"}`, checkout keys with
/// `public_key` and `time`). `{vcs}` is `github`, `bitbucket` or a short form.
pub fn v1_routes() -> Router<State> {
    Router::new()
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/envvar",
            get(v1_list_env).post(v1_set_env),
        )
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/envvar/{name}",
            get(v1_get_env).delete(v1_delete_env),
        )
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/checkout-key",
            get(v1_list_checkout_keys).post(v1_create_checkout_key),
        )
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/checkout-key/{fingerprint}",
            get(v1_get_checkout_key).delete(v1_delete_checkout_key),
        )
        .route(
            "/api/v1.1/project/{vcs}/{org}/{repo}/ssh-key",
            post(add_ssh_key),
        )
}

fn v1_env(var: api::EnvVar) -> serde_json::Value {
    serde_json::json!({ "name": var.name, "value": var.value })
}

fn v1_checkout_key(key: api::CheckoutKey) -> serde_json::Value {
    serde_json::json!({
        "public_key": key.public_key,
        "type": key.key_type,
        "fingerprint": key.fingerprint,
        "preferred": key.preferred,
        "time": key.created_at,
    })
}

async fn v1_list_env(
    caller: Caller,
    state: StateExt<State>,
    path: SlugPath,
) -> AppResult<Json<Vec<serde_json::Value>>> {
    let Json(page) = list_env(caller, state, path).await?;
    Ok(Json(page.items.into_iter().map(v1_env).collect()))
}

async fn v1_set_env(
    caller: Caller,
    state: StateExt<State>,
    path: SlugPath,
    body: Json<api::CreateEnvVar>,
) -> AppResult<(StatusCode, Json<serde_json::Value>)> {
    let (status, Json(var)) = set_env(caller, state, path, body).await?;
    Ok((status, Json(v1_env(var))))
}

async fn v1_get_env(
    caller: Caller,
    state: StateExt<State>,
    path: Path<(String, String, String, String)>,
) -> AppResult<Json<serde_json::Value>> {
    let Json(var) = get_env(caller, state, path).await?;
    Ok(Json(v1_env(var)))
}

async fn v1_delete_env(
    caller: Caller,
    state: StateExt<State>,
    path: Path<(String, String, String, String)>,
) -> AppResult<Json<api::MessageResponse>> {
    let _answer = delete_env(caller, state, path).await?;
    Ok(Json(api::MessageResponse {
        message: "ok".into(),
    }))
}

async fn v1_list_checkout_keys(
    caller: Caller,
    state: StateExt<State>,
    path: SlugPath,
) -> AppResult<Json<Vec<serde_json::Value>>> {
    let query = Query(DigestQuery { digest: None });
    let Json(page) = list_checkout_keys(caller, state, path, query).await?;
    Ok(Json(page.items.into_iter().map(v1_checkout_key).collect()))
}

async fn v1_create_checkout_key(
    caller: Caller,
    state: StateExt<State>,
    path: SlugPath,
    body: Json<api::CreateCheckoutKey>,
) -> AppResult<(StatusCode, Json<serde_json::Value>)> {
    let (status, Json(key)) = create_checkout_key(caller, state, path, body).await?;
    Ok((status, Json(v1_checkout_key(key))))
}

async fn v1_get_checkout_key(
    caller: Caller,
    state: StateExt<State>,
    path: Path<(String, String, String, String)>,
) -> AppResult<Json<serde_json::Value>> {
    let Json(key) = get_checkout_key(caller, state, path).await?;
    Ok(Json(v1_checkout_key(key)))
}

async fn v1_delete_checkout_key(
    caller: Caller,
    state: StateExt<State>,
    path: Path<(String, String, String, String)>,
) -> AppResult<Json<api::MessageResponse>> {
    let _answer = delete_checkout_key(caller, state, path).await?;
    Ok(Json(api::MessageResponse {
        message: "OK".into(),
    }))
}
