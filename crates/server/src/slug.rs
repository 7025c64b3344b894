//! Project slugs as CircleCI's clients write them: `vcs/org/repo`, where the vcs part has a
//! long and a short name (`github` is `gh`, `bitbucket` is `bb`, `gitlab` is `gl`), and the
//! whole slug may come URL-escaped as one path segment (`gh%2Facme%2Fwidgets`), which
//! CircleCI's API v2 documents for its `{project-slug}` parameters.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// The vcs aliases: a slug is stored and looked up with the short form.
const ALIASES: &[(&str, &str)] = &[("github", "gh"), ("bitbucket", "bb"), ("gitlab", "gl")];

/// `slug` with its vcs part in the short form (`github/acme/x` -> `gh/acme/x`); other slugs
/// (`gh/…`, `circleci/…`, bosun's `local/…`) as they are.
pub fn canonical(slug: &str) -> String {
    let (vcs, rest) = match slug.split_once('/') {
        Some(parts) => parts,
        None => return slug.to_owned(),
    };
    let lower = vcs.to_ascii_lowercase();
    match ALIASES.iter().find(|(long, _)| *long == lower) {
        Some((_, short)) => format!("{short}/{rest}"),
        None => slug.to_owned(),
    }
}

/// The organization id CircleCI's shapes want (a UUID) for a namespace: a name-based UUID
/// (v5), the same on every server and every start, so no table keeps it.
pub fn organization_id(namespace: &str) -> String {
    /// bosun's own UUID namespace for organization ids.
    const ORGANIZATIONS: uuid::Uuid =
        uuid::Uuid::from_u128(0x6f1c_2b7e_4d3a_5e21_9b8c_0a1d_2e3f_4a5b);
    uuid::Uuid::new_v5(&ORGANIZATIONS, namespace.as_bytes()).to_string()
}

/// CircleCI's `vcs_info.provider` for a slug: `GitHub` (`gh/`), `Bitbucket` (`bb/`), else
/// `CircleCI` (its own, standalone projects).
pub fn provider(slug: &str) -> &'static str {
    match slug.split('/').next().unwrap_or_default() {
        "gh" => "GitHub",
        "bb" => "Bitbucket",
        _ => "CircleCI",
    }
}

/// The VCS a slug's prefix names, as v1.1 and collaborations spell it (`vcs_type`,
/// `vcs-type`): `github`, `bitbucket`, `gitlab`, else the prefix as it is.
pub fn vcs_type(vcs: &str) -> &str {
    match vcs {
        "gh" | "github" => "github",
        "bb" | "bitbucket" => "bitbucket",
        "gl" | "gitlab" => "gitlab",
        other => other,
    }
}

/// Route prefixes whose next path segment is a project slug.
const SLUG_PREFIXES: &[&str] = &["/api/v2/project/"];

/// The path with an escaped slug segment after a project prefix opened into its three parts
/// (`/api/v2/project/gh%2Facme%2Fwidgets/envvar` -> `/api/v2/project/gh/acme/widgets/envvar`);
/// `None` when there is nothing to open.
pub fn open_escaped_slug(path: &str) -> Option<String> {
    let prefix = SLUG_PREFIXES.iter().find(|p| path.starts_with(**p))?;
    let rest = &path[prefix.len()..];
    let (segment, tail) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let lower = segment.to_ascii_lowercase();
    if lower.matches("%2f").count() != 2 {
        return None;
    }
    // Only the separators are opened; every other escape stays for the router to decode.
    let mut opened = String::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        if lower[i..].starts_with("%2f") {
            opened.push('/');
            i += 3;
        } else {
            let c = segment[i..].chars().next()?;
            opened.push(c);
            i += c.len_utf8();
        }
    }
    Some(format!("{prefix}{opened}{tail}"))
}

/// Middleware, run before routing: opens an escaped slug so the `{vcs}/{org}/{repo}` routes
/// match it.
pub async fn open_escaped_slugs(mut request: Request, next: Next) -> Response {
    if let Some(path) = open_escaped_slug(request.uri().path()) {
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(value) = path_and_query.parse() {
            parts.path_and_query = Some(value);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_vcs_names_become_short_ones() {
        assert_eq!(canonical("github/acme/x"), "gh/acme/x");
        assert_eq!(canonical("Bitbucket/acme/x"), "bb/acme/x");
        assert_eq!(canonical("gitlab/acme/x"), "gl/acme/x");
        assert_eq!(canonical("gh/acme/x"), "gh/acme/x");
        assert_eq!(canonical("local/acme/x"), "local/acme/x");
        assert_eq!(canonical("circleci/abc/def"), "circleci/abc/def");
    }

    #[test]
    fn an_escaped_slug_segment_opens_into_three() {
        assert_eq!(
            open_escaped_slug("/api/v2/project/gh%2Facme%2Fwidgets/envvar").as_deref(),
            Some("/api/v2/project/gh/acme/widgets/envvar")
        );
        assert_eq!(
            open_escaped_slug("/api/v2/project/github%2fAcme%2fw%20x").as_deref(),
            Some("/api/v2/project/github/Acme/w%20x")
        );
        assert_eq!(open_escaped_slug("/api/v2/project/gh/acme/widgets"), None);
        assert_eq!(open_escaped_slug("/api/v2/pipeline/gh%2Fa%2Fb"), None);
        assert_eq!(open_escaped_slug("/api/v2/project/a%2Fb"), None);
    }
}
