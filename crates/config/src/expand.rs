//! CircleCI 2.1 processing: from the config as written to a 2.0-style config.
//!
//! This is what `circleci config process` does: pipeline values and parameters are substituted,
//! orbs (inline or vendored), `commands` and `executors` are expanded in place, `when`/`unless`
//! steps and workflow `when`/`unless` are decided, `matrix` jobs are generated, and every job a
//! workflow runs becomes a concrete job with its parameters bound. The result is a YAML tree
//! with only `version`, `jobs` and `workflows`, which [`crate::compile`] then validates.
//!
//! Branch and tag `filters` stay in the output (CircleCI evaluates them when a pipeline runs);
//! the compiler applies them to the [`PipelineContext`].
//!
//! Work is bounded: command invocations nest at most [`MAX_INVOCATION_DEPTH`] deep, a matrix
//! generates at most [`MAX_MATRIX_JOBS`] jobs, and the output holds at most [`MAX_OUTPUT_NODES`]
//! nodes, so a small config cannot expand into an unbounded one.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use crate::ConfigError;
use crate::yaml::{self, Kind, Limits, Mark, Node, ScalarStyle};

/// Deepest nesting of command invocations (a command whose steps invoke a command ...).
pub const MAX_INVOCATION_DEPTH: usize = 32;
/// Most jobs one `matrix` may generate.
pub const MAX_MATRIX_JOBS: usize = 1000;
/// Most nodes the processed config may hold.
pub const MAX_OUTPUT_NODES: u64 = 4_000_000;

/// What a pipeline knows when its config is compiled: the values of `<< pipeline.* >>`, the
/// pipeline parameters, what branch/tag filters are checked against, and where vendored orbs
/// live.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineContext {
    /// Pipeline parameter values (`<< pipeline.parameters.x >>`), as given when triggering.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// `<< pipeline.git.branch >>`; with `tag` also what `filters` are checked against. When
    /// both are `None`, filters and scheduled `triggers` are not applied.
    pub branch: Option<String>,
    /// `<< pipeline.git.tag >>`.
    pub tag: Option<String>,
    /// `<< pipeline.git.revision >>`.
    pub revision: Option<String>,
    /// `<< pipeline.number >>`.
    pub number: Option<u64>,
    /// `<< pipeline.id >>`.
    pub id: Option<String>,
    /// `<< pipeline.project.git_url >>`.
    pub git_url: Option<String>,
    /// `<< pipeline.trigger_source >>` (`api`, `webhook`, `scheduled_pipeline`, ...).
    pub trigger_source: Option<String>,
    /// `<< pipeline.project.slug >>` (`gh/org/repo`).
    pub project_slug: Option<String>,
    /// A directory of vendored orbs: `namespace/name@version.yml` for each registry orb used.
    pub orb_dir: Option<PathBuf>,
    /// Orbs resolved through a registry ([`crate::resolve_orbs`]), by reference as written.
    /// When set, an orb it lacks is refused as "orb not in registry".
    pub orbs: Option<std::sync::Arc<crate::ResolvedOrbs>>,
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Built-in steps: kept as they are, validated by the compiler.
pub(crate) const BUILTIN_STEPS: &[&str] = &[
    "run",
    "checkout",
    "save_cache",
    "restore_cache",
    "persist_to_workspace",
    "attach_workspace",
    "store_artifacts",
    "store_test_results",
    "add_ssh_keys",
    "setup_remote_docker",
    "deploy",
];

/// The types a parameter may declare.
const PARAM_TYPES: &[&str] = &[
    "string",
    "boolean",
    "integer",
    "enum",
    "steps",
    "executor",
    "env_var_name",
];

/// Attributes of a workflow job entry that are not job parameters.
const ENTRY_KEYS: &[&str] = &[
    "requires",
    "name",
    "context",
    "filters",
    "matrix",
    "type",
    "pre-steps",
    "post-steps",
    "serial-group",
    "override-with",
];

/// A parameter value.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    /// A sequence of steps.
    Steps(Node),
    /// An executor: a name or a map with `name` and arguments.
    Executor(Node),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Steps(_) => "steps",
            Value::Executor(_) => "executor",
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Steps(_) | Value::Executor(_) => None,
        }
    }

    fn node(&self, mark: Mark) -> Node {
        match self {
            Value::Str(s) => Node::new_scalar(mark, s.clone(), ScalarStyle::DoubleQuoted),
            Value::Bool(b) => Node::new_scalar(mark, b.to_string(), ScalarStyle::Plain),
            Value::Int(i) => Node::new_scalar(mark, i.to_string(), ScalarStyle::Plain),
            Value::Steps(n) | Value::Executor(n) => n.clone(),
        }
    }
}

/// A generated workflow entry: job key in `jobs`, entry name, attributes, position.
type Generated = (String, String, Vec<(Node, Node)>, Mark);

/// A workflow entry of the output: generated, or kept as written for the compiler to refuse.
enum Pending {
    Job(Generated),
    Raw(Node),
}

/// Where a workflow entry of the processed config is written in the source: its list item,
/// the entry (`item.job` in the map form) and each of its `requires`. Matrices and
/// parameterized jobs change entries' indices and keys; the compiler names the source paths.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntrySource {
    pub(crate) item: String,
    pub(crate) entry: String,
    pub(crate) requires: Vec<String>,
}

/// For each workflow, where each of its processed entries is written.
pub(crate) type Sources = HashMap<String, Vec<EntrySource>>;

/// An executor resolved for a job: its keys, its full name, and the orb defining it.
type ResolvedExecutor = (Vec<(Node, Node)>, String, Option<String>);

/// Concrete jobs of the output: key, where the job's name is written, body.
type JobsOut = Vec<(String, (Mark, Node))>;

/// A reusable element (command, executor or job), with where it was defined.
#[derive(Debug, Clone)]
struct Def {
    node: Node,
    /// Where its name is written.
    key_mark: Mark,
    path: String,
    file: String,
    /// `orb/` for an orb's elements (unqualified names inside resolve there first), else "".
    scope: String,
}

#[derive(Default)]
struct Defs {
    commands: HashMap<String, Def>,
    executors: HashMap<String, Def>,
    jobs: HashMap<String, Def>,
}

impl Defs {
    fn find<'a>(
        map: &'a HashMap<String, Def>,
        scope: &str,
        name: &str,
    ) -> Option<(&'a Def, String)> {
        if !scope.is_empty() {
            let scoped = format!("{scope}{name}");
            if let Some(d) = map.get(&scoped) {
                return Some((d, scoped));
            }
        }
        map.get(name).map(|d| (d, name.to_owned()))
    }
}

/// How `<< ... >>` references are resolved in one substitution.
enum Lookup<'a> {
    /// `<< pipeline.* >>`.
    Pipeline(&'a HashMap<String, Value>),
    /// `<< parameters.* >>` of a job, command or executor.
    Parameters(&'a HashMap<String, Value>),
    /// `<< matrix.* >>`.
    Matrix(&'a HashMap<String, Value>),
}

impl Lookup<'_> {
    /// `None`: not a reference of this kind, leave it as written.
    fn get(&self, reference: &str) -> Option<std::result::Result<Value, String>> {
        let (prefix, values, what) = match self {
            Lookup::Pipeline(v) => ("pipeline.", *v, "pipeline value"),
            Lookup::Parameters(v) => ("parameters.", *v, "parameter"),
            Lookup::Matrix(v) => ("matrix.", *v, "matrix parameter"),
        };
        let name = reference.strip_prefix(prefix)?;
        Some(match values.get(name) {
            Some(v) => Ok(v.clone()),
            None if matches!(self, Lookup::Pipeline(_)) && name.starts_with("parameters.") => {
                // An undeclared pipeline parameter: list the declared ones, not every value.
                let mut declared: Vec<String> = values
                    .keys()
                    .filter_map(|k| k.strip_prefix("parameters."))
                    .map(|k| format!("`{k}`"))
                    .collect();
                declared.sort_unstable();
                let declared = if declared.is_empty() {
                    "the config declares no `parameters`".to_owned()
                } else {
                    format!("declared: {}", declared.join(", "))
                };
                Err(format!(
                    "unknown pipeline parameter `{reference}` ({declared})"
                ))
            }
            None => {
                let mut known: Vec<&str> = values.keys().map(String::as_str).collect();
                known.sort_unstable();
                let known = if known.is_empty() {
                    "none are declared here".to_owned()
                } else {
                    format!(
                        "known: {}",
                        known
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                Err(format!("unknown {what} `{reference}` ({known})"))
            }
        })
    }
}

/// The processed document, and how many workflows `when`/`unless` left out.
pub(crate) struct Expanded {
    pub(crate) root: Node,
    pub(crate) dropped_workflows: usize,
    pub(crate) sources: Sources,
    /// Where each job of the output came from, by its key.
    pub(crate) origins: BTreeMap<String, JobOrigin>,
}

/// Where a job of the processed config came from: the orb defining it, and the executor it
/// named (with the orb defining that). `None`s for the config's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobOrigin {
    pub(crate) orb: Option<String>,
    pub(crate) executor: Option<String>,
    pub(crate) executor_orb: Option<String>,
}

pub(crate) struct Expander<'a> {
    file: &'a str,
    dropped: Cell<usize>,
    ctx: &'a PipelineContext,
    limits: &'a Limits,
    pipeline: HashMap<String, Value>,
    defs: Defs,
    produced: Cell<u64>,
    version_21: bool,
    /// The origin of the job [`Expander::job`] expanded last, until its key is known.
    last_origin: std::cell::RefCell<JobOrigin>,
    origins: std::cell::RefCell<BTreeMap<String, JobOrigin>>,
}

/// `parent.key`.
pub(crate) fn key_path(parent: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if simple {
        key.to_owned()
    } else {
        serde_json::to_string(key).unwrap_or_else(|_| String::from("\"?\""))
    };
    if parent.is_empty() {
        key
    } else if simple {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{key}]")
    }
}

fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn key_str(key: &Node) -> &str {
    key.as_str().unwrap_or("")
}

fn get<'n>(entries: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    entries
        .iter()
        .find(|(k, _)| key_str(k) == key)
        .map(|(_, v)| v)
}

fn scalar_key(mark: Mark, key: &str) -> Node {
    Node::new_scalar(mark, key.to_owned(), ScalarStyle::Plain)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compiles a CircleCI `/regex/` or `matches` pattern; the whole text must match.
pub(crate) fn full_regex(pattern: &str) -> std::result::Result<regex_lite::Regex, String> {
    regex_lite::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("invalid regular expression `{pattern}`: {e}"))
}

/// Whether two nodes are equal as values (scalars by text, so `main` equals `"main"`).
fn same_value(a: &Node, b: &Node) -> bool {
    match (a.kind(), b.kind()) {
        (Kind::Scalar(x), Kind::Scalar(y)) => {
            x.value == y.value || (x.is_null() && y.is_null()) || bools_equal(a, b)
        }
        (Kind::Seq(x), Kind::Seq(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        (Kind::Map(x), Kind::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| get(y, key_str(k)).is_some_and(|w| same_value(v, w)))
        }
        _ => false,
    }
}

fn bools_equal(a: &Node, b: &Node) -> bool {
    let x = a.as_scalar().and_then(|s| s.as_bool());
    x.is_some() && x == b.as_scalar().and_then(|s| s.as_bool())
}

impl<'a> Expander<'a> {
    pub(crate) fn new(file: &'a str, ctx: &'a PipelineContext, limits: &'a Limits) -> Self {
        Expander {
            file,
            dropped: Cell::new(0),
            ctx,
            limits,
            pipeline: HashMap::new(),
            defs: Defs::default(),
            produced: Cell::new(0),
            version_21: false,
            last_origin: Default::default(),
            origins: Default::default(),
        }
    }

    /// Files the origin of the job expanded last under its key in the output.
    fn record_origin(&self, key: &str) {
        let origin = self.last_origin.take();
        self.origins.borrow_mut().insert(key.to_owned(), origin);
    }

    /// The orb a definition comes from: its file, when that is not the config (inline orbs
    /// are written in the config).
    fn orb_of(&self, def: &Def) -> Option<String> {
        (!def.scope.is_empty() && def.file != self.file).then(|| def.file.clone())
    }

    fn error_in(
        &self,
        file: &str,
        mark: Mark,
        path: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            line: mark.line,
            column: mark.column,
            path: path.to_owned(),
            message: message.into(),
        }
    }

    fn error(&self, mark: Mark, path: &str, message: impl Into<String>) -> ConfigError {
        self.error_in(self.file, mark, path, message)
    }

    fn map<'n>(&self, file: &str, node: &'n Node, path: &str) -> Result<&'n [(Node, Node)]> {
        node.as_map().ok_or_else(|| {
            self.error_in(
                file,
                node.mark(),
                path,
                format!("expected a map, found {}", node.describe()),
            )
        })
    }

    fn budget(&self, node: &Node, file: &str, path: &str) -> Result<()> {
        let total = self.produced.get().saturating_add(node.weight());
        self.produced.set(total);
        if total > MAX_OUTPUT_NODES {
            return Err(self.error_in(
                file,
                node.mark(),
                path,
                format!(
                    "the processed config grows past {MAX_OUTPUT_NODES} nodes; refusing to \
                     expand it further (do commands or matrices multiply each other?)"
                ),
            ));
        }
        Ok(())
    }

    /// Processes the whole document. `root` is a map (checked by the caller).
    pub(crate) fn expand(mut self, root: &Node) -> Result<Expanded> {
        let entries = self.map(self.file, root, "")?;
        let version_21 = get(entries, "version")
            .and_then(Node::as_str)
            .is_some_and(|v| v == "2.1");
        self.version_21 = version_21;
        // Dynamic configuration: a setup config runs its workflows, whose jobs continue the
        // pipeline with a generated config (`POST /api/v2/pipeline/continue`).
        let mut setup = false;
        if let Some((_, v)) = entries.iter().find(|(k, _)| key_str(k) == "setup") {
            match v.as_scalar().and_then(|s| s.as_bool()) {
                Some(b) => setup = b,
                None => {
                    return Err(self.error(
                        v.mark(),
                        "setup",
                        format!("`setup` must be `true` or `false`, found {}", v.describe()),
                    ));
                }
            }
        }
        // Pipeline values and parameters, substituted everywhere first.
        self.pipeline = self.pipeline_values();
        self.pipeline
            .insert("in_setup".to_owned(), Value::Bool(setup));
        if let Some(defs) = get(entries, "parameters") {
            let args: Vec<(Node, Node)> = self
                .ctx
                .parameters
                .iter()
                .map(|(k, v)| (scalar_key(Mark::START, k), json_node(v)))
                .collect();
            let params = self.bind(
                self.file,
                Some((defs, "parameters")),
                &args,
                defs.mark(),
                "parameters",
                "the pipeline",
                None,
            )?;
            for (k, v) in params {
                self.pipeline.insert(format!("parameters.{k}"), v);
            }
        } else if let Some(name) = self.ctx.parameters.keys().next() {
            return Err(self.error(
                root.mark(),
                "",
                format!(
                    "pipeline parameter `{name}` was given, but the config declares no \
                     `parameters`"
                ),
            ));
        }
        let pipeline = std::mem::take(&mut self.pipeline);
        let root = if version_21 {
            self.subst(root, &Lookup::Pipeline(&pipeline), self.file, "")?
        } else {
            root.clone()
        };
        self.pipeline = pipeline;
        let entries = self.map(self.file, &root, "")?;

        if let Some(orbs) = get(entries, "orbs") {
            self.orbs(orbs, &root)?;
        }
        for (section, key) in [("commands", 0), ("executors", 1), ("jobs", 2)] {
            if let Some(node) = get(entries, section) {
                let Some(items) = node.as_map() else {
                    // The compiler reports `jobs` of the wrong shape.
                    continue;
                };
                for (k, v) in items {
                    let def = Def {
                        node: v.clone(),
                        key_mark: k.mark(),
                        path: key_path(section, key_str(k)),
                        file: self.file.to_owned(),
                        scope: String::new(),
                    };
                    let map = match key {
                        0 => &mut self.defs.commands,
                        1 => &mut self.defs.executors,
                        _ => &mut self.defs.jobs,
                    };
                    map.insert(key_str(k).to_owned(), def);
                }
            }
        }

        let mut out: Vec<(Node, Node)> = Vec::new();
        out.push((
            scalar_key(Mark::START, "version"),
            Node::new_scalar(Mark::START, "2".to_owned(), ScalarStyle::Plain),
        ));
        if setup {
            out.push((
                scalar_key(Mark::START, "setup"),
                Node::new_scalar(Mark::START, "true".to_owned(), ScalarStyle::Plain),
            ));
        }
        let mut jobs_out: Vec<(String, (Mark, Node))> = Vec::new();
        let mut sources = Sources::new();
        let jobs_entry = entries.iter().find(|(k, _)| key_str(k) == "jobs");
        match get(entries, "workflows") {
            Some(wf) => {
                let workflows;
                (workflows, sources) = self.workflows(wf, &mut jobs_out)?;
                // Jobs no workflow runs are kept (and checked) when they take no parameters,
                // unless a workflow was left out by `when`/`unless` (its jobs stay out too).
                if self.dropped.get() == 0 {
                    if let Some(jobs) = jobs_entry.and_then(|(_, v)| v.as_map()) {
                        for (k, _) in jobs {
                            let name = key_str(k);
                            let Some(def) = self.defs.jobs.get(name) else {
                                continue;
                            };
                            let takes_parameters = def
                                .node
                                .as_map()
                                .is_some_and(|m| get(m, "parameters").is_some());
                            if takes_parameters || jobs_out.iter().any(|(n, _)| n == name) {
                                continue;
                            }
                            let path = key_path("jobs", name);
                            let job = self.job(def, name, &[], None, k.mark(), &path)?;
                            self.record_origin(name);
                            jobs_out.push((name.to_owned(), (k.mark(), job)));
                        }
                    }
                }
                let jobs_mark = jobs_entry.map_or(Mark::START, |(k, _)| k.mark());
                if jobs_out.is_empty() && self.dropped.get() == 0 {
                    if let Some((k, v)) = jobs_entry {
                        // No workflow runs a job: keep `jobs` for the compiler's checks.
                        out.push((k.clone(), v.clone()));
                    }
                } else {
                    out.push((
                        scalar_key(jobs_mark, "jobs"),
                        Node::new_map(
                            jobs_mark,
                            jobs_out
                                .into_iter()
                                .map(|(k, (m, v))| (scalar_key(m, &k), v))
                                .collect(),
                        ),
                    ));
                }
                out.push((scalar_key(wf.mark(), "workflows"), workflows));
            }
            None => {
                // Without workflows the job `build` runs; jobs without parameters are kept.
                match jobs_entry {
                    Some((k, v)) if self.defs.jobs.contains_key("build") => {
                        let mut jobs = Vec::new();
                        for (name_node, _) in v.as_map().unwrap_or(&[]) {
                            let name = key_str(name_node);
                            let Some(def) = self.defs.jobs.get(name) else {
                                continue;
                            };
                            let takes_parameters = def
                                .node
                                .as_map()
                                .is_some_and(|m| get(m, "parameters").is_some());
                            if takes_parameters && name != "build" {
                                continue;
                            }
                            let path = key_path("jobs", name);
                            let job = self.job(def, name, &[], None, name_node.mark(), &path)?;
                            self.record_origin(name);
                            jobs.push((name_node.clone(), job));
                        }
                        out.push((k.clone(), Node::new_map(v.mark(), jobs)));
                    }
                    Some((k, v)) => out.push((k.clone(), v.clone())),
                    None => {}
                }
            }
        }
        let root = Node::new_map(root.mark(), out);
        let root = if version_21 {
            unescape(&root).unwrap_or(root)
        } else {
            root
        };
        Ok(Expanded {
            root,
            dropped_workflows: self.dropped.get(),
            sources,
            origins: self.origins.take(),
        })
    }

    fn pipeline_values(&self) -> HashMap<String, Value> {
        let c = self.ctx;
        let s = |v: &Option<String>| Value::Str(v.clone().unwrap_or_default());
        HashMap::from([
            ("id".to_owned(), s(&c.id)),
            (
                "number".to_owned(),
                Value::Int(c.number.unwrap_or(0) as i64),
            ),
            ("git.branch".to_owned(), s(&c.branch)),
            ("git.tag".to_owned(), s(&c.tag)),
            ("git.revision".to_owned(), s(&c.revision)),
            ("git.base_revision".to_owned(), Value::Str(String::new())),
            ("project.git_url".to_owned(), s(&c.git_url)),
            // CircleCI's VCS type for the slug's prefix (orbs check it against `gh`, `github`,
            // `bb`, `bitbucket`); "bosun" for a project of no known VCS.
            (
                "project.type".to_owned(),
                Value::Str(
                    match c.project_slug.as_deref().and_then(|s| s.split('/').next()) {
                        Some("gh" | "github") => "github",
                        Some("bb" | "bitbucket") => "bitbucket",
                        _ => "bosun",
                    }
                    .to_owned(),
                ),
            ),
            ("project.slug".to_owned(), s(&c.project_slug)),
            ("schedule.name".to_owned(), Value::Str(String::new())),
            ("schedule.id".to_owned(), Value::Str(String::new())),
            (
                "trigger_source".to_owned(),
                Value::Str(c.trigger_source.clone().unwrap_or_else(|| "api".to_owned())),
            ),
            ("in_setup".to_owned(), Value::Bool(false)),
        ])
    }

    // ---------------------------------------------------------------- orbs

    fn orbs(&mut self, orbs: &Node, root: &Node) -> Result<()> {
        let entries = self.map(self.file, orbs, "orbs")?.to_vec();
        let mut missing: Vec<(String, String, Mark)> = Vec::new();
        for (k, v) in &entries {
            let alias = key_str(k).to_owned();
            let path = key_path("orbs", &alias);
            if v.as_map().is_some() {
                self.register_orb(&alias, v, self.file, &path, 0)?;
                continue;
            }
            let Some(reference) = v.as_str().filter(|_| !v.is_null()) else {
                return Err(self.error(
                    v.mark(),
                    &path,
                    format!(
                        "an orb is a reference like `namespace/name@version` or an inline map, \
                         found {}",
                        v.describe()
                    ),
                ));
            };
            if !self.import_orb(&alias, reference, v.mark(), self.file, &path, 0)? {
                missing.push((alias, reference.to_owned(), v.mark()));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut used = Vec::new();
        for (alias, reference, mark) in &missing {
            let mut uses = Vec::new();
            find_uses(root, "", alias, &mut uses);
            if !uses.is_empty() {
                used.push((alias, reference, *mark, uses));
            }
        }
        let Some(&(first_alias, _, first_mark, _)) = used.first() else {
            // Registry orbs that nothing uses are harmless.
            return Ok(());
        };
        let described: Vec<String> = used
            .iter()
            .map(|(alias, reference, _, uses)| {
                let shown: Vec<String> = uses
                    .iter()
                    .take(3)
                    .map(|(p, m)| format!("{p} ({m})"))
                    .collect();
                let more = if uses.len() > 3 {
                    format!(" and {} more", uses.len() - 3)
                } else {
                    String::new()
                };
                format!("`{alias}` ({reference}) used at {}{more}", shown.join(", "))
            })
            .collect();
        // With an orb directory given, say which files it lacks.
        let looked = match &self.ctx.orb_dir {
            Some(dir) => format!(
                "; {} has no {}",
                dir.display(),
                used.iter()
                    .map(|(_, reference, _, _)| format!("`{reference}.yml`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let message = if self.ctx.orbs.is_some() {
            format!("orb not in registry: {}", described.join("; "))
        } else {
            format!(
                "registry orbs cannot be fetched by bosun: {}; vendor them as \
                 `namespace/name@version.yml` files in an orb directory (--orb-dir{looked}), \
                 or resolve them through a server (--host)",
                described.join("; ")
            )
        };
        Err(self.error(first_mark, &key_path("orbs", first_alias), message))
    }

    /// Registers the registry (or URL) orb `reference` under `alias`: `Ok(false)` when neither
    /// the resolved set nor the orb directory has it. `file` and `path` locate the reference.
    fn import_orb(
        &mut self,
        alias: &str,
        reference: &str,
        mark: Mark,
        file: &str,
        path: &str,
        depth: usize,
    ) -> Result<bool> {
        let (orb_file, text) = match self.load_orb(reference) {
            Some(Ok(found)) => found,
            Some(Err(message)) => return Err(self.error_in(file, mark, path, message)),
            None => return Ok(false),
        };
        let node = match yaml::parse(&text, self.limits) {
            Ok(Some(node)) if node.as_map().is_some() => node,
            Ok(_) => {
                return Err(self.error_in(
                    &orb_file,
                    Mark::START,
                    "",
                    format!("orb `{reference}` is not a map"),
                ));
            }
            Err(e) => return Err(self.error_in(&orb_file, e.mark, "", e.message)),
        };
        let pipeline = std::mem::take(&mut self.pipeline);
        let node = self.subst(&node, &Lookup::Pipeline(&pipeline), &orb_file, "");
        self.pipeline = pipeline;
        self.register_orb(alias, &node?, &orb_file, "", depth)?;
        Ok(true)
    }

    /// Reads a vendored orb: `Some(Ok((file, text)))`, or `None` when there is none.
    fn load_orb(&self, reference: &str) -> Option<std::result::Result<(String, String), String>> {
        if let Some(orb) = self.ctx.orbs.as_ref().and_then(|o| o.get(reference)) {
            return Some(Ok((orb.version.clone(), orb.source.clone())));
        }
        let dir = self.ctx.orb_dir.as_ref()?;
        let (ns, rest) = reference.split_once('/')?;
        let safe = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        };
        if !safe(ns) || !safe(rest) {
            return Some(Err(format!("invalid orb reference `{reference}`")));
        }
        let path = dir.join(ns).join(format!("{rest}.yml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(Ok((path.display().to_string(), text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("reading orb {}: {e}", path.display()))),
        }
    }

    fn register_orb(
        &mut self,
        prefix: &str,
        body: &Node,
        file: &str,
        path: &str,
        depth: usize,
    ) -> Result<()> {
        if depth > 8 {
            return Err(self.error_in(file, body.mark(), path, "orbs nest more than 8 deep"));
        }
        let scope = format!("{prefix}/");
        for (k, v) in self.map(file, body, path)?.to_vec() {
            let section = key_str(&k).to_owned();
            let p = key_path(path, &section);
            match section.as_str() {
                "commands" | "executors" | "jobs" => {
                    for (name, def) in self.map(file, &v, &p)? {
                        let d = Def {
                            node: def.clone(),
                            key_mark: name.mark(),
                            path: key_path(&p, key_str(name)),
                            file: file.to_owned(),
                            scope: scope.clone(),
                        };
                        let full = format!("{scope}{}", key_str(name));
                        let map = match section.as_str() {
                            "commands" => &mut self.defs.commands,
                            "executors" => &mut self.defs.executors,
                            _ => &mut self.defs.jobs,
                        };
                        map.insert(full, d);
                    }
                }
                "orbs" => {
                    for (name, inner) in self.map(file, &v, &p)?.to_vec() {
                        let ip = key_path(&p, key_str(&name));
                        let alias = format!("{scope}{}", key_str(&name));
                        if inner.as_map().is_some() {
                            self.register_orb(&alias, &inner, file, &ip, depth + 1)?;
                            continue;
                        }
                        let Some(reference) = inner.as_str().filter(|_| !inner.is_null()) else {
                            return Err(self.error_in(
                                file,
                                inner.mark(),
                                &ip,
                                format!(
                                    "an orb is a reference like `namespace/name@version` or an \
                                     inline map, found {}",
                                    inner.describe()
                                ),
                            ));
                        };
                        if !self.import_orb(
                            &alias,
                            reference,
                            inner.mark(),
                            file,
                            &ip,
                            depth + 1,
                        )? {
                            let message = if self.ctx.orbs.is_some() {
                                format!("orb not in registry: `{reference}`, imported by {file}")
                            } else {
                                format!(
                                    "registry orbs cannot be fetched by bosun: `{reference}`, \
                                     imported by {file}; vendor it in an orb directory \
                                     (--orb-dir), or resolve it through a server (--host)"
                                )
                            };
                            return Err(self.error_in(file, inner.mark(), &ip, message));
                        }
                    }
                }
                // Metadata.
                _ => {}
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- parameters

    /// Binds arguments to declared parameters. `defs` is the `parameters` map, if any.
    #[allow(clippy::too_many_arguments)]
    fn bind(
        &self,
        file: &str,
        defs: Option<(&Node, &str)>,
        args: &[(Node, Node)],
        call_mark: Mark,
        call_path: &str,
        what: &str,
        arg_file: Option<&str>,
    ) -> Result<HashMap<String, Value>> {
        // `arg_file`: where the arguments are written; `None` when they come from the trigger
        // (then errors point at `call_mark`).
        let args_from_pipeline = arg_file.is_none();
        let arg_file = arg_file.unwrap_or(self.file);
        let empty: &[(Node, Node)] = &[];
        let (decls, decls_path) = match defs {
            Some((node, p)) if !node.is_null() => (self.map(file, node, p)?, p.to_owned()),
            _ => (empty, String::new()),
        };
        for (k, _) in args {
            if get(decls, key_str(k)).is_none() {
                let known: Vec<String> = decls
                    .iter()
                    .map(|(k, _)| format!("`{}`", key_str(k)))
                    .collect();
                let known = if known.is_empty() {
                    "it declares none".to_owned()
                } else {
                    format!("it declares {}", known.join(", "))
                };
                return Err(self.error_in(
                    arg_file,
                    if args_from_pipeline {
                        call_mark
                    } else {
                        k.mark()
                    },
                    &key_path(call_path, key_str(k)),
                    format!("{what} has no parameter `{}` ({known})", key_str(k)),
                ));
            }
        }
        let mut out = HashMap::new();
        for (k, decl) in decls {
            let name = key_str(k);
            let dp = key_path(&decls_path, name);
            let decl_entries = self.map(file, decl, &dp)?;
            let ty = match get(decl_entries, "type") {
                Some(t) => match t
                    .as_str()
                    .filter(|ty| !t.is_null() && PARAM_TYPES.contains(ty))
                {
                    Some(ty) => ty.to_owned(),
                    None => {
                        let found = match t.as_str() {
                            Some(text) if !t.is_null() => format!("`{text}`"),
                            _ => t.describe().to_owned(),
                        };
                        return Err(self.error_in(
                            file,
                            t.mark(),
                            &key_path(&dp, "type"),
                            format!(
                                "unknown parameter type {found} (expected string, boolean, \
                                 integer, enum, steps, executor or env_var_name)"
                            ),
                        ));
                    }
                },
                None => {
                    return Err(self.error_in(
                        file,
                        decl.mark(),
                        &dp,
                        format!("parameter `{name}` needs a `type`"),
                    ));
                }
            };
            let enum_values = enum_values(decl_entries);
            if ty == "enum" && enum_values.is_empty() {
                let (mark, at) = match get(decl_entries, "enum") {
                    Some(e) => (e.mark(), key_path(&dp, "enum")),
                    None => (decl.mark(), dp.clone()),
                };
                return Err(self.error_in(
                    file,
                    mark,
                    &at,
                    format!("parameter `{name}` of type enum needs an `enum` list of its values"),
                ));
            }
            let arg = args.iter().find(|(ak, _)| key_str(ak) == name);
            let (node, node_file, node_path, is_arg) = match arg {
                Some((ak, v)) => (v, arg_file, key_path(call_path, key_str(ak)), true),
                None => match get(decl_entries, "default") {
                    Some(d) => (d, file, key_path(&dp, "default"), false),
                    None if ty == "steps" => {
                        out.insert(
                            name.to_owned(),
                            Value::Steps(Node::new_seq(decl.mark(), Vec::new())),
                        );
                        continue;
                    }
                    None if args_from_pipeline => {
                        return Err(self.error_in(
                            file,
                            k.mark(),
                            &dp,
                            format!("{what} needs a value for its parameter `{name}`"),
                        ));
                    }
                    None => {
                        return Err(self.error_in(
                            arg_file,
                            call_mark,
                            call_path,
                            format!("{what} needs a value for its parameter `{name}`"),
                        ));
                    }
                },
            };
            // A value given by the trigger has no position: point at the declaration.
            let mark = if is_arg && args_from_pipeline {
                k.mark()
            } else {
                node.mark()
            };
            let value = self.typed(&ty, &enum_values, node).map_err(|m| {
                self.error_in(
                    node_file,
                    mark,
                    &node_path,
                    format!("parameter `{name}` of {what}: {m}"),
                )
            })?;
            out.insert(name.to_owned(), value);
        }
        Ok(out)
    }

    fn typed(
        &self,
        ty: &str,
        enum_values: &[String],
        node: &Node,
    ) -> std::result::Result<Value, String> {
        let scalar_text = || -> std::result::Result<String, String> {
            match node.as_scalar() {
                Some(s) if s.is_null() => Ok(String::new()),
                Some(s) => Ok(s.value.clone()),
                None => {
                    let a = if ty.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    };
                    Err(format!("expected {a} {ty}, found {}", node.describe()))
                }
            }
        };
        match ty {
            "string" => scalar_text().map(Value::Str),
            "boolean" => {
                let text = scalar_text()?;
                match text.as_str() {
                    "true" | "True" | "TRUE" | "yes" | "Yes" | "on" | "On" => Ok(Value::Bool(true)),
                    "false" | "False" | "FALSE" | "no" | "No" | "off" | "Off" => {
                        Ok(Value::Bool(false))
                    }
                    _ => Err(format!("expected a boolean, found {}", node.describe())),
                }
            }
            "integer" => {
                let text = scalar_text()?;
                text.trim()
                    .parse::<i64>()
                    .map(Value::Int)
                    .map_err(|_| format!("expected an integer, found `{text}`"))
            }
            "enum" => {
                let text = scalar_text()?;
                if enum_values.contains(&text) {
                    Ok(Value::Str(text))
                } else {
                    Err(format!(
                        "`{text}` is not one of {}",
                        enum_values
                            .iter()
                            .map(|v| format!("`{v}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
            "env_var_name" => {
                let text = scalar_text()?;
                if is_env_name(&text) {
                    Ok(Value::Str(text))
                } else {
                    Err(format!("`{text}` is not an environment variable name"))
                }
            }
            "steps" => match node.kind() {
                Kind::Seq(_) => Ok(Value::Steps(node.clone())),
                Kind::Map(_) => Ok(Value::Steps(Node::new_seq(node.mark(), vec![node.clone()]))),
                Kind::Scalar(s) if s.is_null() => {
                    Ok(Value::Steps(Node::new_seq(node.mark(), Vec::new())))
                }
                Kind::Scalar(_) => Err(format!(
                    "expected a list of steps, found {}",
                    node.describe()
                )),
            },
            "executor" => match node.kind() {
                Kind::Scalar(s) if !s.is_null() => Ok(Value::Executor(node.clone())),
                Kind::Map(_) => Ok(Value::Executor(node.clone())),
                _ => Err(format!(
                    "expected an executor name or map, found {}",
                    node.describe()
                )),
            },
            other => Err(format!(
                "unknown parameter type `{other}` (expected string, boolean, integer, enum, \
                 steps, executor or env_var_name)"
            )),
        }
    }

    /// Replaces `<< ... >>` references throughout `node` (in a 2.1 config; before 2.1,
    /// `<<` is plain text).
    fn subst(&self, node: &Node, lookup: &Lookup<'_>, file: &str, path: &str) -> Result<Node> {
        if !self.version_21 {
            return Ok(node.clone());
        }
        let out = match node.kind() {
            Kind::Scalar(s) => {
                if !s.value.contains("<<") {
                    return Ok(node.clone());
                }
                return self.subst_scalar(node, &s.value, lookup, file, path);
            }
            Kind::Seq(items) => {
                let mut changed = false;
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let n = self.subst(item, lookup, file, &index_path(path, i))?;
                    changed |= !n.same_handle(item);
                    out.push(n);
                }
                if !changed {
                    return Ok(node.clone());
                }
                Node::new_seq(node.mark(), out)
            }
            Kind::Map(entries) => {
                let mut changed = false;
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let p = key_path(path, key_str(k));
                    // Parameter declarations keep their `<< >>` text for their own scope.
                    if key_str(k) == "parameters" && matches!(lookup, Lookup::Parameters(_)) {
                        out.push((k.clone(), v.clone()));
                        continue;
                    }
                    let nk = self.subst(k, lookup, file, &p)?;
                    let nk = if nk.as_scalar().is_some() {
                        nk
                    } else {
                        k.clone()
                    };
                    let nv = self.subst(v, lookup, file, &p)?;
                    changed |= !nv.same_handle(v) || !nk.same_handle(k);
                    out.push((nk, nv));
                }
                if !changed {
                    return Ok(node.clone());
                }
                Node::new_map(node.mark(), out)
            }
        };
        Ok(out)
    }

    fn subst_scalar(
        &self,
        node: &Node,
        text: &str,
        lookup: &Lookup<'_>,
        file: &str,
        path: &str,
    ) -> Result<Node> {
        // A whole-value reference keeps the value's type (a boolean, a list of steps, ...).
        let trimmed = text.trim();
        if let Some(inner) = trimmed
            .strip_prefix("<<")
            .and_then(|t| t.strip_suffix(">>"))
        {
            if !inner.contains("<<") && !inner.contains(">>") {
                if let Some(found) = lookup.get(inner.trim()) {
                    let value = found.map_err(|m| self.error_in(file, node.mark(), path, m))?;
                    let out = value.node(node.mark());
                    self.budget(&out, file, path)?;
                    return Ok(out);
                }
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut changed = false;
        while let Some(at) = rest.find("<<") {
            if at > 0 && rest.as_bytes()[at - 1] == b'\\' {
                // `\<<` is a literal `<<`: kept escaped through every substitution (pipeline,
                // then parameters, then matrix), unescaped once at the end.
                out.push_str(&rest[..at + 2]);
                rest = &rest[at + 2..];
                continue;
            }
            let Some(end) = rest[at + 2..].find(">>") else {
                break;
            };
            let inner = rest[at + 2..at + 2 + end].trim();
            match lookup.get(inner) {
                Some(found) => {
                    let value = found.map_err(|m| self.error_in(file, node.mark(), path, m))?;
                    let Some(text) = value.text() else {
                        return Err(self.error_in(
                            file,
                            node.mark(),
                            path,
                            format!(
                                "`{inner}` is of type {} and can only be used as a whole \
                                 value, not inside a string",
                                value.type_name()
                            ),
                        ));
                    };
                    out.push_str(&rest[..at]);
                    out.push_str(&text);
                    changed = true;
                }
                None => out.push_str(&rest[..at + 2 + end + 2]),
            }
            rest = &rest[at + 2 + end + 2..];
        }
        if !changed {
            return Ok(node.clone());
        }
        out.push_str(rest);
        let style = match node.as_scalar().map(|s| s.style) {
            Some(ScalarStyle::Literal) => ScalarStyle::Literal,
            Some(ScalarStyle::Folded) => ScalarStyle::Folded,
            _ => ScalarStyle::DoubleQuoted,
        };
        let n = Node::new_scalar(node.mark(), out, style);
        self.budget(&n, file, path)?;
        Ok(n)
    }

    // ---------------------------------------------------------------- logic

    /// Evaluates a `when`/`unless` condition (a value or a logic statement).
    fn condition(&self, node: &Node, file: &str, path: &str, depth: usize) -> Result<bool> {
        if depth > 64 {
            return Err(self.error_in(file, node.mark(), path, "logic statement nests too deep"));
        }
        match node.kind() {
            Kind::Scalar(s) => Ok(if s.is_null() {
                false
            } else if let Some(b) = s.as_bool() {
                b
            } else {
                !(s.value.is_empty() || (s.is_plain() && (s.value == "0" || s.value == "NaN")))
            }),
            Kind::Seq(items) => Ok(!items.is_empty()),
            Kind::Map(entries) => {
                let [(k, v)] = entries.as_slice() else {
                    return Err(self.error_in(
                        file,
                        node.mark(),
                        path,
                        "a logic statement is a map with one key: `and`, `or`, `not`, `equal` \
                         or `matches`",
                    ));
                };
                let op = key_str(k);
                let p = key_path(path, op);
                let list = |v: &Node| -> Result<Vec<Node>> {
                    v.as_seq().map(<[Node]>::to_vec).ok_or_else(|| {
                        self.error_in(
                            file,
                            v.mark(),
                            &p,
                            format!("`{op}` takes a list, found {}", v.describe()),
                        )
                    })
                };
                match op {
                    "and" => {
                        for (i, item) in list(v)?.iter().enumerate() {
                            if !self.condition(item, file, &index_path(&p, i), depth + 1)? {
                                return Ok(false);
                            }
                        }
                        Ok(true)
                    }
                    "or" => {
                        for (i, item) in list(v)?.iter().enumerate() {
                            if self.condition(item, file, &index_path(&p, i), depth + 1)? {
                                return Ok(true);
                            }
                        }
                        Ok(false)
                    }
                    "not" => Ok(!self.condition(v, file, &p, depth + 1)?),
                    "equal" => {
                        let items = list(v)?;
                        Ok(items.windows(2).all(|w| same_value(&w[0], &w[1])))
                    }
                    "matches" => {
                        let m = self.map(file, v, &p)?;
                        let (Some(pattern), Some(value)) = (get(m, "pattern"), get(m, "value"))
                        else {
                            return Err(self.error_in(
                                file,
                                v.mark(),
                                &p,
                                "`matches` needs `pattern` and `value`",
                            ));
                        };
                        let pattern_text = pattern.as_str().unwrap_or("");
                        let pattern_text = pattern_text
                            .strip_prefix('/')
                            .and_then(|t| t.strip_suffix('/'))
                            .unwrap_or(pattern_text);
                        let re = full_regex(pattern_text).map_err(|m| {
                            self.error_in(file, pattern.mark(), &key_path(&p, "pattern"), m)
                        })?;
                        Ok(re.is_match(value.as_str().unwrap_or("")))
                    }
                    other => Err(self.error_in(
                        file,
                        k.mark(),
                        &p,
                        format!(
                            "unknown logic operator `{other}` (expected `and`, `or`, `not`, \
                             `equal` or `matches`)"
                        ),
                    )),
                }
            }
        }
    }

    // ---------------------------------------------------------------- steps

    /// Expands a list of steps: commands are invoked, `when`/`unless` decided, `steps`
    /// parameters spliced in place.
    fn steps(
        &self,
        items: &Node,
        scope: &str,
        file: &str,
        path: &str,
        depth: usize,
        out: &mut Vec<Node>,
    ) -> Result<()> {
        if depth > MAX_INVOCATION_DEPTH {
            return Err(self.error_in(
                file,
                items.mark(),
                path,
                format!(
                    "commands invoke each other more than {MAX_INVOCATION_DEPTH} levels deep \
                     (is a command invoking itself?)"
                ),
            ));
        }
        let Some(list) = items.as_seq() else {
            if items.is_null() {
                return Ok(());
            }
            return Err(self.error_in(
                file,
                items.mark(),
                path,
                format!("expected a list of steps, found {}", items.describe()),
            ));
        };
        for (i, item) in list.iter().enumerate() {
            let p = index_path(path, i);
            self.step(item, scope, file, &p, depth, out)?;
        }
        Ok(())
    }

    fn step(
        &self,
        item: &Node,
        scope: &str,
        file: &str,
        path: &str,
        depth: usize,
        out: &mut Vec<Node>,
    ) -> Result<()> {
        let (name, args, name_node) = match item.kind() {
            Kind::Seq(_) => return self.steps(item, scope, file, path, depth + 1, out),
            Kind::Scalar(s) if !s.is_null() => (s.value.as_str(), None, item),
            Kind::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                (key_str(k), Some(v), k)
            }
            // Shape errors are the compiler's to report.
            _ => {
                out.push(item.clone());
                return Ok(());
            }
        };
        if BUILTIN_STEPS.contains(&name) {
            out.push(item.clone());
            return Ok(());
        }
        if name == "steps" {
            // `- steps: << parameters.x >>` splices a list of steps, as CircleCI allows.
            if let Some(list) = args.filter(|a| a.as_seq().is_some()) {
                let p = key_path(path, name);
                return self.steps(list, scope, file, &p, depth + 1, out);
            }
        }
        if name == "when" || name == "unless" {
            let p = key_path(path, name);
            let Some(body) = args else {
                return Err(self.error_in(
                    file,
                    item.mark(),
                    path,
                    format!("a `{name}` step needs `condition` and `steps`"),
                ));
            };
            let entries = self.map(file, body, &p)?;
            for (k, _) in entries {
                if !matches!(key_str(k), "condition" | "steps") {
                    return Err(self.error_in(
                        file,
                        k.mark(),
                        &key_path(&p, key_str(k)),
                        format!("unknown key `{}` in a `{name}` step", key_str(k)),
                    ));
                }
            }
            let (Some(condition), Some(steps)) = (get(entries, "condition"), get(entries, "steps"))
            else {
                return Err(self.error_in(
                    file,
                    body.mark(),
                    &p,
                    format!("a `{name}` step needs `condition` and `steps`"),
                ));
            };
            let holds = self.condition(condition, file, &key_path(&p, "condition"), 0)?;
            if holds == (name == "when") {
                self.steps(steps, scope, file, &key_path(&p, "steps"), depth + 1, out)?;
            }
            return Ok(());
        }
        let Some((def, full)) = Defs::find(&self.defs.commands, scope, name) else {
            let hint = match name.split_once('/') {
                Some((orb, _)) => format!(" (is the orb `{orb}` declared in `orbs`?)"),
                None => String::new(),
            };
            return Err(self.error_in(
                file,
                name_node.mark(),
                path,
                format!("unknown step or command `{name}`{hint}"),
            ));
        };
        let empty: &[(Node, Node)] = &[];
        let arg_entries = match args {
            Some(a) if !a.is_null() => self.map(file, a, &key_path(path, name))?,
            _ => empty,
        };
        let body = self.map(&def.file, &def.node, &def.path)?;
        let decls_path = key_path(&def.path, "parameters");
        let params = self.bind(
            &def.file,
            get(body, "parameters").map(|n| (n, decls_path.as_str())),
            arg_entries,
            item.mark(),
            // `- name` has no arguments map: the step itself is the invocation.
            &match args {
                Some(_) => key_path(path, name),
                None => path.to_owned(),
            },
            &format!("command `{full}`"),
            Some(file),
        )?;
        let Some(steps) = get(body, "steps") else {
            return Err(self.error_in(
                &def.file,
                def.node.mark(),
                &def.path,
                format!("command `{full}` has no `steps`"),
            ));
        };
        let steps_path = key_path(&def.path, "steps");
        let steps = self.subst(steps, &Lookup::Parameters(&params), &def.file, &steps_path)?;
        self.steps(&steps, &def.scope, &def.file, &steps_path, depth + 1, out)
    }

    // ---------------------------------------------------------------- jobs

    /// Expands one job invocation into a 2.0-style job map.
    fn job(
        &self,
        def: &Def,
        full: &str,
        args: &[(Node, Node)],
        pre_post: Option<(&Node, &Node)>,
        call_mark: Mark,
        call_path: &str,
    ) -> Result<Node> {
        let body = self.map(&def.file, &def.node, &def.path)?;
        let decls_path = key_path(&def.path, "parameters");
        let params = self.bind(
            &def.file,
            get(body, "parameters").map(|n| (n, decls_path.as_str())),
            args,
            call_mark,
            call_path,
            &format!("job `{full}`"),
            Some(self.file),
        )?;
        let job = self.subst(
            &def.node,
            &Lookup::Parameters(&params),
            &def.file,
            &def.path,
        )?;
        let entries = self.map(&def.file, &job, &def.path)?;
        let mut out: Vec<(Node, Node)> = Vec::new();
        let mut origin = JobOrigin {
            orb: self.orb_of(def),
            ..JobOrigin::default()
        };
        // The executor's keys come first; the job's own keys override them.
        if let Some((ek, ev)) = entries.iter().find(|(k, _)| key_str(k) == "executor") {
            let ep = key_path(&def.path, "executor");
            let (keys, name, orb) = self.executor(ev, &def.scope, &def.file, &ep, ek.mark())?;
            out = keys;
            origin.executor = Some(name);
            origin.executor_orb = orb;
        }
        *self.last_origin.borrow_mut() = origin;
        let mut from_executor: HashSet<String> =
            out.iter().map(|(k, _)| key_str(k).to_owned()).collect();
        for (k, v) in entries {
            let key = key_str(k);
            match key {
                "parameters" | "executor" | "description" => {}
                "steps" => {
                    let sp = key_path(&def.path, "steps");
                    // A `steps` of the wrong shape is the compiler's to report.
                    let node = if v.as_seq().is_some() {
                        let mut steps = Vec::new();
                        if let Some((pre, _)) = pre_post {
                            let pp = key_path(call_path, "pre-steps");
                            self.steps(pre, "", self.file, &pp, 0, &mut steps)?;
                        }
                        self.steps(v, &def.scope, &def.file, &sp, 0, &mut steps)?;
                        if let Some((_, post)) = pre_post {
                            let pp = key_path(call_path, "post-steps");
                            self.steps(post, "", self.file, &pp, 0, &mut steps)?;
                        }
                        Node::new_seq(v.mark(), steps)
                    } else {
                        v.clone()
                    };
                    self.budget(&node, &def.file, &sp)?;
                    set(&mut out, k, node);
                }
                "environment" => {
                    let merged = match out.iter().find(|(ok, _)| key_str(ok) == "environment") {
                        Some((_, base)) => match (base.as_map(), v.as_map()) {
                            (Some(b), Some(j)) => {
                                let mut m: Vec<(Node, Node)> = b
                                    .iter()
                                    .filter(|(bk, _)| get(j, key_str(bk)).is_none())
                                    .cloned()
                                    .collect();
                                m.extend(j.iter().cloned());
                                Node::new_map(v.mark(), m)
                            }
                            _ => v.clone(),
                        },
                        None => v.clone(),
                    };
                    set(&mut out, k, merged);
                }
                "docker" | "machine" | "macos" => {
                    // A job's own executor replaces the executor's.
                    out.retain(|(ok, _)| {
                        !(matches!(key_str(ok), "docker" | "machine" | "macos")
                            && from_executor.contains(key_str(ok)))
                    });
                    from_executor.remove(key);
                    set(&mut out, k, v.clone());
                }
                _ => set(&mut out, k, v.clone()),
            }
        }
        Ok(Node::new_map(def.node.mark(), out))
    }

    /// Resolves `executor:` (a name, or a map with `name` and arguments) into executor keys.
    fn executor(
        &self,
        node: &Node,
        scope: &str,
        file: &str,
        path: &str,
        mark: Mark,
    ) -> Result<ResolvedExecutor> {
        let (name, args): (String, Vec<(Node, Node)>) = match node.kind() {
            Kind::Scalar(s) if !s.is_null() => (s.value.clone(), Vec::new()),
            Kind::Map(entries) => {
                let Some(name) = get(entries, "name").and_then(Node::as_str) else {
                    return Err(self.error_in(
                        file,
                        node.mark(),
                        path,
                        "an executor map needs a `name`",
                    ));
                };
                (
                    name.to_owned(),
                    entries
                        .iter()
                        .filter(|(k, _)| key_str(k) != "name")
                        .cloned()
                        .collect(),
                )
            }
            _ => {
                return Err(self.error_in(
                    file,
                    node.mark(),
                    path,
                    format!(
                        "expected an executor name or map, found {}",
                        node.describe()
                    ),
                ));
            }
        };
        let Some((def, full)) = Defs::find(&self.defs.executors, scope, &name) else {
            return Err(self.error_in(
                file,
                node.mark(),
                path,
                format!("executor `{name}` is not defined in `executors`"),
            ));
        };
        let _ = mark;
        let body = self.map(&def.file, &def.node, &def.path)?;
        let decls_path = key_path(&def.path, "parameters");
        let params = self.bind(
            &def.file,
            get(body, "parameters").map(|n| (n, decls_path.as_str())),
            &args,
            node.mark(),
            path,
            &format!("executor `{full}`"),
            Some(file),
        )?;
        let ex = self.subst(
            &def.node,
            &Lookup::Parameters(&params),
            &def.file,
            &def.path,
        )?;
        let mut out = Vec::new();
        for (k, v) in self.map(&def.file, &ex, &def.path)? {
            if !matches!(key_str(k), "parameters" | "description") {
                out.push((k.clone(), v.clone()));
            }
        }
        Ok((out, full, self.orb_of(def)))
    }

    // ---------------------------------------------------------------- workflows

    fn workflows(&self, node: &Node, jobs_out: &mut JobsOut) -> Result<(Node, Sources)> {
        let Some(entries) = node.as_map() else {
            return Ok((node.clone(), Sources::new()));
        };
        let mut sources = Sources::new();
        let mut out = Vec::new();
        for (key, wf) in entries {
            let name = key_str(key);
            let path = key_path("workflows", name);
            if name == "version" {
                continue;
            }
            let Some(wf_entries) = wf.as_map() else {
                out.push((key.clone(), wf.clone()));
                continue;
            };
            let mut runs = true;
            for (k, v) in wf_entries {
                let p = key_path(&path, key_str(k));
                match key_str(k) {
                    "when" => runs &= self.condition(v, self.file, &p, 0)?,
                    "unless" => runs &= !self.condition(v, self.file, &p, 0)?,
                    _ => {}
                }
            }
            if !runs {
                self.dropped.set(self.dropped.get() + 1);
                continue;
            }
            let mut wf_out = Vec::new();
            for (k, v) in wf_entries {
                match key_str(k) {
                    "when" | "unless" => {}
                    "jobs" => {
                        let jp = key_path(&path, "jobs");
                        let items = match v.as_seq() {
                            Some(items) => {
                                let (items, entries) =
                                    self.workflow_jobs(v, items, &jp, jobs_out)?;
                                sources.insert(name.to_owned(), entries);
                                items
                            }
                            None => v.clone(),
                        };
                        wf_out.push((k.clone(), items));
                    }
                    _ => wf_out.push((k.clone(), v.clone())),
                }
            }
            out.push((key.clone(), Node::new_map(wf.mark(), wf_out)));
        }
        Ok((Node::new_map(node.mark(), out), sources))
    }

    fn workflow_jobs(
        &self,
        list: &Node,
        items: &[Node],
        path: &str,
        jobs_out: &mut JobsOut,
    ) -> Result<(Node, Vec<EntrySource>)> {
        // Each output entry in source order, with its item path and entry path.
        let mut generated: Vec<(Pending, String, String)> = Vec::new();
        let mut aliases: HashMap<String, Vec<String>> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let ip = index_path(path, i);
            let raw = |ip: &String| {
                let ep = match item.as_map() {
                    Some([(k, _)]) => key_path(ip, key_str(k)),
                    _ => ip.clone(),
                };
                (Pending::Raw(item.clone()), ip.clone(), ep)
            };
            let (job_node, attrs): (&Node, &[(Node, Node)]) = match item.kind() {
                Kind::Scalar(s) if !s.is_null() => (item, &[]),
                Kind::Map(entries) if entries.len() == 1 => {
                    let (k, v) = &entries[0];
                    match v.kind() {
                        Kind::Map(a) => (k, a.as_slice()),
                        Kind::Scalar(s) if s.is_null() => (k, &[]),
                        _ => {
                            generated.push(raw(&ip));
                            continue;
                        }
                    }
                }
                _ => {
                    // Shape errors are the compiler's to report.
                    generated.push(raw(&ip));
                    continue;
                }
            };
            let job = key_str(job_node).to_owned();
            let ep = if item.as_map().is_some() {
                key_path(&ip, &job)
            } else {
                ip.clone()
            };
            let approval = get(attrs, "type").and_then(Node::as_str) == Some("approval");
            let matrix = get(attrs, "matrix");
            let combos: Vec<HashMap<String, Value>> = match matrix {
                Some(m) => {
                    let combos = self.matrix(m, &key_path(&ep, "matrix"))?;
                    if !approval {
                        self.matrix_arguments(m, &key_path(&ep, "matrix"), &job)?;
                    }
                    combos
                }
                None => vec![HashMap::new()],
            };
            let alias = match matrix
                .and_then(|m| m.as_map())
                .and_then(|m| get(m, "alias"))
            {
                Some(a) => a.as_str().unwrap_or(&job).to_owned(),
                None => job.clone(),
            };
            for combo in &combos {
                let attrs_node = Node::new_map(item.mark(), attrs.to_vec());
                let attrs_node = if matrix.is_some() {
                    self.subst(&attrs_node, &Lookup::Matrix(combo), self.file, &ep)?
                } else {
                    attrs_node
                };
                let attrs = attrs_node.as_map().unwrap_or(&[]);
                let explicit_name = get(attrs, "name").and_then(Node::as_str).map(str::to_owned);
                let entry_name = match (&explicit_name, matrix) {
                    (Some(n), _) => n.clone(),
                    (None, Some(m)) => {
                        // `job-value1-value2`, in the order the matrix lists its parameters.
                        let mut name = job.clone();
                        let order = m
                            .as_map()
                            .and_then(|m| get(m, "parameters"))
                            .and_then(Node::as_map)
                            .unwrap_or(&[]);
                        for (k, _) in order {
                            if let Some(v) = combo.get(key_str(k)).and_then(Value::text) {
                                name.push('-');
                                name.push_str(&v);
                            }
                        }
                        name
                    }
                    (None, None) => job.clone(),
                };
                if matrix.is_some() {
                    aliases
                        .entry(alias.clone())
                        .or_default()
                        .push(entry_name.clone());
                }
                let mut kept: Vec<(Node, Node)> = Vec::new();
                let mut args: Vec<(Node, Node)> = Vec::new();
                for (k, v) in attrs {
                    let key = key_str(k);
                    if ENTRY_KEYS.contains(&key) {
                        let dropped = matches!(key, "matrix" | "pre-steps" | "post-steps")
                            || (key == "name" && matrix.is_some());
                        if !dropped {
                            kept.push((k.clone(), v.clone()));
                        }
                    } else {
                        args.push((k.clone(), v.clone()));
                    }
                }
                for (k, v) in combo {
                    if !args.iter().any(|(ak, _)| key_str(ak) == k) {
                        args.push((scalar_key(item.mark(), k), v.node(item.mark())));
                    }
                }
                let has_name = kept.iter().any(|(k, _)| key_str(k) == "name");
                if approval {
                    if entry_name != job && !has_name {
                        kept.push((
                            scalar_key(item.mark(), "name"),
                            str_node(item.mark(), &entry_name),
                        ));
                    }
                    generated.push((
                        Pending::Job((job.clone(), entry_name, kept, item.mark())),
                        ip.clone(),
                        ep.clone(),
                    ));
                    continue;
                }
                let Some((def, full)) = Defs::find(&self.defs.jobs, "", &job) else {
                    let hint = match job.split_once('/') {
                        Some((orb, _)) => format!(" (is the orb `{orb}` declared in `orbs`?)"),
                        None => String::new(),
                    };
                    return Err(self.error(
                        job_node.mark(),
                        &ep,
                        format!("job `{job}` is not defined in `jobs`{hint}"),
                    ));
                };
                let pre_post = match (get(attrs, "pre-steps"), get(attrs, "post-steps")) {
                    (None, None) => None,
                    (pre, post) => {
                        let empty = Node::new_seq(item.mark(), Vec::new());
                        Some((
                            pre.cloned().unwrap_or_else(|| empty.clone()),
                            post.cloned().unwrap_or(empty),
                        ))
                    }
                };
                let expanded = self.job(
                    def,
                    &full,
                    &args,
                    pre_post.as_ref().map(|(a, b)| (a, b)),
                    job_node.mark(),
                    &ep,
                )?;
                let plain = args.is_empty() && pre_post.is_none();
                let base = if plain {
                    full.clone()
                } else {
                    entry_name.clone()
                };
                let key = place_job(jobs_out, &base, def.key_mark, expanded);
                self.record_origin(&key);
                if key != entry_name && !has_name {
                    kept.insert(
                        0,
                        (
                            scalar_key(item.mark(), "name"),
                            str_node(item.mark(), &entry_name),
                        ),
                    );
                }
                generated.push((
                    Pending::Job((key, entry_name, kept, item.mark())),
                    ip.clone(),
                    ep.clone(),
                ));
            }
        }
        // `requires` may name a matrix alias: it stands for every job the matrix generated.
        let mut out = Vec::new();
        let mut sources = Vec::new();
        for (pending, ip, ep) in generated {
            let (key, _name, mut attrs, mark) = match pending {
                Pending::Job(job) => job,
                Pending::Raw(node) => {
                    out.push(node);
                    sources.push(EntrySource {
                        item: ip,
                        entry: ep,
                        requires: Vec::new(),
                    });
                    continue;
                }
            };
            let mut requires = Vec::new();
            let rp = key_path(&ep, "requires");
            for (k, v) in attrs.iter_mut() {
                if key_str(k) != "requires" {
                    continue;
                }
                let Some(reqs) = v.as_seq() else { continue };
                let mut expanded = Vec::new();
                let mut seen = HashSet::new();
                for (j, r) in reqs.iter().enumerate() {
                    match r.as_str().and_then(|t| aliases.get(t)) {
                        Some(names) => {
                            for n in names {
                                if seen.insert(n.clone()) {
                                    expanded.push(str_node(r.mark(), n));
                                    requires.push(index_path(&rp, j));
                                }
                            }
                        }
                        None => {
                            if r.as_str().is_none_or(|t| seen.insert(t.to_owned())) {
                                expanded.push(r.clone());
                                requires.push(index_path(&rp, j));
                            }
                        }
                    }
                }
                *v = Node::new_seq(v.mark(), expanded);
            }
            sources.push(EntrySource {
                item: ip,
                entry: ep,
                requires,
            });
            let entry = if attrs.is_empty() {
                str_node(mark, &key)
            } else {
                Node::new_map(
                    mark,
                    vec![(scalar_key(mark, &key), Node::new_map(mark, attrs))],
                )
            };
            out.push(entry);
        }
        Ok((Node::new_seq(list.mark(), out), sources))
    }

    /// Checks a matrix's parameters against the job's declarations, reporting a problem at the
    /// matrix parameter or value rather than at the generated invocation.
    fn matrix_arguments(&self, matrix: &Node, path: &str, job: &str) -> Result<()> {
        let Some((def, full)) = Defs::find(&self.defs.jobs, "", job) else {
            // An undefined job is reported with the entry.
            return Ok(());
        };
        let Some(params) = matrix
            .as_map()
            .and_then(|m| get(m, "parameters"))
            .and_then(Node::as_map)
        else {
            return Ok(());
        };
        let decls: &[(Node, Node)] = def
            .node
            .as_map()
            .and_then(|b| get(b, "parameters"))
            .and_then(Node::as_map)
            .unwrap_or(&[]);
        let pp = key_path(path, "parameters");
        for (k, values) in params {
            let name = key_str(k);
            let p = key_path(&pp, name);
            let Some(decl) = get(decls, name) else {
                let known = if decls.is_empty() {
                    "it declares none".to_owned()
                } else {
                    format!(
                        "it declares {}",
                        decls
                            .iter()
                            .map(|(d, _)| format!("`{}`", key_str(d)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(self.error(
                    k.mark(),
                    &p,
                    format!("job `{full}` has no parameter `{name}` ({known})"),
                ));
            };
            // A malformed declaration is reported when the job is bound.
            let Some(decl) = decl.as_map() else { continue };
            let Some(ty) = get(decl, "type")
                .and_then(Node::as_str)
                .filter(|t| PARAM_TYPES.contains(t))
            else {
                continue;
            };
            let allowed = enum_values(decl);
            if ty == "enum" && allowed.is_empty() {
                continue;
            }
            for (i, value) in values.as_seq().unwrap_or(&[]).iter().enumerate() {
                self.typed(ty, &allowed, value).map_err(|m| {
                    self.error(
                        value.mark(),
                        &index_path(&p, i),
                        format!("parameter `{name}` of job `{full}`: {m}"),
                    )
                })?;
            }
        }
        Ok(())
    }

    fn matrix(&self, node: &Node, path: &str) -> Result<Vec<HashMap<String, Value>>> {
        let entries = self.map(self.file, node, path)?;
        for (k, _) in entries {
            if !matches!(key_str(k), "parameters" | "exclude" | "alias") {
                return Err(self.error(
                    k.mark(),
                    &key_path(path, key_str(k)),
                    format!("unknown key `{}` in `matrix`", key_str(k)),
                ));
            }
        }
        let Some(params) = get(entries, "parameters") else {
            return Err(self.error(node.mark(), path, "`matrix` needs `parameters`"));
        };
        let pp = key_path(path, "parameters");
        let mut combos: Vec<Vec<(String, Node)>> = vec![Vec::new()];
        for (k, v) in self.map(self.file, params, &pp)? {
            let p = key_path(&pp, key_str(k));
            let Some(values) = v.as_seq() else {
                return Err(self.error(
                    v.mark(),
                    &p,
                    format!(
                        "a matrix parameter takes a list of values, found {}",
                        v.describe()
                    ),
                ));
            };
            if combos.len().saturating_mul(values.len()) > MAX_MATRIX_JOBS {
                return Err(self.error(
                    v.mark(),
                    &p,
                    format!("the matrix generates more than {MAX_MATRIX_JOBS} jobs"),
                ));
            }
            let mut next = Vec::with_capacity(combos.len() * values.len());
            for combo in &combos {
                for value in values {
                    let mut c = combo.clone();
                    c.push((key_str(k).to_owned(), value.clone()));
                    next.push(c);
                }
            }
            combos = next;
        }
        let excludes: Vec<&[(Node, Node)]> = match get(entries, "exclude") {
            Some(e) => {
                let ep = key_path(path, "exclude");
                let Some(list) = e.as_seq() else {
                    return Err(self.error(e.mark(), &ep, "`exclude` takes a list of maps"));
                };
                let names = self.map(self.file, params, &pp)?;
                let mut out = Vec::new();
                for (i, x) in list.iter().enumerate() {
                    let xp = index_path(&ep, i);
                    let entries = self.map(self.file, x, &xp)?;
                    // A misspelt parameter would silently run the jobs it meant to leave
                    // out. (A value the matrix does not list is fine: real configs exclude
                    // values they have commented out of the matrix.)
                    for (k, _) in entries {
                        if get(names, key_str(k)).is_none() {
                            return Err(self.error(
                                k.mark(),
                                &key_path(&xp, key_str(k)),
                                format!(
                                    "`exclude` names `{}`, which is not a parameter of the \
                                     matrix (it has {})",
                                    key_str(k),
                                    names
                                        .iter()
                                        .map(|(n, _)| format!("`{}`", key_str(n)))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                        }
                    }
                    out.push(entries);
                }
                out
            }
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for combo in combos {
            let excluded = excludes.iter().any(|x| excludes_combo(x, &combo));
            if excluded {
                continue;
            }
            let mut values = HashMap::new();
            for (name, node) in combo {
                let value = match node.as_scalar() {
                    Some(s) if s.is_plain() && s.as_bool().is_some() => {
                        Value::Bool(s.as_bool().unwrap_or(false))
                    }
                    Some(s) if s.is_plain() && s.value.parse::<i64>().is_ok() => {
                        Value::Int(s.value.parse().unwrap_or(0))
                    }
                    Some(s) => Value::Str(s.value.clone()),
                    None => Value::Executor(node.clone()),
                };
                values.insert(name, value);
            }
            out.push(values);
        }
        Ok(out)
    }
}

/// `\<<` as `<<` throughout `node`; `None` when there is none.
fn unescape(node: &Node) -> Option<Node> {
    match node.kind() {
        Kind::Scalar(s) => {
            if !s.value.contains("\\<<") {
                return None;
            }
            let style = match s.style {
                ScalarStyle::Literal | ScalarStyle::Folded => s.style,
                _ => ScalarStyle::DoubleQuoted,
            };
            Some(Node::new_scalar(
                node.mark(),
                s.value.replace("\\<<", "<<"),
                style,
            ))
        }
        Kind::Seq(items) => {
            let changed: Vec<Option<Node>> = items.iter().map(unescape).collect();
            if changed.iter().all(Option::is_none) {
                return None;
            }
            let items = items
                .iter()
                .zip(changed)
                .map(|(old, new)| new.unwrap_or_else(|| old.clone()))
                .collect();
            Some(Node::new_seq(node.mark(), items))
        }
        Kind::Map(entries) => {
            let changed: Vec<Option<Node>> = entries.iter().map(|(_, v)| unescape(v)).collect();
            if changed.iter().all(Option::is_none) {
                return None;
            }
            let entries = entries
                .iter()
                .zip(changed)
                .map(|((k, old), new)| (k.clone(), new.unwrap_or_else(|| old.clone())))
                .collect();
            Some(Node::new_map(node.mark(), entries))
        }
    }
}

/// Whether an `exclude` entry covers a matrix combination.
fn excludes_combo(exclude: &[(Node, Node)], combo: &[(String, Node)]) -> bool {
    exclude.iter().all(|(k, v)| {
        combo
            .iter()
            .any(|(name, value)| name == key_str(k) && same_value(value, v))
    })
}

/// The values an `enum` parameter declaration lists.
fn enum_values(decl: &[(Node, Node)]) -> Vec<String> {
    get(decl, "enum")
        .and_then(Node::as_seq)
        .unwrap_or(&[])
        .iter()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

fn str_node(mark: Mark, text: &str) -> Node {
    Node::new_scalar(mark, text.to_owned(), ScalarStyle::DoubleQuoted)
}

/// Sets `key` in an ordered map, replacing an existing entry in place.
fn set(out: &mut Vec<(Node, Node)>, key: &Node, value: Node) {
    match out.iter_mut().find(|(k, _)| key_str(k) == key_str(key)) {
        Some(entry) => entry.1 = value,
        None => out.push((key.clone(), value)),
    }
}

/// Adds a concrete job under `base`, or `base-2`, `base-3`... when a different job already
/// holds the name; an identical job is reused. Returns the key used.
fn place_job(jobs: &mut JobsOut, base: &str, mark: Mark, job: Node) -> String {
    let mut n = 1usize;
    loop {
        let key = if n == 1 {
            base.to_owned()
        } else {
            format!("{base}-{n}")
        };
        match jobs.iter().find(|(k, _)| *k == key) {
            None => {
                jobs.push((key.clone(), (mark, job)));
                return key;
            }
            Some((_, (_, existing))) if same_value(existing, &job) => return key,
            Some(_) => n += 1,
        }
    }
}

/// Where `alias/...` (an element of an orb) is used in `node`.
fn find_uses(node: &Node, path: &str, alias: &str, out: &mut Vec<(String, Mark)>) {
    let prefix = format!("{alias}/");
    let is_use = |text: &str| {
        text.strip_prefix(&prefix).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '/')
        })
    };
    match node.kind() {
        Kind::Scalar(_) => {}
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = index_path(path, i);
                if item.as_str().is_some_and(is_use) {
                    out.push((p.clone(), item.mark()));
                }
                find_uses(item, &p, alias, out);
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                let key = key_str(k);
                let p = key_path(path, key);
                // Anchors under keys CircleCI ignores (`aliases:`, `defaults:`) are uses only
                // where they are merged in.
                if path.is_empty()
                    && !matches!(key, "jobs" | "commands" | "executors" | "workflows")
                {
                    continue;
                }
                if is_use(key) {
                    out.push((p.clone(), k.mark()));
                } else if matches!(key, "executor" | "name")
                    && v.as_str().is_some_and(is_use)
                    && (key == "executor" || path.ends_with("executor"))
                {
                    out.push((p.clone(), v.mark()));
                }
                find_uses(v, &p, alias, out);
            }
        }
    }
}

/// A pipeline parameter given as JSON, as a YAML node.
fn json_node(value: &serde_json::Value) -> Node {
    let mark = Mark::START;
    match value {
        serde_json::Value::Null => Node::new_scalar(mark, String::new(), ScalarStyle::Plain),
        serde_json::Value::Bool(b) => Node::new_scalar(mark, b.to_string(), ScalarStyle::Plain),
        serde_json::Value::Number(n) => Node::new_scalar(mark, n.to_string(), ScalarStyle::Plain),
        serde_json::Value::String(s) => {
            Node::new_scalar(mark, s.clone(), ScalarStyle::DoubleQuoted)
        }
        serde_json::Value::Array(items) => {
            Node::new_seq(mark, items.iter().map(json_node).collect())
        }
        serde_json::Value::Object(map) => Node::new_map(
            mark,
            map.iter()
                .map(|(k, v)| (scalar_key(mark, k), json_node(v)))
                .collect(),
        ),
    }
}

/// The processed tree as JSON (plain scalars typed as YAML's core schema types them).
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    match node.kind() {
        Kind::Scalar(s) => {
            if s.is_null() {
                serde_json::Value::Null
            } else if let Some(b) = s.as_bool() {
                serde_json::Value::Bool(b)
            } else if s.is_plain() {
                if let Ok(i) = s.value.parse::<i64>() {
                    serde_json::Value::from(i)
                } else if let Some(f) = s.value.parse::<f64>().ok().filter(|f| {
                    f.is_finite() && s.value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                }) {
                    serde_json::Value::from(f)
                } else {
                    serde_json::Value::String(s.value.clone())
                }
            } else {
                serde_json::Value::String(s.value.clone())
            }
        }
        Kind::Seq(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| (key_str(k).to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

/// The processed tree as YAML text, keys in document order.
pub(crate) fn to_yaml(node: &Node) -> String {
    use yaml_rust2::Yaml;
    fn conv(node: &Node) -> Yaml {
        match node.kind() {
            Kind::Scalar(_) => match to_json(node) {
                serde_json::Value::Null => Yaml::Null,
                serde_json::Value::Bool(b) => Yaml::Boolean(b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Yaml::Integer(i),
                    None => Yaml::Real(n.to_string()),
                },
                serde_json::Value::String(s) => Yaml::String(s),
                _ => Yaml::Null,
            },
            Kind::Seq(items) => Yaml::Array(items.iter().map(conv).collect()),
            Kind::Map(entries) => {
                let mut h = yaml_rust2::yaml::Hash::new();
                for (k, v) in entries {
                    h.insert(Yaml::String(key_str(k).to_owned()), conv(v));
                }
                Yaml::Hash(h)
            }
        }
    }
    let mut text = String::new();
    let mut emitter = yaml_rust2::YamlEmitter::new(&mut text);
    emitter.multiline_strings(true);
    if emitter.dump(&conv(node)).is_err() {
        return serde_json::to_string_pretty(&to_json(node)).unwrap_or_default();
    }
    text.push('\n');
    text
}
