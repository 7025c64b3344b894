//! `checkout` over `ssh://` with the task's checkout key, and `add_ssh_keys`, against a real
//! sshd on loopback (running as the test user, who logs in as itself).

use std::path::Path;
use std::process::Command;

use bosun_protocol::task::{
    AddSshKeysStep, CheckoutAuth, CheckoutStep, SecretString, SshKey, Step, TaskSpec, When,
};
use bosun_protocol::{Incoming, Message, StepStatus, TaskStatus};

use crate::harness::{Agent, PATIENCE, Report, RootMode, run, step, task};
use crate::sshd::{SshKeyPair, Sshd, ssh_keypair};

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

/// A repository with one commit on `main`; returns its id.
fn repo(dir: &Path) -> String {
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("file.txt"), "over ssh\n").unwrap();
    git(dir, &["add", "file.txt"]);
    git(dir, &["commit", "--quiet", "-m", "first"]);
    git(dir, &["rev-parse", "HEAD"])
}

struct Setup {
    _dir: tempfile::TempDir,
    origin: std::path::PathBuf,
    home: std::path::PathBuf,
    work: std::path::PathBuf,
    key: SshKeyPair,
    sshd: Sshd,
    revision: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let origin = dir.path().join("origin");
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    for path in [&origin, &home, &work] {
        std::fs::create_dir(path).unwrap();
    }
    let revision = repo(&origin);
    let key = ssh_keypair(dir.path(), "deploy-key");
    let sshd = Sshd::start(&dir.path().join("sshd"), &[&key.public_key]);
    Setup {
        _dir: dir,
        origin,
        home,
        work,
        key,
        sshd,
        revision,
    }
}

fn checkout() -> Step {
    Step::Checkout(CheckoutStep {
        name: "Checkout code".into(),
        path: Some("project".into()),
    })
}

fn ssh_task(setup: &Setup, known_hosts: Vec<String>, steps: Vec<Step>) -> TaskSpec {
    let mut task = task(steps);
    task.repository_url = setup.sshd.url(&setup.origin);
    task.revision = setup.revision.clone();
    task.checkout_auth = Some(CheckoutAuth {
        ssh_private_key: Some(SecretString(setup.key.private_key.clone())),
        known_hosts,
        https_token: None,
    });
    task
}

/// Runs `task` with `$HOME` in the setup's directory (the agent's own `~/.ssh` stays out).
async fn run_in(setup: &Setup, task: &TaskSpec) -> Report {
    let home = setup.home.display().to_string();
    Agent::start_with(task, &setup.work, RootMode::Flag, &[("HOME", &home)])
        .await
        .finish(Report::default())
        .await
}

/// What a later step sees: the file, the credential variables, the clone's own config entries
/// about ssh or credentials (`--local`: a host's /etc/gitconfig may name helpers of its own),
/// and the scripts directory (where the key directory was).
const INSPECT: &str = "cd project && cat file.txt && \
    echo \"ssh-command=${GIT_SSH_COMMAND:-none}\" && \
    echo \"config-hits=$(git config --local -l | grep -ci -e sshcommand -e credential)\" && \
    echo \"scripts=$(ls \"$(dirname \"$CIRCLE_INTERNAL_TASK_DATA\")\" | tr '\\n' ' ')\"";

/// Lists the task's scripts directory, where the checkout's credential directory lives.
const LIST_SCRIPTS: &str =
    "echo \"scripts=$(ls \"$(dirname \"$CIRCLE_INTERNAL_TASK_DATA\")\" | tr '\\n' ' ')\"";

#[tokio::test]
async fn checks_out_over_ssh_with_the_checkout_key_and_leaves_nothing_behind() {
    let setup = setup();
    let known_hosts = vec![setup.sshd.known_hosts_line()];
    let task = ssh_task(
        &setup,
        known_hosts,
        vec![checkout(), step(run("inspect", INSPECT))],
    );
    let report = run_in(&setup, &task).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    assert!(
        report.log(0).contains("Using the project's checkout key"),
        "{}",
        report.log(0)
    );
    assert!(!report.log(0).contains("PRIVATE KEY"), "{}", report.log(0));
    let inspect = report.log(1);
    assert!(inspect.starts_with("over ssh\n"), "{inspect}");
    assert!(inspect.contains("ssh-command=none\n"), "{inspect}");
    assert!(inspect.contains("config-hits=0\n"), "{inspect}");
    assert!(inspect.contains("scripts="), "{inspect}");
    assert!(!inspect.contains("checkout-credentials"), "{inspect}");
    assert_eq!(report.task_status(), TaskStatus::Success);
    // The key was never written into the checkout or the home directory.
    let found = Command::new("grep")
        .args(["-rl", "PRIVATE KEY"])
        .arg(setup.work.join("project"))
        .arg(&setup.home)
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
}

#[tokio::test]
async fn a_host_key_that_does_not_match_known_hosts_is_refused() {
    let mut setup = setup();
    let stale = setup.sshd.known_hosts_line();
    setup.sshd.restart_with_new_host_key();
    assert_ne!(stale, setup.sshd.known_hosts_line());
    let mut after = run("after", LIST_SCRIPTS);
    after.when = When::Always;
    let task = ssh_task(&setup, vec![stale], vec![checkout(), step(after)]);
    let report = run_in(&setup, &task).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0).0,
        StepStatus::Failed,
        "{}",
        report.log(0)
    );
    assert!(
        report.log(0).contains("Host key verification failed"),
        "{}",
        report.log(0)
    );
    // Gone after a failed checkout too.
    assert_eq!(report.finished(1), (StepStatus::Success, Some(0)));
    assert!(report.log(1).starts_with("scripts="), "{}", report.log(1));
    assert!(
        !report.log(1).contains("checkout-credentials"),
        "{}",
        report.log(1)
    );
    assert!(!setup.work.join("project").join("file.txt").exists());
}

#[tokio::test]
async fn without_known_hosts_the_first_host_key_is_accepted() {
    let setup = setup();
    let task = ssh_task(
        &setup,
        Vec::new(),
        vec![checkout(), step(run("inspect", INSPECT))],
    );
    let report = run_in(&setup, &task).await;
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    assert!(report.log(1).starts_with("over ssh\n"), "{}", report.log(1));
    assert!(
        !report.log(1).contains("checkout-credentials"),
        "{}",
        report.log(1)
    );
}

fn add_ssh_keys(fingerprints: &[&str]) -> Step {
    Step::AddSshKeys(AddSshKeysStep {
        name: "Install additional SSH key".into(),
        fingerprints: fingerprints.iter().map(|f| (*f).to_owned()).collect(),
    })
}

#[tokio::test]
async fn add_ssh_keys_installs_the_named_key_for_the_task_only() {
    let setup = setup();
    let ssh_dir = setup.home.join(".ssh");
    std::fs::create_dir(&ssh_dir).unwrap();
    let user_config = "# the user's own\nHost elsewhere\n  User someone\n";
    std::fs::write(ssh_dir.join("config"), user_config).unwrap();
    let other = ssh_keypair(setup.home.parent().unwrap(), "other-key");
    let hex: String = setup.key.md5_fingerprint.replace(':', "");
    let key_file = ssh_dir.join(format!("id_rsa_{hex}"));
    let port = setup.sshd.port();
    let user = setup.sshd.user().to_owned();
    let through_config = format!(
        "test -f {key} && ssh -F \"$HOME/.ssh/config\" -o BatchMode=yes -o IdentityAgent=none \
         -o UserKnownHostsFile=\"$HOME/kh\" -o StrictHostKeyChecking=accept-new -p {port} \
         {user}@127.0.0.1 echo logged-in-with-the-added-key",
        key = key_file.display(),
    );
    let mut task = task(vec![
        add_ssh_keys(&[&setup.key.fingerprint]),
        step(run("use it", &through_config)),
        step(run("fail", "exit 3")),
    ]);
    let ssh_key = |pair: &SshKeyPair, host: Option<&str>| SshKey {
        fingerprint: pair.fingerprint.clone(),
        md5_fingerprint: pair.md5_fingerprint.clone(),
        hostname: host.map(str::to_owned),
        private_key: SecretString(pair.private_key.clone()),
    };
    task.ssh_keys = vec![
        ssh_key(&setup.key, Some("127.0.0.1")),
        ssh_key(&other, None),
    ];
    let report = run_in(&setup, &task).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    let log = report.log(0);
    assert!(log.contains(&setup.key.fingerprint), "{log}");
    assert!(
        !log.contains(&other.fingerprint),
        "only the named key: {log}"
    );
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    assert_eq!(
        report.finished(1),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(1)
    );
    assert!(
        report.log(1).contains("logged-in-with-the-added-key"),
        "{}",
        report.log(1)
    );
    assert_eq!(report.task_status(), TaskStatus::Failed);
    // After a failed task: the key is gone and the user's config is as it was.
    assert!(!key_file.exists());
    assert_eq!(
        std::fs::read_to_string(ssh_dir.join("config")).unwrap(),
        user_config
    );
    let left: Vec<_> = std::fs::read_dir(&ssh_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("config")]);
}

#[tokio::test]
async fn add_ssh_keys_fails_on_an_unknown_fingerprint_and_installs_nothing() {
    let setup = setup();
    let mut task = task(vec![add_ssh_keys(&["SHA256:nosuchkey"])]);
    task.ssh_keys = vec![SshKey {
        fingerprint: setup.key.fingerprint.clone(),
        md5_fingerprint: setup.key.md5_fingerprint.clone(),
        hostname: None,
        private_key: SecretString(setup.key.private_key.clone()),
    }];
    let report = run_in(&setup, &task).await;
    report.assert_clean_exit();
    assert_eq!(report.finished(0).0, StepStatus::Failed);
    assert!(
        report.log(0).contains("SHA256:nosuchkey"),
        "{}",
        report.log(0)
    );
    assert!(!setup.home.join(".ssh").exists());
}

/// The credential directories in the task-agent's scripts directories under `tmp` (its
/// `TMPDIR`): `(directory, mode of its key file)`.
fn credential_dirs(tmp: &Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut found = Vec::new();
    for scripts in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(scripts.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("checkout-credentials-")
            {
                let mode = std::fs::metadata(entry.path().join("key"))
                    .map_or(0, |meta| meta.permissions().mode() & 0o777);
                found.push((entry.path(), mode));
            }
        }
    }
    found
}

#[tokio::test]
async fn a_canceled_checkout_removes_its_key() {
    let setup = setup();
    // A host that accepts the connection and never speaks: ssh waits for its banner until the
    // cancel kills it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || silent.accept().map(|(stream, _)| stream));
    let mut task = ssh_task(&setup, Vec::new(), vec![checkout()]);
    task.repository_url = format!("ssh://{}@127.0.0.1:{port}/repo", setup.sshd.user());
    // A single node asks for no timings first, so the step starts without this test answering.
    task.parallel_total = 1;
    task.parallel_index = 0;
    let tmp = setup.home.parent().unwrap().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (home, tmp_text) = (setup.home.display().to_string(), tmp.display().to_string());
    let mut agent = Agent::start_with(
        &task,
        &setup.work,
        RootMode::Flag,
        &[("HOME", &home), ("TMPDIR", &tmp_text)],
    )
    .await;
    // While ssh hangs, the key is in the scripts directory, private.
    let deadline = std::time::Instant::now() + PATIENCE;
    let during = loop {
        let found = credential_dirs(&tmp);
        if found.iter().any(|(_, mode)| *mode != 0) {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no credential directory appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(during.len(), 1, "{during:?}");
    assert_eq!(during[0].1, 0o600);
    let _connection = held.join().unwrap().unwrap();
    agent
        .send(Message::Cancel {
            reason: "canceled by a test".into(),
            grace_ms: 1000,
        })
        .await;
    let mut report = Report::default();
    loop {
        let incoming = agent
            .next()
            .await
            .expect("socket closed before the step finished");
        let done = matches!(
            incoming,
            Incoming::Message(Message::StepFinished { step: 0, .. })
        );
        report.record(incoming);
        if done {
            break;
        }
    }
    // The step's end is sent after the checkout returned: its directory is gone by then.
    assert!(!during[0].0.exists(), "{:?} still exists", during[0].0);
    let report = agent.finish(report).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0),
        (StepStatus::Canceled, None),
        "{}",
        report.log(0)
    );
    assert_eq!(report.task_status(), TaskStatus::Canceled);
}

#[tokio::test]
async fn an_unprivileged_job_user_checks_out_over_ssh() {
    if !crate::harness::is_root() {
        println!("skipped: not root (the agent runs as nobody)");
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    const NOBODY: u32 = 65534;
    let setup = setup();
    // nobody reaches its work directory; the repository is read by sshd's user (root).
    for dir in [setup.home.parent().unwrap(), &setup.work] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let uid = nix::unistd::Uid::from_raw(NOBODY);
    let gid = nix::unistd::Gid::from_raw(NOBODY);
    nix::unistd::chown(&setup.work, Some(uid), Some(gid)).unwrap();
    let known_hosts = vec![setup.sshd.known_hosts_line()];
    let task = ssh_task(
        &setup,
        known_hosts,
        vec![checkout(), step(run("inspect", INSPECT))],
    );
    let mut agent = Agent::spawn_as(
        &setup.work,
        RootMode::Refuse,
        &[("HOME", "/nonexistent")],
        Some((NOBODY, NOBODY)),
    );
    agent.conn.handshake_as_launch_agent(&task).await.unwrap();
    let report = agent.finish(Report::default()).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0),
        (StepStatus::Success, Some(0)),
        "{}",
        report.log(0)
    );
    let inspect = report.log(1);
    assert!(inspect.starts_with("over ssh\n"), "{inspect}");
    assert!(inspect.contains("ssh-command=none\n"), "{inspect}");
    assert!(!inspect.contains("checkout-credentials"), "{inspect}");
}
