//! Configs that compile, and what they compile to.

use std::collections::BTreeMap;

use bosun_config::{Executor, Job, Pipeline, Run, Step, When, Workflow, WorkflowJob};

use crate::ok;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run(command: &str) -> Step {
    Step::Run(Run {
        name: None,
        command: command.to_owned(),
        shell: None,
        environment: BTreeMap::new(),
        working_directory: None,
        background: false,
        no_output_timeout_secs: None,
        max_auto_reruns: 0,
        auto_rerun_delay_secs: 0,
        when: When::OnSuccess,
    })
}

#[test]
fn two_job_workflow_with_requires() {
    let p = ok("\
version: 2.1
jobs:
  build:
    machine: true
    steps:
      - checkout
      - run: make
  test:
    machine: true
    resource_class: acme/linux
    steps:
      - run: make test
workflows:
  main:
    jobs:
      - build
      - test:
          requires: [build]
");
    let expected = Pipeline {
        version: "2.1".to_owned(),
        setup: false,
        jobs: BTreeMap::from([
            (
                "build".to_owned(),
                Job {
                    name: "build".to_owned(),
                    executor: Executor::Machine,
                    resource_class: None,
                    environment: BTreeMap::new(),
                    working_directory: None,
                    shell: None,
                    parallelism: 1,
                    steps: vec![Step::Checkout { path: None }, run("make")],
                    no_op: false,
                    orb: None,
                    executor_name: None,
                    executor_orb: None,
                },
            ),
            (
                "test".to_owned(),
                Job {
                    name: "test".to_owned(),
                    executor: Executor::Machine,
                    resource_class: Some("acme/linux".to_owned()),
                    environment: BTreeMap::new(),
                    working_directory: None,
                    shell: None,
                    parallelism: 1,
                    steps: vec![run("make test")],
                    no_op: false,
                    orb: None,
                    executor_name: None,
                    executor_orb: None,
                },
            ),
        ]),
        workflows: vec![Workflow {
            name: "main".to_owned(),
            jobs: vec![
                WorkflowJob {
                    name: "build".to_owned(),
                    job: "build".to_owned(),
                    requires: vec![],
                    context: vec![],
                    approval: false,
                },
                WorkflowJob {
                    name: "test".to_owned(),
                    job: "test".to_owned(),
                    requires: vec!["build".to_owned()],
                    context: vec![],
                    approval: false,
                },
            ],
        }],
    };
    assert_eq!(p, expected);
}

#[test]
fn run_step_map_form_with_every_attribute() {
    let p = ok(r#"
version: 2.1
jobs:
  build:
    machine: true
    shell: /bin/sh -e
    working_directory: ~/project
    parallelism: 4
    environment:
      JOB_LEVEL: "yes"
    steps:
      - run:
          name: Unit tests
          command: |
            make
            make test
          shell: /bin/bash -eo pipefail
          environment:
            FOO: bar
            _N1: 1
          working_directory: sub/dir
          background: true
          no_output_timeout: 1h30m
          when: always
      - run:
          command: echo failed
          when: on_fail
      - run:
          command: echo ok
          when: on_success
          background: false
          no_output_timeout: 90
"#);
    let job = &p.jobs["build"];
    assert_eq!(job.shell.as_deref(), Some("/bin/sh -e"));
    assert_eq!(job.working_directory.as_deref(), Some("~/project"));
    assert_eq!(job.parallelism, 4);
    assert_eq!(job.environment, env(&[("JOB_LEVEL", "yes")]));
    assert_eq!(
        job.steps[0],
        Step::Run(Run {
            name: Some("Unit tests".to_owned()),
            command: "make\nmake test\n".to_owned(),
            shell: Some("/bin/bash -eo pipefail".to_owned()),
            environment: env(&[("FOO", "bar"), ("_N1", "1")]),
            working_directory: Some("sub/dir".to_owned()),
            background: true,
            no_output_timeout_secs: Some(5400),
            max_auto_reruns: 0,
            auto_rerun_delay_secs: 0,
            when: When::Always,
        })
    );
    let Step::Run(fail) = &job.steps[1] else {
        panic!("not a run step: {:?}", job.steps[1]);
    };
    assert_eq!(fail.when, When::OnFail);
    assert_eq!(fail.name, None);
    let Step::Run(last) = &job.steps[2] else {
        panic!("not a run step: {:?}", job.steps[2]);
    };
    assert_eq!(last.when, When::OnSuccess);
    assert!(!last.background);
    assert_eq!(last.no_output_timeout_secs, Some(90));
}

#[test]
fn run_step_string_form() {
    let p = ok(
        "version: 2\njobs:\n  build:\n    machine: true\n    steps:\n      - run: echo hi && exit 0\n",
    );
    assert_eq!(p.jobs["build"].steps, vec![run("echo hi && exit 0")]);
}

#[test]
fn checkout_forms() {
    let p = ok("\
version: 2.1
jobs:
  build:
    machine: true
    steps:
      - checkout
      - checkout:
      - checkout: ~
      - checkout:
          path: src/app
");
    assert_eq!(
        p.jobs["build"].steps,
        vec![
            Step::Checkout { path: None },
            Step::Checkout { path: None },
            Step::Checkout { path: None },
            Step::Checkout {
                path: Some("src/app".to_owned())
            },
        ]
    );
}

#[test]
fn anchors_and_merge_keys() {
    let p = ok("\
version: 2.1
jobs:
  base: &defaults
    machine: true
    working_directory: /base
    environment: &env
      A: one
      B: two
    steps: &steps
      - checkout
      - run: make
  single:
    <<: *defaults
    parallelism: 2
  explicit_wins:
    working_directory: /mine
    <<: *defaults
    environment:
      <<: *env
      B: three
    steps: [run: extra]
  list:
    <<: [{shell: /bin/zsh, working_directory: /first}, *defaults]
  several_merge_keys:
    <<: {shell: /bin/zsh, working_directory: /first}
    parallelism: 3
    <<: *defaults
workflows:
  main:
    jobs: [single, explicit_wins, list, several_merge_keys]
");
    let base = &p.jobs["base"];
    let single = &p.jobs["single"];
    assert_eq!(single.executor, Executor::Machine);
    assert_eq!(single.working_directory.as_deref(), Some("/base"));
    assert_eq!(single.environment, env(&[("A", "one"), ("B", "two")]));
    assert_eq!(single.steps, base.steps);
    assert_eq!(single.parallelism, 2);

    let explicit = &p.jobs["explicit_wins"];
    assert_eq!(explicit.working_directory.as_deref(), Some("/mine"));
    assert_eq!(explicit.environment, env(&[("A", "one"), ("B", "three")]));
    assert_eq!(explicit.parallelism, 1);
    assert_eq!(explicit.steps, vec![run("extra")]);

    // Earlier maps of a merge list win over later ones.
    let list = &p.jobs["list"];
    assert_eq!(list.shell.as_deref(), Some("/bin/zsh"));
    assert_eq!(list.working_directory.as_deref(), Some("/first"));
    assert_eq!(list.environment, base.environment);

    // Several `<<` keys (accepted by CircleCI, used in real configs) act like one list.
    let several = &p.jobs["several_merge_keys"];
    assert_eq!(several.shell.as_deref(), Some("/bin/zsh"));
    assert_eq!(several.working_directory.as_deref(), Some("/first"));
    assert_eq!(several.parallelism, 3);
    assert_eq!(several.steps, base.steps);
}

#[test]
fn aliased_step_lists_nest_as_written() {
    // An alias to a list inside a list is a nested list, which is not a step.
    let e = crate::err_text(
        "\
version: 2.1
jobs:
  a:
    machine: true
    steps: &s
      - checkout
  b:
    machine: true
    steps:
      - *s
",
    );
    assert_eq!(
        e,
        "config.yml:6:7: jobs.b.steps[0]: expected a step (like `checkout` or `run: make`), \
         found a sequence"
    );
}

#[test]
fn docker_executor() {
    let p = ok("\
version: 2.1
jobs:
  build:
    docker:
      - image: cimg/rust:1.85
        auth:
          username: me
          password: $PASS
        environment:
          X: y
      - image: cimg/postgres:16.0
        name: db
        entrypoint: [sh]
        command: [-c, run]
        user: postgres
    steps: [checkout]
");
    assert_eq!(
        p.jobs["build"].executor,
        Executor::Docker {
            image: "cimg/rust:1.85".to_owned()
        }
    );
}

#[test]
fn machine_map_form() {
    let p = ok("\
version: 2.1
jobs:
  build:
    machine:
      image: ubuntu-2204:current
      docker_layer_caching: true
    steps: [checkout]
");
    assert_eq!(p.jobs["build"].executor, Executor::Machine);
}

#[test]
fn environment_values_are_strings_as_written() {
    let p = ok(r#"
version: "2.1"
jobs:
  build:
    machine: true
    environment:
      INT: 1
      FLOAT: 1.50
      BOOL: true
      YES: yes
      QUOTED: "true"
      EMPTY:
      TILDE: ~
      OCTAL: 0o17
      TEXT: hello world
    steps: [checkout]
"#);
    assert_eq!(
        p.jobs["build"].environment,
        env(&[
            ("INT", "1"),
            ("FLOAT", "1.50"),
            ("BOOL", "true"),
            ("YES", "yes"),
            ("QUOTED", "true"),
            ("EMPTY", ""),
            ("TILDE", ""),
            ("OCTAL", "0o17"),
            ("TEXT", "hello world"),
        ])
    );
    assert_eq!(p.version, "2.1");
}

#[test]
fn versions_keep_their_text() {
    for (written, kept) in [
        ("2", "2"),
        ("\"2\"", "2"),
        ("2.0", "2.0"),
        ("'2.0'", "2.0"),
        ("2.1", "2.1"),
        ("\"2.1\"", "2.1"),
    ] {
        let p = ok(&format!(
            "version: {written}\njobs:\n  build:\n    machine: true\n    steps: [checkout]\n"
        ));
        assert_eq!(p.version, kept, "{written}");
    }
}

#[test]
fn config_without_workflows_runs_build() {
    let p = ok("\
version: 2
jobs:
  build:
    docker:
      - image: alpine
    steps:
      - checkout
  other:
    machine: true
    steps: [checkout]
");
    assert_eq!(
        p.workflows,
        vec![Workflow {
            name: "workflow".to_owned(),
            jobs: vec![WorkflowJob {
                name: "build".to_owned(),
                job: "build".to_owned(),
                requires: vec![],
                context: vec![],
                approval: false,
            }],
        }]
    );
    assert_eq!(p.jobs.len(), 2);
}

#[test]
fn workflows_keep_document_order_and_skip_version() {
    let p = ok("\
version: 2
jobs:
  build: {machine: true, steps: [checkout]}
  test: {machine: true, steps: [checkout]}
workflows:
  version: 2
  zeta:
    jobs: [test, build]
  alpha:
    jobs:
      - build: ~
      - build:
          name: build-again
          requires: [build]
      - test:
          requires:
            - build-again
            - build
            - build
");
    let names: Vec<&str> = p.workflows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"]);
    let zeta: Vec<&str> = p.workflows[0]
        .jobs
        .iter()
        .map(|j| j.name.as_str())
        .collect();
    assert_eq!(zeta, ["test", "build"]);
    assert_eq!(
        p.workflows[1].jobs,
        vec![
            WorkflowJob {
                name: "build".to_owned(),
                job: "build".to_owned(),
                requires: vec![],
                context: vec![],
                approval: false,
            },
            WorkflowJob {
                name: "build-again".to_owned(),
                job: "build".to_owned(),
                requires: vec!["build".to_owned()],
                context: vec![],
                approval: false,
            },
            WorkflowJob {
                name: "test".to_owned(),
                job: "test".to_owned(),
                // Duplicates are dropped, order kept.
                requires: vec!["build-again".to_owned(), "build".to_owned()],
                context: vec![],
                approval: false,
            },
        ]
    );
}

#[test]
fn requires_may_point_forward() {
    let p = ok("\
version: 2.1
jobs:
  a: {machine: true, steps: [checkout]}
  b: {machine: true, steps: [checkout]}
workflows:
  w:
    jobs:
      - b: {requires: [a]}
      - a
");
    assert_eq!(p.workflows[0].jobs[0].requires, ["a"]);
}

#[test]
fn pipeline_round_trips_through_json() {
    let p = ok("\
version: 2.1
jobs:
  build:
    docker: [{image: alpine}]
    environment: {A: b}
    steps:
      - checkout: {path: x}
      - run: {command: make, when: always, no_output_timeout: 10m}
workflows:
  main:
    jobs: [build]
");
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(
        json["jobs"]["build"]["executor"],
        serde_json::json!({"type": "docker", "image": "alpine"})
    );
    assert_eq!(
        json["jobs"]["build"]["steps"][0],
        serde_json::json!({"type": "checkout", "path": "x"})
    );
    assert_eq!(json["jobs"]["build"]["steps"][1]["type"], "run");
    assert_eq!(json["jobs"]["build"]["steps"][1]["when"], "always");
    assert_eq!(
        json["jobs"]["build"]["steps"][1]["no_output_timeout_secs"],
        600
    );
    let back: Pipeline = serde_json::from_value(json).unwrap();
    assert_eq!(back, p);
}
