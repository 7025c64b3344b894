//! `bosun quickstart`: a server, one launch-agent per resource class the pipeline needs, a
//! project pointing at a real git repository (a generated demo, or `--repo PATH`), one pipeline
//! followed live. Exits 0 only if the pipeline succeeded.

use std::collections::BTreeSet;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bosun_api::{Auth, Client, TriggerPipeline};
use tokio::process::{Child, Command};

use crate::Failure;
use crate::commands::Ctx;

/// The user jobs run as when the quickstart runs as root.
const JOB_USER: &str = "bosun";
const DEMO_CLASS: &str = "bosun/quickstart";

#[derive(clap::Args, Debug)]
pub struct QuickstartArgs {
    /// Keep everything here (default: a temporary directory removed after a successful run).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run this git repository's `.circleci/config.yml` (its checked-out branch, last commit)
    /// instead of the generated demo.
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Keep the data directory even after success.
    #[arg(long)]
    pub keep: bool,
    /// Where bosun-server, launch-agent and task-agent are (default: beside this binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Children we started; killed (SIGTERM, then SIGKILL) when dropped.
struct Services {
    children: Vec<(String, Child)>,
}

impl Services {
    async fn stop(&mut self) {
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for (name, child) in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                eprintln!("{name} did not stop within 15 s: killing it");
                let _ = child.kill().await;
            }
        }
        self.children.clear();
    }
}

fn say(text: &str) {
    println!("quickstart: {text}");
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub async fn run(args: QuickstartArgs) -> Result<u8, Failure> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .context("locating the bosun binary")?
            .parent()
            .map(Path::to_path_buf)
            .context("the bosun binary has no directory")?,
    };
    for binary in ["bosun-server", "launch-agent", "task-agent"] {
        if !bin_dir.join(binary).is_file() {
            return Err(Failure::input(format!(
                "{} not found: build the workspace first (`cargo build`) or pass --bin-dir",
                bin_dir.join(binary).display()
            )));
        }
    }
    let (data_dir, temp) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (std::fs::canonicalize(dir)?, None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("bosun-quickstart-")
                .tempdir()?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    // The job user must be able to reach its working directory under here.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755))?;
    say(&format!("data directory {}", data_dir.display()));

    let mut services = Services {
        children: Vec::new(),
    };
    let result = run_in(&args, &bin_dir, &data_dir, &mut services).await;
    services.stop().await;
    match &result {
        Ok(0) if !args.keep => {
            if let Some(temp) = temp {
                let _ = temp.close();
            }
        }
        _ => {
            if let Some(temp) = temp {
                let kept = temp.keep();
                say(&format!(
                    "kept {} (server.log and launch-agent logs are there)",
                    kept.display()
                ));
            }
        }
    }
    result
}

async fn run_in(
    args: &QuickstartArgs,
    bin_dir: &Path,
    data_dir: &Path,
    services: &mut Services,
) -> Result<u8, Failure> {
    let running_as_root = nix::unistd::Uid::effective().is_root();
    let job_user = if running_as_root {
        ensure_job_user()?;
        Some(JOB_USER)
    } else {
        say("not running as root: jobs run as your own user");
        None
    };

    // The repository and the resource classes its config needs.
    let (repo, branch) = match &args.repo {
        Some(path) => {
            let repo = std::fs::canonicalize(path)
                .map_err(|err| Failure::input(format!("--repo {}: {err}", path.display())))?;
            let branch = current_branch(&repo)?;
            if is_dirty(&repo)? {
                say(
                    "note: the repository has uncommitted changes; the pipeline runs the last commit",
                );
            }
            (repo, branch)
        }
        None => {
            let repo = data_dir.join("demo-repo");
            make_demo_repo(&repo)?;
            say(&format!(
                "generated a demo repository at {}",
                repo.display()
            ));
            (repo, "main".to_owned())
        }
    };
    let classes = resource_classes_of(&repo, &branch);
    // A project runs on the resource classes of one namespace: the quickstart's project gets
    // the one its config names.
    let namespaces: BTreeSet<&str> = classes
        .iter()
        .filter_map(|class| class.split_once('/').map(|(ns, _)| ns))
        .collect();
    let namespace = match namespaces.iter().next() {
        Some(namespace) if namespaces.len() == 1 => namespace.to_string(),
        _ => {
            return Err(Failure::input(format!(
                "the config's resource classes are of several namespaces ({}): a project runs on \
                 one namespace's resource classes",
                namespaces.iter().copied().collect::<Vec<_>>().join(", ")
            )));
        }
    };

    // The server.
    let admin_token = random_token()?;
    let server_dir = data_dir.join("server");
    // The server keeps its data private (0700); creating the directory so saves it a warning.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&server_dir)?;
    let url_file = server_dir.join("server-url");
    let _ = std::fs::remove_file(&url_file);
    let log = std::fs::File::create(data_dir.join("server.log"))?;
    let mut server = Command::new(bin_dir.join("bosun-server"));
    server
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&server_dir)
        .env("BOSUN_ADMIN_TOKEN", &admin_token)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let child = server.spawn().context("starting bosun-server")?;
    services.children.push(("bosun-server".into(), child));
    let url = wait_for_file(
        &url_file,
        Duration::from_secs(30),
        services,
        &data_dir.join("server.log"),
    )
    .await?;
    say(&format!("bosun-server listening on {url}"));

    let ctx = Ctx {
        client: Client::new(&url).map_err(|err| Failure::failed(err.to_string()))?,
        auth: Auth::CircleToken(admin_token),
    };

    // One resource class, token and launch-agent per class the config names.
    for (index, class) in classes.iter().enumerate() {
        ctx.create_resource_class(class, "created by bosun quickstart")
            .await?;
        let token = ctx
            .create_token(class, "quickstart")
            .await?
            .token
            .unwrap_or_default();
        let config_path = data_dir.join(format!("launch-agent-{index}.yaml"));
        write_agent_config(
            &config_path,
            &url,
            &token,
            index,
            data_dir,
            job_user,
            bin_dir,
        )?;
        let log = std::fs::File::create(data_dir.join(format!("launch-agent-{index}.log")))?;
        let mut agent = Command::new(bin_dir.join("launch-agent"));
        agent
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = agent.spawn().context("starting launch-agent")?;
        services
            .children
            .push((format!("launch-agent ({class})"), child));
        say(&format!(
            "resource class {class}: launch-agent started{}",
            job_user
                .map(|u| format!(", jobs run as user `{u}`"))
                .unwrap_or_default()
        ));
    }

    let name = repo
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repo".into());
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let slug = format!("local/quickstart/{}", name.trim_start_matches('.'));
    ctx.create_project(&slug, &repo.to_string_lossy(), Some(&namespace))
        .await?;
    if args.repo.is_none() {
        // The demo's secret: a project variable the build prints, which its log shows masked.
        let request = bosun_api::types::CreateEnvVar {
            name: "DEMO_DEPLOY_TOKEN".into(),
            value: random_token()?,
        };
        ctx.client
            .set_project_env(&ctx.auth, &slug, &request)
            .await?;
        say("project variable DEMO_DEPLOY_TOKEN set (a secret: logs show it masked)");
        let published = ctx
            .client
            .publish_orb(&ctx.auth, "bosun", "demo", "1.0.0", DEMO_ORB)
            .await?;
        say(&format!(
            "orb {} published in the server's registry",
            published.orb
        ));
    }
    let created = ctx
        .client
        .trigger_pipeline(
            &ctx.auth,
            &slug,
            &TriggerPipeline {
                branch: Some(branch.clone()),
                ..TriggerPipeline::default()
            },
        )
        .await?;
    say(&format!(
        "pipeline #{} of {slug} on branch {branch}",
        created.number
    ));
    let status = crate::follow::follow(&ctx, &created.id).await?;
    if status == "success" {
        println!("success");
        Ok(0)
    } else {
        println!("pipeline {status}");
        Ok(1)
    }
}

fn ensure_job_user() -> anyhow::Result<()> {
    if nix::unistd::User::from_name(JOB_USER)?.is_some() {
        return Ok(());
    }
    let status = std::process::Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--create-home",
            "--home-dir",
            "/home/bosun",
            "--shell",
            "/bin/bash",
            JOB_USER,
        ])
        .status()
        .context("running useradd")?;
    if !status.success() {
        bail!("useradd {JOB_USER} failed ({status})");
    }
    say(&format!(
        "created system user `{JOB_USER}` to run jobs (running as root, jobs never run as root)"
    ));
    Ok(())
}

async fn wait_for_file(
    path: &Path,
    limit: Duration,
    services: &mut Services,
    log: &Path,
) -> Result<String, Failure> {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return Ok(text.trim().to_owned());
            }
        }
        for (name, child) in &mut services.children {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                return Err(Failure::failed(format!(
                    "{name} exited ({status}):\n{tail}"
                )));
            }
        }
        if started.elapsed() > limit {
            return Err(Failure::failed(format!(
                "bosun-server did not start within {limit:?}; see {}",
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_agent_config(
    path: &Path,
    url: &str,
    token: &str,
    index: usize,
    data_dir: &Path,
    job_user: Option<&str>,
    bin_dir: &Path,
) -> anyhow::Result<()> {
    let mut text = format!(
        "api:\n  auth_token: {token}\n  url: {url}\nrunner:\n  name: quickstart-{index}\n  working_directory: {}/work/%s\n  cleanup_working_directory: true\n  task_agent_path: {}\n",
        data_dir.display(),
        bin_dir.join("task-agent").display()
    );
    if let Some(user) = job_user {
        text.push_str(&format!("  user: {user}\n"));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "safe.directory=*"])
        .args(args)
        .output()
        .context("running git (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn current_branch(repo: &Path) -> Result<String, Failure> {
    git(repo, &["symbolic-ref", "--short", "HEAD"]).map_err(|err| {
        Failure::input(format!(
            "--repo {}: needs a checked-out branch: {err:#}",
            repo.display()
        ))
    })
}

fn is_dirty(repo: &Path) -> anyhow::Result<bool> {
    Ok(!git(repo, &["status", "--porcelain", "--untracked-files=no"])?.is_empty())
}

/// The resource classes the repository's config at `branch` asks for; the demo class if none.
fn resource_classes_of(repo: &Path, branch: &str) -> BTreeSet<String> {
    let mut classes = BTreeSet::new();
    if let Ok(text) = git(repo, &["show", &format!("{branch}:.circleci/config.yml")]) {
        if let Ok(pipeline) = bosun_config::compile(&text, ".circleci/config.yml") {
            for job in pipeline.jobs.values() {
                if let Some(class) = &job.resource_class {
                    if class.contains('/') {
                        classes.insert(class.clone());
                    }
                }
            }
        }
    }
    if classes.is_empty() {
        classes.insert(DEMO_CLASS.to_owned());
    }
    classes
}

const DEMO_CONFIG: &str = r#"# bosun's quickstart demo: what bosun runs so far.
version: 2.1

# A registry orb: the quickstart publishes bosun/demo into the server's registry; `@1` resolves
# to its highest 1.x.y (the pipeline's config records 1.0.0).
orbs:
  demo: bosun/demo@1

jobs:
  build:
    machine: true
    resource_class: bosun/quickstart
    environment:
      GREETING: hello from bosun
    steps:
      - checkout
      - run: echo "$GREETING on $(uname -m), as $(id -un), at commit ${CIRCLE_SHA1:0:12} of $CIRCLE_BRANCH"
      - run:
          name: Use a secret (a project variable; masked in every log)
          command: echo "deploying with token $DEMO_DEPLOY_TOKEN (${#DEMO_DEPLOY_TOKEN} characters)"
      - restore_cache:
          keys:
            - v1-tools-{{ checksum "build.sh" }}
            - v1-tools-
      - run:
          name: Prepare a (pretend) toolchain, unless the cache had it
          command: |
            if [ -f tools/version ]; then echo "toolchain from the cache: $(cat tools/version)"; exit 0; fi
            mkdir -p tools && echo "demo-toolchain 1.0" > tools/version && echo "toolchain prepared"
      - save_cache:
          key: v1-tools-{{ checksum "build.sh" }}
          paths:
            - tools
      - run:
          name: Build
          command: |
            mkdir -p out
            ./build.sh > out/result.txt
            cat out/result.txt
      - persist_to_workspace:
          root: out
          paths:
            - result.txt
      - run:
          name: Output streams as it is produced
          command: |
            for i in 1 2 3; do echo "tick $i"; sleep 0.2; done
            echo "stderr is captured too" >&2
      - store_artifacts:
          path: out
          destination: build-output

  test:
    machine: true
    resource_class: bosun/quickstart
    steps:
      - checkout
      - attach_workspace:
          at: from-build
      - run:
          name: Read the build job's result from the workspace
          command: echo "the build printed $(cat from-build/result.txt)"
      - demo/report:
          what: the build's result
      - run:
          name: Run the tests
          working_directory: tests
          environment:
            EXPECTED: "6"
          command: ./run.sh
      - run:
          name: Always runs, even after a failure
          when: always
          command: echo "job $CIRCLE_JOB (build $CIRCLE_BUILD_NUM) of pipeline $CIRCLE_PIPELINE_ID is done"

  # A gate: it runs nothing and takes no runner; `test` starts once it has passed.
  built:
    type: no-op

workflows:
  build-and-test:
    jobs:
      - build
      - built:
          requires: [build]
      - test:
          requires: [built]
"#;

/// The orb the demo uses, published as bosun/demo@1.0.0 before the pipeline starts.
const DEMO_ORB: &str = r#"version: 2.1
description: The quickstart's demo orb.
commands:
  report:
    description: Says what a job reports, from an orb.
    parameters:
      what:
        type: string
    steps:
      - run:
          name: Report from the bosun/demo orb
          command: echo "reported << parameters.what >> from the orb bosun/demo"
"#;

const DEMO_BUILD: &str =
    "#!/bin/sh\n# A stand-in build: add the numbers 1 to 3.\necho $((1 + 2 + 3))\n";
const DEMO_TEST: &str = "#!/bin/sh\nset -e\nresult=$(sh ../build.sh)\necho \"build printed $result, expected $EXPECTED\"\n[ \"$result\" = \"$EXPECTED\" ]\necho \"all tests passed\"\n";

fn make_demo_repo(repo: &Path) -> anyhow::Result<()> {
    if repo.exists() {
        std::fs::remove_dir_all(repo)?;
    }
    std::fs::create_dir_all(repo.join(".circleci"))?;
    std::fs::create_dir_all(repo.join("tests"))?;
    std::fs::write(repo.join(".circleci/config.yml"), DEMO_CONFIG)?;
    std::fs::write(repo.join("build.sh"), DEMO_BUILD)?;
    std::fs::write(repo.join("tests/run.sh"), DEMO_TEST)?;
    for script in ["build.sh", "tests/run.sh"] {
        std::fs::set_permissions(repo.join(script), std::fs::Permissions::from_mode(0o755))?;
    }
    git(repo, &["init", "--quiet", "--initial-branch=main"])?;
    git(repo, &["add", "."])?;
    git(
        repo,
        &[
            "-c",
            "user.name=bosun quickstart",
            "-c",
            "user.email=quickstart@bosun.invalid",
            "commit",
            "--quiet",
            "-m",
            "Demo project for bosun",
        ],
    )?;
    Ok(())
}
