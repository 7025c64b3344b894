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
    let published = server.cli_ok(
        &[
            "release",
            "publish",
            releases.join(VERSION).to_str().unwrap(),
        ],
        "",
    );
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
    let publish = |dir: &Path| {
        server.cli_ok(&["release", "publish", dir.to_str().unwrap()], "");
    };

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
