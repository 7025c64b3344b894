//! `circleci` and `circleci-agent` inside a job, end to end: the task-agent's own executable on
//! the step's PATH (ahead of the host's), `tests glob` and `tests split`, an unknown command, and
//! `step halt` ending the job successfully with the later steps not run.

use std::path::Path;
use std::time::Duration;

use bosun_tests::{AgentOptions, Server, git_repo, launch_agent, shared_tempdir};

const CLASS: &str = "cli/e2e";
const SLUG: &str = "local/cli/e2e";

const CONFIG: &str = r#"version: 2.1
jobs:
  build:
    machine: true
    resource_class: cli/e2e
    steps:
      - checkout
      - run:
          name: commands
          command: |
            echo "which=$(command -v circleci)"
            echo "which-agent=$(command -v circleci-agent)"
            echo "task-data=$CIRCLE_INTERNAL_TASK_DATA"
            echo "glob:"
            circleci tests glob "src/**/*.py"
            echo "split:"
            printf 'd.py\nb.py a.py\nc.py e.py\n' | circleci tests split --split-by=name --index 1 --total 2
            set +e
            circleci-agent foo 2>/dev/null
            echo "foo=$?"
            set -e
            circleci-agent step halt
            echo "after-halt-in-step"
      - run:
          name: third
          command: echo should-not-run
      - run:
          name: fourth
          when: always
          command: echo should-not-run
"#;

async fn log(server: &Server, job: &bosun_api::Job, step: u32) -> String {
    String::from_utf8_lossy(&server.step_log(&job.id, step).await).into_owned()
}

fn value<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|line| line.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in\n{log}"))
}

fn section(log: &str, start: &str, end: &str) -> Vec<String> {
    log.lines()
        .skip_while(|line| *line != start)
        .skip(1)
        .take_while(|line| *line != end)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circleci_commands_work_in_a_job_and_step_halt_ends_it_successfully() {
    let dir = shared_tempdir();
    let server = Server::start_with(dir.path(), &[]);
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let repo = git_repo(
        dir.path(),
        &[
            (".circleci/config.yml", CONFIG),
            ("src/top.py", ""),
            ("src/pkg/mod.py", ""),
            ("src/pkg/deep/inner.py", ""),
            ("src/pkg/notes.txt", ""),
            ("other.py", ""),
        ],
    );
    server.project(SLUG, &repo).await;
    let id = server.trigger(SLUG, "main").await;
    server.wait_pipeline(&id, Duration::from_secs(120)).await;
    let jobs = server.jobs(&id).await;
    let job = &jobs[0];
    let detail = server.job(&job.id).await;
    let statuses: Vec<&str> = detail.steps.iter().map(|s| s.status.as_str()).collect();
    let commands = log(&server, job, 1).await;
    assert_eq!(
        job.status,
        "success",
        "{statuses:?}\n{commands}\n{}",
        agent.log_text()
    );
    assert_eq!(
        statuses,
        ["success", "success", "skipped", "skipped"],
        "{commands}"
    );

    // Our circleci, from the task's private directory, not one of the host's.
    let which = Path::new(value(&commands, "which="));
    let task_data = Path::new(value(&commands, "task-data="));
    assert_eq!(which.file_name().unwrap(), "circleci");
    assert_eq!(
        which.parent().unwrap().parent(),
        task_data.parent(),
        "{commands}"
    );
    assert_eq!(
        Path::new(value(&commands, "which-agent=")).parent(),
        which.parent()
    );

    assert_eq!(
        section(&commands, "glob:", "split:"),
        ["src/pkg/deep/inner.py", "src/pkg/mod.py", "src/top.py"],
        "{commands}"
    );
    // Five names sorted, node 0 takes the first three, node 1 the rest.
    assert_eq!(
        section(&commands, "split:", "foo=2"),
        ["d.py", "e.py"],
        "{commands}"
    );
    assert_eq!(value(&commands, "foo="), "2");
    // halt ends the job after the step, not in the middle of it (CircleCI's behaviour).
    assert!(commands.contains("after-halt-in-step\n"), "{commands}");
    assert!(commands.contains("the job was halted"), "{commands}");
    for step in [2, 3] {
        assert!(
            !log(&server, job, step).await.contains("should-not-run"),
            "step {step} ran"
        );
    }
}
