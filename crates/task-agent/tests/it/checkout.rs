//! `checkout` with the real git against a real local repository.

use std::path::Path;
use std::process::Command;

use bosun_protocol::task::{CheckoutStep, Step, TaskSpec};
use bosun_protocol::{StepStatus, TaskStatus};

use crate::harness::{Agent, Report, RootMode, is_root, run, run_task, step, task};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository with two commits on `main`; returns their ids.
fn repo(dir: &Path) -> (String, String) {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("file.txt"), "first version\n").unwrap();
    git(dir, &["add", "file.txt"]);
    git(dir, &["commit", "--quiet", "-m", "first"]);
    let first = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("file.txt"), "second version\n").unwrap();
    git(dir, &["commit", "--quiet", "-am", "second"]);
    let second = git(dir, &["rev-parse", "HEAD"]);
    (first, second)
}

fn checkout(path: Option<&str>) -> Step {
    Step::Checkout(CheckoutStep {
        name: "Checkout code".into(),
        path: path.map(str::to_owned),
    })
}

const SHOW: &str = "cat file.txt; git rev-parse HEAD; git rev-parse --abbrev-ref HEAD";

#[tokio::test]
async fn checks_out_the_first_commit_on_its_branch() {
    let origin = tempfile::tempdir().unwrap();
    let (first, _second) = repo(origin.path());
    let work = tempfile::tempdir().unwrap();
    let mut task = task(vec![checkout(None), step(run("show", SHOW))]);
    task.repository_url = origin.path().display().to_string();
    task.revision = first.clone();
    task.working_directory = Some("project".into());
    let report = run_task(&task, work.path()).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    assert!(
        report.log(0).starts_with(&format!(
            "Cloning {} (branch main) at {first}\n",
            task.repository_url
        )),
        "{}",
        report.log(0)
    );
    assert_eq!(report.log(1), format!("first version\n{first}\nmain\n"));
    assert_eq!(report.task_status(), TaskStatus::Success);
}

#[tokio::test]
async fn checks_out_into_a_non_empty_directory_and_again_into_a_clone() {
    let origin = tempfile::tempdir().unwrap();
    let (first, second) = repo(origin.path());
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("src")).unwrap();
    std::fs::write(work.path().join("src/already-here.txt"), "x").unwrap();

    // Non-empty directory without .git: init + fetch. A tag (no branch) is checked out detached.
    let mut task = task(vec![
        checkout(Some("src")),
        step(run(
            "show",
            "cd src && cat file.txt && git rev-parse HEAD && git rev-parse --abbrev-ref HEAD && cat already-here.txt",
        )),
    ]);
    task.repository_url = origin.path().display().to_string();
    task.branch = None;
    task.tag = Some("v1".into());
    task.revision = first.clone();
    let report = run_task(&task, work.path()).await;
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    assert_eq!(report.log(1), format!("first version\n{first}\nHEAD\nx"));

    // An existing clone: fetch, then the second commit on main.
    task.branch = Some("main".into());
    task.tag = None;
    task.revision = second.clone();
    let report = run_task(&task, work.path()).await;
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    assert_eq!(report.log(1), format!("second version\n{second}\nmain\nx"));
}

#[tokio::test]
async fn a_git_failure_fails_the_step_with_gits_message() {
    let origin = tempfile::tempdir().unwrap();
    repo(origin.path());
    let work = tempfile::tempdir().unwrap();
    let mut task = task(vec![
        checkout(None),
        step(run("after", "echo should-not-run")),
    ]);
    task.repository_url = origin.path().display().to_string();
    task.revision = "1111111111111111111111111111111111111111".into();
    let report = run_task(&task, work.path()).await;
    report.assert_clean_exit();
    let (status, code) = report.finished(0);
    assert_eq!(status, StepStatus::Failed, "{}", report.log(0));
    assert!(code.is_some_and(|code| code != 0));
    let log = report.log(0);
    assert!(log.contains("fatal:") || log.contains("error:"), "{log}");
    assert!(log.contains("Exited with code exit status"), "{log}");
    assert_eq!(report.finished(1), (StepStatus::Skipped, None));
    assert_eq!(report.task_status(), TaskStatus::Failed);

    // A repository that does not exist.
    let mut task = task.clone();
    task.repository_url = work.path().join("no-such-repo").display().to_string();
    let other = tempfile::tempdir().unwrap();
    let report = run_task(&task, other.path()).await;
    assert_eq!(
        report.finished(0).0,
        StepStatus::Failed,
        "{}",
        report.log(0)
    );
    assert!(report.log(0).contains("no-such-repo"), "{}", report.log(0));
}

#[tokio::test]
async fn the_job_user_checks_out_a_repository_owned_by_root() {
    if !is_root() {
        println!("skipped: not root");
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    const NOBODY: u32 = 65534;
    let origin = tempfile::tempdir().unwrap();
    let (first, second) = repo(origin.path());
    std::fs::set_permissions(origin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(
        work.path(),
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let mut task = task(vec![
        checkout(None),
        step(run("show", SHOW)),
        // The job's own fetch from the root-owned repository works too.
        step(run("fetch", "git fetch --quiet origin && echo fetched")),
    ]);
    task.repository_url = origin.path().display().to_string();
    task.revision = first.clone();
    let as_nobody = |task: TaskSpec| {
        let dir = work.path().to_path_buf();
        async move {
            let mut agent = Agent::spawn_as(
                &dir,
                RootMode::Refuse,
                &[("HOME", "/nonexistent")],
                Some((NOBODY, NOBODY)),
            );
            agent.conn.handshake_as_launch_agent(&task).await.unwrap();
            agent.finish(Report::default()).await
        }
    };
    let report = as_nobody(task.clone()).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    assert_eq!(report.log(1), format!("first version\n{first}\nmain\n"));
    assert_eq!(report.log(2), "fetched\n", "{}", report.log(2));

    // Again, into the existing clone.
    task.revision = second.clone();
    let report = as_nobody(task).await;
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    assert_eq!(report.log(1), format!("second version\n{second}\nmain\n"));
}
