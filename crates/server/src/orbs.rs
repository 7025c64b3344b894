//! The orb registry (issue 12): publishing packed orbs into namespaces, resolving references
//! as CircleCI's registry does, an upstream registry to fetch and cache from, URL orbs from an
//! allow-list, and the part of CircleCI's GraphQL API that reads orbs.
//!
//! Resolution (`resolve`):
//! - `ns/name@X.Y.Z` is that version; `@X.Y`, `@X` and `@volatile` the highest matching
//!   released version; `@dev:LABEL` the development version of that label, which a publish
//!   replaces and which expires 90 days after it.
//! - An orb published here resolves here only. An orb this registry does not publish is asked
//!   of the upstream (`--orb-upstream`), through the same GraphQL query the `circleci` CLI
//!   sends: exact versions are cached for ever (they never change), moving references for
//!   [`LOOKUP_TTL`]; when the upstream cannot be reached, what was cached still answers.
//! - URL orbs are fetched only under a prefix given with `--url-orb-allow`, bounded in size,
//!   and kept by URL with their SHA-256; a fetch that fails falls back to the kept copy.
//!
//! Reads need no token, as CircleCI's public registry; publishing needs a user who owns the
//! namespace: an admin, or a member of a project of that namespace (the namespaces resource
//! classes and projects use).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State as StateExt};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bosun_api as api;
use bosun_config::{OrbRef, ResolvedOrb, ResolvedOrbs, VersionSpec};
use serde::Deserialize;

use crate::State;
use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::store::{OrbPublished, OrbVersionRow, Role, UrlOrbRow};
use crate::util::{now_ms, rfc3339};

/// How long an upstream's answer for a moving reference (`@X.Y`, `@X`, `@volatile`), or a URL
/// orb, is used before asking again.
pub const LOOKUP_TTL: Duration = Duration::from_secs(300);
/// How long a dev version lives after its publish.
const DEV_LIFETIME_MS: i64 = 90 * 24 * 3600 * 1000;
/// Largest GraphQL request read.
const MAX_GRAPHQL_BODY: usize = 64 << 10;
/// How long one call to an upstream or a URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The GraphQL query bosun sends upstream, as the `circleci` CLI does for `orb source`.
pub const ORB_VERSION_QUERY: &str = "query($orbVersionRef: String!) { orbVersion(orbVersionRef: \
                                     $orbVersionRef) { id version orb { id name } source } }";

/// Where orbs come from besides this registry (`--orb-upstream`, `--url-orb-allow`).
#[derive(Debug, Clone, Default)]
pub struct OrbSettings {
    /// Another registry (CircleCI's, or a bosun server) asked for orbs this one lacks.
    pub upstream: Option<String>,
    /// URL prefixes URL orbs may be fetched from; none by default.
    pub url_allow: Vec<String>,
}

/// The registry's outside connections, made once at start.
pub(crate) struct Registry {
    upstream: Option<(String, api::Client)>,
    url_allow: Vec<String>,
}

impl Registry {
    pub fn new(settings: &OrbSettings) -> anyhow::Result<Registry> {
        let upstream = match &settings.upstream {
            Some(url) => {
                let url = url.trim_end_matches('/').to_owned();
                let client = api::Client::with_timeouts(
                    &url,
                    api::Timeouts {
                        request: FETCH_TIMEOUT,
                        idle: FETCH_TIMEOUT,
                    },
                )
                .map_err(|err| anyhow::anyhow!("--orb-upstream {url}: {err}"))?;
                Some((url, client))
            }
            None => None,
        };
        for prefix in &settings.url_allow {
            if !bosun_config::is_url_orb(prefix) {
                anyhow::bail!("--url-orb-allow {prefix}: a prefix starts with https:// or http://");
            }
        }
        Ok(Registry {
            upstream,
            url_allow: settings.url_allow.clone(),
        })
    }
}

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/v2/orb", get(list))
        .route("/api/v2/orb/resolve", get(resolve_query))
        .route("/api/v2/orb/{namespace}/{name}", get(info))
        .route(
            "/api/v2/orb/{namespace}/{name}/{version}",
            get(source)
                .put(publish)
                .layer(DefaultBodyLimit::max(bosun_config::MAX_ORB_BYTES + 1024)),
        )
        .route(
            "/graphql-unstable",
            post(graphql).layer(DefaultBodyLimit::max(MAX_GRAPHQL_BODY)),
        )
}

fn sha256_hex(text: &str) -> String {
    crate::auth::hash_token(text)
}

/// `namespace/name@version` from a route, checked.
fn route_ref(namespace: &str, name: &str, version: &str) -> Result<OrbRef, AppError> {
    OrbRef::parse(&format!("{namespace}/{name}@{version}")).map_err(AppError::bad_request)
}

// ------------------------------------------------------------------------- publishing

async fn publish(
    caller: Caller,
    StateExt(state): StateExt<State>,
    Path((namespace, name, version)): Path<(String, String, String)>,
    body: Bytes,
) -> AppResult<(StatusCode, Json<api::OrbPublished>)> {
    let reference = route_ref(&namespace, &name, &version)?;
    let dev = match &reference.version {
        VersionSpec::Exact(..) => false,
        VersionSpec::Dev(_) => true,
        other => {
            return Err(AppError::bad_request(format!(
                "`{other}` is not a version to publish: publish X.Y.Z, or dev:LABEL for a \
                 development version"
            )));
        }
    };
    check_namespace_owner(&state, &caller, &namespace).await?;
    let source = String::from_utf8(body.to_vec())
        .map_err(|_| AppError::bad_request("the orb is not UTF-8 text"))?;
    let label = reference.to_string();
    // Validated as pipelines will compile it, its own imports resolved through this registry.
    let imports = bosun_config::resolve_orbs(&source, &label, |r| fetch_for(&state, r))
        .await
        .map_err(|e| AppError::bad_request(e.to_string()))?;
    let ctx = bosun_config::PipelineContext {
        orbs: imports.shared(),
        ..Default::default()
    };
    bosun_config::validate_orb(&source, &label, &ctx)
        .map_err(|e| AppError::bad_request(format!("the orb does not validate: {e}")))?;
    let now = now_ms();
    let number = match reference.version {
        VersionSpec::Exact(x, y, z) => Some((x as i64, y as i64, z as i64)),
        _ => None,
    };
    let row = OrbVersionRow {
        namespace: reference.namespace.clone(),
        name: reference.name.clone(),
        version: reference.version.to_string(),
        major: number.map(|n| n.0),
        minor: number.map(|n| n.1),
        patch: number.map(|n| n.2),
        sha256: sha256_hex(&source),
        source,
        origin: String::new(),
        created_at: now,
        expires_at: dev.then_some(now + DEV_LIFETIME_MS),
    };
    if dev {
        state.store.delete_expired_orb_versions(now).await?;
    }
    let published = state.store.insert_orb_version(&row).await?;
    if published == OrbPublished::Exists {
        return Err(AppError::conflict(format!(
            "{label} is already published: published versions never change; publish a new version"
        )));
    }
    tracing::info!(orb = %label, "orb published");
    Ok((
        StatusCode::CREATED,
        Json(api::OrbPublished {
            orb: label,
            sha256: row.sha256,
            replaced: published == OrbPublished::Replaced,
            created_at: rfc3339(now),
        }),
    ))
}

/// Publishing into `namespace` needs an admin, or a member of one of its projects.
async fn check_namespace_owner(
    state: &State,
    caller: &Caller,
    namespace: &str,
) -> Result<(), AppError> {
    match caller.role() {
        Role::Admin => Ok(()),
        Role::Member => {
            let owned = state.store.member_namespaces(&caller.user.id).await?;
            if owned.iter().any(|n| n == namespace) {
                Ok(())
            } else {
                Err(AppError::forbidden(format!(
                    "user `{}` may not publish into namespace `{namespace}`: orbs go into the \
                     namespaces of the user's projects ({})",
                    caller.user.login,
                    if owned.is_empty() {
                        "none".to_owned()
                    } else {
                        owned.join(", ")
                    }
                )))
            }
        }
        Role::Viewer => Err(AppError::forbidden(format!(
            "user `{}` is a viewer: publishing orbs needs a member or an admin",
            caller.user.login
        ))),
    }
}

// ------------------------------------------------------------------------- reading

#[derive(Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

async fn list(
    StateExt(state): StateExt<State>,
    Query(query): Query<ListQuery>,
) -> AppResult<Json<api::Items<api::OrbListing>>> {
    if let Some(ns) = &query.namespace {
        if !bosun_config::is_orb_name(ns) {
            return Err(AppError::bad_request(format!(
                "`{ns}` is not an orb namespace"
            )));
        }
    }
    let now = now_ms();
    let mut items = Vec::new();
    for row in state.store.orbs(query.namespace.as_deref(), now).await? {
        let versions = state
            .store
            .orb_versions(&row.namespace, &row.name, now)
            .await?;
        items.push(api::OrbListing {
            name: format!("{}/{}", row.namespace, row.name),
            versions: row.versions as u64,
            latest: highest(&versions, &VersionSpec::Volatile).map(|v| v.version.clone()),
            updated_at: rfc3339(row.updated_at),
        });
    }
    Ok(Json(api::Items {
        items,
        next_page_token: None,
    }))
}

async fn info(
    StateExt(state): StateExt<State>,
    Path((namespace, name)): Path<(String, String)>,
) -> AppResult<Json<api::OrbInfo>> {
    if !bosun_config::is_orb_name(&namespace) || !bosun_config::is_orb_name(&name) {
        return Err(AppError::bad_request(format!(
            "`{namespace}/{name}` is not an orb name"
        )));
    }
    let versions = state
        .store
        .orb_versions(&namespace, &name, now_ms())
        .await?;
    if versions.is_empty() {
        return Err(AppError::not_found(format!(
            "orb {namespace}/{name} not found"
        )));
    }
    Ok(Json(api::OrbInfo {
        name: format!("{namespace}/{name}"),
        latest: highest(&versions, &VersionSpec::Volatile).map(|v| v.version.clone()),
        versions: versions
            .iter()
            .map(|v| api::OrbVersionInfo {
                version: v.version.clone(),
                sha256: v.sha256.clone(),
                created_at: rfc3339(v.created_at),
                expires_at: v.expires_at.map(rfc3339),
                upstream: (!v.origin.is_empty()).then(|| v.origin.clone()),
            })
            .collect(),
    }))
}

async fn source(
    StateExt(state): StateExt<State>,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> AppResult<Json<api::OrbSource>> {
    let reference = route_ref(&namespace, &name, &version)?.to_string();
    answer_source(&state, &reference).await
}

#[derive(Deserialize)]
struct ResolveQuery {
    reference: String,
}

/// `GET /api/v2/orb/resolve?reference=REF`: a registry reference or a URL orb, as a pipeline
/// would resolve it (what `bosun config validate --host` uses).
async fn resolve_query(
    StateExt(state): StateExt<State>,
    Query(query): Query<ResolveQuery>,
) -> AppResult<Json<api::OrbSource>> {
    if query.reference.len() > 2048 {
        return Err(AppError::bad_request(
            "the reference is longer than 2048 bytes",
        ));
    }
    if !bosun_config::is_url_orb(&query.reference) {
        OrbRef::parse(&query.reference).map_err(AppError::bad_request)?;
    }
    answer_source(&state, &query.reference).await
}

async fn answer_source(state: &State, reference: &str) -> AppResult<Json<api::OrbSource>> {
    match resolve(state, reference).await {
        Ok(Some(orb)) => Ok(Json(api::OrbSource {
            reference: orb.reference,
            version: orb.version,
            source: orb.source,
        })),
        Ok(None) => Err(AppError::not_found(format!("orb {reference} not found"))),
        Err(Failure::Refused(message)) => Err(AppError::bad_request(message)),
        Err(Failure::Unavailable(message)) => Err(AppError::new(StatusCode::BAD_GATEWAY, message)),
    }
}

// ------------------------------------------------------------------------- resolving

/// Why a reference did not resolve (besides not existing).
#[derive(Debug)]
pub(crate) enum Failure {
    /// The reference is not allowed (a URL outside the allow-list) or not valid.
    Refused(String),
    /// An upstream or URL could not be reached and nothing was cached.
    Unavailable(String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Refused(m) | Failure::Unavailable(m) => m,
        }
    }

    fn message(self) -> String {
        self.text().to_owned()
    }
}

/// A store failure while resolving: logged; the caller learns only that the database failed.
fn db_failure(err: crate::store::StoreError) -> Failure {
    tracing::error!("{err}");
    Failure::Unavailable("the orb registry's database failed".into())
}

/// The highest live released version matching `spec`.
fn highest<'a>(versions: &'a [OrbVersionRow], spec: &VersionSpec) -> Option<&'a OrbVersionRow> {
    versions
        .iter()
        .filter_map(|v| v.number().map(|n| (n, v)))
        .filter(|(n, _)| spec.matches(*n))
        .max_by_key(|(n, _)| *n)
        .map(|(_, v)| v)
}

/// [`resolve`] as [`bosun_config::resolve_orbs`] wants it.
async fn fetch_for(state: &State, reference: String) -> Result<Option<ResolvedOrb>, String> {
    resolve(state, &reference).await.map_err(Failure::message)
}

/// Resolves every orb a configuration (or an orb) imports, recursively.
pub(crate) async fn resolve_config(
    state: &State,
    source: &str,
    file: &str,
) -> Result<ResolvedOrbs, bosun_config::ConfigError> {
    bosun_config::resolve_orbs(source, file, |r| fetch_for(state, r)).await
}

/// Resolves one reference: `Ok(None)` when no registry has it.
pub(crate) async fn resolve(
    state: &State,
    reference: &str,
) -> Result<Option<ResolvedOrb>, Failure> {
    if bosun_config::is_url_orb(reference) {
        return resolve_url(state, reference).await;
    }
    let r = OrbRef::parse(reference).map_err(Failure::Refused)?;
    let now = now_ms();
    let found = |row: OrbVersionRow| ResolvedOrb {
        reference: reference.to_owned(),
        version: format!("{}/{}@{}", row.namespace, row.name, row.version),
        source: row.source,
    };
    let store = &state.store;
    // An exact or dev version: here, else upstream (and cached for ever).
    if r.version.is_exact() || matches!(r.version, VersionSpec::Dev(_)) {
        let version = r.version.to_string();
        if let Some(row) = store
            .orb_version(&r.namespace, &r.name, &version, now)
            .await
            .map_err(db_failure)?
        {
            return Ok(Some(found(row)));
        }
        if matches!(r.version, VersionSpec::Dev(_)) {
            return Ok(None); // Dev versions are this registry's own.
        }
        let versions = store
            .orb_versions(&r.namespace, &r.name, now)
            .await
            .map_err(db_failure)?;
        if versions.iter().any(|v| v.origin.is_empty()) {
            return Ok(None); // Published here: the upstream's orb of that name is another.
        }
        return match upstream(state, &r, reference).await? {
            Some(row) => Ok(Some(found(row))),
            None => Ok(None),
        };
    }
    let versions = store
        .orb_versions(&r.namespace, &r.name, now)
        .await
        .map_err(db_failure)?;
    let published_here = versions.iter().any(|v| v.origin.is_empty());
    let best_local =
        |versions: &[OrbVersionRow]| highest(versions, &r.version).map(|v| v.version.clone());
    if published_here || state.orbs.upstream.is_none() {
        let Some(version) = best_local(&versions) else {
            return Ok(None);
        };
        let row = store
            .orb_version(&r.namespace, &r.name, &version, now)
            .await
            .map_err(db_failure)?;
        return Ok(row.map(found));
    }
    // A moving reference to an upstream orb: a recent answer, else ask, else what is cached.
    if let Some((version, fetched_at)) = store.orb_lookup(reference).await.map_err(db_failure)? {
        if now - fetched_at < LOOKUP_TTL.as_millis() as i64 {
            if let Some(row) = store
                .orb_version(&r.namespace, &r.name, &version, now)
                .await
                .map_err(db_failure)?
            {
                return Ok(Some(found(row)));
            }
        }
    }
    match upstream(state, &r, reference).await {
        Ok(Some(row)) => {
            store
                .set_orb_lookup(reference, &row.version, now)
                .await
                .map_err(db_failure)?;
            Ok(Some(found(row)))
        }
        Ok(None) => Ok(None),
        Err(err) => {
            let Some(version) = best_local(&versions) else {
                return Err(err);
            };
            tracing::warn!(orb = %reference, "the orb upstream failed ({}); using the cached {version}", err.text());
            let row = store
                .orb_version(&r.namespace, &r.name, &version, now)
                .await
                .map_err(db_failure)?;
            Ok(row.map(found))
        }
    }
}

/// Asks the upstream for `reference` and caches what it answers (an exact version).
async fn upstream(
    state: &State,
    r: &OrbRef,
    reference: &str,
) -> Result<Option<OrbVersionRow>, Failure> {
    let Some((url, client)) = &state.orbs.upstream else {
        return Ok(None);
    };
    let body = serde_json::json!({
        "query": ORB_VERSION_QUERY,
        "variables": {"orbVersionRef": reference},
    });
    let unavailable = |why: String| {
        Failure::Unavailable(format!(
            "the orb upstream {url} did not answer for {reference}: {why}"
        ))
    };
    let response = client
        .send(
            api::Method::POST,
            "/graphql-unstable",
            &api::Auth::None,
            Some(("application/json", Bytes::from(body.to_string()))),
            None,
        )
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let answer: serde_json::Value = response
        .json()
        .map_err(|e| unavailable(format!("not JSON: {e}")))?;
    let orb = &answer["data"]["orbVersion"];
    if orb.is_null() {
        if let Some(message) = answer["errors"][0]["message"].as_str() {
            // CircleCI answers an unknown orb with an error rather than null.
            if !message.to_ascii_lowercase().contains("not found")
                && !message.to_ascii_lowercase().contains("no orb")
            {
                return Err(unavailable(message.chars().take(300).collect()));
            }
        }
        return Ok(None);
    }
    let (Some(version), Some(name), Some(source)) = (
        orb["version"].as_str(),
        orb["orb"]["name"].as_str(),
        orb["source"].as_str(),
    ) else {
        return Err(unavailable(
            "the answer lacks version, orb.name or source".into(),
        ));
    };
    let number = match VersionSpec::parse(version) {
        Some(VersionSpec::Exact(x, y, z))
            if name == r.full_name() && r.version.matches((x, y, z)) =>
        {
            (x, y, z)
        }
        _ => {
            return Err(unavailable(format!(
                "it answered {name}@{version}, which is not what was asked"
            )));
        }
    };
    if source.len() > bosun_config::MAX_ORB_BYTES {
        return Err(unavailable(format!(
            "the orb is larger than {} bytes",
            bosun_config::MAX_ORB_BYTES
        )));
    }
    let row = OrbVersionRow {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        version: format!("{}.{}.{}", number.0, number.1, number.2),
        major: Some(number.0 as i64),
        minor: Some(number.1 as i64),
        patch: Some(number.2 as i64),
        source: source.to_owned(),
        sha256: sha256_hex(source),
        origin: url.clone(),
        created_at: now_ms(),
        expires_at: None,
    };
    // Two pipelines may fetch the same version at once: the first insert wins, both use it.
    state
        .store
        .insert_orb_version(&row)
        .await
        .map_err(db_failure)?;
    tracing::info!(orb = %format!("{name}@{}", row.version), upstream = %url, "orb cached from upstream");
    Ok(Some(row))
}

/// Whether `url` is under an allowed prefix, and plain enough to compare by text: no
/// credentials, query, fragment, backslash or `..` segment that would make the prefix mean
/// something else than it reads.
fn url_allowed(allow: &[String], url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let plain = !authority.contains('@')
        && !url.contains(['?', '#', '\\', ' '])
        && !url
            .split('/')
            .any(|s| s == ".." || s == "." || s.eq_ignore_ascii_case("%2e%2e"));
    plain && url.len() <= 2048 && allow.iter().any(|p| url.starts_with(p.as_str()))
}

async fn resolve_url(state: &State, url: &str) -> Result<Option<ResolvedOrb>, Failure> {
    if !url_allowed(&state.orbs.url_allow, url) {
        return Err(Failure::Refused(format!(
            "URL orb {url} is not allowed: the server fetches URL orbs only under the prefixes \
             given with --url-orb-allow ({})",
            if state.orbs.url_allow.is_empty() {
                "none is".to_owned()
            } else {
                state.orbs.url_allow.join(", ")
            }
        )));
    }
    let now = now_ms();
    let cached = state.store.url_orb(url).await.map_err(db_failure)?;
    let found = |source: String| {
        Some(ResolvedOrb {
            reference: url.to_owned(),
            version: url.to_owned(),
            source,
        })
    };
    if let Some(row) = &cached {
        if now - row.fetched_at < LOOKUP_TTL.as_millis() as i64 {
            return Ok(found(row.source.clone()));
        }
    }
    match fetch_url(url).await {
        Ok(source) => {
            let row = UrlOrbRow {
                sha256: sha256_hex(&source),
                source,
                fetched_at: now,
            };
            if cached.as_ref().is_some_and(|c| c.sha256 != row.sha256) {
                tracing::info!(url = %url, "URL orb changed");
            }
            state
                .store
                .set_url_orb(url, &row)
                .await
                .map_err(db_failure)?;
            Ok(found(row.source))
        }
        Err(Fetched::Missing) => Ok(None),
        Err(Fetched::Failed(why)) => match cached {
            Some(row) => {
                tracing::warn!(url = %url, "fetching the URL orb failed ({why}); using the copy of {}", rfc3339(row.fetched_at));
                Ok(found(row.source))
            }
            None => Err(Failure::Unavailable(format!(
                "fetching URL orb {url}: {why}"
            ))),
        },
    }
}

enum Fetched {
    Missing,
    Failed(String),
}

async fn fetch_url(url: &str) -> Result<String, Fetched> {
    let split = url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j))
        .ok_or_else(|| Fetched::Failed("no path".into()))?;
    let (base, path) = url.split_at(split);
    let client = api::Client::with_timeouts(
        base,
        api::Timeouts {
            request: FETCH_TIMEOUT,
            idle: FETCH_TIMEOUT,
        },
    )
    .map_err(|e| Fetched::Failed(e.to_string()))?;
    match client
        .send(api::Method::GET, path, &api::Auth::None, None, None)
        .await
    {
        Ok(response) => {
            if response.body.len() > bosun_config::MAX_ORB_BYTES {
                return Err(Fetched::Failed(format!(
                    "larger than {} bytes",
                    bosun_config::MAX_ORB_BYTES
                )));
            }
            String::from_utf8(response.body.to_vec())
                .map_err(|_| Fetched::Failed("not UTF-8 text".into()))
        }
        Err(e) if e.status() == Some(api::StatusCode::NOT_FOUND) => Err(Fetched::Missing),
        Err(e) => Err(Fetched::Failed(e.to_string())),
    }
}

// ------------------------------------------------------------------------- GraphQL

#[derive(Deserialize)]
struct GraphqlRequest {
    query: String,
    #[serde(default)]
    variables: serde_json::Map<String, serde_json::Value>,
}

/// `POST /graphql-unstable`: the `orbVersion` query the `circleci` CLI sends to read an orb
/// (`orb source`, and orb resolution of `config process`), answered from this registry (and its
/// upstream). Other queries get a GraphQL error.
async fn graphql(
    StateExt(state): StateExt<State>,
    body: Bytes,
) -> AppResult<Json<serde_json::Value>> {
    let request: GraphqlRequest = serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request(format!("the body is not a GraphQL request: {e}")))?;
    if !request.query.contains("orbVersion") {
        return Ok(Json(serde_json::json!({
            "data": null,
            "errors": [{"message": "bosun answers only the orbVersion query of CircleCI's GraphQL API"}],
        })));
    }
    let reference = request
        .variables
        .get("orbVersionRef")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .or_else(|| inline_argument(&request.query, "orbVersionRef"));
    let Some(reference) = reference else {
        return Ok(Json(serde_json::json!({
            "data": null,
            "errors": [{"message": "orbVersion needs an orbVersionRef"}],
        })));
    };
    if OrbRef::parse(&reference).is_err() {
        return Ok(Json(serde_json::json!({
            "data": {"orbVersion": null},
            "errors": [{"message": format!("`{}` is not an orb reference", reference.chars().take(200).collect::<String>())}],
        })));
    }
    match resolve(&state, &reference).await {
        Ok(Some(orb)) => {
            let (name, version) = orb.version.split_once('@').unwrap_or((&orb.version, ""));
            Ok(Json(serde_json::json!({
                "data": {"orbVersion": {
                    "id": sha256_hex(&orb.version),
                    "version": version,
                    "orb": {"id": sha256_hex(name), "name": name},
                    "source": orb.source,
                }}
            })))
        }
        Ok(None) => Ok(Json(serde_json::json!({"data": {"orbVersion": null}}))),
        Err(err) => Ok(Json(serde_json::json!({
            "data": {"orbVersion": null},
            "errors": [{"message": err.message()}],
        }))),
    }
}

/// `name: "value"` written in the query itself.
fn inline_argument(query: &str, name: &str) -> Option<String> {
    let at = query.find(&format!("{name}:"))? + name.len() + 1;
    let rest = query[at..].trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_owned())
}

// ------------------------------------------------------------------------- pipelines

/// The orbs a configuration resolved, as stored with it.
pub fn recorded(orbs: &ResolvedOrbs) -> String {
    let list: Vec<api::ResolvedOrbRef> = orbs
        .iter()
        .map(|o| api::ResolvedOrbRef {
            reference: o.reference.clone(),
            version: o.version.clone(),
        })
        .collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_allow_list_compares_plain_urls_only() {
        let allow = vec!["https://raw.githubusercontent.com/mui/".to_owned()];
        assert!(url_allowed(
            &allow,
            "https://raw.githubusercontent.com/mui/x/orb.yml"
        ));
        for bad in [
            "https://raw.githubusercontent.com/other/orb.yml",
            "https://raw.githubusercontent.com/mui/../other/orb.yml",
            "https://raw.githubusercontent.com/mui/x/orb.yml?x=1",
            "https://user@raw.githubusercontent.com/mui/x.yml",
            "http://raw.githubusercontent.com/mui/x.yml",
            "ftp://raw.githubusercontent.com/mui/x.yml",
        ] {
            assert!(!url_allowed(&allow, bad), "{bad}");
        }
        assert!(!url_allowed(
            &[],
            "https://raw.githubusercontent.com/mui/x/orb.yml"
        ));
    }

    #[test]
    fn inline_arguments_are_read() {
        assert_eq!(
            inline_argument(
                r#"{ orbVersion(orbVersionRef: "circleci/node@7") { source } }"#,
                "orbVersionRef"
            ),
            Some("circleci/node@7".to_owned())
        );
        assert_eq!(
            inline_argument("{ orbVersion { source } }", "orbVersionRef"),
            None
        );
    }
}
