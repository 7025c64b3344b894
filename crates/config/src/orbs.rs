//! Orbs outside a config file: references and version specs, the orbs a config (or an orb)
//! imports, resolving them recursively through a registry the caller supplies, packing an orb's
//! source tree into one file, and validating a packed orb.
//!
//! The crate still fetches nothing: [`resolve_orbs`] asks its `fetch` callback for each
//! reference (the server looks in its registry and upstream, the CLI asks a server), and the
//! compiler reads the resulting [`ResolvedOrbs`] from [`crate::PipelineContext::orbs`].

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::ConfigError;
use crate::expand::{key_path, to_yaml};
use crate::yaml::{self, Limits, Mark, Node, ScalarStyle};

/// Deepest chain of orbs importing orbs ([`resolve_orbs`]).
pub const MAX_ORB_DEPTH: usize = 8;
/// Most orbs one config may resolve, imports included.
pub const MAX_RESOLVED_ORBS: usize = 200;
/// Largest orb source accepted anywhere (registry, upstream, URL, packing).
pub const MAX_ORB_BYTES: usize = 2 << 20;
/// Largest single file an `<<include(...)>>` may pull in.
const MAX_INCLUDE_BYTES: u64 = 1 << 20;

/// How a reference names its version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VersionSpec {
    /// `@X.Y.Z`: that version.
    Exact(u64, u64, u64),
    /// `@X.Y`: the highest `X.Y.*`.
    Minor(u64, u64),
    /// `@X`: the highest `X.*.*`.
    Major(u64),
    /// `@volatile`: the highest version.
    Volatile,
    /// `@dev:LABEL`: a mutable development version.
    Dev(String),
}

impl VersionSpec {
    /// Parses what follows the `@`.
    pub fn parse(text: &str) -> Option<VersionSpec> {
        if text == "volatile" {
            return Some(VersionSpec::Volatile);
        }
        if let Some(label) = text.strip_prefix("dev:") {
            let ok = !label.is_empty()
                && label.len() <= 100
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            return ok.then(|| VersionSpec::Dev(label.to_owned()));
        }
        let parts: Vec<&str> = text.split('.').collect();
        let num = |s: &str| -> Option<u64> {
            let ok = !s.is_empty()
                && s.len() <= 9
                && s.chars().all(|c| c.is_ascii_digit())
                && (s == "0" || !s.starts_with('0'));
            ok.then(|| s.parse().ok()).flatten()
        };
        match parts.as_slice() {
            [x] => Some(VersionSpec::Major(num(x)?)),
            [x, y] => Some(VersionSpec::Minor(num(x)?, num(y)?)),
            [x, y, z] => Some(VersionSpec::Exact(num(x)?, num(y)?, num(z)?)),
            _ => None,
        }
    }

    /// Whether the published version `version` (an exact `X.Y.Z`) satisfies this spec. Dev
    /// versions match only their own label ([`VersionSpec::Dev`] is looked up by name).
    pub fn matches(&self, version: (u64, u64, u64)) -> bool {
        match *self {
            VersionSpec::Exact(x, y, z) => version == (x, y, z),
            VersionSpec::Minor(x, y) => (version.0, version.1) == (x, y),
            VersionSpec::Major(x) => version.0 == x,
            VersionSpec::Volatile => true,
            VersionSpec::Dev(_) => false,
        }
    }

    /// Whether the spec names one version for ever (exact); others move as versions are
    /// published.
    pub fn is_exact(&self) -> bool {
        matches!(self, VersionSpec::Exact(..))
    }
}

impl std::fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionSpec::Exact(x, y, z) => write!(f, "{x}.{y}.{z}"),
            VersionSpec::Minor(x, y) => write!(f, "{x}.{y}"),
            VersionSpec::Major(x) => write!(f, "{x}"),
            VersionSpec::Volatile => f.write_str("volatile"),
            VersionSpec::Dev(label) => write!(f, "dev:{label}"),
        }
    }
}

/// A registry orb reference: `namespace/name@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrbRef {
    pub namespace: String,
    pub name: String,
    pub version: VersionSpec,
}

/// Whether `s` is a valid orb namespace or name: 1 to 100 lowercase letters, digits, `-` and
/// `_`, starting with a letter or digit.
pub fn is_orb_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl OrbRef {
    /// Parses `namespace/name@version`, with a message saying what is wrong.
    pub fn parse(text: &str) -> Result<OrbRef, String> {
        let shown: String = text.chars().take(200).collect();
        let Some((full, version)) = text.split_once('@') else {
            return Err(format!(
                "`{shown}` is not an orb reference like `namespace/name@1.2.3` (no version)"
            ));
        };
        let Some((namespace, name)) = full.split_once('/') else {
            return Err(format!(
                "`{shown}` is not an orb reference like `namespace/name@1.2.3` (no namespace)"
            ));
        };
        if !is_orb_name(namespace) || !is_orb_name(name) {
            return Err(format!(
                "`{shown}`: orb namespaces and names are lowercase letters, digits, `-` and `_`"
            ));
        }
        let Some(version) = VersionSpec::parse(version) else {
            return Err(format!(
                "`{shown}`: the version must be X.Y.Z, X.Y, X, volatile or dev:LABEL"
            ));
        };
        Ok(OrbRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            version,
        })
    }

    /// `namespace/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for OrbRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.namespace, self.name, self.version)
    }
}

/// Whether a reference is a URL orb (`https://host/path/orb.yml`).
pub fn is_url_orb(reference: &str) -> bool {
    reference.starts_with("https://") || reference.starts_with("http://")
}

/// One orb a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedOrb {
    /// The reference as written (`circleci/slack@4.12`, or a URL).
    pub reference: String,
    /// What it resolved to: `namespace/name@X.Y.Z` (or `@dev:LABEL`), or the URL. Errors in
    /// the orb name it as their file.
    pub version: String,
    /// The packed orb's YAML.
    pub source: String,
}

/// The orbs a config resolved, by reference as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedOrbs {
    orbs: BTreeMap<String, ResolvedOrb>,
}

impl ResolvedOrbs {
    pub fn new() -> ResolvedOrbs {
        ResolvedOrbs::default()
    }

    pub fn insert(&mut self, orb: ResolvedOrb) {
        self.orbs.insert(orb.reference.clone(), orb);
    }

    pub fn get(&self, reference: &str) -> Option<&ResolvedOrb> {
        self.orbs.get(reference)
    }

    pub fn len(&self) -> usize {
        self.orbs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orbs.is_empty()
    }

    /// The resolved orbs, by reference.
    pub fn iter(&self) -> impl Iterator<Item = &ResolvedOrb> {
        self.orbs.values()
    }

    /// What `circleci config process` prints before the processed config, one line per orb:
    /// `# Orb 'circleci/slack@4.12' resolved to 'circleci/slack@4.12.5'`.
    pub fn header(&self) -> String {
        self.orbs
            .values()
            .map(|o| format!("# Orb '{}' resolved to '{}'\n", o.reference, o.version))
            .collect()
    }

    /// The set as the context wants it.
    pub fn shared(self) -> Option<Arc<ResolvedOrbs>> {
        Some(Arc::new(self))
    }
}

/// An orb reference found in a file: the reference and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub reference: String,
    pub mark: Mark,
    pub path: String,
}

/// The registry and URL orbs `source` (a config, or a packed orb) imports: the string values
/// of its `orbs` map, and of the `orbs` maps of the inline orbs in it (but references written
/// with `<< pipeline.* >>`, which only the compiler can read).
pub fn orb_imports(source: &str, file: &str) -> Result<Vec<Import>, ConfigError> {
    let root = match yaml::parse(source, &Limits::DEFAULT) {
        Ok(Some(root)) => root,
        Ok(None) => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError {
                file: file.to_owned(),
                line: e.mark.line,
                column: e.mark.column,
                path: String::new(),
                message: e.message,
            });
        }
    };
    let mut out = Vec::new();
    collect_imports(&root, "", 0, &mut out);
    Ok(out)
}

fn collect_imports(node: &Node, path: &str, depth: usize, out: &mut Vec<Import>) {
    if depth > MAX_ORB_DEPTH {
        return; // The compiler refuses the nesting.
    }
    let Some(orbs) = node
        .as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("orbs")))
        .map(|(_, v)| v)
    else {
        return;
    };
    let orbs_path = key_path(path, "orbs");
    for (k, v) in orbs.as_map().unwrap_or_default() {
        let p = key_path(&orbs_path, k.as_str().unwrap_or(""));
        if v.as_map().is_some() {
            collect_imports(v, &p, depth + 1, out);
        } else if let Some(reference) = v.as_str().filter(|_| !v.is_null()) {
            if reference.contains("<<") {
                // A reference built from pipeline parameters is known only once the compiler
                // has substituted them; it refuses the orb then, naming the reference it got.
                continue;
            }
            out.push(Import {
                reference: reference.to_owned(),
                mark: v.mark(),
                path: p,
            });
        }
    }
}

/// Resolves every orb `source` imports, and the orbs those import, through `fetch`: given a
/// reference, it answers the orb (`Ok(Some)`), that there is none (`Ok(None)`: the compiler
/// refuses the config if the orb is used, naming it), or an error that fails the whole
/// resolution (a registry that cannot be reached). Imports nest at most [`MAX_ORB_DEPTH`] deep;
/// an orb importing itself, directly or not, is refused naming the cycle.
pub async fn resolve_orbs<F, Fut>(
    source: &str,
    file: &str,
    mut fetch: F,
) -> Result<ResolvedOrbs, ConfigError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<ResolvedOrb>, String>>,
{
    let mut resolved = ResolvedOrbs::new();
    let mut seen: HashSet<String> = HashSet::new();
    // (reference, where it is written, the chain of orbs that led to it)
    let mut queue: VecDeque<(Import, String, Vec<String>)> = VecDeque::new();
    let top = orb_imports(source, file)?;
    for import in top {
        queue.push_back((import, file.to_owned(), Vec::new()));
    }
    while let Some((import, in_file, chain)) = queue.pop_front() {
        let error = |message: String| ConfigError {
            file: in_file.clone(),
            line: import.mark.line,
            column: import.mark.column,
            path: import.path.clone(),
            message,
        };
        let identity = orb_identity(&import.reference);
        if chain.contains(&identity) {
            let mut shown = chain.clone();
            shown.push(identity);
            return Err(error(format!(
                "orb import cycle: {}",
                shown.join(" imports ")
            )));
        }
        if chain.len() >= MAX_ORB_DEPTH {
            return Err(error(format!(
                "orbs import orbs more than {MAX_ORB_DEPTH} deep: {} imports `{}`",
                chain.join(" imports "),
                import.reference
            )));
        }
        if !seen.insert(import.reference.clone()) {
            continue;
        }
        if seen.len() > MAX_RESOLVED_ORBS {
            return Err(error(format!(
                "the config resolves more than {MAX_RESOLVED_ORBS} orbs"
            )));
        }
        if !is_url_orb(&import.reference) {
            if let Err(message) = OrbRef::parse(&import.reference) {
                return Err(error(message));
            }
        }
        let Some(orb) = fetch(import.reference.clone()).await.map_err(&error)? else {
            continue;
        };
        if orb.source.len() > MAX_ORB_BYTES {
            return Err(error(format!(
                "orb `{}` is larger than {} bytes",
                orb.version, MAX_ORB_BYTES
            )));
        }
        // An orb that does not parse is refused by the compiler with its position.
        if let Ok(imports) = orb_imports(&orb.source, &orb.version) {
            let mut inner_chain = chain.clone();
            inner_chain.push(identity);
            for inner in imports {
                queue.push_back((inner, orb.version.clone(), inner_chain.clone()));
            }
        }
        resolved.insert(orb);
    }
    Ok(resolved)
}

/// What a cycle is detected on: `namespace/name` (any version), or the URL.
fn orb_identity(reference: &str) -> String {
    if is_url_orb(reference) {
        return reference.to_owned();
    }
    match reference.split_once('@') {
        Some((name, _)) => name.to_owned(),
        None => reference.to_owned(),
    }
}

// ------------------------------------------------------------------------- packing

/// The sections whose directories `pack` reads, one key per file.
const PACKED_SECTIONS: &[&str] = &["commands", "examples", "executors", "jobs"];

fn pack_error(file: &Path, mark: Mark, path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.display().to_string(),
        line: mark.line,
        column: mark.column,
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Packs an orb's source tree as `circleci orb pack` does: `@orb.yml` at the root; each
/// `.yml`/`.yaml` file of `commands/`, `examples/`, `executors/` and `jobs/` becomes a key of
/// that section named after the file; a value that is exactly `<<include(path)>>` becomes the
/// contents of that file (relative to `dir`, never outside it). Errors name the file and line.
pub fn pack(dir: &Path) -> Result<String, ConfigError> {
    let root_dir = dir.canonicalize().map_err(|e| {
        pack_error(
            dir,
            Mark::START,
            "",
            format!("reading the orb source directory: {e}"),
        )
    })?;
    let orb_file = root_dir.join("@orb.yml");
    let root = read_yaml(&orb_file)?
        .ok_or_else(|| pack_error(&orb_file, Mark::START, "", "`@orb.yml` is empty"))?;
    let Some(entries) = root.as_map() else {
        return Err(pack_error(
            &orb_file,
            root.mark(),
            "",
            format!("`@orb.yml` must be a map, found {}", root.describe()),
        ));
    };
    let mut entries: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
    for (k, v) in root.as_map().unwrap_or_default() {
        let p = key_path("", k.as_str().unwrap_or(""));
        entries.push((k.clone(), include(v, &root_dir, &orb_file, &p)?));
    }
    let mut total = 0usize;
    for section in PACKED_SECTIONS {
        let section_dir = root_dir.join(section);
        let listing = match std::fs::read_dir(&section_dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(pack_error(
                    &section_dir,
                    Mark::START,
                    "",
                    format!("reading {section}/: {e}"),
                ));
            }
        };
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| {
                pack_error(
                    &section_dir,
                    Mark::START,
                    "",
                    format!("reading {section}/: {e}"),
                )
            })?;
            let path = entry.path();
            let yaml_file = path.extension().is_some_and(|x| x == "yml" || x == "yaml");
            if yaml_file && entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            continue;
        }
        let position = entries
            .iter()
            .position(|(k, _)| k.as_str() == Some(section));
        let mut items: Vec<(Node, Node)> = match position {
            Some(i) => match entries[i].1.as_map() {
                Some(existing) => existing.to_vec(),
                None if entries[i].1.is_null() => Vec::new(),
                None => {
                    return Err(pack_error(
                        &orb_file,
                        entries[i].1.mark(),
                        section,
                        format!(
                            "`{section}` must be a map, found {}",
                            entries[i].1.describe()
                        ),
                    ));
                }
            },
            None => Vec::new(),
        };
        for file in files {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let p = key_path(section, &stem);
            if items.iter().any(|(k, _)| k.as_str() == Some(stem.as_str())) {
                return Err(pack_error(
                    &file,
                    Mark::START,
                    &p,
                    format!("`{section}.{stem}` is defined twice (another file or @orb.yml)"),
                ));
            }
            let node = read_yaml(&file)?.unwrap_or_else(|| {
                Node::new_scalar(Mark::START, String::new(), ScalarStyle::Plain)
            });
            let node = include(&node, &root_dir, &file, &p)?;
            total = total.saturating_add(node.weight() as usize);
            items.push((
                Node::new_scalar(Mark::START, stem, ScalarStyle::Plain),
                node,
            ));
        }
        let map = Node::new_map(Mark::START, items);
        match position {
            Some(i) => entries[i].1 = map,
            None => entries.push((
                Node::new_scalar(Mark::START, (*section).to_owned(), ScalarStyle::Plain),
                map,
            )),
        }
    }
    let packed = to_yaml(&Node::new_map(root.mark(), entries));
    let packed = packed.strip_prefix("---\n").unwrap_or(&packed).to_owned();
    if packed.len() > MAX_ORB_BYTES {
        return Err(pack_error(
            dir,
            Mark::START,
            "",
            format!("the packed orb is larger than {MAX_ORB_BYTES} bytes"),
        ));
    }
    Ok(packed)
}

fn read_yaml(file: &Path) -> Result<Option<Node>, ConfigError> {
    let text = read_bounded(file, MAX_ORB_BYTES as u64)
        .map_err(|message| pack_error(file, Mark::START, "", message))?;
    yaml::parse(&text, &Limits::DEFAULT).map_err(|e| pack_error(file, e.mark, "", e.message))
}

fn read_bounded(file: &Path, max: u64) -> Result<String, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let mut text = String::new();
    f.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading {}: {e}", file.display()))?;
    if text.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", file.display()));
    }
    Ok(text)
}

/// The path inside `<<include(path)>>`, when `value` is exactly that.
fn include_target(value: &str) -> Option<&str> {
    let inner = value.trim().strip_prefix("<<")?.strip_suffix(">>")?.trim();
    let inner = inner.strip_prefix("include")?.trim_start();
    let inner = inner.strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.trim())
}

/// `node` with every `<<include(path)>>` value replaced by that file's contents.
fn include(node: &Node, root: &Path, file: &Path, path: &str) -> Result<Node, ConfigError> {
    use crate::yaml::Kind;
    match node.kind() {
        Kind::Scalar(s) => {
            let Some(target) = include_target(&s.value) else {
                return Ok(node.clone());
            };
            let relative = Path::new(target);
            let inside = !target.is_empty()
                && relative
                    .components()
                    .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside {
                return Err(pack_error(
                    file,
                    node.mark(),
                    path,
                    format!(
                        "`<<include({target})>>`: includes name a file inside the orb's source \
                         directory, by a relative path without `..`"
                    ),
                ));
            }
            let full = root.join(relative);
            // A symlink could still point outside: compare where it really is.
            let real = full.canonicalize().map_err(|e| {
                pack_error(
                    file,
                    node.mark(),
                    path,
                    format!("`<<include({target})>>`: {e}"),
                )
            })?;
            if !real.starts_with(root) || !real.is_file() {
                return Err(pack_error(
                    file,
                    node.mark(),
                    path,
                    format!(
                        "`<<include({target})>>` is not a file inside the orb's source directory"
                    ),
                ));
            }
            let text = read_bounded(&real, MAX_INCLUDE_BYTES)
                .map_err(|message| pack_error(file, node.mark(), path, message))?;
            Ok(Node::new_scalar(node.mark(), text, ScalarStyle::Literal))
        }
        Kind::Seq(items) => {
            let items = items
                .iter()
                .enumerate()
                .map(|(i, item)| include(item, root, file, &format!("{path}[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Node::new_seq(node.mark(), items))
        }
        Kind::Map(entries) => {
            let entries = entries
                .iter()
                .map(|(k, v)| {
                    let p = key_path(path, k.as_str().unwrap_or(""));
                    include(v, root, file, &p).map(|v| (k.clone(), v))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Node::new_map(node.mark(), entries))
        }
    }
}

// ------------------------------------------------------------------------- validating

/// What a valid orb holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrbSummary {
    pub commands: usize,
    pub jobs: usize,
    pub executors: usize,
    pub examples: usize,
}

/// The keys an orb may have at its top level.
const ORB_KEYS: &[&str] = &[
    "version",
    "description",
    "display",
    "orbs",
    "commands",
    "executors",
    "jobs",
    "examples",
];

/// The reference a validated orb is known by while its elements are compiled.
const VALIDATED: &str = "bosun-validate/orb@0.0.0";

/// Checks a packed orb with the pipelines' compiler: its shape, then every job, command and
/// executor expanded and compiled as a config using it would (parameters without a default get
/// a placeholder of their type). `ctx` resolves the orbs it imports (`orbs` or `orb_dir`).
pub fn validate_orb(
    source: &str,
    file: &str,
    ctx: &crate::PipelineContext,
) -> Result<OrbSummary, ConfigError> {
    let err = |mark: Mark, path: &str, message: String| ConfigError {
        file: file.to_owned(),
        line: mark.line,
        column: mark.column,
        path: path.to_owned(),
        message,
    };
    if source.len() > MAX_ORB_BYTES {
        return Err(err(
            Mark::START,
            "",
            format!("the orb is larger than {MAX_ORB_BYTES} bytes"),
        ));
    }
    let root = match yaml::parse(source, &Limits::DEFAULT) {
        Ok(Some(root)) => root,
        Ok(None) => return Err(err(Mark::START, "", "the orb is empty".into())),
        Err(e) => return Err(err(e.mark, "", e.message)),
    };
    let Some(entries) = root.as_map() else {
        return Err(err(
            root.mark(),
            "",
            format!("an orb is a map, found {}", root.describe()),
        ));
    };
    let mut summary = OrbSummary::default();
    let mut version_seen = false;
    let mut jobs: Vec<(String, Option<Node>)> = Vec::new();
    let mut commands: Vec<(String, Option<Node>)> = Vec::new();
    let mut executors: Vec<(String, Option<Node>)> = Vec::new();
    for (k, v) in entries {
        let key = k.as_str().unwrap_or("");
        let p = key_path("", key);
        if !ORB_KEYS.contains(&key) {
            return Err(err(
                k.mark(),
                &p,
                format!(
                    "`{key}` is not an orb key (an orb has {})",
                    ORB_KEYS
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        match key {
            "version" => {
                version_seen = true;
                if v.as_str() != Some("2.1") {
                    return Err(err(
                        v.mark(),
                        &p,
                        "an orb's `version` must be 2.1".to_owned(),
                    ));
                }
            }
            "description" if v.as_scalar().is_none() => {
                return Err(err(
                    v.mark(),
                    &p,
                    format!("expected a string, found {}", v.describe()),
                ));
            }
            "display" => {
                for (dk, dv) in v.as_map().unwrap_or_default() {
                    let dkey = dk.as_str().unwrap_or("");
                    let dp = key_path(&p, dkey);
                    if !["home_url", "source_url"].contains(&dkey) || dv.as_scalar().is_none() {
                        return Err(err(
                            dk.mark(),
                            &dp,
                            "`display` has `home_url` and `source_url` strings".to_owned(),
                        ));
                    }
                }
            }
            "commands" | "executors" | "jobs" | "examples" => {
                let Some(items) = v.as_map() else {
                    if v.is_null() {
                        continue;
                    }
                    return Err(err(
                        v.mark(),
                        &p,
                        format!("expected a map, found {}", v.describe()),
                    ));
                };
                for (name, def) in items {
                    let n = name.as_str().unwrap_or("").to_owned();
                    let dp = key_path(&p, &n);
                    if def.as_map().is_none() {
                        return Err(err(
                            def.mark(),
                            &dp,
                            format!("expected a map, found {}", def.describe()),
                        ));
                    }
                    let params = def
                        .as_map()
                        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("parameters")))
                        .map(|(_, v)| v.clone());
                    match key {
                        "commands" => commands.push((n, params)),
                        "executors" => executors.push((n, params)),
                        "jobs" => jobs.push((n, params)),
                        _ => check_example(def, &dp, &err)?,
                    }
                }
                match key {
                    "commands" => summary.commands = items.len(),
                    "executors" => summary.executors = items.len(),
                    "jobs" => summary.jobs = items.len(),
                    _ => summary.examples = items.len(),
                }
            }
            // "orbs": resolved and checked by the compiler below.
            _ => {}
        }
    }
    if !version_seen {
        return Err(err(
            root.mark(),
            "",
            "an orb needs `version: 2.1`".to_owned(),
        ));
    }
    // A config that uses every element, compiled with the orb as `o`.
    let first_executor = executors.first().map(|(n, _)| format!("o/{n}"));
    let args = |params: &Option<Node>| -> serde_json::Map<String, serde_json::Value> {
        placeholders(params.as_ref(), first_executor.as_deref())
    };
    let mut config_jobs = serde_json::Map::new();
    let mut workflow = Vec::new();
    config_jobs.insert(
        "validate-orb".into(),
        serde_json::json!({"machine": true, "steps": [{"run": "true"}]}),
    );
    workflow.push(serde_json::json!("validate-orb"));
    for (i, (name, params)) in commands.iter().enumerate() {
        let job = format!("validate-command-{i}");
        let mut step = serde_json::Map::new();
        step.insert(format!("o/{name}"), serde_json::Value::Object(args(params)));
        config_jobs.insert(
            job.clone(),
            serde_json::json!({"machine": true, "steps": [step]}),
        );
        workflow.push(serde_json::json!(job));
    }
    for (i, (name, params)) in executors.iter().enumerate() {
        let job = format!("validate-executor-{i}");
        let mut executor = args(params);
        executor.insert("name".into(), serde_json::json!(format!("o/{name}")));
        config_jobs.insert(
            job.clone(),
            serde_json::json!({"executor": executor, "steps": [{"run": "true"}]}),
        );
        workflow.push(serde_json::json!(job));
    }
    for (i, (name, params)) in jobs.iter().enumerate() {
        let mut entry = args(params);
        entry.insert(
            "name".into(),
            serde_json::json!(format!("validate-job-{i}")),
        );
        let mut item = serde_json::Map::new();
        item.insert(format!("o/{name}"), serde_json::Value::Object(entry));
        workflow.push(serde_json::Value::Object(item));
    }
    let config = serde_json::json!({
        "version": 2.1,
        "orbs": {"o": VALIDATED},
        "jobs": config_jobs,
        "workflows": {"validate": {"jobs": workflow}},
    });
    let mut orbs = ctx.orbs.as_deref().cloned().unwrap_or_default();
    orbs.insert(ResolvedOrb {
        reference: VALIDATED.to_owned(),
        version: file.to_owned(),
        source: source.to_owned(),
    });
    let ctx = crate::PipelineContext {
        orbs: orbs.shared(),
        ..ctx.clone()
    };
    let config_file = format!("{file} (as used by a config)");
    crate::compile_pipeline(&config.to_string(), &config_file, &ctx)?;
    Ok(summary)
}

fn check_example(
    def: &Node,
    path: &str,
    err: &dyn Fn(Mark, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for (k, v) in def.as_map().unwrap_or_default() {
        let key = k.as_str().unwrap_or("");
        let p = key_path(path, key);
        match key {
            "description" => {}
            "usage" | "result" => {
                if v.as_map().is_none() {
                    return Err(err(
                        v.mark(),
                        &p,
                        format!("expected a map (a config), found {}", v.describe()),
                    ));
                }
            }
            _ => {
                return Err(err(
                    k.mark(),
                    &p,
                    format!("`{key}` is not an example key (`description`, `usage`, `result`)"),
                ));
            }
        }
    }
    Ok(())
}

/// Arguments for every parameter without a default: a value of its type.
fn placeholders(
    params: Option<&Node>,
    executor: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (k, decl) in params.and_then(Node::as_map).unwrap_or_default() {
        let Some(decl) = decl.as_map() else {
            continue; // The compiler refuses the declaration.
        };
        let field = |name: &str| decl.iter().find(|(k, _)| k.as_str() == Some(name));
        if field("default").is_some() {
            continue;
        }
        let value = match field("type").and_then(|(_, t)| t.as_str()) {
            Some("boolean") => serde_json::json!(false),
            Some("integer") => serde_json::json!(0),
            Some("enum") => match field("enum")
                .and_then(|(_, e)| e.as_seq())
                .and_then(|e| e.first())
                .and_then(Node::as_str)
            {
                Some(first) => serde_json::json!(first),
                None => continue,
            },
            Some("steps") => serde_json::json!([]),
            Some("executor") => match executor {
                Some(e) => serde_json::json!(e),
                None => continue,
            },
            Some("env_var_name") => serde_json::json!("PLACEHOLDER"),
            _ => serde_json::json!("placeholder"),
        };
        out.insert(k.as_str().unwrap_or("").to_owned(), value);
    }
    out
}
