//! Private repositories end to end (issue 11): a repository served by a real `sshd` on loopback
//! that authorizes only the deploy key bosun generated is fetched by the server and checked out
//! by the job; the host key is trusted on first use, stored, and enforced after (a changed host
//! key is refused); `add_ssh_keys` installs an uploaded key for the task only.

use bosun_api::types::CreateProject;
use bosun_tests::{Server, Sshd, git_repo, launch_agent, shared_tempdir, ssh_keypair};

const SLUG: &str = "local/e2e/private";
const CLASS: &str = "e2e/private";

fn bosun(server: &Server, args: &[&str], stdin: &str) -> std::process::Output {
    server.cli(args, stdin)
}

fn ok(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_checked_out_with_the_deploy_key_and_its_host_key_enforced() {
    bosun_tests::require_program(
        "sshd",
        "the private-repository checkout test serves git over ssh",
    );
    let dir = shared_tempdir();
    let mut sshd = Sshd::start(dir.path(), &[]);
    let extra = ssh_keypair(dir.path(), "extra");
    let config = format!(
        r#"version: 2.1
jobs:
  build:
    machine: true
    resource_class: {CLASS}
    steps:
      - checkout
      - run:
          name: inspect
          command: |
            echo "head=$(git rev-parse HEAD)"
            echo "ssh_command=${{GIT_SSH_COMMAND:-none}}"
            git config --local -l | grep -ci sshcommand || echo "no sshCommand in the clone"
      - add_ssh_keys:
          fingerprints:
            - "{fingerprint}"
      - run:
          name: use the added key
          command: ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p {port} {user}@127.0.0.1 echo via-added-key
"#,
        fingerprint = extra.fingerprint,
        port = sshd.port(),
        user = sshd.user(),
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", &config)]);
    let revision = bosun_tests::git(&repo, &["rev-parse", "HEAD"]);

    let server = Server::start(dir.path());
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let _agent = launch_agent(&server, &token, dir.path(), "agent", Default::default());
    server
        .client
        .create_project(
            &server.admin,
            &CreateProject {
                slug: SLUG.into(),
                git_url: sshd.url(&repo),
                namespace: None,
            },
        )
        .await
        .expect("create project");

    // No key is authorized yet: the server cannot read the repository.
    let refused = bosun(&server, &["pipeline", "run", SLUG, "--branch", "main"], "");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");

    let public_key = ok(bosun(
        &server,
        &["project", "checkout-key", "create", SLUG],
        "",
    ));
    assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");
    sshd.authorize(public_key.trim());
    ok(bosun(
        &server,
        &["project", "ssh-key", "add", SLUG, "--hostname", "127.0.0.1"],
        &extra.private_key,
    ));
    sshd.authorize(&extra.public_key);
    let listed = ok(bosun(&server, &["project", "ssh-key", "list", SLUG], ""));
    assert!(listed.contains(&extra.fingerprint), "{listed}");

    let out = ok(bosun(
        &server,
        &["pipeline", "run", SLUG, "--branch", "main", "--follow"],
        "",
    ));
    assert!(out.contains(&format!("head={revision}")), "{out}");
    assert!(out.contains("ssh_command=none"), "{out}");
    assert!(out.contains("no sshCommand in the clone"), "{out}");
    assert!(out.contains("via-added-key"), "{out}");
    assert!(!out.contains("BEGIN OPENSSH PRIVATE KEY"), "{out}");

    // The first fetch trusted the host's key and stored it.
    let known = ok(bosun(
        &server,
        &["project", "known-hosts", "show", SLUG],
        "",
    ));
    let expected = sshd.known_hosts_line();
    let key_of = |line: &str| line.split_whitespace().nth(2).map(str::to_owned);
    assert_eq!(
        known.lines().filter_map(key_of).collect::<Vec<_>>(),
        vec![key_of(&expected).unwrap()],
        "{known}"
    );

    // A changed host key is refused: the next pipeline does not start.
    sshd.restart_with_new_host_key();
    let refused = bosun(&server, &["pipeline", "run", SLUG, "--branch", "main"], "");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Host key verification failed")
            || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{stderr}"
    );
}
