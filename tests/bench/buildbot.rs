//! `--peer buildbot` (issue 16): measures 1–4 again on Buildbot, Debian's `buildbot` and
//! `buildbot-worker`, master and worker on loopback in the same run, each build started by a
//! change sent as `buildbot sendchange` sends it into a `SingleBranchScheduler` with no
//! tree-stable timer (one branch per builder), and watched through the master's REST API
//! (`/api/v2`).
//!
//! The changes are sent by the client `buildbot sendchange` runs
//! (`buildbot.clients.sendchange.Sender`), from one Python process for the whole measure that
//! answers each change with the moment the master acknowledged it (the change stored, as a
//! bosun trigger answers once its jobs are queued): timing from the `buildbot sendchange`
//! process's exit instead would start Buildbot's clock after its build had begun (Python's
//! teardown takes longer than the pickup), and timing from its start would charge Buildbot
//! the 400 ms of importing Twisted.
//!
//! The REST API is served by the master's `www` service, which needs the `buildbot-www` plugin
//! Debian does not package: the first run installs the release matching the master's version
//! from PyPI into `target/bench/buildbot-www` (a pure-Python wheel, no dependencies) and runs
//! the master with it on `PYTHONPATH`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bosun_tests::{Proc, free_listen_addr, shared_tempdir};
use serde_json::Value;

use crate::{Figure, Pauses, ms, percentile};

/// A Buildbot master and one worker, started for one measure and killed when dropped.
pub struct Buildbot {
    // Dropped first: the processes, then their directory.
    pub master: Proc,
    pub worker: Proc,
    api: bosun_api::Client,
    sender: Sender,
    dir: tempfile::TempDir,
}

/// One builder: its name (also the branch whose changes start it) and each step's argv.
pub struct Builder {
    pub name: &'static str,
    pub steps: Vec<Vec<String>>,
}

/// How often a build is polled while it runs: well under the figures measured (hundreds of
/// milliseconds), and rarely enough that the polling does not take the master's one core.
const POLL: Duration = Duration::from_millis(5);

impl Buildbot {
    /// Creates, configures and starts a master with `builders` and its worker, and waits until
    /// the worker is connected.
    pub async fn start(builders: &[Builder]) -> anyhow::Result<Buildbot> {
        let www_plugin = www_plugin()?;
        let dir = shared_tempdir();
        let master_dir = dir.path().join("master");
        let worker_dir = dir.path().join("worker");
        let pb = free_listen_addr();
        let www = free_listen_addr();
        run(Command::new("buildbot")
            .args(["create-master", "-q"])
            .arg(&master_dir))?;
        let builds = dir.path().join("builds.json");
        let steps: serde_json::Map<String, Value> = builders
            .iter()
            .map(|b| (b.name.to_owned(), serde_json::json!(b.steps)))
            .collect();
        std::fs::write(&builds, Value::Object(steps).to_string())?;
        std::fs::write(
            master_dir.join("master.cfg"),
            master_cfg(&builds, &pb, &www),
        )?;
        run(Command::new("buildbot-worker")
            .args(["create-worker", "-q"])
            .arg(&worker_dir)
            .args([pb.as_str(), "bench", "benchpass"]))?;
        let mut master = Command::new("buildbot");
        master
            .args(["start", "--nodaemon"])
            .arg(&master_dir)
            .env("PYTHONPATH", &www_plugin);
        let master = spawn(master, dir.path().join("master.out"))?;
        let api = bosun_api::Client::new(&format!("http://{www}/api/v2"))?;
        let started = Instant::now();
        while api
            .get::<Value>("/workers", &bosun_api::Auth::None)
            .await
            .is_err()
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the Buildbot master did not answer on {www} within 60 s: {}",
                tail(&master_dir.join("twistd.log"))
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The worker's environment is its steps' (and is printed at the head of every step's
        // log): only what a build needs.
        let mut worker = Command::new("buildbot-worker");
        worker
            .args(["start", "--nodaemon"])
            .arg(&worker_dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("LANG", "C.UTF-8");
        let worker = spawn(worker, dir.path().join("worker.out"))?;
        let sender = Sender::start(dir.path(), &pb)?;
        let bot = Buildbot {
            master,
            worker,
            api,
            sender,
            dir,
        };
        loop {
            let workers = bot.get("/workers/bench").await?;
            if workers["workers"][0]["connected_to"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
            {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(90),
                "the Buildbot worker did not connect within 90 s: {}",
                tail(&worker_dir.join("twistd.log"))
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(bot)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.api.get(path, &bosun_api::Auth::None).await?)
    }

    /// Sends a change on branch `builder` (starting a build of it); answers when the master
    /// acknowledged it.
    pub fn sendchange(&mut self, builder: &str) -> anyhow::Result<Instant> {
        self.sender.send(builder)
    }

    /// Build `number` of `builder` once it exists.
    async fn build(&self, builder: &str, number: u64, limit: Duration) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            if let Ok(answer) = self
                .get(&format!("/builders/{builder}/builds/{number}"))
                .await
            {
                if let Some(build) = answer["builds"].get(0) {
                    return Ok(build.clone());
                }
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "build {number} of {builder} did not start within {limit:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for build `number` of `builder` to end, polling every `poll`; fails unless it
    /// succeeded (results 0). Answers the build.
    pub async fn wait_build(
        &self,
        builder: &str,
        number: u64,
        poll: Duration,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let build = self.build(builder, number, limit).await?;
            if build["complete"] == Value::Bool(true) {
                anyhow::ensure!(
                    build["results"] == 0,
                    "build {number} of {builder} failed: {build}"
                );
                return Ok(build);
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "build {number} of {builder} did not end within {limit:?}"
            );
            tokio::time::sleep(poll).await;
        }
    }

    /// Waits until the stdio log of step `step` (its name) of build `number` of `builder`
    /// holds a line of the command's output (Buildbot's stdio lines start with `o` for stdout,
    /// `e` for stderr, `h` for its own header lines), and answers that line.
    pub async fn first_output(
        &self,
        builder: &str,
        number: u64,
        step: &str,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let started = Instant::now();
        let build = self.build(builder, number, limit).await?;
        let id = build["buildid"].as_u64().unwrap_or(0);
        loop {
            if let Ok(answer) = self
                .get(&format!("/builds/{id}/steps/{step}/logs/stdio/contents"))
                .await
            {
                let content = answer["logchunks"][0]["content"].as_str().unwrap_or("");
                if let Some(line) = content.lines().find(|l| l.starts_with('o')) {
                    return Ok(line[1..].to_owned());
                }
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "no output of step {step} of build {number} of {builder} within {limit:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The stdout lines step `step` of build `number` of `builder` logged: their count, the
    /// first and the last. A long log is read at its ends only (Buildbot answers a log's lines
    /// from one query held in memory): Buildbot writes its own lines (`h`) at a step's start
    /// and end, and the command's unfinished last line after them, so every line between the
    /// ends is the command's.
    pub async fn output_lines(
        &self,
        builder: &str,
        number: u64,
        step: &str,
    ) -> anyhow::Result<(u64, String, String)> {
        const END: u64 = 200;
        let build = self.build(builder, number, Duration::from_secs(5)).await?;
        let id = build["buildid"].as_u64().unwrap_or(0);
        let log = format!("/builds/{id}/steps/{step}/logs/stdio");
        let meta = self.get(&log).await?;
        let lines = meta["logs"][0]["num_lines"].as_u64().unwrap_or(0);
        let chunk = |offset: u64, limit: u64| {
            let path = format!("{log}/contents?offset={offset}&limit={limit}");
            async move {
                let answer = self.get(&path).await?;
                let chunk = &answer["logchunks"][0];
                let content = chunk["content"].as_str().unwrap_or("");
                let output: Vec<String> = content
                    .lines()
                    .filter_map(|l| l.strip_prefix('o'))
                    .map(str::to_owned)
                    .collect();
                // The line the answer starts at, and how many it holds.
                let from = chunk["firstline"].as_u64().unwrap_or(offset);
                anyhow::Ok((from, content.lines().count() as u64, output))
            }
        };
        let (count, first, last) = if lines <= 2 * END {
            let (_, _, all) = chunk(0, lines.max(1)).await?;
            (all.len() as u64, all.first().cloned(), all.last().cloned())
        } else {
            let (head_from, head_lines, head) = chunk(0, END).await?;
            let (tail_from, _, tail) = chunk(lines - END, END).await?;
            let middle = tail_from.saturating_sub(head_from + head_lines);
            (
                head.len() as u64 + middle + tail.len() as u64,
                head.first().cloned(),
                tail.last().cloned(),
            )
        };
        match (first, last) {
            (Some(first), Some(last)) => Ok((count, first, last)),
            _ => anyhow::bail!("no output in {log} ({lines} lines)"),
        }
    }
}

/// The client of `buildbot sendchange`, reading branches on stdin and answering each with the
/// wall-clock time at which the master acknowledged its change.
const SENDER: &str = r#"import sys, threading, time
from twisted.internet import reactor, threads
from buildbot.clients.sendchange import Sender

sender = Sender(sys.argv[1], auth=('change', 'changepw'))
threading.Thread(target=reactor.run, kwargs={'installSignalHandlers': False}, daemon=True).start()
for line in sys.stdin:
    threads.blockingCallFromThread(
        reactor, sender.send, line.strip(), '0123456789abcdef0123456789abcdef01234567',
        'bench', ['bench.txt'], who='bench', vc='git')
    print(repr(time.time()), flush=True)
"#;

/// The running [`SENDER`].
struct Sender {
    proc: Proc,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Sender {
    fn start(dir: &Path, pb: &str) -> anyhow::Result<Sender> {
        let script = dir.join("sendchange.py");
        std::fs::write(&script, SENDER)?;
        let log = dir.join("sendchange.out");
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(pb)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|err| anyhow::anyhow!("starting {}: {err}", script.display()))?;
        let input = child.stdin.take().expect("piped stdin");
        let output = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(Sender {
            proc: Proc { child, log },
            input,
            output,
        })
    }

    fn send(&mut self, branch: &str) -> anyhow::Result<Instant> {
        use std::io::{BufRead, Write};
        writeln!(self.input, "{branch}")?;
        self.input.flush()?;
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let acked: f64 = line.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "sending a change to Buildbot failed: {}",
                tail(&self.proc.log)
            )
        })?;
        let acked = std::time::UNIX_EPOCH + Duration::from_secs_f64(acked);
        Ok(now - wall.duration_since(acked).unwrap_or_default())
    }
}

/// `master.cfg`: the builders of `builds` (a JSON file: name -> each step's argv); one worker; a PB change source; per builder, a scheduler taking that
/// branch's changes at once (no tree-stable timer) and a factory of `ShellCommand`s; the REST
/// API on `www`; no usage reporting (there is no network here).
fn master_cfg(builds: &Path, pb: &str, www: &str) -> String {
    let port = |addr: &str| addr.rsplit(':').next().unwrap_or("0").to_owned();
    format!(
        r#"import json
from buildbot.plugins import changes, schedulers, steps, util, worker

with open({builds}) as f:
    BUILDS = json.load(f)
c = BuildmasterConfig = {{}}
c['buildbotNetUsageData'] = None
c['title'] = 'bosun bench'
c['buildbotURL'] = 'http://{www}/'
c['db'] = {{'db_url': 'sqlite:///state.sqlite'}}
c['workers'] = [worker.Worker('bench', 'benchpass', max_builds=1)]
c['protocols'] = {{'pb': {{'port': 'tcp:{pb_port}:interface=127.0.0.1'}}}}
c['change_source'] = [changes.PBChangeSource(user='change', passwd='changepw')]
c['www'] = {{'port': 'tcp:{www_port}:interface=127.0.0.1', 'plugins': {{}}}}
c['schedulers'] = [
    schedulers.SingleBranchScheduler(
        name=name, change_filter=util.ChangeFilter(branch=name),
        treeStableTimer=None, builderNames=[name])
    for name in BUILDS
]
c['builders'] = []
for name, commands in BUILDS.items():
    factory = util.BuildFactory()
    for i, command in enumerate(commands):
        factory.addStep(steps.ShellCommand(name='step%d' % i, command=command))
    c['builders'].append(util.BuilderConfig(name=name, workernames=['bench'], factory=factory))
"#,
        // A JSON string is a Python string literal.
        builds = Value::String(builds.display().to_string()),
        pb_port = port(pb),
        www_port = port(www),
    )
}

/// The directory holding the `buildbot-www` plugin matching the installed master, installed
/// there from PyPI on first use. Fails, saying how to install it, when Buildbot is missing.
fn www_plugin() -> anyhow::Result<PathBuf> {
    let version = Command::new("buildbot")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("Buildbot version:"))
                .map(|v| v.trim().to_owned())
        });
    let Some(version) = version else {
        anyhow::bail!(
            "--peer buildbot needs Buildbot: apt-get install buildbot buildbot-worker (Debian's, 3.7 on bookworm)"
        );
    };
    anyhow::ensure!(
        Command::new("buildbot-worker")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "--peer buildbot needs the Buildbot worker: apt-get install buildbot-worker"
    );
    // Debian's `3.7.0-2` (or `3.7.0.post2`) is PyPI's 3.7.0.
    let upstream: String = version
        .split(['-', '+'])
        .next()
        .unwrap_or(&version)
        .split(".post")
        .next()
        .unwrap_or(&version)
        .to_owned();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench/buildbot-www")
        .join(&upstream);
    if dir.join("buildbot_www").is_dir() {
        return Ok(dir);
    }
    eprintln!(
        "bench: installing buildbot-www {upstream} from PyPI into {}",
        dir.display()
    );
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
        .arg(&partial)
        .arg(format!("buildbot-www=={upstream}")))
    .map_err(|err| {
        anyhow::anyhow!(
            "{err:#}\nthe Buildbot master serves its REST API only with buildbot-www {upstream}: \
             python3 -m pip install --no-deps --target {} buildbot-www=={upstream}",
            dir.display()
        )
    })?;
    std::fs::rename(&partial, &dir)?;
    Ok(dir)
}

/// Runs `command` to its end; fails with its output unless it exits 0.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|err| anyhow::anyhow!("running {command:?}: {err}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn spawn(mut command: Command, log: PathBuf) -> anyhow::Result<Proc> {
    let file = std::fs::File::create(&log)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map_err(|err| anyhow::anyhow!("starting {command:?}: {err}"))?;
    Ok(Proc { child, log })
}

/// The last lines of a log file, for an error.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// bosun's figure `name`, measured earlier in this run.
fn bosun(figures: &[Figure], name: &str) -> anyhow::Result<f64> {
    figures
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.figure)
        .ok_or_else(|| anyhow::anyhow!("bosun's `{name}` was not measured in this run"))
}

/// `pickup` on Buildbot: `sendchange` answered -> the first line of the step's output in the
/// master's log, one build at a time with the worker idle (after one build), at the same
/// uneven pauses as bosun's.
pub async fn pickup(quick: bool, measured: &[Figure]) -> anyhow::Result<Vec<Figure>> {
    let runs = if quick { 20 } else { 200 };
    let mut bot = Buildbot::start(&[Builder {
        name: "pickup",
        steps: vec![argv(&["bash", "-c", "echo picked-up"])],
    }])
    .await?;
    bot.sendchange("pickup")?;
    bot.wait_build("pickup", 1, POLL, Duration::from_secs(60))
        .await?;
    let mut took = Vec::with_capacity(runs);
    let mut pauses = Pauses::default();
    for number in 2..=runs as u64 + 1 {
        tokio::time::sleep(pauses.next()).await;
        let sent = bot.sendchange("pickup")?;
        let line = bot
            .first_output("pickup", number, "step0", Duration::from_secs(30))
            .await?;
        took.push(ms(sent.elapsed()));
        anyhow::ensure!(line == "picked-up", "build {number} printed {line:?}");
        bot.wait_build("pickup", number, POLL, Duration::from_secs(60))
            .await?;
    }
    took.sort_by(f64::total_cmp);
    let mut figures = Vec::new();
    for p in [50.0, 99.0] {
        figures.push(
            Figure::new(
                format!("pickup p{p} vs buildbot"),
                bosun(measured, &format!("pickup p{p}"))?,
                "ms",
            )
            .baseline(percentile(&took, p))
            .at_most_baseline(),
        );
    }
    Ok(figures)
}

/// `step-overhead` on Buildbot: a build of N `true` steps against a build of one, from
/// `sendchange` answered to the build's end, over N - 1 steps, less `bash -c true`'s cost.
pub async fn step_overhead(quick: bool, measured: &[Figure]) -> anyhow::Result<Vec<Figure>> {
    let (steps, repeats) = crate::step_overhead_size(quick);
    let mut bot = Buildbot::start(&[
        Builder {
            name: "one",
            steps: vec![argv(&["true"])],
        },
        Builder {
            name: "many",
            steps: vec![argv(&["true"]); steps],
        },
    ])
    .await?;
    // A poll every 20 ms: at most 0.1 ms of error a step over 199.
    let poll = Duration::from_millis(20);
    let mut best = [Duration::MAX; 2];
    for number in 1..=repeats as u64 + 1 {
        for (i, builder) in ["one", "many"].into_iter().enumerate() {
            let sent = bot.sendchange(builder)?;
            let build = bot
                .wait_build(builder, number, poll, Duration::from_secs(600))
                .await?;
            // The first build of each warms the worker up.
            if number > 1 {
                best[i] = best[i].min(sent.elapsed());
            }
            let id = build["buildid"].as_u64().unwrap_or(0);
            let ran = bot.get(&format!("/builds/{id}/steps")).await?["steps"]
                .as_array()
                .map_or(0, |s| {
                    s.iter()
                        .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("step")))
                        .filter(|s| s["results"] == 0)
                        .count()
                });
            let want = if builder == "one" { 1 } else { steps };
            anyhow::ensure!(
                ran == want,
                "build {number} of {builder} ran {ran} of {want} steps"
            );
        }
    }
    let per_step = ms(best[1].saturating_sub(best[0])) / (steps - 1) as f64;
    let bare = crate::bare_true_per_step(steps, repeats)?;
    Ok(vec![
        Figure::new(
            "step-overhead per step vs buildbot",
            bosun(measured, "step-overhead per step")?,
            "ms",
        )
        .baseline(per_step - bare)
        .at_most_baseline(),
    ])
}

/// `log-throughput` on Buildbot: the same step printing 1 GiB (64 MiB with `--quick`), from
/// `sendchange` answered to the build's end, against the command writing to /dev/null; once
/// (Buildbot takes minutes). Checked: the log holds exactly the command's lines, first and
/// last as printed. Peak memory of master and worker against bosun's three processes; the
/// master's database growth against bosun's stored log.
pub async fn log_throughput(quick: bool, measured: &[Figure]) -> anyhow::Result<Vec<Figure>> {
    let (bytes, generator) = crate::log_generator(quick);
    let expected = crate::shell(&format!(
        "set +o pipefail; {generator} | awk 'NR == 1 {{ f = $0 }} {{ l = $0 }} END {{ print NR; print f; print l }}'"
    ))?;
    let mut expected = expected.lines();
    let lines: u64 = expected.next().unwrap_or("").parse()?;
    let (first, last) = (
        expected.next().unwrap_or("").to_owned(),
        expected.next().unwrap_or("").to_owned(),
    );
    let bare = crate::best_wall(&format!("set +o pipefail; {generator} > /dev/null"), 3)?;
    let mut bot = Buildbot::start(&[
        Builder {
            name: "warm",
            steps: vec![argv(&["true"])],
        },
        Builder {
            name: "log",
            steps: vec![argv(&["bash", "-c", &generator])],
        },
    ])
    .await?;
    bot.sendchange("warm")?;
    bot.wait_build("warm", 1, POLL, Duration::from_secs(60))
        .await?;
    let database = bot.dir.path().join("master/state.sqlite");
    let db_size = || {
        ["", "-wal", "-journal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", database.display())).ok())
            .map(|m| m.len())
            .sum::<u64>()
    };
    let db_before = db_size();
    let sent = bot.sendchange("log")?;
    bot.wait_build(
        "log",
        1,
        Duration::from_millis(100),
        Duration::from_secs(3600),
    )
    .await?;
    let wall = sent.elapsed();
    let (logged, logged_first, logged_last) = bot.output_lines("log", 1, "step0").await?;
    anyhow::ensure!(
        (logged, logged_first.as_str(), logged_last.as_str())
            == (lines, first.as_str(), last.as_str()),
        "Buildbot logged {logged} lines from {logged_first:?} to {logged_last:?}, the command printed {lines} from {first:?} to {last:?}"
    );
    let stored = db_size().saturating_sub(db_before);
    let peak = |pid: i32| crate::status_kib(pid, "VmHWM:").map(|k| k as f64 / 1024.0);
    let buildbot_peak = peak(bot.master.pid())? + peak(bot.worker.pid())?;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let bosun_peak = bosun(measured, "log-throughput launch-agent peak RSS")?
        + bosun(measured, "log-throughput task-agent peak RSS")?
        + bosun(measured, "log-throughput server peak RSS")?;
    Ok(vec![
        Figure::new(
            format!("log-throughput {gib} GiB wall vs buildbot"),
            bosun(measured, &format!("log-throughput {gib} GiB wall"))?,
            "ms",
        )
        .baseline(ms(wall))
        .at_most_baseline(),
        Figure::new("log-throughput buildbot wall vs bare", ms(wall), "ms").baseline(ms(bare)),
        Figure::new("log-throughput peak RSS vs buildbot", bosun_peak, "MiB")
            .baseline(buildbot_peak)
            .at_most_baseline(),
        Figure::new(
            "log-throughput stored size vs buildbot",
            bosun(measured, "log-throughput stored size")?,
            "MiB",
        )
        .baseline(stored as f64 / (1 << 20) as f64)
        .at_most_baseline(),
    ])
}

/// `idle` on Buildbot: the worker's memory and CPU over 60 s (20 s with `--quick`) after one
/// build, against the launch-agent's; the master's memory beside.
pub async fn idle(quick: bool, measured: &[Figure]) -> anyhow::Result<Vec<Figure>> {
    let seconds = crate::idle_seconds(quick);
    let mut bot = Buildbot::start(&[Builder {
        name: "warm",
        steps: vec![argv(&["true"])],
    }])
    .await?;
    bot.sendchange("warm")?;
    bot.wait_build("warm", 1, POLL, Duration::from_secs(60))
        .await?;
    let pid = bot.worker.pid();
    let before = crate::cpu_seconds(pid)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = 100.0 * (crate::cpu_seconds(pid)? - before) / started.elapsed().as_secs_f64();
    let rss = crate::status_kib(pid, "VmRSS:")? as f64 / 1024.0;
    let master = crate::status_kib(bot.master.pid(), "VmRSS:")? as f64 / 1024.0;
    Ok(vec![
        Figure::new(
            "idle RSS vs buildbot worker",
            bosun(measured, "idle launch-agent RSS")?,
            "MiB",
        )
        .baseline(rss)
        .at_most_baseline(),
        Figure::new(
            "idle CPU vs buildbot worker",
            bosun(measured, "idle launch-agent CPU")?,
            "%",
        )
        .baseline(cpu)
        .at_most_baseline(),
        Figure::new("idle buildbot master RSS", master, "MiB"),
    ])
}
