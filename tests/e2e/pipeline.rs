//! Pipelines run end to end and their logs come back exact.

use std::time::{Duration, Instant};

use bosun_tests::{AgentOptions, Fixture};
use sha2::{Digest, Sha256};

const TWO_JOBS: &str = r#"
version: 2.1
jobs:
  build:
    machine: true
    resource_class: e2e/linux
    environment:
      WHO: builder
    steps:
      - checkout
      - run:
          name: Say who
          command: echo "built by $WHO for $CIRCLE_JOB on $CIRCLE_BRANCH"
      - run: printf 'no newline at the end'
  test:
    machine: true
    resource_class: e2e/linux
    steps:
      - checkout
      - run:
          name: Read the repo
          command: cat hello.txt
      - run:
          name: Sub dir
          working_directory: sub
          command: pwd | sed 's|.*/||'
workflows:
  main:
    jobs:
      - build
      - test:
          requires: [build]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_job_workflow_succeeds_and_every_step_log_reads_back_exactly() {
    let fixture = Fixture::with_files(
        "e2e/linux",
        &[
            (".circleci/config.yml", TWO_JOBS),
            ("hello.txt", "hello from the repo\n"),
            ("sub/.keep", ""),
        ],
        AgentOptions::default(),
    )
    .await;
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(
        pipeline.status,
        "success",
        "{pipeline:?}\n{}",
        fixture.agent.log_text()
    );
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        assert_eq!(job.status, "success", "{job:?}");
    }
    let build = fixture.job(&jobs, "build");
    let test = fixture.job(&jobs, "test");
    assert!(build.job_number < test.job_number);

    let detail = fixture.server.job(&build.id).await;
    let names: Vec<&str> = detail.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["Checkout code", "Say who", "printf 'no newline at the end'"]
    );
    assert!(
        detail
            .steps
            .iter()
            .all(|s| s.status == "success" && s.exit_code == Some(0)),
        "{detail:?}"
    );
    assert_eq!(
        fixture.server.step_log(&build.id, 1).await,
        b"built by builder for build on main\n"
    );
    assert_eq!(
        fixture.server.step_log(&build.id, 2).await,
        b"no newline at the end"
    );

    assert_eq!(
        fixture.server.step_log(&test.id, 1).await,
        b"hello from the repo\n"
    );
    assert_eq!(fixture.server.step_log(&test.id, 2).await, b"sub\n");
}

const FAILING: &str = r#"
version: 2.1
jobs:
  build:
    machine: true
    resource_class: e2e/linux
    steps:
      - run: echo before
      - run:
          name: Fails
          command: echo failing; exit 3
      - run:
          name: Never runs
          command: echo SHOULD-NOT-RUN
      - run:
          name: Cleanup
          when: always
          command: echo cleanup ran
  deploy:
    machine: true
    resource_class: e2e/linux
    steps:
      - run: echo SHOULD-NOT-DEPLOY
workflows:
  main:
    jobs:
      - build
      - deploy:
          requires: [build]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_fails_its_job_skips_later_steps_and_blocks_dependents() {
    let fixture = Fixture::new("e2e/linux", FAILING).await;
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(pipeline.status, "failed");
    let build = fixture.job(&jobs, "build");
    let deploy = fixture.job(&jobs, "deploy");
    assert_eq!(build.status, "failed");
    assert_eq!(deploy.status, "not_run");

    let detail = fixture.server.job(&build.id).await;
    let summary: Vec<(&str, &str, Option<i32>)> = detail
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str(), s.exit_code))
        .collect();
    assert_eq!(summary[0], ("echo before", "success", Some(0)));
    assert_eq!(summary[1], ("Fails", "failed", Some(3)));
    assert_eq!(summary[2].1, "skipped");
    assert_eq!(summary[3], ("Cleanup", "success", Some(0)));
    let failed_log = String::from_utf8(fixture.server.step_log(&build.id, 1).await).unwrap();
    assert!(failed_log.starts_with("failing\n"), "{failed_log}");
    assert!(
        failed_log.contains("Exited with code exit status 3"),
        "{failed_log}"
    );
    assert!(fixture.server.step_log(&build.id, 2).await.is_empty());
    assert_eq!(
        fixture.server.step_log(&build.id, 3).await,
        b"cleanup ran\n"
    );
    // The dependent job never got a task, so it has no steps and no logs.
    assert!(fixture.server.job(&deploy.id).await.steps.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_of_output_arrive_byte_for_byte() {
    // The step writes 50 MiB of random bytes to a file in its working directory, prints them,
    // and a second step prints the file's SHA-256: the server's log must hash the same.
    let config = r#"
version: 2.1
jobs:
  build:
    machine: true
    resource_class: e2e/linux
    steps:
      - run:
          name: Print 50 MB
          command: head -c 52428800 /dev/urandom > out.bin && cat out.bin
      - run:
          name: Hash
          command: sha256sum out.bin | cut -d' ' -f1
"#;
    let fixture = Fixture::new("e2e/linux", config).await;
    let started = Instant::now();
    let (pipeline, jobs) = fixture.run().await;
    let elapsed = started.elapsed();
    assert_eq!(pipeline.status, "success", "{}", fixture.agent.log_text());
    let build = fixture.job(&jobs, "build");
    let log = fixture.server.step_log(&build.id, 0).await;
    assert_eq!(log.len(), 52_428_800);
    let expected = String::from_utf8(fixture.server.step_log(&build.id, 1).await).unwrap();
    let actual = format!("{:x}\n", Sha256::digest(&log));
    assert_eq!(actual, expected);
    eprintln!("50 MiB step: pipeline wall time {elapsed:?}");
    assert!(elapsed < Duration::from_secs(120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_config_errors_the_pipeline_naming_line_and_column() {
    let config = "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: e2e/linux\n    stepz:\n      - run: echo hi\n";
    let fixture = Fixture::new("e2e/linux", config).await;
    let id = fixture.server.trigger(&fixture.slug, "main").await;
    let pipeline = fixture.server.pipeline(&id).await;
    assert_eq!(pipeline.state, "errored");
    assert_eq!(pipeline.status, "error");
    assert_eq!(pipeline.errors.len(), 1);
    let message = &pipeline.errors[0].message;
    assert!(
        message.starts_with(".circleci/config.yml:6:5: "),
        "{message}"
    );
    assert!(message.contains("stepz"), "{message}");
    assert!(fixture.server.jobs(&id).await.is_empty());
}

const PARAMETERIZED: &str = r#"
version: 2.1
parameters:
  greeting:
    type: string
    default: hello
commands:
  say:
    parameters:
      text: {type: string}
    steps:
      - run: echo "<< parameters.text >>"
jobs:
  build:
    machine: true
    resource_class: e2e/linux
    parameters:
      who: {type: string}
    steps:
      - say:
          text: << pipeline.parameters.greeting >> << parameters.who >> on << pipeline.git.branch >>, pipeline << pipeline.number >>
workflows:
  main:
    jobs:
      - build:
          who: world
      - build:
          name: release-only
          who: release
          filters:
            branches:
              only: release
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_parameters_commands_and_branch_filters_reach_the_job() {
    let fixture = Fixture::new("e2e/linux", PARAMETERIZED).await;
    let mut parameters = serde_json::Map::new();
    parameters.insert("greeting".into(), serde_json::Value::String("hi".into()));
    let body = bosun_api::TriggerPipeline {
        branch: Some("main".into()),
        parameters: Some(parameters),
        ..bosun_api::TriggerPipeline::default()
    };
    let created = fixture.server.trigger_with(&fixture.slug, &body).await;
    let pipeline = fixture
        .server
        .wait_pipeline(&created.id, Duration::from_secs(60))
        .await;
    assert_eq!(pipeline.status, "success", "{pipeline:?}");
    let jobs = fixture.server.jobs(&created.id).await;
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        ["build"],
        "the release-only job is filtered out on main"
    );
    assert_eq!(
        fixture.server.step_log(&jobs[0].id, 0).await,
        format!("hi world on main, pipeline {}\n", created.number).as_bytes()
    );

    // An undeclared parameter is a config error of the pipeline, naming it.
    let mut bad = serde_json::Map::new();
    bad.insert("nope".into(), serde_json::Value::Bool(true));
    let body = bosun_api::TriggerPipeline {
        branch: Some("main".into()),
        parameters: Some(bad),
        ..bosun_api::TriggerPipeline::default()
    };
    let created = fixture.server.trigger_with(&fixture.slug, &body).await;
    let pipeline = fixture.server.pipeline(&created.id).await;
    assert_eq!(pipeline.state, "errored");
    assert!(
        pipeline.errors[0].message.contains("nope"),
        "{:?}",
        pipeline.errors
    );
}

/// Dynamic configuration: the setup job writes a config, continues the pipeline with it through
/// `POST /api/v2/pipeline/continue` (the key alone authenticates), and a second use of the key
/// is refused with a 409; an unknown key is a 404.
const SETUP: &str = r#"
version: 2.1
setup: true
jobs:
  setup:
    machine: true
    resource_class: e2e/linux
    steps:
      - run:
          name: Continue
          command: |
            # The setup config is 2.1 itself: spell the continued config's `<< ... >>` so
            # that it is not substituted here.
            LT='<' GT='>'
            cat > continued.yml <<EOF
            version: 2.1
            jobs:
              generated:
                machine: true
                resource_class: e2e/linux
                steps:
                  - run: echo generated job ran on \$CIRCLE_BRANCH, greeting \$GREETING
                environment:
                  GREETING: ${LT}${LT} pipeline.parameters.greeting ${GT}${GT}
            parameters:
              greeting:
                type: string
                default: none
            workflows:
              continued:
                jobs:
                  - generated
            EOF
            printf '{"continuation-key": "%s", "configuration": "%s", "parameters": {"greeting": "hello"}}' \
              "$CIRCLE_CONTINUATION_KEY" "$(awk '{printf "%s\\n", $0}' continued.yml)" > body.json
            post() {
              curl -s -o "$2" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
                --data-binary "@$1" "$BOSUN_API_URL/api/v2/pipeline/continue"
            }
            first=$(post body.json first.json)
            second=$(post body.json second.json)
            sed 's/"continuation-key": "[^"]*"/"continuation-key": "nope"/' body.json > bogus.json
            unknown=$(post bogus.json unknown.json)
            echo "first: $first"
            echo "second: $second $(cat second.json)"
            echo "unknown: $unknown"
            test "$first" = 200 && test "$second" = 409 && test "$unknown" = 404
workflows:
  setup:
    jobs:
      - setup
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_workflow_continues_the_pipeline_once_with_a_generated_config() {
    let fixture = Fixture::new("e2e/linux", SETUP).await;
    let (pipeline, jobs) = fixture.run().await;
    let setup = fixture.job(&jobs, "setup");
    let setup_log =
        String::from_utf8_lossy(&fixture.server.step_log(&setup.id, 0).await).into_owned();
    assert_eq!(
        pipeline.status,
        "success",
        "{pipeline:?}\n{jobs:?}\n{setup_log}\n{}",
        fixture.agent.log_text()
    );
    assert!(setup_log.contains("first: 200"), "{setup_log}");
    assert!(
        setup_log.contains("second: 409") && setup_log.contains("already used"),
        "{setup_log}"
    );
    assert!(setup_log.contains("unknown: 404"), "{setup_log}");
    let generated = fixture.job(&jobs, "generated");
    assert_eq!(generated.status, "success", "{generated:?}");
    assert_eq!(
        fixture.server.step_log(&generated.id, 0).await,
        b"generated job ran on main, greeting hello\n"
    );
    let workflows: Vec<String> = fixture
        .server
        .client
        .get::<bosun_api::Items<bosun_api::types::Workflow>>(
            &format!("/api/v2/pipeline/{}/workflow", pipeline.id),
            &fixture.server.admin,
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(workflows, ["setup", "continued"]);
}
