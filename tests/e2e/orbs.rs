//! The orb registry (issue 12), through real servers and the `bosun` CLI: every orb of
//! `../shared/orbs/` packed with `bosun orb pack` and published with `bosun orb publish`; the
//! corpus compiled on the server at pipeline start with its orbs resolved; a second server
//! with the first as `--orb-upstream` that keeps compiling once the first is gone; URL orbs
//! from an allow-list served by a real HTTP server; namespaces, immutability and dev versions;
//! a pipeline that runs an orb's command and a `type: no-op` gate end to end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bosun_api::{OrbSource, PipelineConfig};
use bosun_tests::{
    Fixture, Proc, Server, bin_dir, commit, free_listen_addr, git, git_repo, shared_tempdir,
};

fn shared(what: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(what);
    assert!(
        dir.is_dir(),
        "the test data is missing: {} (../shared beside the checkout)",
        dir.display()
    );
    dir
}

/// `ns/name/version` directories of `../shared/orbs/` (not the URL orbs).
fn shared_orbs() -> Vec<(String, PathBuf)> {
    let root = shared("orbs");
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        dirs
    };
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = Vec::new();
    for ns in dirs(&root) {
        if name(&ns) == "url" {
            continue;
        }
        for orb in dirs(&ns) {
            for version in dirs(&orb) {
                let reference = format!("{}/{}@{}", name(&ns), name(&orb), name(&version));
                out.push((reference, version));
            }
        }
    }
    assert!(
        out.len() >= 30,
        "only {} orbs in {}",
        out.len(),
        root.display()
    );
    out
}

/// `bosun ARGS` with no server in its environment (offline commands).
fn bosun_offline(args: &[&str]) -> std::process::Output {
    Command::new(bin_dir().join("bosun"))
        .args(args)
        .env_remove("BOSUN_HOST")
        .env_remove("BOSUN_TOKEN")
        .output()
        .expect("bosun")
}

/// Packs every shared orb with `bosun orb pack` into `dir`; (reference, packed file).
fn pack_all(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut packed = Vec::new();
    for (reference, version_dir) in shared_orbs() {
        let file = dir.join(format!("{}.yml", reference.replace(['/', '@'], "_")));
        let src = version_dir.join("src");
        if src.join("@orb.yml").is_file() {
            let out = bosun_offline(&["orb", "pack", src.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "bosun orb pack {reference}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(&file, &out.stdout).unwrap();
        } else {
            std::fs::copy(version_dir.join("orb.yml"), &file).unwrap();
        }
        packed.push((reference, file));
    }
    packed
}

/// Publishes packed orbs until nothing more publishes (an orb publishes once the orbs it
/// imports are in); answers the references refused, with why.
fn publish_all(server: &Server, packed: &[(String, PathBuf)]) -> Vec<(String, String)> {
    let mut left: Vec<&(String, PathBuf)> = packed.iter().collect();
    loop {
        let mut refused = Vec::new();
        let before = left.len();
        left.retain(|(reference, file)| {
            let out = server.cli(&["orb", "publish", file.to_str().unwrap(), reference], "");
            if out.status.success() {
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    stdout.starts_with(&format!("published {reference}")),
                    "{stdout}"
                );
                false
            } else {
                refused.push((
                    reference.clone(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ));
                true
            }
        });
        if left.len() == before || left.is_empty() {
            return refused;
        }
    }
}

/// The packed file of `reference` among `packed`.
fn packed_file(packed: &[(String, PathBuf)], reference: &str) -> PathBuf {
    packed
        .iter()
        .find(|(r, _)| r == reference)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| panic!("{reference} was not packed"))
}

async fn config_of(server: &Server, pipeline: &str) -> PipelineConfig {
    server
        .client
        .get(
            &format!("/api/v2/pipeline/{pipeline}/config"),
            &server.admin,
        )
        .await
        .expect("pipeline config")
}

/// What the corpus allows a config to be refused for once its orbs are resolved.
const ALLOWED: &[&str] = &[
    "orb not in registry: ",
    "unsupported key `serial-group`",
    "unsupported key `if`",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_compiles_on_a_server_with_every_shared_orb_published() {
    let dir = shared_tempdir();
    // The URL orb of mui's config, served from the test data at the same path under a local
    // HTTP server (the config's `https://` is rewritten to it), and allowed.
    let (www, www_url) = http_server(&shared("orbs/url"));
    let allow = format!("{www_url}/raw.githubusercontent.com/mui/");
    let server = Server::start_with(dir.path(), &["--url-orb-allow", &allow]);
    let packed_dir = dir.path().join("packed");
    std::fs::create_dir_all(&packed_dir).unwrap();
    let packed = pack_all(&packed_dir);

    // Every packed orb validates offline (imports from the same data, as an orb directory).
    let orb_dir = dir.path().join("orb-dir");
    for (reference, file) in &packed {
        let (ns, rest) = reference.split_once('/').unwrap();
        std::fs::create_dir_all(orb_dir.join(ns)).unwrap();
        std::fs::copy(file, orb_dir.join(ns).join(format!("{rest}.yml"))).unwrap();
    }

    let refused = publish_all(&server, &packed);
    // cypress-io/cypress@6.1.0 imports circleci/browser-tools@2.4.2, which has no source in the
    // test data (MANIFEST.tsv): publishing it is refused naming that import.
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].0, "cypress-io/cypress@6.1.0");
    assert!(
        refused[0]
            .1
            .contains("orb not in registry: `circleci/browser-tools@2.4.2`"),
        "{}",
        refused[0].1
    );
    let listed = server.cli_ok(&["orb", "list"], "");
    let mut names: Vec<&str> = packed
        .iter()
        .filter(|(r, _)| !refused.iter().any(|(x, _)| x == r))
        .map(|(r, _)| r.split('@').next().unwrap())
        .collect();
    names.dedup();
    assert_eq!(listed.lines().count(), names.len(), "{listed}");
    assert!(
        listed.contains("circleci/slack (6 version(s), latest 6.1.3)"),
        "{listed}"
    );

    // Every corpus config, each on its own branch of one project, triggered on the server.
    let repo = git_repo(dir.path(), &[("README", "corpus\n")]);
    let slug = "gh/bosun/corpus";
    server.project(slug, &repo).await;
    let mut configs: Vec<PathBuf> = std::fs::read_dir(shared("corpus/configs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 50, "{} corpus configs", configs.len());
    let (mut compiled, mut missing, mut unexpected) = (0, Vec::new(), Vec::new());
    let mut largest: Option<(usize, String, String)> = None;
    for (i, path) in configs.iter().enumerate() {
        let text = std::fs::read_to_string(path).unwrap().replace(
            "https://raw.githubusercontent.com/",
            &format!("{www_url}/raw.githubusercontent.com/"),
        );
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let branch = format!("corpus-{i}");
        git(&repo, &["checkout", "-q", "-b", &branch, "main"]);
        commit(&repo, &[(".circleci/config.yml", &text)], &name);
        let pipeline = server.trigger(slug, &branch).await;
        let config = config_of(&server, &pipeline).await;
        let state = server.pipeline(&pipeline).await;
        if !config.compiled.is_empty() {
            compiled += 1;
            if !config.orbs.is_empty() && largest.as_ref().is_none_or(|l| l.0 < text.len()) {
                largest = Some((text.len(), name.clone(), branch.clone()));
            }
            continue;
        }
        let message = state
            .errors
            .first()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        if message.contains("orb not in registry: ") {
            missing.push(format!(
                "{name}: {}",
                message.chars().take(200).collect::<String>()
            ));
        } else if !ALLOWED.iter().any(|a| message.contains(a)) {
            unexpected.push(format!("{name}: {message}"));
        }
    }
    git(&repo, &["checkout", "-q", "main"]);
    drop(www);
    for m in &missing {
        println!("refused for a missing orb: {m}");
    }
    println!(
        "{compiled} of {} corpus configs compile on the server with the shared orbs published \
         (23 without a registry); {} refused naming a missing orb",
        configs.len(),
        missing.len()
    );
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert!(compiled >= 37, "only {compiled} corpus configs compiled");
    assert!(missing.len() >= 10, "{missing:#?}");

    // The largest config with orbs: time a trigger, which reads, resolves and compiles it.
    let (size, name, branch) = largest.expect("a corpus config with orbs compiled");
    let runs = 5;
    let started = std::time::Instant::now();
    for _ in 0..runs {
        server.trigger(slug, &branch).await;
    }
    println!(
        "largest corpus config with orbs: {name} ({size} bytes): {:?} per pipeline trigger \
         (resolve + compile + store)",
        started.elapsed() / runs
    );

    // `bosun config validate` and `process` resolve through the server given --host.
    let gohugo = shared("corpus/configs").join("gohugoio__hugo.yml");
    let out = server.cli_ok(&["config", "process", gohugo.to_str().unwrap()], "");
    assert!(
        out.starts_with(
            "# Orb 'circleci/continuation@1' resolved to 'circleci/continuation@1.1.0'\n"
        ),
        "{out}"
    );
    let out = bosun_offline(&["config", "validate", gohugo.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("registry orbs cannot be fetched by bosun"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bosun_offline(&[
        "config",
        "validate",
        gohugo.to_str().unwrap(),
        "--orb-dir",
        orb_dir.to_str().unwrap(),
    ]);
    // The orb directory holds exact versions only: `@1` is not a file there.
    assert!(!out.status.success());
    let exact = dir.path().join("exact.yml");
    std::fs::write(
        &exact,
        "version: 2.1\norbs:\n  slack: circleci/slack@4.12.5\njobs:\n  build:\n    machine: true\n    \
         steps:\n      - slack/notify:\n          event: always\nworkflows:\n  main:\n    jobs: [build]\n",
    )
    .unwrap();
    let out = bosun_offline(&[
        "config",
        "validate",
        exact.to_str().unwrap(),
        "--orb-dir",
        orb_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An orb that imports an orb validates through the server (circleci/go imports
    // circleci/os-detect@0.2), not offline without the import.
    let go = packed_file(&packed, "circleci/go@1.11.0");
    let valid = server.cli_ok(&["orb", "validate", go.to_str().unwrap()], "");
    assert!(valid.contains("is valid"), "{valid}");
    let out = bosun_offline(&["orb", "validate", go.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`circleci/os-detect@0.2`, imported by"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = packed_file(&packed, "circleci/node@7.2.1");
    let out = bosun_offline(&["orb", "validate", node.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
}

/// The packed test orb whose command the end-to-end pipeline runs.
const HELLO_ORB: &str = r#"version: 2.1
description: Greets.
commands:
  greet:
    parameters:
      who:
        type: string
        default: world
    steps:
      - run: echo "hello, << parameters.who >> from the orb"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_an_orb_command_records_its_versions_and_passes_a_no_op_gate() {
    let config = r#"version: 2.1
orbs:
  hello: e2e/hello@1
  slack: circleci/slack@4.12
jobs:
  build:
    machine: true
    resource_class: e2e/orbs
    steps:
      - hello/greet:
          who: bosun
  gate:
    type: no-op
  deploy:
    machine: true
    resource_class: e2e/orbs
    steps:
      - run: echo deployed
workflows:
  main:
    jobs:
      - build
      - gate:
          requires: [build]
      - deploy:
          requires: [gate]
"#;
    let fixture = Fixture::new("e2e/orbs", config).await;
    let server = &fixture.server;
    let dir = fixture.dir.path();

    // Publishing: the admin publishes anywhere; versions are immutable; dev versions replace.
    let hello = dir.join("hello.yml");
    std::fs::write(&hello, HELLO_ORB).unwrap();
    server.cli_ok(
        &["orb", "publish", hello.to_str().unwrap(), "e2e/hello@1.0.0"],
        "",
    );
    let again = server.cli(
        &["orb", "publish", hello.to_str().unwrap(), "e2e/hello@1.0.0"],
        "",
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already published"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let v2 = HELLO_ORB.replace("from the orb", "from the orb, 1.1");
    std::fs::write(&hello, &v2).unwrap();
    server.cli_ok(
        &["orb", "publish", hello.to_str().unwrap(), "e2e/hello@1.1.0"],
        "",
    );
    let dev = server.cli_ok(
        &[
            "orb",
            "publish",
            hello.to_str().unwrap(),
            "e2e/hello@dev:alpha",
        ],
        "",
    );
    assert!(dev.starts_with("published e2e/hello@dev:alpha"), "{dev}");
    let dev = server.cli_ok(
        &[
            "orb",
            "publish",
            hello.to_str().unwrap(),
            "e2e/hello@dev:alpha",
        ],
        "",
    );
    assert!(dev.starts_with("replaced e2e/hello@dev:alpha"), "{dev}");
    let listed = server.cli_ok(&["orb", "list", "e2e"], "");
    assert_eq!(listed, "e2e/hello (3 version(s), latest 1.1.0)\n");
    let info = server.cli_ok(&["orb", "info", "e2e/hello"], "");
    assert!(info.starts_with("e2e/hello (latest 1.1.0)"), "{info}");
    assert!(
        info.contains("dev:alpha") && info.contains("expires"),
        "{info}"
    );
    for (reference, has) in [
        ("e2e/hello@1", "1.1"),
        ("e2e/hello@1.0", "from the orb\""),
        ("e2e/hello@1.0.0", "from the orb\""),
        ("e2e/hello@volatile", "1.1"),
        ("e2e/hello@dev:alpha", "1.1"),
    ] {
        let source = server.cli_ok(&["orb", "source", reference], "");
        assert!(source.contains(has), "{reference}: {source}");
    }
    let missing = server.cli(&["orb", "source", "e2e/hello@2"], "");
    assert!(!missing.status.success());
    let bad = server.cli(
        &["orb", "publish", hello.to_str().unwrap(), "e2e/hello@1.2"],
        "",
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a version to publish"));
    let broken = dir.join("broken.yml");
    std::fs::write(
        &broken,
        "version: 2.1\ncommands:\n  x:\n    steps:\n      - nope\n",
    )
    .unwrap();
    let out = server.cli(
        &[
            "orb",
            "publish",
            broken.to_str().unwrap(),
            "e2e/broken@1.0.0",
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not validate") && stderr.contains(":5:"),
        "{stderr}"
    );

    // A member publishes into the namespaces of their projects only.
    server.cli_ok(&["user", "create", "mia", "--role", "member"], "");
    server.cli_ok(&["user", "grant", "mia", &fixture.slug], "");
    let mia = server.cli_ok(&["token", "create", "--user", "mia"], "");
    let mia = mia
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim()
        .to_owned();
    let as_mia = |args: &[&str]| {
        Command::new(bin_dir().join("bosun"))
            .args(args)
            .env("BOSUN_HOST", &server.url)
            .env("BOSUN_TOKEN", &mia)
            .output()
            .unwrap()
    };
    let out = as_mia(&["orb", "publish", hello.to_str().unwrap(), "e2e/mine@0.1.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_mia(&[
        "orb",
        "publish",
        hello.to_str().unwrap(),
        "circleci/mine@0.1.0",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may not publish into namespace `circleci`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The slack orb, packed from the test data.
    let slack = shared("orbs").join("circleci/slack/4.12.5/src");
    let packed = bosun_offline(&["orb", "pack", slack.to_str().unwrap()]);
    assert!(packed.status.success());
    let slack_file = dir.join("slack.yml");
    std::fs::write(&slack_file, &packed.stdout).unwrap();
    server.cli_ok(
        &[
            "orb",
            "publish",
            slack_file.to_str().unwrap(),
            "circleci/slack@4.12.5",
        ],
        "",
    );

    let (pipeline, jobs) = fixture.run().await;
    assert_eq!(pipeline.status, "success", "{pipeline:?} {jobs:?}");
    let build = fixture.job(&jobs, "build");
    let log = String::from_utf8_lossy(&server.step_log(&build.id, 0).await).into_owned();
    assert!(log.contains("hello, bosun from the orb, 1.1"), "{log}");
    assert_eq!(fixture.job(&jobs, "gate").status, "success");
    assert_eq!(fixture.job(&jobs, "deploy").status, "success");

    let config = config_of(server, &pipeline.id).await;
    let versions: Vec<(String, String)> = config
        .orbs
        .iter()
        .map(|o| (o.reference.clone(), o.version.clone()))
        .collect();
    assert_eq!(
        versions,
        vec![
            (
                "circleci/slack@4.12".to_owned(),
                "circleci/slack@4.12.5".to_owned()
            ),
            ("e2e/hello@1".to_owned(), "e2e/hello@1.1.0".to_owned()),
        ]
    );
    assert!(
        config.compiled.starts_with(
            "# Orb 'circleci/slack@4.12' resolved to 'circleci/slack@4.12.5'\n\
             # Orb 'e2e/hello@1' resolved to 'e2e/hello@1.1.0'\n"
        ),
        "{}",
        config.compiled
    );

    // A job from an orb that runs in docker is refused at pipeline start, naming the orb.
    let docker = r#"version: 2.1
orbs:
  tools: e2e/tools@1.0.0
workflows:
  main:
    jobs: [tools/lint]
"#;
    let tools = dir.join("tools.yml");
    std::fs::write(
        &tools,
        "version: 2.1\nexecutors:\n  default:\n    docker:\n      - image: cimg/base:current\njobs:\n  lint:\n    executor: default\n    steps:\n      - run: lint\n",
    )
    .unwrap();
    server.cli_ok(
        &["orb", "publish", tools.to_str().unwrap(), "e2e/tools@1.0.0"],
        "",
    );
    commit(
        &fixture.repo,
        &[(".circleci/config.yml", docker)],
        "docker orb job",
    );
    let id = server.trigger(&fixture.slug, "main").await;
    let errored = server.pipeline(&id).await;
    assert_eq!(errored.state, "errored");
    assert_eq!(
        errored.errors[0].message,
        "job `tools/lint` (from the orb e2e/tools@1.0.0) uses the executor `tools/default`, the \
         docker image `cimg/base:current`: bosun's machine runners run `machine: true` jobs"
    );
}

/// A tiny static HTTP server (Python's), serving `dir` on a free port; killed when dropped.
fn http_server(dir: &Path) -> (Proc, String) {
    let addr = free_listen_addr();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port,
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let child = Proc {
        child,
        log: PathBuf::from("/dev/null"),
    };
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok() {
            return (child, url);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("python3 -m http.server did not listen on {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_caches_orbs_from_its_upstream_and_url_orbs_come_from_the_allow_list() {
    let dir = shared_tempdir();
    let first_dir = dir.path().join("first");
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::create_dir_all(&second_dir).unwrap();
    let first = Server::start(&first_dir);
    let hello = dir.path().join("hello.yml");
    std::fs::write(&hello, HELLO_ORB).unwrap();
    first.cli_ok(
        &["orb", "publish", hello.to_str().unwrap(), "e2e/hello@1.0.0"],
        "",
    );

    // A URL orb: the mui config's code-infra orb, served by a real HTTP server.
    let www = dir.path().join("www");
    let url_orb = shared("orbs").join(
        "url/raw.githubusercontent.com/mui/mui-public/8f789e5a8fe2888b5f5837b6a5f64c58837e0e18/.circleci/orbs/code-infra.yml",
    );
    std::fs::create_dir_all(www.join("allowed")).unwrap();
    std::fs::create_dir_all(www.join("other")).unwrap();
    std::fs::copy(&url_orb, www.join("allowed/code-infra.yml")).unwrap();
    std::fs::copy(&url_orb, www.join("other/code-infra.yml")).unwrap();
    let (www_server, www_url) = http_server(&www);
    let allowed = format!("{www_url}/allowed/");

    let second = Server::start_with(
        &second_dir,
        &["--orb-upstream", &first.url, "--url-orb-allow", &allowed],
    );
    let config = dir.path().join("config.yml");
    let text = |orb_url: &str| {
        format!(
            "version: 2.1\norbs:\n  hello: e2e/hello@1\n  pinned: e2e/hello@1.0.0\n  infra: {orb_url}\n\
             jobs:\n  build:\n    machine: true\n    steps:\n      - hello/greet\n      - pinned/greet\n\
             workflows:\n  main:\n    jobs: [build]\n"
        )
    };
    std::fs::write(&config, text(&format!("{allowed}code-infra.yml"))).unwrap();
    let processed = second.cli_ok(&["config", "process", config.to_str().unwrap()], "");
    assert!(
        processed.contains("hello, world from the orb"),
        "{processed}"
    );
    assert!(
        processed.contains(&format!("# Orb '{allowed}code-infra.yml' resolved to")),
        "{processed}"
    );
    let info = second.cli_ok(&["orb", "info", "e2e/hello"], "");
    assert!(
        info.contains(&format!("cached from {}", first.url)),
        "{info}"
    );

    // The GraphQL query the `circleci` CLI sends, as another client would.
    let query = serde_json::json!({
        "query": "query($orbVersionRef: String!) { orbVersion(orbVersionRef: $orbVersionRef) \
                  { id version orb { id name } source } }",
        "variables": {"orbVersionRef": "e2e/hello@1"},
    });
    let answer: serde_json::Value = second
        .client
        .post("/graphql-unstable", &bosun_api::Auth::None, &query)
        .await
        .unwrap();
    assert_eq!(answer["data"]["orbVersion"]["version"], "1.0.0", "{answer}");
    assert_eq!(answer["data"]["orbVersion"]["orb"]["name"], "e2e/hello");
    assert_eq!(answer["data"]["orbVersion"]["source"], HELLO_ORB);

    // A URL outside the allow-list is refused, naming the list.
    std::fs::write(&config, text(&format!("{www_url}/other/code-infra.yml"))).unwrap();
    let out = second.cli(&["config", "validate", config.to_str().unwrap()], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not allowed") && stderr.contains(&allowed),
        "{stderr}"
    );

    // With the upstream and the HTTP server gone, the second server still compiles it.
    drop(first);
    drop(www_server);
    std::fs::write(&config, text(&format!("{allowed}code-infra.yml"))).unwrap();
    let processed = second.cli_ok(&["config", "process", config.to_str().unwrap()], "");
    assert!(
        processed.contains("hello, world from the orb"),
        "{processed}"
    );
    let source: OrbSource = second
        .client
        .get("/api/v2/orb/e2e/hello/1.0.0", &bosun_api::Auth::None)
        .await
        .unwrap();
    assert_eq!(source.source, HELLO_ORB);

    // And pipelines compile with it (the whole trigger path).
    let repo = git_repo(
        &second_dir,
        &[(
            ".circleci/config.yml",
            &std::fs::read_to_string(&config).unwrap(),
        )],
    );
    second.project("gh/e2e/upstream", &repo).await;
    let id = second.trigger("gh/e2e/upstream", "main").await;
    let recorded = config_of(&second, &id).await;
    assert_eq!(recorded.orbs.len(), 3, "{recorded:?}");
    assert!(
        !recorded.compiled.is_empty(),
        "{:?}",
        second.pipeline(&id).await
    );
}
