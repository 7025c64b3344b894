//! From a positioned YAML tree to a [`Pipeline`], validating as it goes.
//!
//! Every error names the offending node's position and key path. Keys that CircleCI knows but
//! bosun does not support yet are refused rather than ignored: silently dropping a `filters:`
//! or a `when:` would run things the author asked not to run.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::model::{
    Executor, Job, MAX_PARALLELISM, Pipeline, Run, Step, When, Workflow, WorkflowJob,
};
use crate::yaml::{self, Limits, Mark, Node};
use crate::{ConfigError, parse_duration};

/// Compiles the text of a `.circleci/config.yml` into a [`Pipeline`]. `file` names the file in
/// errors. Uses the default [`Limits`].
pub fn compile(source: &str, file: &str) -> std::result::Result<Pipeline, ConfigError> {
    compile_with_limits(source, file, &Limits::DEFAULT)
}

/// [`compile`] with explicit parsing [`Limits`].
pub fn compile_with_limits(
    source: &str,
    file: &str,
    limits: &Limits,
) -> std::result::Result<Pipeline, ConfigError> {
    let cx = Cx { file };
    let root = yaml::parse(source, limits).map_err(|e| cx.error(e.mark, "", e.message))?;
    let root = match root {
        Some(root) if !root.is_null() => root,
        _ => return Err(cx.error(Mark::START, "", "the config is empty")),
    };
    cx.pipeline(&root)
}

/// Built-in CircleCI steps that bosun does not run yet.
const UNSUPPORTED_STEPS: &[&str] = &[
    "save_cache",
    "restore_cache",
    "store_artifacts",
    "store_test_results",
    "persist_to_workspace",
    "attach_workspace",
    "add_ssh_keys",
    "setup_remote_docker",
    "deploy",
    "when",
    "unless",
];

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

/// A job entry of a workflow, with what errors about it need.
struct Entry {
    name: String,
    /// Where the entry's name is written (the `name:` value or the job key).
    name_mark: Mark,
    name_path: String,
    job: String,
    /// Required names, with the position and path of each item.
    requires: Vec<(String, Mark, String)>,
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
        for (key, value) in entries {
            match key_str(key) {
                "version" => version = Some(value),
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
                    }],
                }]
            }
        };
        Ok(Pipeline {
            version,
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
        if entries.is_empty() {
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
        };
        let mut steps = None;
        for (k, v) in entries {
            let key_name = key_str(k);
            let p = key_path(path, key_name);
            let this_executor = match key_name {
                "machine" => Some(self.machine(v, &p)?),
                "docker" => Some(self.docker(v, &p)?),
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
            for (k, v) in entries {
                let p = key_path(path, key_str(k));
                match key_str(k) {
                    "image" => {
                        self.string(v, &p)?;
                    }
                    "docker_layer_caching" => {
                        self.boolean(v, &p)?;
                    }
                    _ => return Err(self.unsupported_key(k, &p)),
                }
            }
            return Ok(Executor::Machine);
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
                "run" => self.run(value, &p).map(Step::Run),
                _ => Err(self.unknown_step(node, path, name)),
            };
        }
        match node.as_scalar() {
            Some(s) if !s.is_null() => match s.value.as_str() {
                "checkout" => Ok(Step::Checkout { path: None }),
                "run" => Err(self.error(node.mark(), path, "step `run` needs a command")),
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
        let message = if UNSUPPORTED_STEPS.contains(&name) {
            format!("step `{name}` is not supported yet")
        } else {
            format!("unknown step `{name}`")
        };
        self.error(node.mark(), path, message)
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
                "when" => {
                    run.when = match v.as_str().filter(|_| !v.is_null()) {
                        Some("on_success") => When::OnSuccess,
                        Some("on_fail") => When::OnFail,
                        Some("always") => When::Always,
                        found => {
                            let found = match found {
                                Some(text) => format!("`{text}`"),
                                None => v.describe().to_owned(),
                            };
                            return Err(self.error(
                                v.mark(),
                                &p,
                                format!(
                                    "expected `on_success`, `on_fail` or `always`, found {found}"
                                ),
                            ));
                        }
                    }
                }
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
        for (key, value) in self.map(node, "workflows")? {
            if key_str(key) == "version" {
                // `version: 2` inside `workflows` is a 2.0-era leftover.
                continue;
            }
            let path = key_path("workflows", key_str(key));
            let name = self.name(key, &path, "workflow")?;
            workflows.push(self.workflow(&name, key, value, &path, jobs)?);
        }
        if workflows.is_empty() {
            return Err(self.error(node.mark(), "workflows", "`workflows` defines no workflow"));
        }
        Ok(workflows)
    }

    fn workflow(
        &self,
        name: &str,
        key: &Node,
        node: &Node,
        path: &str,
        jobs: &BTreeMap<String, Job>,
    ) -> Result<Workflow> {
        let mut jobs_node = None;
        for (k, v) in self.map(node, path)? {
            let p = key_path(path, key_str(k));
            match key_str(k) {
                "jobs" => jobs_node = Some((v, p)),
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
            let entry = self.workflow_job(item, &index_path(&jobs_path, i), jobs)?;
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
        Ok(Workflow {
            name: name.to_owned(),
            jobs: entries
                .into_iter()
                .map(|e| {
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
                    }
                })
                .collect(),
        })
    }

    fn workflow_job(&self, node: &Node, path: &str, jobs: &BTreeMap<String, Job>) -> Result<Entry> {
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
        let job = key_str(job_node).to_owned();
        if !jobs.contains_key(&job) {
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
                        let ip = index_path(&p, i);
                        let required = self.string(item, &ip)?;
                        entry.requires.push((required, item.mark(), ip));
                    }
                }
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
}
