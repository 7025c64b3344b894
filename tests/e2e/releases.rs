//! Signed releases (issue 15): a release built by `cargo xtask release` (the test fixture
//! `cargo xtask test` builds, `BOSUN_TEST_RELEASES`) is published with `bosun release publish`
//! and promoted; a claim names its task-agent version, which the launch-agent downloads,
//! verifies against its trusted key and caches; a release that does not verify (wrong or
//! untrusted signature, wrong hash, truncated, another platform) fails its task with
//! `infrastructure_fail` and a message, and the agent runs the next task all the same.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bosun_tests::{AgentOptions, Proc, Server, git_repo, launch_agent, shared_tempdir};

/// The fixture's version (xtask/src/release.rs `TEST_VERSION`).
const VERSION: &str = "9.1.0-test";

/// Where `cargo xtask test` put the keys and the release; the tests fail loudly without it.
fn releases() -> PathBuf {
    let dir = std::env::var_os("BOSUN_TEST_RELEASES").map(PathBuf::from).expect(
        "BOSUN_TEST_RELEASES is not set: `cargo xtask test` builds the test release and sets it",
    );
    assert!(
        dir.join(VERSION).join("manifest.json").is_file(),
        "no test release in {}: `cargo xtask test` builds it",
        dir.display()
    );
    dir
}

/// `bosun release publish DIR`; its output.
fn publish(server: &Server, dir: &Path) -> String {
    server.cli_ok(&["release", "publish", dir.to_str().unwrap()], "")
}

fn subdir(dir: &Path, name: &str) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    sub
}

/// An agent that takes task-agents by version and trusts `key` (a `.pub.pem`).
fn agent(server: &Server, token: &str, dir: &Path, key: &Path) -> Proc {
    launch_agent(
        server,
        token,
        dir,
        "agent",
        AgentOptions {
            extra_config: format!("  update:\n    trusted_keys:\n      - {}\n", key.display()),
            task_agent_by_version: true,
            ..AgentOptions::default()
        },
    )
}

/// A project on `class` whose one job prints the version of the task-agent running it.
async fn project(server: &Server, dir: &Path, class: &str) -> String {
    let config = format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {class}\n    steps:\n      - run: circleci-agent --version\nworkflows:\n  main:\n    jobs: [build]\n"
    );
    let repo = git_repo(dir, &[(".circleci/config.yml", &config)]);
    let slug = format!("local/{class}");
    server.project(&slug, &repo).await;
    slug
}

/// Runs the project's pipeline; the job's status, message and first step's log.
async fn run(server: &Server, slug: &str) -> (String, Option<String>, String) {
    let pipeline = server.trigger(slug, "main").await;
    let job = server.job_id(&pipeline, "build").await;
    let detail = server.wait_job(&job, Duration::from_secs(120)).await;
    let log = if detail.status == "success" {
        String::from_utf8_lossy(&server.step_log(&job, 0).await).into_owned()
    } else {
        String::new()
    };
    (detail.status, detail.message, log)
}

fn count(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_names_a_promoted_task_agent_which_is_downloaded_and_verified_once_and_a_canary_reaches_only_its_class()
 {
    let releases = releases();
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    for class in ["e2e/rel-canary", "e2e/rel-rest"] {
        server.resource_class(class).await;
    }
    let published = publish(&server, &releases.join(VERSION));
    assert!(
        published.contains(VERSION) && published.contains("complete"),
        "{published}"
    );
    let promoted = server.cli_ok(
        &[
            "release",
            "promote",
            VERSION,
            "--resource-class",
            "e2e/rel-canary",
        ],
        "",
    );
    assert!(promoted.contains("e2e/rel-canary"), "{promoted}");
    let listed = server.cli_ok(&["release", "list"], "");
    assert!(listed.contains("promoted: e2e/rel-canary"), "{listed}");

    let key = releases.join("key.pub.pem");
    let canary_dir = subdir(dir.path(), "canary");
    let rest_dir = subdir(dir.path(), "rest");
    let canary = agent(
        &server,
        &server.token("e2e/rel-canary").await,
        &canary_dir,
        &key,
    );
    let rest = agent(
        &server,
        &server.token("e2e/rel-rest").await,
        &rest_dir,
        &key,
    );
    let canary_slug = project(&server, &canary_dir, "e2e/rel-canary").await;
    let rest_slug = project(&server, &rest_dir, "e2e/rel-rest").await;

    for round in 0..2 {
        let (status, message, log) = run(&server, &canary_slug).await;
        assert_eq!(
            status,
            "success",
            "round {round}: {message:?}\n{}",
            canary.log_text()
        );
        assert!(log.contains(VERSION), "round {round}: {log}");
    }
    let agent_log = canary.log_text();
    assert_eq!(
        count(&agent_log, "downloaded and verified task-agent"),
        1,
        "{agent_log}"
    );
    let cached = canary_dir
        .join("work/.bosun-task-agents")
        .join(VERSION)
        .join("task-agent");
    let fixture = releases.join(VERSION).join("linux-x86_64/task-agent");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            std::fs::read(&cached).unwrap(),
            std::fs::read(&fixture).unwrap()
        );
    }
    if bosun_tests::is_root() {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&cached).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
    }

    // The other class was not promoted anything: its tasks run the task-agent beside the
    // launch-agent, of the crate's own version.
    let (status, message, log) = run(&server, &rest_slug).await;
    assert_eq!(status, "success", "{message:?}\n{}", rest.log_text());
    assert!(
        log.contains(env!("CARGO_PKG_VERSION")) && !log.contains(VERSION),
        "{log}"
    );
    assert_eq!(
        count(&rest.log_text(), "downloaded and verified task-agent"),
        0
    );
}

/// Signs `dir/manifest.json` with `key` as an operator would, with openssl.
fn sign(dir: &Path, key: &Path) {
    let status = Command::new("openssl")
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(key)
        .arg("-in")
        .arg(dir.join("manifest.json"))
        .arg("-out")
        .arg(dir.join("manifest.json.sig"))
        .status()
        .expect("openssl");
    assert!(status.success());
}

/// A copy of the fixture as `version`, its manifest changed by `edit` and signed with `key`.
fn variant(
    releases: &Path,
    out: &Path,
    version: &str,
    key: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let dir = out.join(version);
    let platform = "linux-x86_64";
    let manifest = std::fs::read_to_string(releases.join(VERSION).join("manifest.json")).unwrap();
    let manifest = edit(manifest.replace(VERSION, version));
    let target_platform = if manifest.contains(platform) {
        platform
    } else {
        "linux-s390x"
    };
    std::fs::create_dir_all(dir.join(target_platform)).unwrap();
    for name in ["launch-agent", "task-agent"] {
        std::fs::copy(
            releases.join(VERSION).join(platform).join(name),
            dir.join(target_platform).join(name),
        )
        .unwrap();
    }
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();
    sign(&dir, &releases.join(key));
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_that_do_not_verify_fail_their_task_and_the_agent_runs_on() {
    let releases = releases();
    let dir = shared_tempdir();
    let out = subdir(dir.path(), "variants");
    let server = Server::start(dir.path());
    let class = "e2e/rel-bad";
    server.resource_class(class).await;
    let agent_dir = subdir(dir.path(), "agent");
    let agent = agent(
        &server,
        &server.token(class).await,
        &agent_dir,
        &releases.join("key.pub.pem"),
    );
    let slug = project(&server, &agent_dir, class).await;
    let blob = |version: &str| {
        server
            .data_dir
            .join("blobs/releases")
            .join(version)
            .join("linux-x86_64/task-agent")
    };
    let publish = |dir: &Path| publish(&server, dir);

    let bad_signature = variant(&releases, &out, "9.1.1-badsig", "key.pem", |m| m);
    let mut signature = std::fs::read(bad_signature.join("manifest.json.sig")).unwrap();
    signature[10] ^= 1;
    std::fs::write(bad_signature.join("manifest.json.sig"), signature).unwrap();
    publish(&bad_signature);
    publish(&variant(
        &releases,
        &out,
        "9.1.2-otherkey",
        "other.pem",
        |m| m,
    ));
    publish(&variant(&releases, &out, "9.1.3-hash", "key.pem", |m| m));
    let size = std::fs::metadata(blob("9.1.3-hash")).unwrap().len();
    std::fs::write(blob("9.1.3-hash"), vec![b'x'; size as usize]).unwrap();
    publish(&variant(&releases, &out, "9.1.4-short", "key.pem", |m| m));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(blob("9.1.4-short"))
        .unwrap();
    file.set_len(size / 2).unwrap();
    publish(&variant(&releases, &out, "9.1.5-arch", "key.pem", |m| {
        m.replace("linux-x86_64", "linux-s390x")
    }));

    for (version, why) in [
        ("9.1.1-badsig", "not signed by a trusted key"),
        ("9.1.2-otherkey", "not signed by a trusted key"),
        ("9.1.3-hash", "SHA-256"),
        ("9.1.4-short", "truncated"),
        ("9.1.5-arch", "linux-x86_64"),
    ] {
        server.cli_ok(
            &["release", "promote", version, "--resource-class", class],
            "",
        );
        let (status, message, _) = run(&server, &slug).await;
        assert_eq!(status, "infrastructure_fail", "{version}: {message:?}");
        let message = message.unwrap_or_default();
        eprintln!("{version}: {message}");
        assert!(
            message.contains(version) && message.contains(why),
            "{version}: {message}"
        );
    }

    // The agent is still there and runs the good release.
    publish(&releases.join(VERSION));
    server.cli_ok(
        &["release", "promote", VERSION, "--resource-class", class],
        "",
    );
    let (status, message, log) = run(&server, &slug).await;
    assert_eq!(status, "success", "{message:?}\n{}", agent.log_text());
    assert!(log.contains(VERSION), "{log}");
    // Nothing that did not verify was kept: the cache holds the good version alone.
    let mut cached: Vec<String> = std::fs::read_dir(agent_dir.join("work/.bosun-task-agents"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    cached.sort();
    assert_eq!(cached, [VERSION]);

    // Published releases never change: the same version with another manifest is refused.
    let forged = variant(&releases, &out, "forged", "key.pem", |m| {
        m.replace("forged", VERSION)
            .replace("\"platforms\"", "\"platforms\" ")
    });
    let refused = server.cli(&["release", "publish", forged.to_str().unwrap()], "");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("already published"), "{said}");
    // A rollback goes back to what was promoted before, marked so agents may go down to it.
    let rolled = server.cli_ok(&["release", "rollback", "--resource-class", class], "");
    assert!(rolled.contains("back to 9.1.5-arch"), "{rolled}");
}

// ---- self-update ----

/// The version the agent updates to (xtask/src/release.rs `TEST_VERSIONS`).
const NEXT: &str = "9.2.0-test";

/// A launch-agent installed from a release's binaries into `dir/bin`, run under a restart loop
/// as systemd's `Restart=always` runs the service (the loop and the agent die with the guard).
struct Installed {
    loop_child: std::process::Child,
    bin: PathBuf,
    log: PathBuf,
}

impl Installed {
    /// An agent installed from the release [`VERSION`] that updates itself, trusting the test
    /// key. Its check interval is far longer than any test: what it does comes from a promotion
    /// waking its claim, and from the check after each task.
    fn self_updating(
        server: &Server,
        token: &str,
        dir: &Path,
        name: &str,
        releases: &Path,
    ) -> Installed {
        let config = bosun_tests::write_agent_config(
            server,
            token,
            dir,
            name,
            &AgentOptions {
                extra_config: format!(
                    "  update:\n    check_interval: 1h\n    trusted_keys:\n      - {}\n",
                    releases.join("key.pub.pem").display()
                ),
                task_agent_by_version: true,
                auto_update: true,
                ..AgentOptions::default()
            },
        );
        Installed::start(&releases.join(VERSION), dir, &config)
    }

    fn start(release: &Path, dir: &Path, config: &Path) -> Installed {
        let bin = subdir(dir, "bin");
        for name in ["launch-agent", "task-agent"] {
            std::fs::copy(release.join("linux-x86_64").join(name), bin.join(name)).unwrap();
        }
        let log = dir.join("installed.log");
        let file = std::fs::File::create(&log).unwrap();
        let script = format!(
            "while :; do {} --config {}; echo \"exited $?\" >&2; sleep 0.2; done",
            bin.join("launch-agent").display(),
            config.display()
        );
        use std::os::unix::process::CommandExt as _;
        let loop_child = Command::new("bash")
            .args(["-c", &script])
            .process_group(0)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Installed {
            loop_child,
            bin,
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What `bin/NAME --version` says now.
    fn version_of(&self, name: &str) -> String {
        let out = Command::new(self.bin.join(name))
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.loop_child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.loop_child.wait();
    }
}

async fn instance_version(server: &Server, class: &str) -> String {
    let list = server
        .client
        .instances(
            &server.admin,
            bosun_api::InstanceFilter::ResourceClass(class),
        )
        .await
        .unwrap();
    list.first().map(|i| i.version.clone()).unwrap_or_default()
}

/// Waits until the instance reports `version`; how long it took.
async fn wait_version(server: &Server, class: &str, version: &str, agent: &Installed) -> Duration {
    let started = std::time::Instant::now();
    while instance_version(server, class).await != version {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the agent did not report {version}:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Waits until the installed agent's log says `text`.
async fn wait_log(agent: &Installed, text: &str) {
    let started = std::time::Instant::now();
    while !agent.log_text().contains(text) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent's log never said {text:?}:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fixture's `from` release with its launch-agent replaced by `binary`, as `version`.
fn with_launch_agent(releases: &Path, out: &Path, version: &str, binary: &[u8]) -> PathBuf {
    let dir = variant(releases, out, version, "key.pem", |m| m);
    let path = dir.join("linux-x86_64/launch-agent");
    std::fs::write(&path, binary).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    manifest["platforms"]["linux-x86_64"]["files"]["launch-agent"] = serde_json::json!({
        "size": binary.len(),
        "sha256": hex(&sha2::Sha256::digest(binary)),
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    sign(&dir, &releases.join("key.pem"));
    dir
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

use sha2::Digest as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_updates_itself_never_mid_task_rolls_back_and_survives_a_bad_release() {
    let releases = releases();
    if !cfg!(target_arch = "x86_64") {
        panic!("the test releases are built for linux-x86_64 only");
    }
    let dir = shared_tempdir();
    let out = subdir(dir.path(), "variants");
    let server = Server::start(dir.path());
    let class = "e2e/rel-update";
    server.resource_class(class).await;
    for version in [VERSION, NEXT] {
        publish(&server, &releases.join(version));
    }
    server.cli_ok(&["release", "promote", VERSION], "");
    let agent_dir = subdir(dir.path(), "agent");
    let token = server.token(class).await;
    let agent = Installed::self_updating(&server, &token, &agent_dir, "agent", &releases);
    wait_version(&server, class, VERSION, &agent).await;

    // A job holds the agent busy while the next version is promoted: no update mid-task.
    let go = agent_dir.join("go");
    let steps = format!(
        "      - run: |\n          circleci-agent --version\n          while [ ! -e {} ]; do sleep 0.05; done\n",
        go.display()
    );
    let repo = git_repo(
        &agent_dir,
        &[(
            ".circleci/config.yml",
            &format!(
                "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {class}\n    steps:\n{steps}workflows:\n  main:\n    jobs: [build]\n"
            ),
        )],
    );
    let slug = format!("local/{class}");
    server.project(&slug, &repo).await;
    let pipeline = server.trigger(&slug, "main").await;
    let job = server.job_id(&pipeline, "build").await;
    server
        .wait_for_log(&job, 0, VERSION, Duration::from_secs(60))
        .await;
    server.cli_ok(&["release", "promote", NEXT], "");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(instance_version(&server, class).await, VERSION);
    assert!(
        !agent.log_text().contains("updated from"),
        "{}",
        agent.log_text()
    );
    std::fs::write(&go, "").unwrap();
    let detail = server.wait_job(&job, Duration::from_secs(60)).await;
    assert_eq!(detail.status, "success", "{detail:?}");
    let took = wait_version(&server, class, NEXT, &agent).await;
    eprintln!("job end to the agent reporting {NEXT}: {took:?}");
    // Reporting comes first (the new version proves it reaches the server), then the install.
    wait_log(&agent, &format!("updated from {VERSION} to {NEXT}")).await;
    assert!(agent.version_of("launch-agent").contains(NEXT));
    assert!(agent.version_of("task-agent").contains(NEXT));
    assert!(agent.version_of("launch-agent.previous").contains(VERSION));
    let log = agent.log_text();
    assert_eq!(
        count(&log, "exited "),
        0,
        "the update re-executed in place:\n{log}"
    );
    let (status, message, job_log) = run(&server, &slug).await;
    assert_eq!(status, "success", "{message:?}");
    assert!(job_log.contains(NEXT), "{job_log}");

    // A downgrade promoted as such is refused; the agent runs on NEXT.
    server.cli_ok(&["release", "promote", VERSION], "");
    let started = std::time::Instant::now();
    while !agent.log_text().contains("downgrade") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(instance_version(&server, class).await, NEXT);
    // Rolled back by an admin, the same version is taken.
    server.cli_ok(&["release", "promote", NEXT], "");
    let rolled = server.cli_ok(&["release", "rollback"], "");
    assert!(rolled.contains(&format!("back to {VERSION}")), "{rolled}");
    let took = wait_version(&server, class, VERSION, &agent).await;
    eprintln!("rollback to the agent reporting {VERSION}: {took:?}");
    wait_log(&agent, &format!("updated from {NEXT} to {VERSION}")).await;

    // A release whose launch-agent answers --version but exits 1 at start: the installed binary
    // is started again by the restart loop, skips that version and keeps running tasks.
    let bad = "9.3.0-test";
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo \"launch-agent {bad}\"; exit 0; fi\necho 'broken release' >&2\nexit 1\n"
    );
    let bad_dir = with_launch_agent(&releases, &out, bad, script.as_bytes());
    publish(&server, &bad_dir);
    server.cli_ok(&["release", "promote", bad], "");
    let started = std::time::Instant::now();
    while !agent
        .log_text()
        .contains("exited before it reached the server")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(agent.log_text().contains("broken release"));
    // What the failed update cost: from the re-exec to claiming again, in the agent's log.
    for line in agent.log_text().lines().filter(|line| {
        line.contains("updating:") || line.contains("claiming tasks") || line.starts_with("exited")
    }) {
        eprintln!("agent: {line}");
    }
    assert!(agent.version_of("launch-agent").contains(VERSION));
    wait_version(&server, class, VERSION, &agent).await;
    let (status, message, job_log) = run(&server, &slug).await;
    assert_eq!(status, "success", "{message:?}\n{}", agent.log_text());
    assert!(job_log.contains(VERSION), "{job_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_promotion_updates_only_its_class_then_the_fleet_follows() {
    let releases = releases();
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    let (canary, rest) = ("e2e/fleet-canary", "e2e/fleet-rest");
    for class in [canary, rest] {
        server.resource_class(class).await;
    }
    for version in [VERSION, NEXT] {
        publish(&server, &releases.join(version));
    }
    let mut agents = Vec::new();
    for (index, class) in [canary, canary, rest].into_iter().enumerate() {
        let agent_dir = subdir(dir.path(), &format!("agent{index}"));
        let token = server.token(class).await;
        let name = format!("agent{index}");
        agents.push((
            class,
            Installed::self_updating(&server, &token, &agent_dir, &name, &releases),
        ));
    }
    let versions = |class: &'static str| {
        let server = &server;
        async move {
            server
                .client
                .instances(
                    &server.admin,
                    bosun_api::InstanceFilter::ResourceClass(class),
                )
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.version)
                .collect::<Vec<_>>()
        }
    };
    let wait_all = |class: &'static str, count: usize, version: &'static str| {
        let agents = &agents;
        async move {
            let started = std::time::Instant::now();
            loop {
                let seen = versions(class).await;
                if seen.len() == count && seen.iter().all(|v| v == version) {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "{class}: {seen:?}, not {count} x {version}:\n{}",
                    agents
                        .iter()
                        .map(|(_, a)| a.log_text())
                        .collect::<Vec<_>>()
                        .join("\n----\n")
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_all(canary, 2, VERSION).await;
    wait_all(rest, 1, VERSION).await;

    server.cli_ok(
        &["release", "promote", NEXT, "--resource-class", canary],
        "",
    );
    let took = wait_all(canary, 2, NEXT).await;
    eprintln!("canary promote to both canary agents reporting {NEXT}: {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        versions(rest).await,
        [VERSION],
        "the canary reached another class"
    );

    server.cli_ok(&["release", "promote", NEXT], "");
    let took = wait_all(rest, 1, NEXT).await;
    eprintln!("fleet promote to the last agent reporting {NEXT}: {took:?}");
    assert_eq!(versions(canary).await, [NEXT, NEXT]);
    for (class, agent) in &agents {
        wait_log(agent, &format!("updated from {VERSION} to {NEXT}")).await;
        assert!(agent.version_of("launch-agent").contains(NEXT), "{class}");
        assert_eq!(count(&agent.log_text(), "exited "), 0, "{class}");
    }
}
