//! HTTPS and proxies (issue 14): a server with `--tls-cert/--tls-key` (certificates made here
//! with rcgen, signed by a test CA), a launch-agent trusting that CA through `api.ca_file`
//! running a real pipeline, the CLI with `--ca-file`, a clear refusal without the CA, the
//! certificate reloaded on SIGHUP without dropping an open connection, and the launch-agent
//! reaching the server only through a real local proxy (Debian's tinyproxy) via `HTTPS_PROXY`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun_tests::{
    AgentOptions, bin_dir, git_repo, launch_agent_with_env, require_program, shared_tempdir,
};

const CONFIG: &str = "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: e2e/tls\n    steps:\n      - run: echo over-tls\nworkflows:\n  main:\n    jobs: [build]\n";

/// A CA and a server certificate for 127.0.0.1 and localhost it signed, written to `dir` as
/// `NAME-ca.pem`, `NAME-cert.pem` and `NAME-key.pem`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("bosun test CA {name}"));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let out = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&out.ca, ca.pem()).unwrap();
    std::fs::write(&out.cert, cert.pem()).unwrap();
    std::fs::write(&out.key, key.serialize_pem()).unwrap();
    out
}

async fn run_pipeline(server: &bosun_tests::Server, slug: &str) -> bosun_api::Pipeline {
    let id = server.trigger(slug, "main").await;
    server.wait_pipeline(&id, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_over_https_with_a_private_ca() {
    let dir = shared_tempdir();
    let pki = pki(dir.path(), "one");
    let server = bosun_tests::Server::start_tls(dir.path(), &pki.cert, &pki.key, &pki.ca);
    server.resource_class("e2e/tls").await;
    let token = server.token("e2e/tls").await;
    let agent = launch_agent_with_env(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
        &[],
        &[("LAUNCH_AGENT_API_CA_FILE", pki.ca.to_str().unwrap())],
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", CONFIG)]);
    server.project("local/e2e/tls", &repo).await;
    let pipeline = run_pipeline(&server, "local/e2e/tls").await;
    assert_eq!(pipeline.status, "success", "{}", agent.log_text());

    // The CLI with --ca-file reads it; without the CA, a clear TLS refusal.
    let cli = |ca: Option<&Path>| {
        let mut command = std::process::Command::new(bin_dir().join("bosun"));
        command
            .args(["pipeline", "status", &pipeline.id])
            .env("BOSUN_HOST", &server.url)
            .env("BOSUN_TOKEN", "bosun-e2e-admin-token-0123456789")
            .env_remove("BOSUN_CA_FILE");
        if let Some(ca) = ca {
            command.arg("--ca-file").arg(ca);
        }
        command.output().unwrap()
    };
    let ok = cli(Some(&pki.ca));
    assert!(
        ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("success"),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = cli(None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.to_ascii_lowercase().contains("certificate"),
        "no word of the certificate: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_dropping_a_connection() {
    let dir = shared_tempdir();
    let first = pki(dir.path(), "first");
    let cert = dir.path().join("served-cert.pem");
    let key = dir.path().join("served-key.pem");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let server = bosun_tests::Server::start_tls(dir.path(), &cert, &key, &first.ca);
    server.resource_class("e2e/tls").await;
    let token = server.token("e2e/tls").await;
    let trusting = |ca: &Path| {
        bosun_api::Client::with_options(
            &server.url,
            bosun_api::Timeouts::default(),
            &bosun_api::ConnectOptions {
                ca_file: Some(ca.to_owned()),
                proxy: Some(bosun_api::ProxyChoice::Direct),
            },
        )
        .unwrap()
    };
    // A claim long-polls on a connection made with the first certificate...
    let runner = bosun_api::Auth::Bearer(token);
    let old_client = trusting(&first.ca);
    let claim = tokio::spawn(async move {
        old_client
            .claim(
                &runner,
                &bosun_api::ClaimRequest {
                    name: "probe".into(),
                    ..bosun_api::ClaimRequest::default()
                },
                Duration::from_secs(3),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...while the files are replaced by a certificate of another CA and SIGHUP reloads them.
    let second = pki(dir.path(), "second");
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    let resource_classes = |client: bosun_api::Client| async move {
        client
            .resource_classes(
                &bosun_api::Auth::CircleToken("bosun-e2e-admin-token-0123456789".into()),
                "e2e",
            )
            .await
    };
    assert!(
        resource_classes(trusting(&second.ca)).await.is_err(),
        "the second CA is not trusted before the reload"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.proc.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let started = Instant::now();
    while resource_classes(trusting(&second.ca)).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate is not served after SIGHUP:\n{}",
            server.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resource_classes(trusting(&first.ca)).await.is_err());
    // The long-poll begun before the reload ends as usual (no task: None), not cut off.
    let answer = claim.await.unwrap();
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    // A bad file on SIGHUP keeps the served certificate and says why.
    std::fs::write(&cert, "not a certificate").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.proc.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let started = Instant::now();
    while !server
        .proc
        .log_text()
        .contains("still serving the old certificate")
    {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resource_classes(trusting(&second.ca)).await.is_ok());
}

/// A free loopback port for tinyproxy.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reaches_the_server_through_an_https_proxy() {
    require_program(
        "tinyproxy",
        "the proxy test tunnels through a real tinyproxy",
    );
    let dir = shared_tempdir();
    let pki = pki(dir.path(), "proxy");
    let server = bosun_tests::Server::start_tls(dir.path(), &pki.cert, &pki.key, &pki.ca);
    server.resource_class("e2e/tls").await;
    let token = server.token("e2e/tls").await;
    let port = free_port();
    let conf = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 600\nAllow 127.0.0.1\nLogLevel Connect\nMaxClients 100\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("tinyproxy.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut proxy = std::process::Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("tinyproxy");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tinyproxy did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let proxy_url = format!("http://127.0.0.1:{port}");
    let agent = launch_agent_with_env(
        &server,
        &token,
        dir.path(),
        "agent",
        AgentOptions::default(),
        &[],
        &[
            ("LAUNCH_AGENT_API_CA_FILE", pki.ca.to_str().unwrap()),
            ("HTTPS_PROXY", &proxy_url),
            ("NO_PROXY", ""),
            ("no_proxy", ""),
        ],
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", CONFIG)]);
    server.project("local/e2e/tls", &repo).await;
    let pipeline = run_pipeline(&server, "local/e2e/tls").await;
    let _ = proxy.kill();
    let _ = proxy.wait();
    let proxied = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        pipeline.status,
        "success",
        "{}\n{proxied}",
        agent.log_text()
    );
    let server_port = server.url.rsplit(':').next().unwrap().to_owned();
    assert!(
        proxied.contains(&format!("CONNECT 127.0.0.1:{server_port}")),
        "the agent did not go through the proxy:\n{proxied}"
    );
}
