//! CircleCI 2.1 processing: each error it reports, with its exact position, key path and
//! message, and focused tests of the features the snapshots in `process/` only show in bulk.
//!
//! Configs are written line by line so that every expected `line:column` can be counted.

use std::path::PathBuf;

use bosun_config::{MAX_INVOCATION_DEPTH, MAX_MATRIX_JOBS, Pipeline, PipelineContext, Step};

use crate::{err_text, ok};

const ORBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/orbs");

/// Compiles with `ctx`, expecting an error; its display form.
fn err_with(source: &str, ctx: &PipelineContext) -> String {
    match bosun_config::compile_pipeline(source, "config.yml", ctx) {
        Ok(pipeline) => panic!("expected an error, got {pipeline:#?}"),
        Err(e) => e.to_string(),
    }
}

fn ok_with(source: &str, ctx: &PipelineContext) -> Pipeline {
    bosun_config::compile_pipeline(source, "config.yml", ctx)
        .unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

/// A context giving these pipeline parameters (a JSON object).
fn with_parameters(json: &str) -> PipelineContext {
    PipelineContext {
        parameters: serde_json::from_str(json).expect("a JSON object"),
        ..PipelineContext::default()
    }
}

fn with_orb_dir() -> PipelineContext {
    PipelineContext {
        orb_dir: Some(PathBuf::from(ORBS)),
        ..PipelineContext::default()
    }
}

/// The commands of a job's `run` steps, in order.
fn commands(pipeline: &Pipeline, job: &str) -> Vec<String> {
    pipeline.jobs[job]
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Run(run) => Some(run.command.clone()),
            _ => None,
        })
        .collect()
}

/// `(name, requires)` of each job of the first workflow.
fn workflow(pipeline: &Pipeline) -> Vec<(String, Vec<String>)> {
    pipeline.workflows[0]
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.requires.clone()))
        .collect()
}

// ------------------------------------------------------------------ job parameters

/// A job with one parameter of each scalar type (lines 1-12); a workflow on lines 13-15, its
/// first entry on line 16.
const TYPED_JOB: &str = "\
version: 2.1
jobs:
  build:
    parameters:
      os: {type: string}
      flag: {type: boolean, default: false}
      n: {type: integer, default: 1}
      e: {type: enum, enum: [a, b], default: a}
      v: {type: env_var_name, default: FOO}
      s: {type: steps}
    machine: true
    steps: [checkout]
workflows:
  main:
    jobs:
";

fn typed_job(entry: &str) -> String {
    err_text(&format!("{TYPED_JOB}{entry}"))
}

#[test]
fn missing_required_job_parameter() {
    assert_eq!(
        typed_job("      - build\n"),
        "config.yml:16:9: workflows.main.jobs[0]: job `build` needs a value for its parameter `os`"
    );
    assert_eq!(
        typed_job("      - build: {flag: true}\n"),
        "config.yml:16:9: workflows.main.jobs[0].build: job `build` needs a value for its \
         parameter `os`"
    );
    // Without `workflows` the job `build` runs with no arguments.
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    parameters:\n      x: {type: string}\n    \
             machine: true\n    steps: [checkout]\n"
        ),
        "config.yml:3:3: jobs.build: job `build` needs a value for its parameter `x`"
    );
}

#[test]
fn unknown_job_argument() {
    assert_eq!(
        typed_job("      - build: {os: x, osx: y}\n"),
        "config.yml:16:24: workflows.main.jobs[0].build.osx: job `build` has no parameter `osx` \
         (it declares `os`, `flag`, `n`, `e`, `v`, `s`)"
    );
}

#[test]
fn job_argument_of_the_wrong_type() {
    for (argument, expected) in [
        (
            "flag: maybe",
            "16:30: workflows.main.jobs[0].build.flag: parameter `flag` of job `build`: expected \
             a boolean, found a string",
        ),
        (
            "flag: 2",
            "16:30: workflows.main.jobs[0].build.flag: parameter `flag` of job `build`: expected \
             a boolean, found a number",
        ),
        (
            "n: abc",
            "16:27: workflows.main.jobs[0].build.n: parameter `n` of job `build`: expected an \
             integer, found `abc`",
        ),
        (
            "n: [1]",
            "16:27: workflows.main.jobs[0].build.n: parameter `n` of job `build`: expected an \
             integer, found a sequence",
        ),
        (
            "e: c",
            "16:27: workflows.main.jobs[0].build.e: parameter `e` of job `build`: `c` is not one \
             of `a`, `b`",
        ),
        (
            "v: 1FOO",
            "16:27: workflows.main.jobs[0].build.v: parameter `v` of job `build`: `1FOO` is not \
             an environment variable name",
        ),
        (
            "s: make",
            "16:27: workflows.main.jobs[0].build.s: parameter `s` of job `build`: expected a list \
             of steps, found a string",
        ),
    ] {
        assert_eq!(
            typed_job(&format!("      - build: {{os: x, {argument}}}\n")),
            format!("config.yml:{expected}"),
            "{argument}"
        );
    }
    assert_eq!(
        typed_job("      - build: {os: {a: b}}\n"),
        "config.yml:16:21: workflows.main.jobs[0].build.os: parameter `os` of job `build`: \
         expected a string, found a map"
    );
}

#[test]
fn job_arguments_of_the_right_type_are_accepted() {
    let p = ok(&format!(
        "{TYPED_JOB}      - build: {{os: x, flag: yes, n: \"7\", e: b, v: _X1, s: [checkout]}}\n"
    ));
    assert_eq!(p.jobs["build"].steps.len(), 1);
}

/// A job whose parameter `x` is declared as `decl` (line 5), invoked on line 11.
fn declared(decl: &str) -> String {
    err_text(&format!(
        "version: 2.1\njobs:\n  build:\n    parameters:\n      x: {decl}\n    machine: true\n    \
         steps: [checkout]\nworkflows:\n  main:\n    jobs:\n      - build: {{x: a}}\n"
    ))
}

#[test]
fn parameter_declaration_errors_point_at_the_declaration() {
    assert_eq!(
        declared("{default: a}"),
        "config.yml:5:10: jobs.build.parameters.x: parameter `x` needs a `type`"
    );
    assert_eq!(
        declared("{type: str}"),
        "config.yml:5:17: jobs.build.parameters.x.type: unknown parameter type `str` (expected \
         string, boolean, integer, enum, steps, executor or env_var_name)"
    );
    assert_eq!(
        declared("{type: [string]}"),
        "config.yml:5:17: jobs.build.parameters.x.type: unknown parameter type a sequence \
         (expected string, boolean, integer, enum, steps, executor or env_var_name)"
    );
    assert_eq!(
        declared("{type: enum}"),
        "config.yml:5:10: jobs.build.parameters.x: parameter `x` of type enum needs an `enum` \
         list of its values"
    );
    assert_eq!(
        declared("{type: enum, enum: []}"),
        "config.yml:5:29: jobs.build.parameters.x.enum: parameter `x` of type enum needs an \
         `enum` list of its values"
    );
    assert_eq!(
        declared("string"),
        "config.yml:5:10: jobs.build.parameters.x: expected a map, found a string"
    );
    // A default of the wrong type, used when the job is invoked without `x`.
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    parameters:\n      x: {type: integer, default: many}\n    \
             machine: true\n    steps: [checkout]\nworkflows:\n  main:\n    jobs:\n      - build\n"
        ),
        "config.yml:5:35: jobs.build.parameters.x.default: parameter `x` of job `build`: \
         expected an integer, found `many`"
    );
}

#[test]
fn undeclared_parameter_reference() {
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    parameters:\n      a: {type: string, default: x}\n    \
             machine: true\n    steps:\n      - run: echo << parameters.b >>\n"
        ),
        "config.yml:8:14: jobs.build.steps[0].run: unknown parameter `parameters.b` (known: `a`)"
    );
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    machine: true\n    steps:\n      - run: << parameters.b >>\n"
        ),
        "config.yml:6:14: jobs.build.steps[0].run: unknown parameter `parameters.b` (none are \
         declared here)"
    );
    assert_eq!(
        err_text(
            "version: 2.1\ncommands:\n  greet:\n    steps:\n      - run: echo << parameters.who >>\n\
             jobs:\n  build:\n    machine: true\n    steps: [greet]\n"
        ),
        "config.yml:5:14: commands.greet.steps[0].run: unknown parameter `parameters.who` (none \
         are declared here)"
    );
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    parameters:\n      s: {type: steps, default: []}\n    \
             machine: true\n    steps:\n      - run: echo << parameters.s >>\n"
        ),
        "config.yml:8:14: jobs.build.steps[0].run: `parameters.s` is of type steps and can only \
         be used as a whole value, not inside a string"
    );
}

// ------------------------------------------------------------------ pipeline parameters

/// Lines 1-8: two pipeline parameters, declared on lines 3 and 4.
const PIPELINE_PARAMETERS: &str = "\
version: 2.1
parameters:
  deploy: {type: boolean, default: false}
  n: {type: integer, default: 1}
jobs:
  build:
    machine: true
    steps: [checkout]
";

#[test]
fn undeclared_pipeline_parameter_given() {
    assert_eq!(
        err_with(PIPELINE_PARAMETERS, &with_parameters(r#"{"nope": 1}"#)),
        "config.yml:3:3: parameters.nope: the pipeline has no parameter `nope` (it declares \
         `deploy`, `n`)"
    );
    assert_eq!(
        err_with(
            "version: 2.1\njobs:\n  build:\n    machine: true\n    steps: [checkout]\n",
            &with_parameters(r#"{"x": 1}"#)
        ),
        "config.yml:1:1: pipeline parameter `x` was given, but the config declares no \
         `parameters`"
    );
}

#[test]
fn pipeline_parameter_of_the_wrong_type() {
    // The value has no position in the file: the error points at the declaration.
    assert_eq!(
        err_with(PIPELINE_PARAMETERS, &with_parameters(r#"{"n": "abc"}"#)),
        "config.yml:4:3: parameters.n: parameter `n` of the pipeline: expected an integer, found \
         `abc`"
    );
    assert_eq!(
        err_with(
            PIPELINE_PARAMETERS,
            &with_parameters(r#"{"deploy": "maybe"}"#)
        ),
        "config.yml:3:3: parameters.deploy: parameter `deploy` of the pipeline: expected a \
         boolean, found a string"
    );
    assert_eq!(
        err_with(
            PIPELINE_PARAMETERS,
            &with_parameters(r#"{"deploy": [true]}"#)
        ),
        "config.yml:3:3: parameters.deploy: parameter `deploy` of the pipeline: expected a \
         boolean, found a sequence"
    );
    ok_with(
        PIPELINE_PARAMETERS,
        &with_parameters(r#"{"deploy": true, "n": 3}"#),
    );
}

#[test]
fn pipeline_parameter_without_a_value() {
    assert_eq!(
        err_text(&PIPELINE_PARAMETERS.replace("{type: integer, default: 1}", "{type: integer}")),
        "config.yml:4:3: parameters.n: the pipeline needs a value for its parameter `n`"
    );
}

#[test]
fn undeclared_pipeline_parameter_reference() {
    assert_eq!(
        err_text(&PIPELINE_PARAMETERS.replace(
            "steps: [checkout]\n",
            "steps:\n      - run: echo << pipeline.parameters.b >>\n"
        )),
        "config.yml:9:14: jobs.build.steps[0].run: unknown pipeline parameter \
         `pipeline.parameters.b` (declared: `deploy`, `n`)"
    );
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    machine: true\n    steps:\n      - run: << pipeline.parameters.b >>\n"
        ),
        "config.yml:6:14: jobs.build.steps[0].run: unknown pipeline parameter \
         `pipeline.parameters.b` (the config declares no `parameters`)"
    );
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    machine: true\n    steps:\n      - run: << pipeline.git.brunch >>\n"
        ),
        "config.yml:6:14: jobs.build.steps[0].run: unknown pipeline value `pipeline.git.brunch` \
         (known: `git.base_revision`, `git.branch`, `git.revision`, `git.tag`, `id`, \
         `in_setup`, `number`, `project.git_url`, `project.slug`, `project.type`, \
         `schedule.id`, `schedule.name`, `trigger_source`)"
    );
}

// ------------------------------------------------------------------ commands

/// A job whose steps start on line 6.
const STEPS: &str = "version: 2.1\njobs:\n  build:\n    machine: true\n    steps:\n";

#[test]
fn unknown_command() {
    assert_eq!(
        err_text(&format!("{STEPS}      - nope/cmd\n")),
        "config.yml:6:9: jobs.build.steps[0]: unknown step or command `nope/cmd` (is the orb \
         `nope` declared in `orbs`?)"
    );
    assert_eq!(
        err_text(&format!("{STEPS}      - steps: make\n")),
        "config.yml:6:9: jobs.build.steps[0]: unknown step or command `steps`"
    );
}

#[test]
fn command_recursion_is_bounded() {
    assert_eq!(MAX_INVOCATION_DEPTH, 32);
    assert_eq!(
        err_text(
            "version: 2.1\ncommands:\n  again:\n    steps: [again]\njobs:\n  build:\n    \
             machine: true\n    steps: [again]\n"
        ),
        "config.yml:4:12: commands.again.steps: commands invoke each other more than 32 levels \
         deep (is a command invoking itself?)"
    );
    assert_eq!(
        err_text(
            "version: 2.1\ncommands:\n  a:\n    steps: [b]\n  b:\n    steps:\n      - a\njobs:\n  \
             build:\n    machine: true\n    steps: [a]\n"
        ),
        "config.yml:4:12: commands.a.steps: commands invoke each other more than 32 levels deep \
         (is a command invoking itself?)"
    );
    // A job may nest exactly MAX_INVOCATION_DEPTH invocations, not one more.
    let chain = |depth: usize| {
        let mut src = String::from("version: 2.1\ncommands:\n");
        for i in 1..depth {
            src.push_str(&format!("  c{i}:\n    steps: [c{}]\n", i + 1));
        }
        src.push_str(&format!(
            "  c{depth}:\n    steps:\n      - run: deep\njobs:\n  build:\n    machine: true\n    \
             steps: [c1]\n"
        ));
        src
    };
    assert_eq!(
        commands(&ok(&chain(MAX_INVOCATION_DEPTH)), "build"),
        ["deep"]
    );
    assert_eq!(
        err_text(&chain(MAX_INVOCATION_DEPTH + 1)),
        "config.yml:69:7: commands.c33.steps: commands invoke each other more than 32 levels \
         deep (is a command invoking itself?)"
    );
}

#[test]
fn command_invocation_errors() {
    let cmd = "version: 2.1\ncommands:\n  a:\n    parameters:\n      who: {type: string}\n    \
               steps: [checkout]\njobs:\n  build:\n    machine: true\n    steps:\n";
    assert_eq!(
        err_text(&format!("{cmd}      - a\n")),
        "config.yml:11:9: jobs.build.steps[0]: command `a` needs a value for its parameter `who`"
    );
    assert_eq!(
        err_text(&format!("{cmd}      - a: {{who: me, what: x}}\n")),
        "config.yml:11:22: jobs.build.steps[0].a.what: command `a` has no parameter `what` (it \
         declares `who`)"
    );
    assert_eq!(
        err_text(&format!("{cmd}      - a: x\n")),
        "config.yml:11:12: jobs.build.steps[0].a: expected a map, found a string"
    );
    assert_eq!(
        err_text(
            "version: 2.1\ncommands:\n  a:\n    description: x\njobs:\n  build:\n    machine: true\n    \
             steps: [a]\n"
        ),
        "config.yml:4:5: commands.a: command `a` has no `steps`"
    );
}

// ------------------------------------------------------------------ executors

/// An executor with an enum parameter; the job's `executor` goes on line 10.
const EXECUTOR: &str = "\
version: 2.1
executors:
  linux:
    parameters:
      size: {type: enum, enum: [small, large]}
    machine: true
    resource_class: << parameters.size >>
jobs:
  build:
";

fn executor(value: &str) -> String {
    err_text(&format!(
        "{EXECUTOR}    executor: {value}\n    steps: [checkout]\n"
    ))
}

#[test]
fn unknown_executor() {
    assert_eq!(
        executor("mac"),
        "config.yml:10:15: jobs.build.executor: executor `mac` is not defined in `executors`"
    );
    assert_eq!(
        executor("{name: mac}"),
        "config.yml:10:15: jobs.build.executor: executor `mac` is not defined in `executors`"
    );
}

#[test]
fn executor_parameters() {
    assert_eq!(
        executor("linux"),
        "config.yml:10:15: jobs.build.executor: executor `linux` needs a value for its \
         parameter `size`"
    );
    assert_eq!(
        executor("{name: linux, size: huge}"),
        "config.yml:10:35: jobs.build.executor.size: parameter `size` of executor `linux`: \
         `huge` is not one of `small`, `large`"
    );
    assert_eq!(
        executor("{name: linux, size: small, cpu: 2}"),
        "config.yml:10:42: jobs.build.executor.cpu: executor `linux` has no parameter `cpu` (it \
         declares `size`)"
    );
    assert_eq!(
        executor("{size: small}"),
        "config.yml:10:15: jobs.build.executor: an executor map needs a `name`"
    );
    assert_eq!(
        executor("[linux]"),
        "config.yml:10:15: jobs.build.executor: expected an executor name or map, found a \
         sequence"
    );
    let p = ok(&format!(
        "{EXECUTOR}    executor: {{name: linux, size: large}}\n    steps: [checkout]\n"
    ));
    assert_eq!(p.jobs["build"].resource_class.as_deref(), Some("large"));
}

// ------------------------------------------------------------------ `when` / `unless`

#[test]
fn unknown_logic_operator() {
    assert_eq!(
        err_text(&format!(
            "{STEPS}      - when:\n          condition: {{xor: [a]}}\n          steps: [checkout]\n"
        )),
        "config.yml:7:23: jobs.build.steps[0].when.condition.xor: unknown logic operator `xor` \
         (expected `and`, `or`, `not`, `equal` or `matches`)"
    );
    assert_eq!(
        err_text(&format!(
            "{STEPS}      - unless:\n          condition:\n            or: [false, {{xor: [a]}}]\n          \
             steps: [checkout]\n"
        )),
        "config.yml:8:26: jobs.build.steps[0].unless.condition.or[1].xor: unknown logic \
         operator `xor` (expected `and`, `or`, `not`, `equal` or `matches`)"
    );
}

fn when_condition(condition: &str) -> String {
    err_text(&format!(
        "{STEPS}      - when:\n          condition:\n            {condition}\n          steps: [checkout]\n"
    ))
}

#[test]
fn bad_matches() {
    assert_eq!(
        when_condition("matches: {pattern: '[', value: x}"),
        "config.yml:8:32: jobs.build.steps[0].when.condition.matches.pattern: invalid regular \
         expression `[`: non-empty character class has no closing bracket"
    );
    assert_eq!(
        when_condition("matches: {pattern: '/a(/', value: x}"),
        "config.yml:8:32: jobs.build.steps[0].when.condition.matches.pattern: invalid regular \
         expression `a(`: found open group without closing ')'"
    );
    assert_eq!(
        when_condition("matches: {value: x}"),
        "config.yml:8:22: jobs.build.steps[0].when.condition.matches: `matches` needs `pattern` \
         and `value`"
    );
    assert_eq!(
        when_condition("matches: x"),
        "config.yml:8:22: jobs.build.steps[0].when.condition.matches: expected a map, found a \
         string"
    );
    // Workflow `when` evaluates the same statements.
    assert_eq!(
        err_text(&format!(
            "{STEPS}      - checkout\nworkflows:\n  main:\n    when:\n      matches: {{pattern: x}}\n    \
             jobs: [build]\n"
        )),
        "config.yml:10:16: workflows.main.when.matches: `matches` needs `pattern` and `value`"
    );
}

#[test]
fn logic_statement_shapes() {
    assert_eq!(
        when_condition("and: x"),
        "config.yml:8:18: jobs.build.steps[0].when.condition.and: `and` takes a list, found a \
         string"
    );
    assert_eq!(
        when_condition("{and: [], or: []}"),
        "config.yml:8:13: jobs.build.steps[0].when.condition: a logic statement is a map with \
         one key: `and`, `or`, `not`, `equal` or `matches`"
    );
}

#[test]
fn when_step_shapes() {
    assert_eq!(
        err_text(&format!(
            "{STEPS}      - when:\n          condition: true\n"
        )),
        "config.yml:7:11: jobs.build.steps[0].when: a `when` step needs `condition` and `steps`"
    );
    assert_eq!(
        err_text(&format!("{STEPS}      - unless\n")),
        "config.yml:6:9: jobs.build.steps[0]: a `unless` step needs `condition` and `steps`"
    );
    assert_eq!(
        err_text(&format!(
            "{STEPS}      - when:\n          condition: true\n          steps: [checkout]\n          \
             else: [checkout]\n"
        )),
        "config.yml:9:11: jobs.build.steps[0].when.else: unknown key `else` in a `when` step"
    );
    assert_eq!(
        err_text(&format!(
            "{STEPS}      - when:\n          condition: true\n          steps: make\n"
        )),
        "config.yml:8:18: jobs.build.steps[0].when.steps: expected a list of steps, found a \
         string"
    );
}

#[test]
fn when_and_unless_steps_decide() {
    let p = ok(&format!(
        "{STEPS}      - when:\n          condition:\n            matches: {{pattern: '/^v[0-9]+$/', value: v12}}\n          \
         steps: [{{run: matched}}]\n      - unless:\n          condition: {{equal: [a, a]}}\n          \
         steps: [{{run: skipped}}]\n      - when:\n          condition: {{not: {{or: [false, '']}}}}\n          \
         steps: [{{run: kept}}]\n"
    ));
    assert_eq!(commands(&p, "build"), ["matched", "kept"]);
}

// ------------------------------------------------------------------ matrix

/// Jobs `build` (parameters `os` and `v`) and `deploy`, lines 1-12; a workflow on lines 13-15,
/// its first entry on line 16.
const MATRIX: &str = "\
version: 2.1
jobs:
  build:
    parameters:
      os: {type: string}
      v: {type: integer, default: 1}
    machine: true
    steps:
      - run: echo << parameters.os >> << parameters.v >>
  deploy:
    machine: true
    steps: [checkout]
workflows:
  main:
    jobs:
";

fn matrix(entries: &str) -> String {
    err_text(&format!("{MATRIX}{entries}"))
}

#[test]
fn matrix_parameter_values_must_be_lists() {
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            parameters:\n              os: linux\n"
        ),
        "config.yml:19:19: workflows.main.jobs[0].build.matrix.parameters.os: a matrix \
         parameter takes a list of values, found a string"
    );
}

#[test]
fn matrix_shape_errors() {
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            parameters: {os: [a]}\n            include: []\n"
        ),
        "config.yml:19:13: workflows.main.jobs[0].build.matrix.include: unknown key `include` \
         in `matrix`"
    );
    assert_eq!(
        matrix("      - build:\n          matrix:\n            alias: x\n"),
        "config.yml:18:13: workflows.main.jobs[0].build.matrix: `matrix` needs `parameters`"
    );
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            parameters: {os: [a, b]}\n            exclude: x\n"
        ),
        "config.yml:19:22: workflows.main.jobs[0].build.matrix.exclude: `exclude` takes a list \
         of maps"
    );
}

#[test]
fn matrix_parameters_are_checked_where_written() {
    assert_eq!(
        matrix("      - build:\n          matrix:\n            parameters: {os: [a], arch: [x]}\n"),
        "config.yml:18:35: workflows.main.jobs[0].build.matrix.parameters.arch: job `build` has \
         no parameter `arch` (it declares `os`, `v`)"
    );
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            parameters: {os: [a], v: [1, one]}\n"
        ),
        "config.yml:18:42: workflows.main.jobs[0].build.matrix.parameters.v[1]: parameter `v` of \
         job `build`: expected an integer, found `one`"
    );
    assert_eq!(
        matrix(
            "      - build:\n          name: b-<< matrix.arch >>\n          matrix:\n            \
             parameters: {os: [a]}\n"
        ),
        "config.yml:17:17: workflows.main.jobs[0].build.name: unknown matrix parameter \
         `matrix.arch` (known: `os`)"
    );
}

#[test]
fn matrix_exclude_of_an_unknown_parameter() {
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            parameters: {os: [a, b]}\n            \
             exclude:\n              - {os: a, arch: x}\n"
        ),
        "config.yml:20:25: workflows.main.jobs[0].build.matrix.exclude[0].arch: `exclude` names \
         `arch`, which is not a parameter of the matrix (it has `os`)"
    );
}

#[test]
fn matrix_exclude_removes_combinations() {
    // An exclusion may name some of the parameters; one naming a value the matrix does not
    // list matches nothing (real configs exclude values they commented out).
    let p = ok(&format!(
        "{MATRIX}      - build:\n          matrix:\n            parameters: {{os: [a, b], v: [1, 2]}}\n            \
         exclude:\n              - {{os: a, v: 2}}\n              - {{os: b}}\n              - {{os: c}}\n"
    ));
    assert_eq!(
        workflow(&p),
        [("build-a-1".to_owned(), Vec::<String>::new())]
    );
    assert_eq!(commands(&p, "build-a-1"), ["echo a 1"]);
}

#[test]
fn matrix_generated_name_collisions() {
    assert_eq!(
        matrix("      - build:\n          matrix:\n            parameters: {os: [a, a]}\n"),
        "config.yml:16:9: workflows.main.jobs[0].build: workflow `main` already has a job named \
         `build-a`; give one of them a distinct `name:`"
    );
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            parameters: {os: [a, b]}\n      - deploy: {name: build-b}\n"
        ),
        "config.yml:19:24: workflows.main.jobs[1].deploy.name: workflow `main` already has a job \
         named `build-b`; give one of them a distinct `name:`"
    );
}

#[test]
fn too_many_matrix_jobs() {
    assert_eq!(MAX_MATRIX_JOBS, 1000);
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            parameters:\n              \
             os: [a,b,c,d,e,f,g,h,i,j]\n              v: [0,1,2,3,4,5,6,7,8,9]\n              \
             x: [0,1,2,3,4,5,6,7,8,9,10]\n"
        ),
        "config.yml:21:18: workflows.main.jobs[0].build.matrix.parameters.x: the matrix \
         generates more than 1000 jobs"
    );
}

#[test]
fn requires_of_an_unknown_matrix_alias() {
    // With an alias, the job's own name no longer stands for the matrix.
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            alias: builds\n            parameters: {os: [a, b]}\n      \
             - deploy:\n          requires: [build]\n"
        ),
        "config.yml:21:22: workflows.main.jobs[1].deploy.requires[0]: requires `build`, which is \
         not a job of workflow `main`"
    );
    // The path is the entry's in the file, though the matrix became two entries.
    assert_eq!(
        matrix(
            "      - build:\n          matrix:\n            parameters: {os: [a, b]}\n      \
             - deploy:\n          requires: [build, bild]\n"
        ),
        "config.yml:20:29: workflows.main.jobs[1].deploy.requires[1]: requires `bild`, which is \
         not a job of workflow `main`"
    );
}

#[test]
fn errors_after_expansion_name_the_source_entry() {
    // A named, parameterized invocation becomes a job keyed by its name.
    assert_eq!(
        matrix(
            "      - deploy\n      - build:\n          name: ba\n          os: a\n          requires: [nope]\n"
        ),
        "config.yml:20:22: workflows.main.jobs[1].build.requires[0]: requires `nope`, which is \
         not a job of workflow `main`"
    );
    assert_eq!(
        matrix("      - build:\n          name: ba\n          os: a\n          context: {a: b}\n"),
        "config.yml:19:20: workflows.main.jobs[0].build.context: expected a string, found a map"
    );
    // An entry of the wrong shape keeps its place.
    assert_eq!(
        matrix("      - [deploy]\n      - deploy\n"),
        "config.yml:16:9: workflows.main.jobs[0]: a workflow job is a job name, or a map with \
         exactly one key (the job name), found a sequence"
    );
}

#[test]
fn matrix_alias_requires() {
    let p = ok(&format!(
        "{MATRIX}      - build:\n          matrix:\n            alias: builds\n            \
         parameters: {{os: [a, b], v: [1]}}\n      - deploy:\n          requires: [builds]\n"
    ));
    assert_eq!(
        workflow(&p),
        [
            ("build-a-1".to_owned(), vec![]),
            ("build-b-1".to_owned(), vec![]),
            (
                "deploy".to_owned(),
                vec!["build-a-1".to_owned(), "build-b-1".to_owned()]
            ),
        ]
    );
    // The default alias is the job's name; two matrices sharing an alias are both required.
    let p = ok(&format!(
        "{MATRIX}      - build:\n          matrix:\n            parameters: {{os: [a]}}\n      \
         - build:\n          matrix:\n            alias: build\n            parameters: {{os: [b], v: [2]}}\n      \
         - deploy:\n          requires: [build]\n"
    ));
    assert_eq!(
        workflow(&p)[2],
        (
            "deploy".to_owned(),
            vec!["build-a".to_owned(), "build-b-2".to_owned()]
        )
    );
    assert_eq!(commands(&p, "build-b-2"), ["echo b 2"]);
}

// ------------------------------------------------------------------ filters

#[test]
fn filter_with_an_invalid_regex() {
    assert_eq!(
        matrix(
            "      - deploy:\n          filters:\n            tags:\n              ignore:\n                \
             - main\n                - /(v/\n"
        ),
        "config.yml:21:19: workflows.main.jobs[0].deploy.filters.tags.ignore[1]: invalid regular \
         expression `(v`: found open group without closing ')'"
    );
    assert_eq!(
        matrix(
            "      - deploy:\n          filters:\n            branches:\n              except: main\n"
        ),
        "config.yml:19:15: workflows.main.jobs[0].deploy.filters.branches.except: unsupported \
         key `except` (bosun does not support it yet)"
    );
}

// ------------------------------------------------------------------ orbs

#[test]
fn registry_orbs_are_refused() {
    assert_eq!(
        err_text(
            "version: 2.1\norbs:\n  node: circleci/node@5\n  slack: circleci/slack@4\njobs:\n  build:\n    \
             executor: node/default\n    steps:\n      - node/install\n      - node/test\n      \
             - node/x\n      - slack/notify\n"
        ),
        "config.yml:3:9: orbs.node: registry orbs cannot be fetched by bosun: `node` \
         (circleci/node@5) used at jobs.build.executor (7:15), jobs.build.steps[0] (9:9), \
         jobs.build.steps[1] (10:9) and 1 more; `slack` (circleci/slack@4) used at \
         jobs.build.steps[3] (12:9); vendor them as `namespace/name@version.yml` files in an \
         orb directory (--orb-dir), or resolve them through a server (--host)"
    );
}

#[test]
fn vendored_orb_from_the_orb_directory() {
    let p = ok_with(
        "version: 2.1\norbs:\n  t: acme/tools@1.0\njobs:\n  build:\n    executor: t/default\n    \
         steps:\n      - t/hello: {who: bosun}\n      - t/hello\nworkflows:\n  main:\n    \
         jobs: [build, t/check]\n",
        &with_orb_dir(),
    );
    assert_eq!(
        commands(&p, "build"),
        ["echo hello bosun", "echo hello world"]
    );
    assert_eq!(
        p.jobs["build"].resource_class.as_deref(),
        Some("acme/linux")
    );
    assert_eq!(commands(&p, "t/check"), ["echo hello world"]);
}

#[test]
fn vendored_orb_missing_from_the_orb_directory() {
    assert_eq!(
        err_with(
            "version: 2.1\norbs:\n  t: acme/tools@2.0\njobs:\n  build:\n    executor: t/default\n    \
             steps: [t/hello]\n",
            &with_orb_dir()
        ),
        format!(
            "config.yml:3:6: orbs.t: registry orbs cannot be fetched by bosun: `t` \
             (acme/tools@2.0) used at jobs.build.executor (6:15), jobs.build.steps[0] (7:13); \
             vendor them as `namespace/name@version.yml` files in an orb directory (--orb-dir; \
             {ORBS} has no `acme/tools@2.0.yml`), or resolve them through a server (--host)"
        )
    );
    assert_eq!(
        err_with(
            "version: 2.1\norbs:\n  t: acme/../tools@2.0\njobs:\n  build:\n    machine: true\n    \
             steps: [t/hello]\n",
            &with_orb_dir()
        ),
        "config.yml:3:6: orbs.t: invalid orb reference `acme/../tools@2.0`"
    );
    assert_eq!(
        err_with(
            "version: 2.1\norbs:\n  t: acme/tools@1.0\njobs:\n  build:\n    executor: t/default\n    \
             steps: [t/bye]\n",
            &with_orb_dir()
        ),
        "config.yml:7:13: jobs.build.steps[0]: unknown step or command `t/bye` (is the orb `t` \
         declared in `orbs`?)"
    );
}

#[test]
fn inline_orb_errors() {
    assert_eq!(
        err_text(
            "version: 2.1\norbs:\n  my:\n    commands:\n      a:\n        steps:\n          - nope\n\
             jobs:\n  build:\n    machine: true\n    steps: [my/a]\n"
        ),
        "config.yml:7:13: orbs.my.commands.a.steps[0]: unknown step or command `nope`"
    );
    assert_eq!(
        err_text(
            "version: 2.1\norbs:\n  my:\n    commands: {}\njobs:\n  build:\n    machine: true\n    \
             steps: [checkout]\nworkflows:\n  main:\n    jobs: [my/check]\n"
        ),
        "config.yml:11:12: workflows.main.jobs[0]: job `my/check` is not defined in `jobs` (is \
         the orb `my` declared in `orbs`?)"
    );
    assert_eq!(
        err_text(
            "version: 2.1\norbs:\n  my: [a]\njobs:\n  build:\n    machine: true\n    steps: [checkout]\n"
        ),
        "config.yml:3:7: orbs.my: an orb is a reference like `namespace/name@version` or an \
         inline map, found a sequence"
    );
    assert_eq!(
        err_text(
            "version: 2.1\norbs:\n  my:\n    orbs:\n      node: circleci/node@5\njobs:\n  build:\n    \
             machine: true\n    steps: [checkout]\n"
        ),
        "config.yml:5:13: orbs.my.orbs.node: registry orbs cannot be fetched by bosun: \
         `circleci/node@5`, imported by config.yml; vendor it in an orb directory (--orb-dir), or \
         resolve it through a server (--host)"
    );
}

// ------------------------------------------------------------------ the rest

#[test]
fn setup_must_be_a_boolean() {
    for (value, found) in [
        ("[true]", "a sequence"),
        ("\"true\"", "a string"),
        ("1", "a number"),
    ] {
        assert_eq!(
            err_text(&format!(
                "version: 2.1\nsetup: {value}\njobs:\n  build:\n    machine: true\n    steps: [checkout]\n"
            )),
            format!("config.yml:2:8: setup: `setup` must be `true` or `false`, found {found}")
        );
    }
}

#[test]
fn escaped_brackets_are_literal() {
    let p = ok(&format!(
        "{STEPS}      - run: echo \\<< parameters.x >> and \\<<x>>\n      - run: \"a \\\\<< b\"\n"
    ));
    assert_eq!(
        commands(&p, "build"),
        ["echo << parameters.x >> and <<x>>", "a << b"]
    );
    // Through a command's parameter pass too, and the processed config compiles as written.
    let src = "version: 2.1\ncommands:\n  c:\n    parameters:\n      x: {type: string, default: y}\n    \
               steps:\n      - run: echo << parameters.x >> \\<< parameters.x >>\njobs:\n  build:\n    \
               machine: true\n    steps: [c]\n";
    assert_eq!(commands(&ok(src), "build"), ["echo y << parameters.x >>"]);
    let out = bosun_config::process(src, "c.yml", &PipelineContext::default()).expect("processes");
    assert!(out.contains("echo y << parameters.x >>"), "{out}");
    assert_eq!(commands(&ok(&out), "build"), ["echo y << parameters.x >>"]);
    // Before 2.1, `<<` is plain text.
    let p = ok(
        "version: 2\njobs:\n  build:\n    machine: true\n    steps:\n      - run: echo << parameters.x >>\n",
    );
    assert_eq!(commands(&p, "build"), ["echo << parameters.x >>"]);
}

#[test]
fn pre_and_post_steps_surround_the_job_steps() {
    let p = ok(
        "version: 2.1\ncommands:\n  hi:\n    steps: [{run: hi}]\njobs:\n  build:\n    machine: true\n    \
         steps: [{run: main}]\nworkflows:\n  main:\n    jobs:\n      - build:\n          \
         pre-steps: [{run: pre1}, hi]\n          post-steps:\n            - run: post\n",
    );
    assert_eq!(commands(&p, "build"), ["pre1", "hi", "main", "post"]);
    // Only one of them is fine too.
    let p = ok(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    steps: [{run: main}]\nworkflows:\n  \
         main:\n    jobs:\n      - build:\n          post-steps: [{run: post}]\n",
    );
    assert_eq!(commands(&p, "build"), ["main", "post"]);
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    machine: true\n    steps: [{run: main}]\nworkflows:\n  \
             main:\n    jobs:\n      - build:\n          pre-steps: [nope]\n"
        ),
        "config.yml:10:23: workflows.main.jobs[0].build.pre-steps[0]: unknown step or command \
         `nope`"
    );
}

#[test]
fn steps_parameters_are_spliced_in_place() {
    let p = ok(
        "version: 2.1\ncommands:\n  wrap:\n    parameters:\n      inner: {type: steps}\n    steps:\n      \
         - run: before\n      - steps: << parameters.inner >>\n      - << parameters.inner >>\n      \
         - run: after\njobs:\n  build:\n    machine: true\n    steps:\n      - wrap:\n          \
         inner: [{run: one}, {run: two}]\n",
    );
    assert_eq!(
        commands(&p, "build"),
        ["before", "one", "two", "one", "two", "after"]
    );
}
