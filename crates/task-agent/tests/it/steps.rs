//! `run` steps: output, status, `when`, environment, directories, shells.

use std::collections::BTreeMap;

use bosun_protocol::task::When;
use bosun_protocol::{StepStatus, TaskStatus};

use crate::harness::{Agent, Report, RootMode, run, run_task, step, task};

#[tokio::test]
async fn two_steps_stream_their_exact_output_on_their_own_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut on_fail = run("only on failure", "echo should-not-run");
    on_fail.when = When::OnFail;
    let task = task(vec![
        step(run("first", "echo one\necho two")),
        step(run("second", "echo three")),
        step(on_fail),
    ]);
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert_eq!(report.log(0), "one\ntwo\n");
    assert_eq!(report.log(1), "three\n");
    // Each step names its own log stream: ids from 1 up, not the step indexes (stream 1 is
    // the timings download the harness's task, node 1 of 3, asks for before its first step).
    let logs: Vec<Option<u32>> = (0..3).map(|step| report.log_stream(step)).collect();
    assert_eq!(logs, [Some(2), Some(3), Some(4)]);
    assert_eq!(report.finished(0), (StepStatus::Success, Some(0)));
    assert_eq!(report.finished(1), (StepStatus::Success, Some(0)));
    // on_fail without a failure: started and finished as skipped, no output.
    assert!(report.started(2));
    assert_eq!(report.finished(2), (StepStatus::Skipped, None));
    assert_eq!(report.log(2), "");
    assert_eq!(report.task_status(), TaskStatus::Success);
}

#[tokio::test]
async fn stdout_and_stderr_share_one_log_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run(
        "both",
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
    ))]);
    let report = run_task(&task, dir.path()).await;
    assert_eq!(report.log(0), "out1\nerr1\nout2\nerr2\n");
}

#[tokio::test]
async fn a_partial_line_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run("partial", "printf abc"))]);
    let report = run_task(&task, dir.path()).await;
    assert_eq!(report.log(0), "abc");
    assert_eq!(report.finished(0), (StepStatus::Success, Some(0)));
}

#[tokio::test]
async fn a_failure_skips_on_success_steps_and_runs_always_and_on_fail_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut always = run("always", "echo always-ran");
    always.when = When::Always;
    let mut on_fail = run("on fail", "echo on-fail-ran");
    on_fail.when = When::OnFail;
    let task = task(vec![
        step(run("fails", "echo before; exit 3; echo after")),
        step(run("skipped", "echo should-not-run")),
        step(always),
        step(on_fail),
    ]);
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert_eq!(report.finished(0), (StepStatus::Failed, Some(3)));
    assert_eq!(report.log(0), "before\n\nExited with code exit status 3\n");
    assert!(report.started(1), "skipped steps are still reported");
    assert_eq!(report.finished(1), (StepStatus::Skipped, None));
    assert_eq!(report.log(1), "");
    assert_eq!(report.finished(2), (StepStatus::Success, Some(0)));
    assert_eq!(report.log(2), "always-ran\n");
    assert_eq!(report.finished(3), (StepStatus::Success, Some(0)));
    assert_eq!(report.log(3), "on-fail-ran\n");
    assert_eq!(report.task_status(), TaskStatus::Failed);
}

#[tokio::test]
async fn builtin_job_and_step_environment_are_visible_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = task(vec![]);
    task.environment = BTreeMap::from([
        ("JOB_VAR".to_owned(), "from-job".to_owned()),
        ("OVERRIDE".to_owned(), "job".to_owned()),
        ("CIRCLE_JOB".to_owned(), "overridden-by-job".to_owned()),
    ]);
    let mut with_env = run(
        "env",
        r#"printf '%s\n' "CI=$CI" "CIRCLECI=$CIRCLECI" "CIRCLE_BRANCH=$CIRCLE_BRANCH" \
  "CIRCLE_TAG=${CIRCLE_TAG-unset}" "CIRCLE_SHA1=$CIRCLE_SHA1" "CIRCLE_JOB=$CIRCLE_JOB" \
  "CIRCLE_BUILD_NUM=$CIRCLE_BUILD_NUM" "CIRCLE_WORKING_DIRECTORY=$CIRCLE_WORKING_DIRECTORY" \
  "CIRCLE_PIPELINE_ID=$CIRCLE_PIPELINE_ID" "CIRCLE_WORKFLOW_ID=$CIRCLE_WORKFLOW_ID" \
  "CIRCLE_NODE_INDEX=$CIRCLE_NODE_INDEX" "CIRCLE_NODE_TOTAL=$CIRCLE_NODE_TOTAL" \
  "CIRCLE_REPOSITORY_URL=$CIRCLE_REPOSITORY_URL" \
  "CIRCLE_PROJECT_USERNAME=$CIRCLE_PROJECT_USERNAME" "CIRCLE_PROJECT_REPONAME=$CIRCLE_PROJECT_REPONAME" \
  "JOB_VAR=$JOB_VAR" "STEP_VAR=$STEP_VAR" "OVERRIDE=$OVERRIDE" "FROM_AGENT=$FROM_AGENT""#,
    );
    with_env.environment = BTreeMap::from([
        ("STEP_VAR".to_owned(), "from-step".to_owned()),
        ("OVERRIDE".to_owned(), "step".to_owned()),
    ]);
    task.steps = vec![step(with_env)];
    let report = Agent::start_with(&task, dir.path(), RootMode::Flag, &[("FROM_AGENT", "yes")])
        .await
        .finish(Report::default())
        .await;
    let cwd = dir.path().canonicalize().unwrap();
    let expected = format!(
        "CI=true\nCIRCLECI=true\nCIRCLE_BRANCH=main\nCIRCLE_TAG=unset\n\
         CIRCLE_SHA1=0123456789abcdef0123456789abcdef01234567\nCIRCLE_JOB=overridden-by-job\n\
         CIRCLE_BUILD_NUM=42\nCIRCLE_WORKING_DIRECTORY={}\nCIRCLE_PIPELINE_ID=pipeline-1\n\
         CIRCLE_WORKFLOW_ID=workflow-1\nCIRCLE_NODE_INDEX=1\nCIRCLE_NODE_TOTAL=3\n\
         CIRCLE_REPOSITORY_URL=/nonexistent/repo\nCIRCLE_PROJECT_USERNAME=acme\n\
         CIRCLE_PROJECT_REPONAME=rocket\nJOB_VAR=from-job\nSTEP_VAR=from-step\nOVERRIDE=step\n\
         FROM_AGENT=yes\n",
        cwd.display()
    );
    assert_eq!(report.log(0), expected);
}

#[tokio::test]
async fn circle_job_comes_from_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = task(vec![step(run("job", "echo $CIRCLE_JOB"))]);
    task.tag = Some("v1.0".into());
    task.steps.push(step(run("tag", "echo $CIRCLE_TAG")));
    let report = run_task(&task, dir.path()).await;
    assert_eq!(report.log(0), "build\n");
    assert_eq!(report.log(1), "v1.0\n");
}

#[tokio::test]
async fn working_directories_are_resolved_and_created() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();

    // Relative to the task directory; a step's is relative to the job's.
    let mut in_sub = run("sub", "pwd -P");
    in_sub.working_directory = Some("sub/dir".into());
    let mut task = task(vec![
        step(run("job dir", "pwd -P; echo $CIRCLE_WORKING_DIRECTORY")),
        step(in_sub),
    ]);
    task.working_directory = Some("job".into());
    let report = run_task(&task, &cwd).await;
    assert_eq!(report.finished(0), (StepStatus::Success, Some(0)));
    let job = cwd.join("job");
    assert_eq!(
        report.log(0),
        format!("{}\n{}\n", job.display(), job.display())
    );
    assert_eq!(
        report.log(1),
        format!("{}\n", job.join("sub/dir").display())
    );

    // `~` is $HOME.
    let home = cwd.join("home");
    std::fs::create_dir(&home).unwrap();
    let mut absolute = run("absolute", "pwd -P");
    absolute.working_directory = Some(cwd.display().to_string());
    let mut tilde_step = run("tilde step", "pwd -P");
    tilde_step.working_directory = Some("~/other".into());
    let mut task = crate::harness::task(vec![
        step(run("tilde", "pwd -P; echo $CIRCLE_WORKING_DIRECTORY")),
        step(absolute),
        step(tilde_step),
    ]);
    task.working_directory = Some("~/project".into());
    let home_str = home.display().to_string();
    let report = Agent::start_with(&task, &cwd, RootMode::Flag, &[("HOME", &home_str)])
        .await
        .finish(Report::default())
        .await;
    let project = home.join("project");
    assert_eq!(
        report.log(0),
        format!("{}\n{}\n", project.display(), project.display())
    );
    assert_eq!(report.log(1), format!("{}\n", cwd.display()));
    assert_eq!(report.log(2), format!("{}\n", home.join("other").display()));
}

#[tokio::test]
async fn the_default_shell_is_bash_with_errexit_and_pipefail() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run(
        "pipefail",
        "echo start; false | true; echo not-reached",
    ))]);
    let report = run_task(&task, dir.path()).await;
    assert_eq!(report.finished(0), (StepStatus::Failed, Some(1)));
    assert_eq!(report.log(0), "start\n\nExited with code exit status 1\n");
}

#[tokio::test]
async fn custom_shells_run_the_command_from_a_script_file() {
    let dir = tempfile::tempdir().unwrap();
    // Job-level shell.
    let mut task = task(vec![step(run(
        "sh",
        "echo \"from sh\"; false | true; echo reached",
    ))]);
    task.shell = Some("/bin/sh".into());
    // Step-level shell wins over the job's.
    let mut bash_x = run("bash -x", "echo traced");
    bash_x.shell = Some("/bin/bash -x".into());
    task.steps.push(step(bash_x));
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if python {
        let mut py = run("python", "import sys\nprint('py', sys.version_info.major)");
        py.shell = Some("python3".into());
        task.steps.push(step(py));
    } else {
        println!("python3 part skipped: no python3");
    }
    let report = run_task(&task, dir.path()).await;
    assert_eq!(report.log(0), "from sh\nreached\n");
    assert_eq!(report.log(1), "+ echo traced\ntraced\n");
    if python {
        assert_eq!(report.log(2), "py 3\n");
        assert_eq!(report.finished(2), (StepStatus::Success, Some(0)));
    }
    assert_eq!(report.task_status(), TaskStatus::Success);
}

#[tokio::test]
async fn a_missing_shell_fails_the_step_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut missing = run("missing", "echo hi");
    missing.shell = Some("/nonexistent/shell -e".into());
    let task = task(vec![step(missing)]);
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert_eq!(report.finished(0), (StepStatus::Failed, None));
    assert!(
        report
            .log(0)
            .contains("cannot start `/nonexistent/shell -e`"),
        "{}",
        report.log(0)
    );
    assert_eq!(report.task_status(), TaskStatus::Failed);
}

#[tokio::test]
async fn five_megabytes_of_binary_output_arrive_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run(
        "big",
        "head -c 5242880 /dev/urandom > blob.bin\ncat blob.bin",
    ))]);
    let report = run_task(&task, dir.path()).await;
    assert_eq!(report.finished(0), (StepStatus::Success, Some(0)));
    let expected = std::fs::read(dir.path().join("blob.bin")).unwrap();
    assert_eq!(expected.len(), 5 * 1024 * 1024);
    let log = report.log_stream(0).expect("step 0 names its log stream");
    let got = report.data.get(&log).cloned().unwrap_or_default();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "5 MiB of output differ");
}

#[tokio::test]
async fn a_signal_fails_the_step_without_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run("killed", "echo bye; kill -KILL $$"))]);
    let report = run_task(&task, dir.path()).await;
    assert_eq!(report.finished(0), (StepStatus::Failed, None));
    assert_eq!(report.log(0), "bye\n\nExited with signal SIGKILL\n");
}

#[tokio::test]
async fn the_socket_is_not_inherited_by_steps() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run(
        "fds",
        "for f in /proc/$$/fd/*; do echo \"$f -> $(readlink \"$f\")\"; done",
    ))]);
    let agent = Agent::start(&task, dir.path()).await;
    let inode = agent.socket_inode;
    let report = agent.finish(Report::default()).await;
    let log = report.log(0);
    // The listing worked: the shell's stdout is the output pipe.
    assert!(log.contains("/fd/1 -> pipe:["), "{log}");
    assert!(!log.contains(&format!("socket:[{inode}]")), "{log}");
    assert!(!log.contains("socket:"), "{log}");
}

#[tokio::test]
async fn the_allow_root_environment_variable_works_like_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let task = task(vec![step(run("hi", "echo hi"))]);
    let report = Agent::start_with(&task, dir.path(), RootMode::Env, &[])
        .await
        .finish(Report::default())
        .await;
    report.assert_clean_exit();
    assert_eq!(report.log(0), "hi\n");
}
