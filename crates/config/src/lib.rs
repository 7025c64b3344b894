//! bosun's compiler for CircleCI's `.circleci/config.yml`.
//!
//! [`compile`] turns the text of a config file into a [`Pipeline`]: its jobs (executor,
//! environment, steps) and its workflows (which jobs run, and what each one requires). Every
//! problem is reported as a [`ConfigError`] that names the file, the 1-based line and column of
//! the offending node, and its key path (`jobs.build.steps[3].run.command`).
//!
//! The crate knows nothing about execution: it does not run, schedule or fetch anything. The
//! server and the CLI call it; the server maps the compiled jobs into task specs.
//!
//! Layers:
//! - [`yaml`] builds a YAML tree whose nodes carry their positions, resolving anchors, aliases
//!   and merge keys, with hard bounds on input size, nesting depth and alias expansion.
//! - `expand` does CircleCI's 2.1 processing (pipeline values and parameters, orbs, commands,
//!   executors, matrices, `when`/`unless`) and yields a 2.0-style tree ([`process`] prints it).
//! - `compile` walks that tree and validates it against the subset of CircleCI config that bosun
//!   supports. Keys bosun does not support yet are refused, never silently ignored.
//!
//! Untrusted input never makes this crate panic.

mod compile;
mod duration;
mod expand;
pub mod expr;
mod model;
mod orbs;
pub mod yaml;

pub use compile::{
    compile, compile_pipeline, compile_pipeline_processed, compile_with_limits, process,
    process_json,
};
pub use duration::parse_duration;
pub use expand::{MAX_INVOCATION_DEPTH, MAX_MATRIX_JOBS, MAX_OUTPUT_NODES, PipelineContext};
pub use model::{Executor, Job, MAX_PARALLELISM, Pipeline, Run, Step, When, Workflow, WorkflowJob};
pub use orbs::{
    Import, MAX_ORB_BYTES, MAX_ORB_DEPTH, MAX_RESOLVED_ORBS, OrbRef, OrbSummary, ResolvedOrb,
    ResolvedOrbs, VersionSpec, is_orb_name, is_url_orb, orb_imports, pack, resolve_orbs,
    validate_orb,
};
pub use yaml::Limits;

/// A problem with a config file, located at a node of the file.
///
/// Displays as `{file}:{line}:{column}: {path}: {message}`, without `{path}: ` when the path is
/// empty (an error about the whole document).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {}{message}", path_prefix(.path))]
pub struct ConfigError {
    /// The file name given to [`compile`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Key path of the offending node, like `jobs.build.steps[3].run.command`; empty for the
    /// document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}
