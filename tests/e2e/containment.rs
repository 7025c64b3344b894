//! Privilege separation and containment: jobs run as the job user, cannot reach root's secrets,
//! and nothing they start outlives them.

use std::time::{Duration, Instant};

use bosun_tests::{AgentOptions, Fixture, commit, is_root, launch_agent, marked_processes};

/// `echo` of the task marker, so a test can find the task's processes.
const PRINT_MARKER: &str = "echo \"marker=$BOSUN_TASK_ID\"";

fn marker_from(log: &str) -> String {
    log.lines()
        .find_map(|line| line.strip_prefix("marker="))
        .unwrap_or_else(|| panic!("no marker in {log:?}"))
        .trim()
        .to_owned()
}

fn job(resource_class: &str, steps: &str) -> String {
    format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {resource_class}\n    steps:\n{steps}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_as_the_job_user_and_cannot_reach_root_or_any_token() {
    if !is_root() {
        eprintln!(
            "skipped: needs root (the privilege drop only happens when the launch-agent is root)"
        );
        return;
    }
    let fixture = Fixture::new(
        "e2e/linux",
        &job("e2e/linux", "      - run: echo placeholder\n"),
    )
    .await;
    let agent_pid = fixture.agent.pid();
    let agent_config = fixture.dir.path().join("agent.yaml");
    let steps = format!(
        r#"      - checkout
      - run:
          name: ids
          command: id -u; id -G
      - run:
          name: environ
          command: if cat /proc/{agent_pid}/environ > /dev/null 2>&1; then echo LEAKED; else echo denied; fi
      - run:
          name: config
          command: if cat {config} > /dev/null 2>&1; then echo LEAKED; else echo denied; fi
      - run:
          name: root
          command: if touch /root/bosun-probe 2> /dev/null; then echo LEAKED; else echo denied; fi
      - run:
          name: regain
          command: if sudo -n true 2> /dev/null || su -c true root < /dev/null 2> /dev/null; then echo LEAKED; else echo denied; fi
      - run:
          name: dump
          command: env; cat /proc/self/environ | tr '\0' '\n'; find . /tmp -xdev -type f -user "$(id -u)" -size -1M -print0 2> /dev/null | xargs -0 cat 2> /dev/null || true
"#,
        config = agent_config.display()
    );
    commit(
        &fixture.repo,
        &[(".circleci/config.yml", &job("e2e/linux", &steps))],
        "probe",
    );
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(pipeline.status, "success", "{}", fixture.agent.log_text());
    let id = &fixture.job(&jobs, "build").id;
    let log = |step| {
        let server = &fixture.server;
        async move { String::from_utf8_lossy(&server.step_log(id, step).await).into_owned() }
    };
    let ids = log(1).await;
    let mut lines = ids.lines();
    let uid = lines.next().unwrap();
    let groups = lines.next().unwrap();
    let expected_uid = nix::unistd::User::from_name(bosun_tests::TEST_JOB_USER)
        .unwrap()
        .unwrap()
        .uid;
    assert_eq!(uid, expected_uid.to_string());
    assert!(
        groups.split_whitespace().all(|g| g != "0"),
        "groups: {groups}"
    );
    for (step, what) in [
        (2, "launch-agent environ"),
        (3, "launch-agent config"),
        (4, "/root"),
        (5, "regaining root"),
    ] {
        assert_eq!(
            log(step).await,
            "denied\n",
            "{what} was reachable from a step"
        );
    }
    let mut everything = String::new();
    for step in 0..7 {
        everything.push_str(&log(step).await);
    }
    assert!(everything.contains("BOSUN_TASK_ID="), "the dump step ran");
    assert!(
        !everything.contains(&fixture.token),
        "the runner token reached the job"
    );
    assert!(
        !everything.contains("bosun_task_"),
        "a task token reached the job"
    );
    assert!(
        !everything.contains("bosun-e2e-admin-token"),
        "the admin token reached the job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_nohup_and_setsid_children_do_not_outlive_the_job() {
    let steps = format!(
        r#"      - run: {PRINT_MARKER}
      - run:
          name: leave things behind
          command: |
            setsid sleep 1000 &
            nohup sleep 1001 > /dev/null 2>&1 &
            ( ( setsid sleep 1002 < /dev/null > /dev/null 2>&1 & ) & )
            sleep 0.2
            echo left
      - run:
          name: background step
          background: true
          command: setsid sleep 1003
"#
    );
    let fixture = Fixture::new("e2e/linux", &job("e2e/linux", &steps)).await;
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(pipeline.status, "success", "{}", fixture.agent.log_text());
    let id = &fixture.job(&jobs, "build").id;
    let marker = marker_from(&String::from_utf8_lossy(
        &fixture.server.step_log(id, 0).await,
    ));
    assert_eq!(fixture.server.step_log(id, 1).await, b"left\n");
    let left = marked_processes(&marker);
    assert!(
        left.is_empty(),
        "processes of task {marker} outlived it: {left:?}"
    );
}

/// A step that ignores SIGTERM, so only SIGKILL after the grace ends it.
const STUBBORN: &str =
    "trap 'echo got TERM' TERM; echo started; while true; do sleep 0.1 || true; done";

fn grace_config(grace: &str, extra: &str) -> AgentOptions {
    AgentOptions {
        cleanup: true,
        extra_config: format!("  termination_grace_period: {grace}\n{extra}"),
        ..AgentOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_step_and_ends_the_job_canceled_within_grace() {
    let steps = format!(
        "      - run: {PRINT_MARKER}\n      - run:\n          name: stubborn\n          command: \"{STUBBORN}\"\n      - run:\n          name: after\n          when: always\n          command: echo SHOULD-NOT-RUN\n"
    );
    let config = job("e2e/linux", &steps);
    let fixture = Fixture::with_files(
        "e2e/linux",
        &[(".circleci/config.yml", &config)],
        grace_config("2s", ""),
    )
    .await;
    let pipeline_id = fixture.server.trigger(&fixture.slug, "main").await;
    let job_id = fixture.server.job_id(&pipeline_id, "build").await;
    fixture
        .server
        .wait_for_log(&job_id, 1, "started", Duration::from_secs(60))
        .await;
    let marker = marker_from(&String::from_utf8_lossy(
        &fixture.server.step_log(&job_id, 0).await,
    ));

    let asked = Instant::now();
    fixture.server.cancel(&job_id).await;
    let log = fixture
        .server
        .wait_for_log(&job_id, 1, "got TERM", Duration::from_secs(4))
        .await;
    let term_after = asked.elapsed();
    let job = fixture
        .server
        .wait_job(&job_id, Duration::from_secs(10))
        .await;
    let ended_after = asked.elapsed();
    let left = marked_processes(&marker);
    eprintln!(
        "cancel: SIGTERM reached the step after {term_after:?}, job ended after {ended_after:?}"
    );
    assert!(log.contains("got TERM"));
    assert_eq!(job.status, "canceled");
    assert!(
        term_after < Duration::from_secs(2),
        "cancel took {term_after:?} to reach the step"
    );
    // The step ignores SIGTERM: only the SIGKILL after the 2 s grace ends it.
    assert!(
        ended_after >= Duration::from_secs(2),
        "ended before the grace: {ended_after:?}"
    );
    assert!(
        ended_after < Duration::from_secs(2 + 2),
        "job ended {ended_after:?} after the cancel"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(job.steps[1].status, "canceled");
    assert!(
        job.steps.len() == 2 || job.steps[2].status != "success",
        "{job:?}"
    );
    let pipeline = fixture
        .server
        .wait_pipeline(&pipeline_id, Duration::from_secs(5))
        .await;
    assert_eq!(pipeline.status, "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_timeout_fails_the_step_within_grace() {
    let steps = "      - run:\n          name: silent\n          no_output_timeout: 2s\n          command: \"echo started; trap '' TERM; sleep 100\"\n";
    let config = job("e2e/linux", steps);
    let fixture = Fixture::with_files(
        "e2e/linux",
        &[(".circleci/config.yml", &config)],
        grace_config("1s", ""),
    )
    .await;
    let pipeline_id = fixture.server.trigger(&fixture.slug, "main").await;
    let job_id = fixture.server.job_id(&pipeline_id, "build").await;
    fixture
        .server
        .wait_for_log(&job_id, 0, "started", Duration::from_secs(60))
        .await;
    let since_output = Instant::now();
    let job = fixture
        .server
        .wait_job(&job_id, Duration::from_secs(15))
        .await;
    let elapsed = since_output.elapsed();
    eprintln!("no_output_timeout 2s + grace 1s: job ended {elapsed:?} after the last output");
    assert_eq!(job.status, "failed");
    assert!(elapsed < Duration::from_secs(2 + 1 + 2), "took {elapsed:?}");
    let log = String::from_utf8_lossy(&fixture.server.step_log(&job_id, 0).await).into_owned();
    assert!(log.contains("Too long with no output"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_run_time_stops_the_job_within_grace() {
    let steps =
        format!("      - run:\n          name: forever\n          command: \"{STUBBORN}\"\n");
    let config = job("e2e/linux", &steps);
    let options = grace_config("1s", "  max_run_time: 3s\n");
    let fixture =
        Fixture::with_files("e2e/linux", &[(".circleci/config.yml", &config)], options).await;
    let pipeline_id = fixture.server.trigger(&fixture.slug, "main").await;
    let job_id = fixture.server.job_id(&pipeline_id, "build").await;
    fixture
        .server
        .wait_for_log(&job_id, 0, "started", Duration::from_secs(60))
        .await;
    let started = Instant::now();
    let job = fixture
        .server
        .wait_job(&job_id, Duration::from_secs(15))
        .await;
    let elapsed = started.elapsed();
    eprintln!("max_run_time 3s + grace 1s: job ended {elapsed:?} after its step started");
    assert_eq!(job.status, "failed");
    assert!(
        job.message
            .as_deref()
            .unwrap_or("")
            .contains("max_run_time"),
        "{job:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(3),
        "stopped before max_run_time: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3 + 1 + 2), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_never_follows_a_symlink_the_job_planted() {
    let fixture = Fixture::new(
        "e2e/linux",
        &job("e2e/linux", "      - run: echo placeholder\n"),
    )
    .await;
    // Files outside the working directory (root-owned when the tests run as root).
    let outside = fixture.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("secret"), b"do not delete\n").unwrap();
    std::fs::write(outside.join("dir/inner"), b"inner\n").unwrap();
    let steps = format!(
        "      - run: |\n          ln -s {o}/secret link-to-file\n          ln -s {o}/dir link-to-dir\n          mkdir -p deep/er\n          ln -s {o}/dir deep/er/link\n          ln -s / root-link\n          echo planted\n",
        o = outside.display()
    );
    commit(
        &fixture.repo,
        &[(".circleci/config.yml", &job("e2e/linux", &steps))],
        "plant links",
    );
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(pipeline.status, "success", "{}", fixture.agent.log_text());
    assert_eq!(
        fixture
            .server
            .step_log(&fixture.job(&jobs, "build").id, 0)
            .await,
        b"planted\n"
    );
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"do not delete\n"
    );
    assert_eq!(
        std::fs::read(outside.join("dir/inner")).unwrap(),
        b"inner\n"
    );
    let work = fixture.dir.path().join("work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".bosun-tasks")
        .collect();
    assert!(
        left.is_empty(),
        "task directories left in {}: {left:?}",
        work.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_agent_killed_mid_task_cleans_up_on_restart_and_the_task_fails_its_lease() {
    let steps = format!(
        "      - run: {PRINT_MARKER}\n      - run: |\n          setsid sleep 1000 &\n          echo started\n          sleep 1000\n"
    );
    let config = job("e2e/linux", &steps);
    let dir = bosun_tests::shared_tempdir();
    let server = bosun_tests::Server::start_with(dir.path(), &["--task-lease-secs", "3"]);
    server.resource_class("e2e/linux").await;
    let token = server.token("e2e/linux").await;
    let mut agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let repo = bosun_tests::git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    server.project("local/e2e/crash", &repo).await;
    let pipeline_id = server.trigger("local/e2e/crash", "main").await;
    let job_id = server.job_id(&pipeline_id, "build").await;
    server
        .wait_for_log(&job_id, 1, "started", Duration::from_secs(60))
        .await;
    let marker = marker_from(&String::from_utf8_lossy(&server.step_log(&job_id, 0).await));
    let work = dir.path().join("work").join(&marker);
    assert!(
        work.is_dir(),
        "{} exists while the task runs",
        work.display()
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = agent.child.wait();
    // The launch-agent is gone; the step's processes (outside the dead task-agent) are not yet.
    let survivors = marked_processes(&marker);
    eprintln!(
        "after kill -9 of the launch-agent, {} process(es) of the task were still alive",
        survivors.len()
    );

    let restarted = Instant::now();
    let _agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
    );
    let mut swept = None;
    while restarted.elapsed() < Duration::from_secs(20) {
        if marked_processes(&marker).is_empty() && !work.exists() {
            swept = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let swept = swept.unwrap_or_else(|| {
        panic!(
            "after restart: processes {:?}, dir exists {}",
            marked_processes(&marker),
            work.exists()
        )
    });
    eprintln!("restart swept the leftover task in {swept:?}");
    let job = server.wait_job(&job_id, Duration::from_secs(20)).await;
    assert_eq!(job.status, "infrastructure_fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_prefix_with_sudo_runs_the_job_as_the_prefixed_user() {
    if !is_root() {
        eprintln!("skipped: needs root (sudo -n as root is what the command_prefix mode is for)");
        return;
    }
    bosun_tests::require_program(
        "sudo",
        "runner.command_prefix runs the task-agent through sudo",
    );
    let user = bosun_tests::job_user().expect("root has a job user");
    let steps = format!(
        "      - run: {PRINT_MARKER}\n      - run: id -un; pwd\n      - run: |\n          setsid sleep 1000 &\n          echo ok\n"
    );
    let config = job("e2e/linux", &steps);
    let options = AgentOptions {
        cleanup: true,
        extra_config: format!("  command_prefix: [\"sudo\", \"-niHu\", \"{user}\", \"--\"]\n"),
        ..AgentOptions::default()
    };
    let fixture =
        Fixture::with_files("e2e/linux", &[(".circleci/config.yml", &config)], options).await;
    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(pipeline.status, "success", "{}", fixture.agent.log_text());
    let id = &fixture.job(&jobs, "build").id;
    let marker = marker_from(&String::from_utf8_lossy(
        &fixture.server.step_log(id, 0).await,
    ));
    let ids = String::from_utf8_lossy(&fixture.server.step_log(id, 1).await).into_owned();
    let mut lines = ids.lines();
    assert_eq!(lines.next(), Some(user));
    assert!(
        lines.next().unwrap().ends_with(&marker),
        "the job ran in its task directory: {ids}"
    );
    assert!(marked_processes(&marker).is_empty());
}
