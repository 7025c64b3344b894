//! Caches and workspaces end to end (issue 9): real server, launch-agent and task-agent, a real
//! repository. A four-job workflow restores a cache by checksum key, saves it, persists a
//! workspace that two parallel jobs extend and a fourth attaches and stores as artifacts; a second
//! pipeline hits the cache through its fallback prefix. Then: two unrelated jobs persisting one
//! path make the attach fail naming both; a 1 GiB cache round-trips byte-exact in bounded memory;
//! a server crash between save and restore loses nothing; a corrupt stored archive fails the
//! restore; expired objects are swept.

use std::path::Path;
use std::time::{Duration, Instant};

use bosun_api::Auth;
use bosun_tests::{
    AgentOptions, Proc, Server, bin_dir, commit, free_listen_addr, git_repo, launch_agent,
    peak_rss_kib, shared_tempdir,
};

const CLASS: &str = "blobs/e2e";
const SLUG: &str = "local/blobs/e2e";

async fn start(dir: &Path, flags: &[&str], config: &str) -> (Server, Proc, std::path::PathBuf) {
    let server = Server::start_with(dir, flags);
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let agent = launch_agent(&server, &token, dir, "agent", AgentOptions::default());
    let repo = git_repo(
        dir,
        &[
            (".circleci/config.yml", config),
            ("deps.lock", "left-pad 1.0\n"),
        ],
    );
    server.project(SLUG, &repo).await;
    (server, agent, repo)
}

/// Runs a pipeline on `main` to its end; returns its jobs by name.
async fn run(server: &Server) -> Vec<bosun_api::Job> {
    let id = server.trigger(SLUG, "main").await;
    let pipeline = server.wait_pipeline(&id, Duration::from_secs(240)).await;
    let jobs = server.jobs(&id).await;
    // A pipeline that did not start has no jobs: every check below would pass on nothing.
    assert!(!jobs.is_empty(), "the pipeline made no jobs: {pipeline:?}");
    jobs
}

fn job<'a>(jobs: &'a [bosun_api::Job], name: &str) -> &'a bosun_api::Job {
    jobs.iter()
        .find(|job| job.name == name)
        .unwrap_or_else(|| panic!("no job `{name}` in {jobs:?}"))
}

async fn log(server: &Server, job: &bosun_api::Job, step: u32) -> String {
    String::from_utf8_lossy(&server.step_log(&job.id, step).await).into_owned()
}

/// Every step's log of `job`, for failure messages.
async fn all_logs(server: &Server, job: &bosun_api::Job) -> String {
    let detail = server.job(&job.id).await;
    let mut text = String::new();
    for (index, step) in (0u32..).zip(&detail.steps) {
        text.push_str(&format!(
            "--- step {index} {} ({})\n",
            step.name, step.status
        ));
        text.push_str(&log(server, job, index).await);
    }
    text
}

/// Asserts every job succeeded, showing the logs of those that did not.
async fn assert_all_succeeded(server: &Server, jobs: &[bosun_api::Job], agent: &Proc) {
    for job in jobs {
        if job.status != "success" {
            panic!(
                "job `{}` is {}:\n{}\nagent:\n{}",
                job.name,
                job.status,
                all_logs(server, job).await,
                agent.log_text()
            );
        }
    }
}

fn cli(server: &Server, args: &[&str]) -> String {
    let token = match &server.admin {
        Auth::CircleToken(token) => token.clone(),
        _ => unreachable!("the harness uses an admin token"),
    };
    let output = std::process::Command::new(bin_dir().join("bosun"))
        .args(["--host", &server.url, "--token", &token])
        .args(args)
        .output()
        .expect("bosun");
    assert!(
        output.status.success(),
        "bosun {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

const WORKFLOW: &str = r#"version: 2.1
defaults: &defaults
  machine: true
  resource_class: blobs/e2e
jobs:
  prepare:
    <<: *defaults
    steps:
      - checkout
      - restore_cache:
          keys:
            - v1-deps-{{ checksum "deps.lock" }}
            - v1-deps-
      - run:
          name: build deps
          command: |
            if [ -f deps/marker ]; then
              echo "deps restored: $(cat deps/marker)"
              (cd deps && sha256sum -c SUMS) && test -L deps/link && test -d deps/empty
            else
              mkdir -p deps/sub deps/empty
              echo "built by job $CIRCLE_BUILD_NUM" > deps/marker
              head -c 1000000 /dev/urandom > deps/sub/blob
              ln -s sub/blob deps/link
              (cd deps && sha256sum sub/blob marker > SUMS)
            fi
            mkdir -p ws && echo prepared > ws/common.txt
      - save_cache:
          key: v1-deps-{{ checksum "deps.lock" }}
          paths:
            - deps
      - persist_to_workspace:
          root: ws
          paths:
            - common.txt
  left:
    <<: *defaults
    steps:
      - attach_workspace:
          at: ws
      - run: grep -qx prepared ws/common.txt && mkdir -p out && echo left > out/left.txt
      - persist_to_workspace:
          root: out
          paths:
            - "*.txt"
  right:
    <<: *defaults
    steps:
      - attach_workspace:
          at: ws
      - run: mkdir -p out/r/nested && echo right > out/right.txt && echo deep > out/r/nested/n.txt
      - persist_to_workspace:
          root: out
          paths:
            - right.txt
            - r
  final:
    <<: *defaults
    steps:
      - attach_workspace:
          at: ws
      - run: find ws -type f | sort && cat ws/common.txt ws/left.txt ws/right.txt ws/r/nested/n.txt
      - store_artifacts:
          path: ws
          destination: union
workflows:
  main:
    jobs:
      - prepare
      - left:
          requires: [prepare]
      - right:
          requires: [prepare]
      - final:
          requires: [left, right]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_shares_a_cache_and_a_layered_workspace_and_the_cache_falls_back_by_prefix() {
    let dir = shared_tempdir();
    let (server, agent, repo) = start(dir.path(), &[], WORKFLOW).await;

    // First pipeline: a cache miss, a save, a workspace made of three layers.
    let jobs = run(&server).await;
    assert_all_succeeded(&server, &jobs, &agent).await;
    let prepare = job(&jobs, "prepare");
    let restore = log(&server, prepare, 1).await;
    assert!(restore.contains("No cache is found"), "{restore}");
    let built = log(&server, prepare, 2).await;
    assert!(!built.contains("deps restored"), "{built}");
    let saved = log(&server, prepare, 3).await;
    assert!(
        saved.contains("v1-deps-"),
        "the save names its key: {saved}"
    );

    let last = job(&jobs, "final");
    let listed = log(&server, last, 1).await;
    for file in [
        "ws/common.txt",
        "ws/left.txt",
        "ws/right.txt",
        "ws/r/nested/n.txt",
    ] {
        assert!(listed.contains(file), "{file} is attached: {listed}");
    }
    // The union, read back through the API, byte for byte.
    let artifacts = server
        .client
        .project_job_artifacts(&server.admin, SLUG, last.job_number)
        .await
        .expect("artifacts");
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    for artifact in &artifacts.items {
        let bytes = server
            .client
            .download_artifact(&server.admin, &artifact.url)
            .await
            .expect("download")
            .bytes()
            .await
            .expect("bytes");
        found.push((artifact.path.clone(), bytes.to_vec()));
    }
    found.sort();
    assert_eq!(
        found,
        [
            ("union/common.txt".to_owned(), b"prepared\n".to_vec()),
            ("union/left.txt".to_owned(), b"left\n".to_vec()),
            ("union/r/nested/n.txt".to_owned(), b"deep\n".to_vec()),
            ("union/right.txt".to_owned(), b"right\n".to_vec()),
        ]
    );

    // Second pipeline on a changed lock file: the checksum key misses, the prefix key finds the
    // first pipeline's cache, whose files come back intact (the job checks their sums).
    commit(&repo, &[("deps.lock", "left-pad 1.1\n")], "bump deps");
    let jobs = run(&server).await;
    assert_all_succeeded(&server, &jobs, &agent).await;
    let prepare2 = job(&jobs, "prepare");
    let built = log(&server, prepare2, 2).await;
    assert!(
        built.contains(&format!(
            "deps restored: built by job {}",
            prepare.job_number
        )),
        "the fallback key restores the first pipeline's cache: {built}"
    );
    assert!(built.contains("sub/blob: OK"), "{built}");

    // Third pipeline, same lock: the exact key hits, and the save says the key exists.
    let jobs = run(&server).await;
    assert_all_succeeded(&server, &jobs, &agent).await;
    let saved = log(&server, job(&jobs, "prepare"), 3).await;
    assert!(
        saved.contains("Skipping cache generation, cache already exists for key"),
        "{saved}"
    );

    // The CLI lists both keys and deletes them by prefix.
    let listed = cli(&server, &["cache", "list", SLUG]);
    assert_eq!(
        listed.matches("v1-deps-").count(),
        2,
        "two keys are listed: {listed}"
    );
    let deleted = cli(&server, &["cache", "delete", SLUG, "v1-deps-"]);
    assert!(deleted.contains('2'), "{deleted}");
    let caches = server
        .client
        .project_caches(&server.admin, SLUG)
        .await
        .expect("caches");
    assert!(caches.items.is_empty(), "{caches:?}");
}

const CONFLICT: &str = r#"version: 2.1
defaults: &defaults
  machine: true
  resource_class: blobs/e2e
jobs:
  writer-one:
    <<: *defaults
    steps:
      - run: mkdir -p out && echo one > out/same.txt && echo one > out/one.txt
      - persist_to_workspace:
          root: out
          paths: [same.txt, one.txt]
  writer-two:
    <<: *defaults
    steps:
      - run: mkdir -p out && echo two > out/same.txt
      - persist_to_workspace:
          root: out
          paths: [same.txt]
  reader:
    <<: *defaults
    steps:
      - attach_workspace:
          at: ws
      - run: echo attached
workflows:
  main:
    jobs:
      - writer-one
      - writer-two
      - reader:
          requires: [writer-one, writer-two]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_unrelated_jobs_persisting_one_path_make_the_attach_fail_naming_both() {
    let dir = shared_tempdir();
    let (server, agent, _repo) = start(dir.path(), &[], CONFLICT).await;
    let jobs = run(&server).await;
    for name in ["writer-one", "writer-two"] {
        assert_eq!(job(&jobs, name).status, "success", "{}", agent.log_text());
    }
    let reader = job(&jobs, "reader");
    assert_eq!(
        reader.status,
        "failed",
        "{}",
        all_logs(&server, reader).await
    );
    let attach = log(&server, reader, 0).await;
    for needle in ["same.txt", "writer-one", "writer-two"] {
        assert!(attach.contains(needle), "{needle} in: {attach}");
    }
    let detail = server.job(&reader.id).await;
    assert_eq!(detail.steps[1].status, "skipped", "nothing runs after it");
}

/// 64 files of 16 MiB of random bytes: an archive zstd cannot shrink.
const BIG: &str = r#"version: 2.1
defaults: &defaults
  machine: true
  resource_class: blobs/e2e
jobs:
  big-save:
    <<: *defaults
    steps:
      - run:
          name: generate 1 GiB
          command: |
            mkdir -p big
            for i in $(seq 1 64); do head -c 16777216 /dev/urandom > big/file-$i; done
            (cd big && sha256sum file-* > ../SUMS)
      - save_cache:
          key: big-{{ .Revision }}
          paths: [big]
      - run:
          name: peak memory
          command: |
            test "$(cat /proc/$PPID/comm)" = task-agent
            grep VmHWM /proc/$PPID/status
      - persist_to_workspace:
          root: .
          paths: [SUMS]
  big-restore:
    <<: *defaults
    steps:
      - restore_cache:
          keys:
            - big-{{ .Revision }}
      - attach_workspace:
          at: .
      - run:
          name: check
          command: |
            (cd big && sha256sum -c --quiet ../SUMS) && echo ALL-OK
            test "$(cat /proc/$PPID/comm)" = task-agent
            grep VmHWM /proc/$PPID/status
workflows:
  main:
    jobs:
      - big-save
      - big-restore:
          requires: [big-save]
"#;

/// The `VmHWM: N kB` a step printed, in KiB.
fn printed_peak(log: &str) -> u64 {
    log.lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM line in {log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_cache_round_trips_byte_exact_in_bounded_memory() {
    let dir = shared_tempdir();
    let (server, agent, _repo) = start(dir.path(), &[], BIG).await;
    let started = Instant::now();
    let jobs = run(&server).await;
    assert_all_succeeded(&server, &jobs, &agent).await;
    let save = job(&jobs, "big-save");
    let restore = job(&jobs, "big-restore");
    let checked = log(&server, restore, 2).await;
    assert!(checked.contains("ALL-OK"), "{checked}");
    const LIMIT_KIB: u64 = 64 << 10;
    let save_peak = printed_peak(&log(&server, save, 2).await);
    let restore_peak = printed_peak(&checked);
    let agent_peak = peak_rss_kib(agent.pid());
    eprintln!(
        "1 GiB cache: save+restore pipeline {:.1}s; peak RSS: task-agent saving {save_peak} KiB, \
         restoring {restore_peak} KiB, launch-agent {agent_peak} KiB",
        started.elapsed().as_secs_f64()
    );
    for (what, peak) in [
        ("the saving task-agent", save_peak),
        ("the restoring task-agent", restore_peak),
        ("the launch-agent", agent_peak),
    ] {
        assert!(
            peak < LIMIT_KIB,
            "{what} peaked at {peak} KiB, over {LIMIT_KIB} KiB"
        );
    }
}

const ONE_CACHE: &str = r#"version: 2.1
jobs:
  build:
    machine: true
    resource_class: blobs/e2e
    steps:
      - restore_cache:
          keys: [v1-crash-]
      - run: |
          if [ -f kept/value ]; then echo "restored: $(cat kept/value)"; else mkdir -p kept && echo "$CIRCLE_BUILD_NUM" > kept/value && head -c 200000 /dev/urandom > kept/noise; fi
      - save_cache:
          key: v1-crash-{{ .BuildNum }}
          paths: [kept]
"#;

/// The files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() => found.push(path),
                _ => {}
            }
        }
    }
    found
}

/// The blob store's cache objects of `server` (under `DATA_DIR/blobs/caches`).
fn cache_blobs(server_dir: &Path) -> Vec<std::path::PathBuf> {
    files_under(&server_dir.join("blobs").join("caches"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_between_save_and_restore_loses_nothing_and_a_corrupt_cache_fails_the_restore()
 {
    let dir = shared_tempdir();
    let listen = free_listen_addr();
    let flags = ["--listen", listen.as_str()];
    let (server, agent, _repo) = start(dir.path(), &flags, ONE_CACHE).await;
    let jobs = run(&server).await;
    assert_all_succeeded(&server, &jobs, &agent).await;
    let first = &jobs[0];

    // SIGKILL, then the same data directory on the same address; the launch-agent reconnects.
    let server = server.restart(dir.path(), &flags);
    let jobs = run(&server).await;
    assert_all_succeeded(&server, &jobs, &agent).await;
    let restored = log(&server, &jobs[0], 1).await;
    assert!(
        restored.contains(&format!("restored: {}", first.job_number)),
        "the cache saved before the crash is restored: {restored}"
    );

    // Corrupt every stored cache in its middle: the restore fails saying so, and the step
    // after it does not run on a half-restored tree.
    let blobs = cache_blobs(&server.data_dir);
    assert!(
        !blobs.is_empty(),
        "no cache objects under {:?}",
        server.data_dir
    );
    for blob in &blobs {
        let mut bytes = std::fs::read(blob).unwrap();
        let (middle, len) = (bytes.len() / 2, bytes.len());
        for byte in &mut bytes[middle..(middle + 64).min(len)] {
            *byte ^= 0x5a;
        }
        std::fs::write(blob, bytes).unwrap();
    }
    let jobs = run(&server).await;
    let job = &jobs[0];
    assert_eq!(job.status, "failed", "{}", all_logs(&server, job).await);
    let restore = log(&server, job, 0).await.to_lowercase();
    assert!(restore.contains("corrupt"), "{restore}");
    let detail = server.job(&job.id).await;
    assert_eq!(detail.steps[1].status, "skipped", "{restore}");
}

const EXPIRING: &str = r#"version: 2.1
jobs:
  build:
    machine: true
    resource_class: blobs/e2e
    steps:
      - run: mkdir -p out && echo kept > out/file.txt
      - save_cache:
          key: v1-expiring
          paths: [out]
      - persist_to_workspace:
          root: out
          paths: [file.txt]
      - store_artifacts:
          path: out
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_caches_workspaces_and_artifacts_are_swept() {
    let dir = shared_tempdir();
    let flags = [
        "--cache-retention",
        "10s",
        "--workspace-retention",
        "10s",
        "--artifact-retention",
        "10s",
        "--sweep-interval",
        "1s",
    ];
    let (server, agent, _repo) = start(dir.path(), &flags, EXPIRING).await;
    let jobs = run(&server).await;
    assert_all_succeeded(&server, &jobs, &agent).await;
    let job = &jobs[0];
    let blobs = server.data_dir.join("blobs");
    let stored = |kind: &str| files_under(&blobs.join(kind)).len();
    // Stored first: a sweep test whose objects were never there would prove nothing.
    let caches = server
        .client
        .project_caches(&server.admin, SLUG)
        .await
        .expect("caches");
    assert_eq!(caches.items.len(), 1, "{caches:?}");
    for kind in ["caches", "workspaces", "artifacts"] {
        assert_eq!(stored(kind), 1, "one {kind} object before the sweep");
    }
    let started = Instant::now();
    loop {
        let caches = server
            .client
            .project_caches(&server.admin, SLUG)
            .await
            .expect("caches");
        let artifacts = server
            .client
            .project_job_artifacts(&server.admin, SLUG, job.job_number)
            .await
            .expect("artifacts");
        let left = (
            stored("caches"),
            stored("workspaces"),
            stored("artifacts"),
            caches.items.len(),
            artifacts.items.len(),
        );
        if left == (0, 0, 0, 0, 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still stored after 30 s (cache, workspace, artifact objects; cache and artifact rows): {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let saved = log(&server, job, 1).await;
    assert!(saved.contains("v1-expiring"), "{saved}");
}
