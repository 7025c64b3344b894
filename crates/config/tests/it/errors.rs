//! Configs that are refused, with the exact error each one gets.

use crate::{err, err_text};

/// A valid config up to its `jobs`; lines 1-6.
const HEAD: &str = "\
version: 2.1
jobs:
  build:
    machine: true
    steps:
      - checkout
";

/// Two jobs, lines 1-9, ready for a `workflows` key on line 10.
const TWO_JOBS: &str = "\
version: 2.1
jobs:
  build:
    machine: true
    steps: [checkout]
  test:
    machine: true
    steps:
      - run: make test
";

#[test]
fn display_and_fields() {
    let e = err(
        "version: 2.1\norbs:\n  node: circleci/node@5\njobs:\n  b:\n    machine: true\n    \
                 steps: [node/install]\n",
    );
    assert_eq!(e.file, "config.yml");
    assert_eq!((e.line, e.column), (3, 9));
    assert_eq!(e.path, "orbs.node");
    assert_eq!(
        e.message,
        "registry orbs cannot be fetched by bosun: `node` (circleci/node@5) used at \
         jobs.b.steps[0] (7:13); vendor them as `namespace/name@version.yml` files in an orb \
         directory (--orb-dir), or resolve them through a server (--host)"
    );
    assert!(
        e.to_string()
            .starts_with("config.yml:3:9: orbs.node: registry orbs")
    );
}

#[test]
fn top_level_keys_circleci_ignores_are_accepted() {
    for key in ["defaults", "aliases", "references", "x-anything"] {
        let src = format!("{HEAD}{key}: {{}}\n");
        crate::ok(&src);
    }
    assert_eq!(
        err_text(&format!("{HEAD}setup: maybe\n")),
        "config.yml:7:8: setup: `setup` must be `true` or `false`, found a string"
    );
}

#[test]
fn setup_configs_are_accepted_and_flagged() {
    let setup = crate::ok(&format!("{HEAD}setup: true\n"));
    assert!(setup.setup);
    assert!(!crate::ok(&format!("{HEAD}setup: false\n")).setup);
    assert!(!crate::ok(HEAD).setup);
    // `process` keeps the flag, as `circleci config process` does, and `pipeline.in_setup`
    // says whether this is the setup phase.
    let src = "version: 2.1\nsetup: true\njobs:\n  build:\n    machine: true\n    steps:\n      - run: echo << pipeline.in_setup >>\n";
    let out = bosun_config::process(src, "c.yml", &Default::default()).expect("processes");
    assert!(out.contains("setup: true"), "{out}");
    assert!(out.contains("echo true"), "{out}");
    assert!(
        bosun_config::compile(&out, "p.yml")
            .expect("compiles")
            .setup
    );
}

#[test]
fn yaml_syntax_error_has_exact_position() {
    assert_eq!(
        err_text("version: 2.1\njobs: x\n  steps: y\n"),
        "config.yml:3:8: mapping values are not allowed in this context"
    );
    assert_eq!(
        err_text("version: 2.1\njobs: [a, b\n"),
        "config.yml:3:1: while parsing a flow sequence, expected ',' or ']'"
    );
}

#[test]
fn duplicate_keys() {
    assert_eq!(
        err_text(&format!("{HEAD}    machine: true\n")),
        "config.yml:7:5: duplicate key `machine`"
    );
    assert_eq!(
        err_text(&format!("{HEAD}  build:\n    machine: true\n")),
        "config.yml:7:3: duplicate key `build`"
    );
}

#[test]
fn empty_and_non_map_documents() {
    assert_eq!(err_text(""), "config.yml:1:1: the config is empty");
    assert_eq!(
        err_text("# nothing\n"),
        "config.yml:1:1: the config is empty"
    );
    assert_eq!(
        err_text("---\n...\n"),
        "config.yml:1:1: the config is empty"
    );
    assert_eq!(
        err_text("- version: 2.1\n"),
        "config.yml:1:1: the config must be a map with `version`, `jobs` and `workflows`, \
         found a sequence"
    );
    assert_eq!(
        err_text("hello\n"),
        "config.yml:1:1: the config must be a map with `version`, `jobs` and `workflows`, \
         found a string"
    );
}

#[test]
fn version_errors() {
    assert_eq!(
        err_text("jobs:\n  build: {machine: true, steps: [checkout]}\n"),
        "config.yml:1:1: missing required key `version`"
    );
    assert_eq!(
        err_text("version: 3\njobs:\n  build: {machine: true, steps: [checkout]}\n"),
        "config.yml:1:10: version: unsupported version `3` (bosun supports 2, 2.0 and 2.1)"
    );
    assert_eq!(
        err_text("version: 2.10\njobs:\n  build: {machine: true, steps: [checkout]}\n"),
        "config.yml:1:10: version: unsupported version `2.10` (bosun supports 2, 2.0 and 2.1)"
    );
    assert_eq!(
        err_text("version:\njobs:\n  build: {machine: true, steps: [checkout]}\n"),
        "config.yml:2:1: version: expected a version number like 2.1, found null"
    );
}

#[test]
fn missing_or_empty_jobs() {
    assert_eq!(
        err_text("version: 2.1\nworkflows: {}\n"),
        "config.yml:1:1: missing required key `jobs`"
    );
    assert_eq!(
        err_text("version: 2.1\njobs: {}\n"),
        "config.yml:2:7: jobs: `jobs` defines no job"
    );
    assert_eq!(
        err_text("version: 2.1\njobs:\n"),
        "config.yml:3:1: jobs: expected a map, found null"
    );
}

#[test]
fn no_workflows_needs_a_build_job() {
    assert_eq!(
        err_text("version: 2\njobs:\n  test:\n    machine: true\n    steps: [checkout]\n"),
        "config.yml:2:1: jobs: without `workflows`, the config runs the job `build`, and there \
         is no such job: add a `build` job or a `workflows` key"
    );
}

#[test]
fn job_errors() {
    assert_eq!(
        err_text(&format!("{HEAD}    executor: linux\n")),
        "config.yml:7:15: jobs.build.executor: executor `linux` is not defined in `executors`"
    );
    assert_eq!(
        err_text("version: 2.1\njobs:\n  build:\n    steps: [checkout]\n"),
        "config.yml:3:3: jobs.build: job `build` needs an executor: `machine: true` or `docker:`"
    );
    assert_eq!(
        err_text(&format!("{HEAD}    docker: [{{image: alpine}}]\n")),
        "config.yml:7:5: jobs.build.docker: job `build` has both `machine` and `docker`; \
         choose one executor"
    );
    assert_eq!(
        err_text("version: 2.1\njobs:\n  build:\n    machine: false\n    steps: [checkout]\n"),
        "config.yml:4:14: jobs.build.machine: `machine: false` is not an executor; use \
         `machine: true` or `docker:`"
    );
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    docker:\n      - name: x\n    steps: [checkout]\n"
        ),
        "config.yml:5:9: jobs.build.docker[0]: missing required key `image`"
    );
    assert_eq!(
        err_text(
            "version: 2.1\njobs:\n  build:\n    docker:\n      - image: a\n        pull: always\n    steps: [checkout]\n"
        ),
        "config.yml:6:9: jobs.build.docker[0].pull: unsupported key `pull` (bosun does not \
         support it yet)"
    );
    assert_eq!(
        err_text("version: 2.1\njobs:\n  build:\n    machine: true\n"),
        "config.yml:3:3: jobs.build: missing required key `steps`"
    );
    assert_eq!(
        err_text("version: 2.1\njobs:\n  build:\n    machine: true\n    steps: []\n"),
        "config.yml:5:12: jobs.build.steps: `steps` is empty"
    );
    assert_eq!(
        err_text("version: 2.1\njobs:\n  build: [checkout]\n"),
        "config.yml:3:10: jobs.build: expected a map, found a sequence"
    );
    assert_eq!(
        err_text("version: 2.1\njobs:\n  \"my job\":\n    machine: true\n    steps: [foo]\n"),
        "config.yml:5:13: jobs[\"my job\"].steps[0]: unknown step `foo`"
    );
}

#[test]
fn parallelism_errors() {
    for (value, found) in [
        ("0", "`0`"),
        ("-1", "`-1`"),
        ("x", "`x`"),
        ("1001", "`1001`"),
        ("[1]", "a sequence"),
    ] {
        assert_eq!(
            err_text(&format!("{HEAD}    parallelism: {value}\n")),
            format!(
                "config.yml:7:18: jobs.build.parallelism: `parallelism` must be a whole number \
                 from 1 to 1000, found {found}"
            )
        );
    }
}

#[test]
fn environment_errors() {
    assert_eq!(
        err_text(&format!("{HEAD}    environment:\n      1FOO: x\n")),
        "config.yml:8:7: jobs.build.environment.1FOO: invalid environment variable name `1FOO` \
         (use letters, digits and `_`, not starting with a digit)"
    );
    assert_eq!(
        err_text(&format!("{HEAD}    environment:\n      FOO: [a]\n")),
        "config.yml:8:12: jobs.build.environment.FOO: expected a string, found a sequence"
    );
    assert_eq!(
        err_text(&format!("{HEAD}    environment: [A=b]\n")),
        "config.yml:7:18: jobs.build.environment: expected a map, found a sequence"
    );
}

#[test]
fn step_errors() {
    let step = |s: &str| err_text(&format!("{HEAD}{s}"));
    assert_eq!(
        step("      - foo\n"),
        "config.yml:7:9: jobs.build.steps[1]: unknown step or command `foo`"
    );
    assert_eq!(
        step("      - foo:\n          x: 1\n"),
        "config.yml:7:9: jobs.build.steps[1]: unknown step or command `foo`"
    );
    assert_eq!(
        step("      - save_cache:\n          key: k\n"),
        "config.yml:8:11: jobs.build.steps[1].save_cache: missing required key `paths`"
    );
    assert_eq!(
        step("      - store_artifacts:\n          path: x\n          dest: y\n"),
        "config.yml:9:11: jobs.build.steps[1].store_artifacts.dest: unsupported key `dest` \
         (bosun does not support it yet)"
    );
    assert_eq!(
        step("      - restore_cache: {}\n"),
        "config.yml:7:24: jobs.build.steps[1].restore_cache: missing required key `keys`"
    );
    assert_eq!(
        step("      - run\n"),
        "config.yml:7:9: jobs.build.steps[1]: step `run` needs a command"
    );
    assert_eq!(
        step("      - run:\n"),
        "config.yml:8:1: jobs.build.steps[1].run: step `run` needs a command"
    );
    assert_eq!(
        step("      - run:\n        name: x\n        command: y\n"),
        "config.yml:7:9: jobs.build.steps[1]: a step is a map with exactly one key (the step's \
         name), found 3 keys (`run`, `name`, `command`); are the step's attributes indented \
         under it?"
    );
    assert_eq!(
        step("      - run:\n          name: x\n"),
        "config.yml:8:11: jobs.build.steps[1].run: missing required key `command`"
    );
    assert_eq!(
        step("      - run:\n          command: x\n          when: never\n"),
        "config.yml:9:17: jobs.build.steps[1].run.when: expected `on_success`, `on_fail` or \
         `always`, found `never`"
    );
    assert_eq!(
        step("      - run:\n          command: x\n          background: \"yes\"\n"),
        "config.yml:9:23: jobs.build.steps[1].run.background: expected `true` or `false`, \
         found a string"
    );
    assert_eq!(
        step("      - run:\n          command: x\n          no_output_timeout: 10min\n"),
        "config.yml:9:30: jobs.build.steps[1].run.no_output_timeout: invalid duration `10min`: \
         unknown unit `min` (use h, m or s) (write it like `10m`, `1h30m` or `90s`)"
    );
    assert_eq!(
        step("      - run:\n          command: x\n          no_output_timeout: 0s\n"),
        "config.yml:9:30: jobs.build.steps[1].run.no_output_timeout: `no_output_timeout` must \
         be at least one second"
    );
    assert_eq!(
        step("      - run:\n          command: x\n          max_auto_reruns: 6\n"),
        "config.yml:9:28: jobs.build.steps[1].run.max_auto_reruns: `max_auto_reruns` is a \
         number from 1 to 5, found `6`"
    );
    assert_eq!(
        step("      - run:\n          command: x\n          auto_rerun_delay: 11m\n"),
        "config.yml:9:29: jobs.build.steps[1].run.auto_rerun_delay: `auto_rerun_delay` is at \
         most 10 minutes"
    );
    assert_eq!(
        step("      - checkout:\n          depth: 1\n"),
        "config.yml:8:11: jobs.build.steps[1].checkout.depth: unsupported key `depth` (bosun \
         does not support it yet)"
    );
    assert_eq!(
        step("      -\n"),
        "config.yml:8:1: jobs.build.steps[1]: expected a step (like `checkout` or `run: make`), \
         found null"
    );
}

#[test]
fn requires_of_a_missing_job() {
    let src = format!(
        "{TWO_JOBS}workflows:\n  main:\n    jobs:\n      - build\n      - test:\n          \
         requires: [tset]\n"
    );
    assert_eq!(
        err_text(&src),
        "config.yml:15:22: workflows.main.jobs[1].test.requires[0]: requires `tset`, which is \
         not a job of workflow `main`"
    );
    // A job of another workflow is not a job of this one.
    let src = format!(
        "{TWO_JOBS}workflows:\n  one:\n    jobs: [build]\n  two:\n    jobs:\n      - test:\n          \
         requires:\n            - build\n"
    );
    assert_eq!(
        err_text(&src),
        "config.yml:17:15: workflows.two.jobs[0].test.requires[0]: requires `build`, which is \
         not a job of workflow `two`"
    );
}

#[test]
fn requires_cycle() {
    let src = format!(
        "{TWO_JOBS}workflows:\n  main:\n    jobs:\n      - build:\n          requires: [test]\n      \
         - test:\n          requires: [build]\n"
    );
    assert_eq!(
        err_text(&src),
        "config.yml:14:22: workflows.main.jobs[0].build.requires[0]: the jobs of workflow `main` \
         require each other in a cycle: `build` -> `test` -> `build` (each requires the next)"
    );
}

#[test]
fn longer_cycle_behind_a_chain() {
    let src = "\
version: 2.1
jobs:
  j: {machine: true, steps: [checkout]}
workflows:
  w:
    jobs:
      - j: {name: start}
      - j: {name: a, requires: [start, c]}
      - j: {name: b, requires: [a]}
      - j: {name: c, requires: [b]}
      - j: {name: tail, requires: [c]}
";
    assert_eq!(
        err_text(src),
        "config.yml:8:40: workflows.w.jobs[1].j.requires[1]: the jobs of workflow `w` require \
         each other in a cycle: `a` -> `c` -> `b` -> `a` (each requires the next)"
    );
}

#[test]
fn workflow_job_errors() {
    let wf = |s: &str| err_text(&format!("{TWO_JOBS}workflows:\n  main:\n    jobs:\n{s}"));
    assert_eq!(
        wf("      - deploy\n"),
        "config.yml:13:9: workflows.main.jobs[0]: job `deploy` is not defined in `jobs`"
    );
    assert_eq!(
        wf("      - deploy:\n          requires: [build]\n"),
        "config.yml:13:9: workflows.main.jobs[0].deploy: job `deploy` is not defined in `jobs`"
    );
    assert_eq!(
        wf("      - build\n      - build\n"),
        "config.yml:14:9: workflows.main.jobs[1]: workflow `main` already has a job named \
         `build`; give one of them a distinct `name:`"
    );
    assert_eq!(
        wf("      - test:\n          name: build\n      - build\n"),
        "config.yml:15:9: workflows.main.jobs[1]: workflow `main` already has a job named \
         `build`; give one of them a distinct `name:`"
    );
    assert_eq!(
        wf("      - build\n      - build:\n          name: build\n"),
        "config.yml:15:17: workflows.main.jobs[1].build.name: workflow `main` already has a job \
         named `build`; give one of them a distinct `name:`"
    );
    for (attribute, expected) in [
        (
            "context: {a: b}",
            "14:20: workflows.main.jobs[0].build.context: expected a string, found a map",
        ),
        (
            "filters: x",
            "14:20: workflows.main.jobs[0].build.filters: expected a map, found a string",
        ),
        (
            "filters: {branches: {only: '/[/'}}",
            "14:38: workflows.main.jobs[0].build.filters.branches.only: invalid regular \
             expression `[`",
        ),
        (
            "type: x",
            "14:17: workflows.main.jobs[0].build.type: expected `approval` (or `build`), found `x`",
        ),
        (
            "matrix: x",
            "14:19: workflows.main.jobs[0].build.matrix: expected a map, found a string",
        ),
        (
            "pre-steps: x",
            "14:22: workflows.main.jobs[0].build.pre-steps: expected a list of steps, found a \
             string",
        ),
        (
            "unknown: 1",
            "14:11: workflows.main.jobs[0].build.unknown: job `build` has no parameter \
             `unknown` (it declares none)",
        ),
    ] {
        let e = wf(&format!("      - build:\n          {attribute}\n"));
        assert!(
            e.starts_with(&format!("config.yml:{expected}")),
            "{attribute}: {e}"
        );
    }
    assert_eq!(
        wf("      - build:\n        requires: [test]\n"),
        "config.yml:13:9: workflows.main.jobs[0]: a workflow job is a job name, or a map with \
         exactly one key (the job name), found a map with 2 keys (`build`, `requires`); are the \
         job's attributes indented under it?"
    );
    assert_eq!(
        wf("      - [build]\n"),
        "config.yml:13:9: workflows.main.jobs[0]: a workflow job is a job name, or a map with \
         exactly one key (the job name), found a sequence"
    );
    assert_eq!(
        wf("      - build:\n          requires: test\n"),
        "config.yml:14:21: workflows.main.jobs[0].build.requires: expected a list, found a string"
    );
    assert_eq!(
        wf("      - build:\n          requires: [{test: success}]\n"),
        "config.yml:14:22: workflows.main.jobs[0].build.requires[0]: expected a string, found a map"
    );
}

#[test]
fn workflow_errors() {
    let src = |s: &str| err_text(&format!("{TWO_JOBS}workflows:\n{s}"));
    assert_eq!(
        src("  main:\n    triggers: [{nightly: {}}]\n    jobs: [build]\n"),
        "config.yml:12:17: workflows.main.triggers[0].nightly: unsupported key `nightly` (bosun \
         does not support it yet)"
    );
    assert_eq!(
        src("  main:\n    when: {xor: [a]}\n    jobs: [build]\n"),
        "config.yml:12:12: workflows.main.when.xor: unknown logic operator `xor` (expected \
         `and`, `or`, `not`, `equal` or `matches`)"
    );
    assert_eq!(
        src("  main: {}\n"),
        "config.yml:11:3: workflows.main: missing required key `jobs`"
    );
    assert_eq!(
        src("  main:\n    jobs: []\n"),
        "config.yml:12:11: workflows.main.jobs: workflow `main` has no jobs"
    );
    assert_eq!(
        src("  version: 2\n"),
        "config.yml:11:3: workflows: `workflows` defines no workflow"
    );
    assert_eq!(
        src("  - main\n"),
        "config.yml:11:3: workflows: expected a map, found a sequence"
    );
}
