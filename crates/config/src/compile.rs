//! From a positioned YAML tree to a [`Pipeline`], validating as it goes.
//!
//! Every error names the offending node's position and key path. Keys that CircleCI knows but
//! bosun does not support yet are refused rather than ignored: silently dropping a `filters:`
//! or a `when:` would run things the author asked not to run.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::expand::{self, EntrySource, Expander, PipelineContext, Sources, full_regex};
use crate::model::{
    Executor, Job, MAX_PARALLELISM, Pipeline, Run, Step, When, Workflow, WorkflowJob,
};
use crate::yaml::{self, Limits, Mark, Node, ScalarStyle};
use crate::{ConfigError, parse_duration};

/// Compiles the text of a `.circleci/config.yml` into a [`Pipeline`]. `file` names the file in
/// errors. Uses the default [`Limits`] and an empty [`PipelineContext`] (no parameters given,
/// filters not applied).
pub fn compile(source: &str, file: &str) -> std::result::Result<Pipeline, ConfigError> {
    compile_with_limits(source, file, &Limits::DEFAULT)
}

/// [`compile`] with explicit parsing [`Limits`].
pub fn compile_with_limits(
    source: &str,
    file: &str,
    limits: &Limits,
) -> std::result::Result<Pipeline, ConfigError> {
    compile_inner(source, file, &PipelineContext::default(), limits).map(|(_, p)| p)
}

/// Compiles a config for one pipeline: pipeline parameters and values are substituted,
/// workflow `when`/`unless` decided, and, when the context names a branch or a tag, workflow
/// jobs whose `filters` exclude it are left out (with the jobs that require them).
pub fn compile_pipeline(
    source: &str,
    file: &str,
    ctx: &PipelineContext,
) -> std::result::Result<Pipeline, ConfigError> {
    compile_inner(source, file, ctx, &Limits::DEFAULT).map(|(_, p)| p)
}

/// [`compile_pipeline`] and [`process`] in one pass: the pipeline and the processed YAML
/// (what the server shows as a pipeline's compiled configuration).
pub fn compile_pipeline_processed(
    source: &str,
    file: &str,
    ctx: &PipelineContext,
) -> std::result::Result<(Pipeline, String), ConfigError> {
    compile_inner(source, file, ctx, &Limits::DEFAULT).map(|(root, p)| (p, expand::to_yaml(&root)))
}

/// What `circleci config process` prints: the config with 2.1 processing done (orbs, commands,
/// executors, parameters, matrices and `when` expanded), as 2.0-style YAML. The config is
/// validated as [`compile_pipeline`] does.
pub fn process(
    source: &str,
    file: &str,
    ctx: &PipelineContext,
) -> std::result::Result<String, ConfigError> {
    compile_inner(source, file, ctx, &Limits::DEFAULT).map(|(root, _)| expand::to_yaml(&root))
}

/// [`process`], as a JSON value (for tools, and to check against CircleCI's JSON Schema).
pub fn process_json(
    source: &str,
    file: &str,
    ctx: &PipelineContext,
) -> std::result::Result<serde_json::Value, ConfigError> {
    compile_inner(source, file, ctx, &Limits::DEFAULT).map(|(root, _)| expand::to_json(&root))
}

fn compile_inner(
    source: &str,
    file: &str,
    ctx: &PipelineContext,
    limits: &Limits,
) -> std::result::Result<(Node, Pipeline), ConfigError> {
    let cx = Cx {
        file,
        ctx,
        dropped_workflows: 0,
        sources: None,
        origins: None,
    };
    let root = yaml::parse(source, limits).map_err(|e| cx.error(e.mark, "", e.message))?;
    let root = match root {
        Some(root) if !root.is_null() => root,
        _ => return Err(cx.error(Mark::START, "", "the config is empty")),
    };
    let Some(entries) = root.as_map() else {
        return Err(cx.error(
            root.mark(),
            "",
            format!(
                "the config must be a map with `version`, `jobs` and `workflows`, found {}",
                root.describe()
            ),
        ));
    };
    let version = match entries.iter().find(|(k, _)| key_str(k) == "version") {
        Some((_, node)) => cx.version(node)?,
        None => return Err(cx.missing_key(&root, "", "version")),
    };
    let expanded = Expander::new(file, ctx, limits).expand(&root)?;
    let cx = Cx {
        dropped_workflows: expanded.dropped_workflows,
        sources: Some(&expanded.sources),
        origins: Some(&expanded.origins),
        ..cx
    };
    let mut pipeline = cx.pipeline(&expanded.root)?;
    pipeline.version = version;
    Ok((expanded.root, pipeline))
}

/// Keys of a `docker:` image that are accepted and not used (yet).
const IGNORED_DOCKER_KEYS: &[&str] = &[
    "auth",
    "aws_auth",
    "environment",
    "name",
    "entrypoint",
    "command",
    "user",
];

struct Cx<'a> {
    file: &'a str,
    ctx: &'a PipelineContext,
    /// Workflows that `when`/`unless` left out: then no workflow at all is fine.
    dropped_workflows: usize,
    /// Where the processed workflow entries are written in the source, for error paths.
    sources: Option<&'a Sources>,
    /// Where each processed job came from (orbs, executors).
    origins: Option<&'a BTreeMap<String, expand::JobOrigin>>,
}

/// `parent.key`, quoting keys that would make the path ambiguous.
fn key_path(parent: &str, key: &str) -> String {
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

/// `parent[index]`.
fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn key_str(key: &Node) -> &str {
    // The YAML layer only builds maps with scalar keys.
    key.as_str().unwrap_or("")
}

/// "`a`, `b`, `c`": the keys of a map, for messages.
fn key_list(entries: &[(Node, Node)]) -> String {
    entries
        .iter()
        .map(|(k, _)| format!("`{}`", key_str(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A branch or tag pattern: `/regex/` (matching the whole name) or an exact name.
enum Pattern {
    Exact(String),
    Regex(regex_lite::Regex),
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(text) => text == name,
            Pattern::Regex(re) => re.is_match(name),
        }
    }
}

/// `only` / `ignore` of `filters.branches` or `filters.tags`.
struct Filter {
    only: Option<Vec<Pattern>>,
    ignore: Vec<Pattern>,
}

impl Filter {
    fn allows(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|p| p.matches(name)))
            && !self.ignore.iter().any(|p| p.matches(name))
    }
}

/// A job entry of a workflow, with what errors about it need.
struct Entry {
    name: String,
    /// Where the entry's name is written (the `name:` value or the job key).
    name_mark: Mark,
    name_path: String,
    job: String,
    /// Required names, with the position and path of each item.
    requires: Vec<(String, Mark, String)>,
    context: Vec<String>,
    approval: bool,
    /// Whether its `filters` let it run in this pipeline.
    runs: bool,
}

type Result<T> = std::result::Result<T, ConfigError>;

impl Cx<'_> {
    fn error(&self, mark: Mark, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: mark.line,
            column: mark.column,
            path: path.to_owned(),
            message: message.into(),
        }
    }

    fn unsupported_key(&self, key: &Node, path: &str) -> ConfigError {
        self.error(
            key.mark(),
            path,
            format!(
                "unsupported key `{}` (bosun does not support it yet)",
                key_str(key)
            ),
        )
    }

    fn missing_key(&self, node: &Node, path: &str, key: &str) -> ConfigError {
        self.error(node.mark(), path, format!("missing required key `{key}`"))
    }

    fn map<'n>(&self, node: &'n Node, path: &str) -> Result<&'n [(Node, Node)]> {
        node.as_map().ok_or_else(|| {
            self.error(
                node.mark(),
                path,
                format!("expected a map, found {}", node.describe()),
            )
        })
    }

    fn seq<'n>(&self, node: &'n Node, path: &str) -> Result<&'n [Node]> {
        node.as_seq().ok_or_else(|| {
            self.error(
                node.mark(),
                path,
                format!("expected a list, found {}", node.describe()),
            )
        })
    }

    /// Any non-null scalar, as written.
    fn string(&self, node: &Node, path: &str) -> Result<String> {
        match node.as_scalar() {
            Some(s) if !s.is_null() => Ok(s.value.clone()),
            _ => Err(self.error(
                node.mark(),
                path,
                format!("expected a string, found {}", node.describe()),
            )),
        }
    }

    fn boolean(&self, node: &Node, path: &str) -> Result<bool> {
        node.as_scalar().and_then(|s| s.as_bool()).ok_or_else(|| {
            self.error(
                node.mark(),
                path,
                format!("expected `true` or `false`, found {}", node.describe()),
            )
        })
    }

    /// A non-empty map key used as a name (of a job or a workflow).
    fn name(&self, key: &Node, path: &str, what: &str) -> Result<String> {
        let name = key_str(key);
        if name.trim().is_empty() {
            return Err(self.error(key.mark(), path, format!("{what} names must not be empty")));
        }
        Ok(name.to_owned())
    }

    fn pipeline(&self, root: &Node) -> Result<Pipeline> {
        let entries = root.as_map().ok_or_else(|| {
            self.error(
                root.mark(),
                "",
                format!(
                    "the config must be a map with `version`, `jobs` and `workflows`, found {}",
                    root.describe()
                ),
            )
        })?;
        let (mut version, mut jobs, mut workflows) = (None, None, None);
        let mut setup = false;
        for (key, value) in entries {
            match key_str(key) {
                "version" => version = Some(value),
                "setup" => setup = value.as_scalar().and_then(|s| s.as_bool()) == Some(true),
                "jobs" => jobs = Some((key, value)),
                "workflows" => workflows = Some(value),
                other => return Err(self.unsupported_key(key, &key_path("", other))),
            }
        }
        let version = match version {
            Some(node) => self.version(node)?,
            None => return Err(self.missing_key(root, "", "version")),
        };
        let Some((jobs_key, jobs_node)) = jobs else {
            return Err(self.missing_key(root, "", "jobs"));
        };
        let jobs = self.jobs(jobs_node)?;
        let workflows = match workflows {
            Some(node) => self.workflows(node, &jobs)?,
            None => {
                if !jobs.contains_key("build") {
                    return Err(self.error(
                        jobs_key.mark(),
                        "jobs",
                        "without `workflows`, the config runs the job `build`, and there is no \
                         such job: add a `build` job or a `workflows` key",
                    ));
                }
                vec![Workflow {
                    name: "workflow".to_owned(),
                    jobs: vec![WorkflowJob {
                        name: "build".to_owned(),
                        job: "build".to_owned(),
                        requires: Vec::new(),
                        context: Vec::new(),
                        approval: false,
                    }],
                }]
            }
        };
        Ok(Pipeline {
            version,
            setup,
            jobs,
            workflows,
        })
    }

    fn version(&self, node: &Node) -> Result<String> {
        let Some(scalar) = node.as_scalar().filter(|s| !s.is_null()) else {
            return Err(self.error(
                node.mark(),
                "version",
                format!(
                    "expected a version number like 2.1, found {}",
                    node.describe()
                ),
            ));
        };
        match scalar.value.as_str() {
            "2" | "2.0" | "2.1" => Ok(scalar.value.clone()),
            other => Err(self.error(
                node.mark(),
                "version",
                format!("unsupported version `{other}` (bosun supports 2, 2.0 and 2.1)"),
            )),
        }
    }

    fn jobs(&self, node: &Node) -> Result<BTreeMap<String, Job>> {
        let entries = self.map(node, "jobs")?;
        // Every job may belong to workflows that `when` left out (a setup config off its
        // branch): then there is nothing to run, which is fine.
        if entries.is_empty() && self.dropped_workflows == 0 {
            return Err(self.error(node.mark(), "jobs", "`jobs` defines no job"));
        }
        let mut jobs = BTreeMap::new();
        for (key, value) in entries {
            let path = key_path("jobs", key_str(key));
            let name = self.name(key, &path, "job")?;
            let job = self.job(&name, key, value, &path)?;
            jobs.insert(name, job);
        }
        Ok(jobs)
    }

    fn job(&self, name: &str, key: &Node, node: &Node, path: &str) -> Result<Job> {
        let entries = self.map(node, path)?;
        let mut executor: Option<(Executor, &Node)> = None;
        let mut job = Job {
            name: name.to_owned(),
            executor: Executor::Machine,
            resource_class: None,
            environment: BTreeMap::new(),
            working_directory: None,
            shell: None,
            parallelism: 1,
            steps: Vec::new(),
            no_op: false,
            orb: None,
            executor_name: None,
            executor_orb: None,
        };
        if let Some(origin) = self.origins.and_then(|o| o.get(name)) {
            job.orb = origin.orb.clone();
            job.executor_name = origin.executor.clone();
            job.executor_orb = origin.executor_orb.clone();
        }
        let mut steps = None;
        let no_op = entries
            .iter()
            .any(|(k, v)| key_str(k) == "type" && v.as_str() == Some("no-op"));
        if no_op {
            // A gate: it runs nothing, so anything that would run is a mistake to point out.
            for (k, _) in entries {
                if !matches!(key_str(k), "type" | "description") {
                    return Err(self.error(
                        k.mark(),
                        &key_path(path, key_str(k)),
                        format!(
                            "job `{name}` is `type: no-op`: it runs nothing, so it has no `{}`",
                            key_str(k)
                        ),
                    ));
                }
            }
            job.no_op = true;
            return Ok(job);
        }
        for (k, v) in entries {
            let key_name = key_str(k);
            let p = key_path(path, key_name);
            let this_executor = match key_name {
                "machine" => Some(self.machine(v, &p)?),
                "docker" => Some(self.docker(v, &p)?),
                "macos" => Some(self.macos(v, &p)?),
                "type" => match v.as_str() {
                    Some("build") => None,
                    Some(other) if !v.is_null() => {
                        return Err(self.error(
                            v.mark(),
                            &p,
                            format!("`type: {other}` jobs are not supported by bosun yet"),
                        ));
                    }
                    _ => return Err(self.unsupported_key(k, &p)),
                },
                "circleci_ip_ranges" => {
                    self.boolean(v, &p)?;
                    None
                }
                "resource_class" => {
                    job.resource_class = Some(self.string(v, &p)?);
                    None
                }
                "steps" => {
                    steps = Some((v, p.clone()));
                    None
                }
                "environment" => {
                    job.environment = self.environment(v, &p)?;
                    None
                }
                "working_directory" => {
                    job.working_directory = Some(self.string(v, &p)?);
                    None
                }
                "shell" => {
                    job.shell = Some(self.string(v, &p)?);
                    None
                }
                "parallelism" => {
                    job.parallelism = self.parallelism(v, &p)?;
                    None
                }
                _ => return Err(self.unsupported_key(k, &p)),
            };
            if let Some(e) = this_executor {
                if let Some((_, first)) = executor {
                    return Err(self.error(
                        k.mark(),
                        &p,
                        format!(
                            "job `{name}` has both `{}` and `{key_name}`; choose one executor",
                            key_str(first)
                        ),
                    ));
                }
                executor = Some((e, k));
            }
        }
        match executor {
            Some((e, _)) => job.executor = e,
            None => {
                return Err(self.error(
                    key.mark(),
                    path,
                    format!("job `{name}` needs an executor: `machine: true` or `docker:`"),
                ));
            }
        }
        let Some((steps_node, steps_path)) = steps else {
            return Err(self.missing_key(key, path, "steps"));
        };
        let items = self.seq(steps_node, &steps_path)?;
        if items.is_empty() {
            return Err(self.error(steps_node.mark(), &steps_path, "`steps` is empty"));
        }
        job.steps = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.step(item, &index_path(&steps_path, i)))
            .collect::<Result<_>>()?;
        Ok(job)
    }

    fn machine(&self, node: &Node, path: &str) -> Result<Executor> {
        if let Some(entries) = node.as_map() {
            let mut windows = None;
            for (k, v) in entries {
                let p = key_path(path, key_str(k));
                match key_str(k) {
                    "image" => {
                        let image = self.string(v, &p)?;
                        if image.starts_with("windows-") {
                            windows = Some(image);
                        }
                    }
                    // The default shell of the machine's steps (the windows orb sets it here).
                    "shell" => {
                        self.string(v, &p)?;
                    }
                    "docker_layer_caching" => {
                        self.boolean(v, &p)?;
                    }
                    "enabled" => {
                        self.boolean(v, &p)?;
                    }
                    // A runner's resource class may be set on the machine map.
                    "resource_class" => {
                        self.string(v, &p)?;
                    }
                    _ => return Err(self.unsupported_key(k, &p)),
                }
            }
            return Ok(match windows {
                Some(image) => Executor::Windows { image },
                None => Executor::Machine,
            });
        }
        match node.as_scalar().and_then(|s| s.as_bool()) {
            Some(true) => Ok(Executor::Machine),
            Some(false) => Err(self.error(
                node.mark(),
                path,
                "`machine: false` is not an executor; use `machine: true` or `docker:`",
            )),
            None => Err(self.error(
                node.mark(),
                path,
                format!("expected `true` or a map, found {}", node.describe()),
            )),
        }
    }

    fn macos(&self, node: &Node, path: &str) -> Result<Executor> {
        let mut xcode = None;
        for (k, v) in self.map(node, path)? {
            let p = key_path(path, key_str(k));
            match key_str(k) {
                "xcode" => xcode = Some(self.string(v, &p)?),
                "resource_class" => {
                    self.string(v, &p)?;
                }
                _ => return Err(self.unsupported_key(k, &p)),
            }
        }
        match xcode {
            Some(xcode) => Ok(Executor::Macos { xcode }),
            None => Err(self.missing_key(node, path, "xcode")),
        }
    }

    fn docker(&self, node: &Node, path: &str) -> Result<Executor> {
        let images = self.seq(node, path)?;
        if images.is_empty() {
            return Err(self.error(node.mark(), path, "`docker` lists no image"));
        }
        let mut primary = None;
        for (i, image) in images.iter().enumerate() {
            let ip = index_path(path, i);
            let mut name = None;
            for (k, v) in self.map(image, &ip)? {
                let p = key_path(&ip, key_str(k));
                match key_str(k) {
                    "image" => name = Some(self.string(v, &p)?),
                    other if IGNORED_DOCKER_KEYS.contains(&other) => {}
                    _ => return Err(self.unsupported_key(k, &p)),
                }
            }
            let Some(name) = name else {
                return Err(self.missing_key(image, &ip, "image"));
            };
            if primary.is_none() {
                primary = Some(name);
            }
        }
        match primary {
            Some(image) => Ok(Executor::Docker { image }),
            None => Err(self.error(node.mark(), path, "`docker` lists no image")),
        }
    }

    fn parallelism(&self, node: &Node, path: &str) -> Result<u32> {
        let parsed = node
            .as_scalar()
            .filter(|s| s.value.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.value.parse::<u32>().ok())
            .filter(|n| (1..=MAX_PARALLELISM).contains(n));
        parsed.ok_or_else(|| {
            let found = match node.as_str() {
                Some(text) if !node.is_null() => format!("`{text}`"),
                _ => node.describe().to_owned(),
            };
            self.error(
                node.mark(),
                path,
                format!(
                    "`parallelism` must be a whole number from 1 to {MAX_PARALLELISM}, found {found}"
                ),
            )
        })
    }

    fn environment(&self, node: &Node, path: &str) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for (k, v) in self.map(node, path)? {
            let name = key_str(k);
            let p = key_path(path, name);
            if !is_env_name(name) {
                return Err(self.error(
                    k.mark(),
                    &p,
                    format!(
                        "invalid environment variable name `{name}` (use letters, digits and `_`, \
                         not starting with a digit)"
                    ),
                ));
            }
            // Values are strings as written (`1` is "1", `true` is "true"); a null is empty.
            let value = match v.as_scalar() {
                Some(s) if s.is_null() => String::new(),
                Some(s) => s.value.clone(),
                None => {
                    return Err(self.error(
                        v.mark(),
                        &p,
                        format!("expected a string, found {}", v.describe()),
                    ));
                }
            };
            env.insert(name.to_owned(), value);
        }
        Ok(env)
    }

    fn step(&self, node: &Node, path: &str) -> Result<Step> {
        if let Some(entries) = node.as_map() {
            let [(key, value)] = entries else {
                return Err(self.error(
                    node.mark(),
                    path,
                    format!(
                        "a step is a map with exactly one key (the step's name), found {} keys \
                         ({}); are the step's attributes indented under it?",
                        entries.len(),
                        key_list(entries)
                    ),
                ));
            };
            let name = key_str(key);
            let p = key_path(path, name);
            return match name {
                "checkout" => self.checkout(value, &p),
                "run" | "deploy" => self.run(value, &p).map(Step::Run),
                "save_cache"
                | "restore_cache"
                | "persist_to_workspace"
                | "attach_workspace"
                | "store_artifacts"
                | "store_test_results"
                | "add_ssh_keys"
                | "setup_remote_docker" => self.builtin(name, value, &p),
                _ => Err(self.unknown_step(node, path, name)),
            };
        }
        match node.as_scalar() {
            Some(s) if !s.is_null() => match s.value.as_str() {
                "checkout" => Ok(Step::Checkout { path: None }),
                "run" => Err(self.error(node.mark(), path, "step `run` needs a command")),
                "add_ssh_keys" | "setup_remote_docker" => {
                    let null = Node::new_scalar(node.mark(), String::new(), ScalarStyle::Plain);
                    self.builtin(&s.value, &null, path)
                }
                name => Err(self.unknown_step(node, path, name)),
            },
            _ => Err(self.error(
                node.mark(),
                path,
                format!(
                    "expected a step (like `checkout` or `run: make`), found {}",
                    node.describe()
                ),
            )),
        }
    }

    fn unknown_step(&self, node: &Node, path: &str, name: &str) -> ConfigError {
        self.error(node.mark(), path, format!("unknown step `{name}`"))
    }

    /// A string, or a list of strings.
    fn strings(&self, node: &Node, path: &str) -> Result<Vec<String>> {
        match node.as_seq() {
            Some(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| self.string(n, &index_path(path, i)))
                .collect(),
            None => Ok(vec![self.string(node, path)?]),
        }
    }

    fn when(&self, node: &Node, path: &str) -> Result<When> {
        match node.as_str().filter(|_| !node.is_null()) {
            Some("on_success") => Ok(When::OnSuccess),
            Some("on_fail") => Ok(When::OnFail),
            Some("always") => Ok(When::Always),
            found => {
                let found = match found {
                    Some(text) => format!("`{text}`"),
                    None => node.describe().to_owned(),
                };
                Err(self.error(
                    node.mark(),
                    path,
                    format!("expected `on_success`, `on_fail` or `always`, found {found}"),
                ))
            }
        }
    }

    /// The built-in steps other than `run` and `checkout`.
    fn builtin(&self, kind: &str, node: &Node, path: &str) -> Result<Step> {
        let empty: &[(Node, Node)] = &[];
        let entries = if node.is_null() {
            empty
        } else {
            self.map(node, path)?
        };
        let mut name = None;
        // CircleCI stores artifacts even after a failed step; the other steps run on success.
        let mut when = if kind == "store_artifacts" {
            When::Always
        } else {
            When::OnSuccess
        };
        let mut fields: HashMap<&str, (&Node, String)> = HashMap::new();
        let allowed: &[&str] = match kind {
            "save_cache" => &["key", "paths"],
            "restore_cache" => &["key", "keys"],
            "persist_to_workspace" => &["root", "paths"],
            "attach_workspace" => &["at"],
            "store_artifacts" => &["path", "destination"],
            "store_test_results" => &["path"],
            "add_ssh_keys" => &["fingerprints"],
            _ => &["version", "docker_layer_caching"],
        };
        for (k, v) in entries {
            let key = key_str(k);
            let p = key_path(path, key);
            match key {
                "name" => name = Some(self.string(v, &p)?),
                "when" => when = self.when(v, &p)?,
                _ => match allowed.iter().find(|a| **a == key) {
                    Some(a) => {
                        fields.insert(a, (v, p));
                    }
                    None => return Err(self.unsupported_key(k, &p)),
                },
            }
        }
        let required = |key: &str| -> Result<(&Node, String)> {
            fields
                .get(key)
                .map(|(n, p)| (*n, p.clone()))
                .ok_or_else(|| self.missing_key(node, path, key))
        };
        let optional_string = |key: &str| -> Result<Option<String>> {
            match fields.get(key) {
                Some((n, p)) => self.string(n, p).map(Some),
                None => Ok(None),
            }
        };
        let step = match kind {
            "save_cache" => {
                let (k, kp) = required("key")?;
                let (p, pp) = required("paths")?;
                Step::SaveCache {
                    name,
                    key: self.string(k, &kp)?,
                    paths: self.strings(p, &pp)?,
                    when,
                }
            }
            "restore_cache" => {
                let mut keys = Vec::new();
                if let Some((n, p)) = fields.get("key") {
                    keys.push(self.string(n, p)?);
                }
                if let Some((n, p)) = fields.get("keys") {
                    keys.extend(self.strings(n, p)?);
                }
                if keys.is_empty() {
                    return Err(self.missing_key(node, path, "keys"));
                }
                Step::RestoreCache { name, keys }
            }
            "persist_to_workspace" => {
                let (r, rp) = required("root")?;
                let (p, pp) = required("paths")?;
                Step::PersistToWorkspace {
                    name,
                    root: self.string(r, &rp)?,
                    paths: self.strings(p, &pp)?,
                }
            }
            "attach_workspace" => {
                let (a, ap) = required("at")?;
                Step::AttachWorkspace {
                    name,
                    at: self.string(a, &ap)?,
                }
            }
            "store_artifacts" => {
                let (p, pp) = required("path")?;
                Step::StoreArtifacts {
                    name,
                    path: self.string(p, &pp)?,
                    destination: optional_string("destination")?,
                    when,
                }
            }
            "store_test_results" => {
                let (p, pp) = required("path")?;
                Step::StoreTestResults {
                    name,
                    path: self.string(p, &pp)?,
                }
            }
            "add_ssh_keys" => Step::AddSshKeys {
                name,
                fingerprints: match fields.get("fingerprints") {
                    Some((n, p)) => self.strings(n, p)?,
                    None => Vec::new(),
                },
            },
            _ => Step::SetupRemoteDocker {
                name,
                version: optional_string("version")?,
                docker_layer_caching: match fields.get("docker_layer_caching") {
                    Some((n, p)) => self.boolean(n, p)?,
                    None => false,
                },
            },
        };
        Ok(step)
    }

    fn checkout(&self, node: &Node, path: &str) -> Result<Step> {
        if node.is_null() {
            return Ok(Step::Checkout { path: None });
        }
        let mut checkout_path = None;
        for (k, v) in self.map(node, path)? {
            let p = key_path(path, key_str(k));
            match key_str(k) {
                "path" => checkout_path = Some(self.string(v, &p)?),
                // `blobless` or `full`: how much history to fetch; bosun fetches what it needs.
                "method" | "name" => {
                    self.string(v, &p)?;
                }
                _ => return Err(self.unsupported_key(k, &p)),
            }
        }
        Ok(Step::Checkout {
            path: checkout_path,
        })
    }

    fn run(&self, node: &Node, path: &str) -> Result<Run> {
        let mut run = Run {
            name: None,
            command: String::new(),
            shell: None,
            environment: BTreeMap::new(),
            working_directory: None,
            background: false,
            no_output_timeout_secs: None,
            max_auto_reruns: 0,
            auto_rerun_delay_secs: 0,
            when: When::OnSuccess,
        };
        if let Some(s) = node.as_scalar() {
            if s.is_null() {
                return Err(self.error(node.mark(), path, "step `run` needs a command"));
            }
            run.command = s.value.clone();
            return Ok(run);
        }
        let mut command = None;
        for (k, v) in self.map(node, path)? {
            let p = key_path(path, key_str(k));
            match key_str(k) {
                "command" => command = Some(self.string(v, &p)?),
                "name" => run.name = Some(self.string(v, &p)?),
                "shell" => run.shell = Some(self.string(v, &p)?),
                "environment" => run.environment = self.environment(v, &p)?,
                "working_directory" => run.working_directory = Some(self.string(v, &p)?),
                "background" => run.background = self.boolean(v, &p)?,
                "max_auto_reruns" => {
                    let n = self.string(v, &p)?;
                    run.max_auto_reruns = match n.parse::<u32>() {
                        Ok(n @ 1..=5) => n,
                        _ => {
                            return Err(self.error(
                                v.mark(),
                                &p,
                                format!("`max_auto_reruns` is a number from 1 to 5, found `{n}`"),
                            ));
                        }
                    };
                }
                "auto_rerun_delay" => {
                    let text = self.string(v, &p)?;
                    let secs = parse_duration(&text).map_err(|m| self.error(v.mark(), &p, m))?;
                    if secs > 600 {
                        return Err(self.error(
                            v.mark(),
                            &p,
                            "`auto_rerun_delay` is at most 10 minutes",
                        ));
                    }
                    run.auto_rerun_delay_secs = secs;
                }
                "no_output_timeout" => {
                    let text = self.string(v, &p)?;
                    let secs = parse_duration(&text).map_err(|m| self.error(v.mark(), &p, m))?;
                    if secs == 0 {
                        return Err(self.error(
                            v.mark(),
                            &p,
                            "`no_output_timeout` must be at least one second",
                        ));
                    }
                    run.no_output_timeout_secs = Some(secs);
                }
                "when" => run.when = self.when(v, &p)?,
                _ => return Err(self.unsupported_key(k, &p)),
            }
        }
        match command {
            Some(command) => run.command = command,
            None => return Err(self.missing_key(node, path, "command")),
        }
        Ok(run)
    }

    fn workflows(&self, node: &Node, jobs: &BTreeMap<String, Job>) -> Result<Vec<Workflow>> {
        let mut workflows = Vec::new();
        let mut filtered = 0usize;
        for (key, value) in self.map(node, "workflows")? {
            if key_str(key) == "version" {
                // `version: 2` inside `workflows` is a 2.0-era leftover.
                continue;
            }
            let path = key_path("workflows", key_str(key));
            let name = self.name(key, &path, "workflow")?;
            match self.workflow(&name, key, value, &path, jobs)? {
                Some(workflow) => workflows.push(workflow),
                None => filtered += 1,
            }
        }
        if workflows.is_empty() && filtered == 0 && self.dropped_workflows == 0 {
            return Err(self.error(node.mark(), "workflows", "`workflows` defines no workflow"));
        }
        Ok(workflows)
    }

    /// Whether filters apply: only when the pipeline names a branch or a tag.
    fn filtering(&self) -> bool {
        self.ctx.branch.is_some() || self.ctx.tag.is_some()
    }

    /// `None` when the workflow does not run in this pipeline (scheduled `triggers`, or every
    /// job filtered out).
    fn workflow(
        &self,
        name: &str,
        key: &Node,
        node: &Node,
        path: &str,
        jobs: &BTreeMap<String, Job>,
    ) -> Result<Option<Workflow>> {
        let mut jobs_node = None;
        let mut scheduled = false;
        for (k, v) in self.map(node, path)? {
            let p = key_path(path, key_str(k));
            match key_str(k) {
                "jobs" => jobs_node = Some((v, p)),
                "triggers" => {
                    for (i, t) in self.seq(v, &p)?.iter().enumerate() {
                        let tp = index_path(&p, i);
                        for (tk, tv) in self.map(t, &tp)? {
                            let sp = key_path(&tp, key_str(tk));
                            if key_str(tk) != "schedule" {
                                return Err(self.unsupported_key(tk, &sp));
                            }
                            for (sk, sv) in self.map(tv, &sp)? {
                                let skp = key_path(&sp, key_str(sk));
                                match key_str(sk) {
                                    "cron" => {
                                        self.string(sv, &skp)?;
                                    }
                                    "filters" => {
                                        self.filters(sv, &skp)?;
                                    }
                                    _ => return Err(self.unsupported_key(sk, &skp)),
                                }
                            }
                            scheduled = true;
                        }
                    }
                }
                "max_auto_reruns" => {}
                _ => return Err(self.unsupported_key(k, &p)),
            }
        }
        let Some((jobs_node, jobs_path)) = jobs_node else {
            return Err(self.missing_key(key, path, "jobs"));
        };
        let items = self.seq(jobs_node, &jobs_path)?;
        if items.is_empty() {
            return Err(self.error(
                jobs_node.mark(),
                &jobs_path,
                format!("workflow `{name}` has no jobs"),
            ));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(items.len());
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let source = self
                .sources
                .and_then(|s| s.get(name))
                .and_then(|entries| entries.get(i));
            let entry = self.workflow_job(item, &index_path(&jobs_path, i), source, jobs)?;
            if by_name.insert(entry.name.clone(), i).is_some() {
                return Err(self.error(
                    entry.name_mark,
                    &entry.name_path,
                    format!(
                        "workflow `{name}` already has a job named `{}`; give one of them a \
                         distinct `name:`",
                        entry.name
                    ),
                ));
            }
            entries.push(entry);
        }
        // Every requirement names an entry of this workflow.
        let mut edges: Vec<Vec<usize>> = Vec::with_capacity(entries.len());
        for entry in &entries {
            let mut required = Vec::new();
            for (req, mark, p) in &entry.requires {
                match by_name.get(req) {
                    Some(&j) => {
                        if !required.contains(&j) {
                            required.push(j);
                        }
                    }
                    None => {
                        return Err(self.error(
                            *mark,
                            p,
                            format!("requires `{req}`, which is not a job of workflow `{name}`"),
                        ));
                    }
                }
            }
            edges.push(required);
        }
        self.check_acyclic(name, &entries, &edges, &by_name)?;
        let scheduled_run = matches!(
            self.ctx.trigger_source.as_deref(),
            Some("scheduled_pipeline" | "schedule")
        );
        if self.filtering() && scheduled != scheduled_run {
            return Ok(None);
        }
        // A job whose filters exclude it does not run, nor does anything that requires it.
        let mut runs: Vec<bool> = entries.iter().map(|e| e.runs).collect();
        loop {
            let mut changed = false;
            for (i, required) in edges.iter().enumerate() {
                if runs[i] && required.iter().any(|&j| !runs[j]) {
                    runs[i] = false;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        if !runs.iter().any(|r| *r) {
            return Ok(None);
        }
        Ok(Some(Workflow {
            name: name.to_owned(),
            jobs: entries
                .into_iter()
                .zip(runs)
                .filter(|(_, runs)| *runs)
                .map(|(e, _)| {
                    let mut seen = HashSet::new();
                    WorkflowJob {
                        name: e.name,
                        job: e.job,
                        requires: e
                            .requires
                            .into_iter()
                            .map(|(r, _, _)| r)
                            .filter(|r| seen.insert(r.clone()))
                            .collect(),
                        context: e.context,
                        approval: e.approval,
                    }
                })
                .collect(),
        }))
    }

    /// Validates `filters` and says whether they let a job run in this pipeline.
    fn filters(&self, node: &Node, path: &str) -> Result<bool> {
        let mut branches = None;
        let mut tags = None;
        for (k, v) in self.map(node, path)? {
            let p = key_path(path, key_str(k));
            let parsed = self.filter(v, &p)?;
            match key_str(k) {
                "branches" => branches = Some(parsed),
                "tags" => tags = Some(parsed),
                _ => return Err(self.unsupported_key(k, &p)),
            }
        }
        // Branch pipelines check `branches` (all by default); tag pipelines run a job only if
        // its `tags` filter lets the tag through (none by default).
        Ok(match (&self.ctx.tag, &self.ctx.branch) {
            (Some(tag), _) => tags.is_some_and(|f| f.allows(tag)),
            (None, Some(branch)) => branches.is_none_or(|f| f.allows(branch)),
            (None, None) => true,
        })
    }

    fn filter(&self, node: &Node, path: &str) -> Result<Filter> {
        let mut filter = Filter {
            only: None,
            ignore: Vec::new(),
        };
        for (k, v) in self.map(node, path)? {
            let p = key_path(path, key_str(k));
            let items: Vec<(&Node, String)> = match v.as_seq() {
                Some(list) => list
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n, index_path(&p, i)))
                    .collect(),
                None => vec![(v, p.clone())],
            };
            let mut patterns = Vec::new();
            for (n, np) in items {
                let text = self.string(n, &np)?;
                let pattern = match text
                    .strip_prefix('/')
                    .and_then(|t| t.strip_suffix('/'))
                    .filter(|_| text.len() >= 2)
                {
                    Some(re) => {
                        Pattern::Regex(full_regex(re).map_err(|m| self.error(n.mark(), &np, m))?)
                    }
                    None => Pattern::Exact(text),
                };
                patterns.push(pattern);
            }
            match key_str(k) {
                "only" => filter.only = Some(patterns),
                "ignore" => filter.ignore = patterns,
                _ => return Err(self.unsupported_key(k, &p)),
            }
        }
        Ok(filter)
    }

    /// `source`: where the entry is written, when 2.1 processing moved or renamed it.
    fn workflow_job(
        &self,
        node: &Node,
        path: &str,
        source: Option<&EntrySource>,
        jobs: &BTreeMap<String, Job>,
    ) -> Result<Entry> {
        let path = source.map_or(path, |s| s.item.as_str());
        let shape_error = || {
            let found = match node.as_map() {
                Some(entries) => format!(
                    "a map with {} keys ({}); are the job's attributes indented under it?",
                    entries.len(),
                    key_list(entries)
                ),
                None => node.describe().to_owned(),
            };
            self.error(
                node.mark(),
                path,
                format!(
                    "a workflow job is a job name, or a map with exactly one key (the job name), \
                     found {found}"
                ),
            )
        };
        let (job_node, entry_path, attributes) = match node.as_map() {
            Some([(key, value)]) => (key, key_path(path, key_str(key)), Some(value)),
            Some(_) => return Err(shape_error()),
            None if node.as_scalar().is_some() && !node.is_null() => (node, path.to_owned(), None),
            None => return Err(shape_error()),
        };
        let entry_path = source.map_or(entry_path, |s| s.entry.clone());
        let job = key_str(job_node).to_owned();
        let approval = attributes
            .and_then(Node::as_map)
            .and_then(|a| a.iter().find(|(k, _)| key_str(k) == "type"))
            .is_some_and(|(_, v)| v.as_str() == Some("approval"));
        if !approval && !jobs.contains_key(&job) {
            return Err(self.error(
                job_node.mark(),
                &entry_path,
                format!("job `{job}` is not defined in `jobs`"),
            ));
        }
        let mut entry = Entry {
            name: job.clone(),
            name_mark: job_node.mark(),
            name_path: entry_path.clone(),
            job,
            requires: Vec::new(),
            context: Vec::new(),
            approval,
            runs: true,
        };
        let Some(attributes) = attributes.filter(|a| !a.is_null()) else {
            return Ok(entry);
        };
        for (k, v) in self.map(attributes, &entry_path)? {
            let p = key_path(&entry_path, key_str(k));
            match key_str(k) {
                "name" => {
                    entry.name = self.string(v, &p)?;
                    entry.name_mark = v.mark();
                    entry.name_path = p;
                }
                "requires" => {
                    for (i, item) in self.seq(v, &p)?.iter().enumerate() {
                        let ip = source
                            .and_then(|s| s.requires.get(i).cloned())
                            .unwrap_or_else(|| index_path(&p, i));
                        let required = self.string(item, &ip)?;
                        entry.requires.push((required, item.mark(), ip));
                    }
                }
                "context" => entry.context = self.strings(v, &p)?,
                "filters" => entry.runs = self.filters(v, &p)?,
                "type" => match v.as_str() {
                    Some("approval") => {}
                    Some("build") if !v.is_null() => {}
                    _ => {
                        return Err(self.error(
                            v.mark(),
                            &p,
                            format!(
                                "expected `approval` (or `build`), found {}",
                                match v.as_str() {
                                    Some(t) if !v.is_null() => format!("`{t}`"),
                                    _ => v.describe().to_owned(),
                                }
                            ),
                        ));
                    }
                },
                _ => return Err(self.unsupported_key(k, &p)),
            }
        }
        Ok(entry)
    }

    /// Refuses cycles in `requires` (Kahn's algorithm), naming one cycle.
    fn check_acyclic(
        &self,
        workflow: &str,
        entries: &[Entry],
        edges: &[Vec<usize>],
        by_name: &HashMap<String, usize>,
    ) -> Result<()> {
        let n = entries.len();
        let mut pending: Vec<usize> = edges.iter().map(Vec::len).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, required) in edges.iter().enumerate() {
            for &j in required {
                if let Some(d) = dependents.get_mut(j) {
                    d.push(i);
                }
            }
        }
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
        let mut done = vec![false; n];
        while let Some(i) = ready.pop_front() {
            done[i] = true;
            for &d in &dependents[i] {
                pending[d] -= 1;
                if pending[d] == 0 {
                    ready.push_back(d);
                }
            }
        }
        let Some(start) = (0..n).find(|&i| !done[i]) else {
            return Ok(());
        };
        // Every unfinished entry requires an unfinished entry: walk until one repeats.
        let mut order = vec![start];
        let mut position: HashMap<usize, usize> = HashMap::from([(start, 0)]);
        let mut current = start;
        let cycle_start = loop {
            let Some(&next) = edges[current].iter().find(|&&j| !done[j]) else {
                // Unreachable by construction; report the entry rather than panic.
                break position.get(&current).copied().unwrap_or(0);
            };
            if let Some(&at) = position.get(&next) {
                break at;
            }
            position.insert(next, order.len());
            order.push(next);
            current = next;
        };
        let cycle = order.get(cycle_start..).unwrap_or(&order[..]);
        let first = cycle.first().copied().unwrap_or(start);
        let second = cycle.get(1).copied().unwrap_or(first);
        let mut names: Vec<&str> = cycle.iter().map(|&i| entries[i].name.as_str()).collect();
        names.push(entries[first].name.as_str());
        // Point at the requirement of `first` that names `second`.
        let (mark, path) = entries[first]
            .requires
            .iter()
            .find(|(r, _, _)| by_name.get(r) == Some(&second))
            .map(|(_, mark, path)| (*mark, path.clone()))
            .unwrap_or_else(|| (entries[first].name_mark, entries[first].name_path.clone()));
        Err(self.error(
            mark,
            &path,
            format!(
                "the jobs of workflow `{workflow}` require each other in a cycle: {} \
                 (each requires the next)",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_ambiguous_keys() {
        assert_eq!(key_path("", "jobs"), "jobs");
        assert_eq!(key_path("jobs", "build-1_x"), "jobs.build-1_x");
        assert_eq!(key_path("jobs", "a.b"), "jobs[\"a.b\"]");
        assert_eq!(key_path("jobs", ""), "jobs[\"\"]");
        assert_eq!(key_path("", "my key"), "\"my key\"");
        assert_eq!(index_path("jobs.build.steps", 3), "jobs.build.steps[3]");
    }

    #[test]
    fn env_names() {
        for ok in ["A", "_", "FOO_BAR1", "foo"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn self_requirement_is_a_cycle() {
        let src = "version: 2.1\njobs:\n  a:\n    machine: true\n    steps: [checkout]\n\
                   workflows:\n  w:\n    jobs:\n      - a:\n          requires: [a]\n";
        let e = compile(src, "c.yml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.yml:10:22: workflows.w.jobs[0].a.requires[0]: the jobs of workflow `w` require \
             each other in a cycle: `a` -> `a` (each requires the next)"
        );
    }

    #[test]
    fn store_artifacts_runs_always_unless_it_says_otherwise() {
        let src = concat!(
            "version: 2.1\njobs:\n  build:\n    machine: true\n    steps:\n",
            "      - store_artifacts:\n          path: out\n",
            "      - store_artifacts:\n          path: x\n          destination: y\n",
            "          when: on_success\n",
        );
        let pipeline = compile(src, "c.yml").unwrap();
        let whens: Vec<_> = pipeline.jobs["build"]
            .steps
            .iter()
            .map(|step| match step {
                Step::StoreArtifacts {
                    when, destination, ..
                } => (*when, destination.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            whens,
            [
                (When::Always, None),
                (When::OnSuccess, Some("y".to_owned()))
            ]
        );
    }
}
