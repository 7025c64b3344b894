//! `bosun-bench`: bosun's speed measured from outside, beside a baseline measured in the same
//! run (issue 16). `cargo xtask bench [NAME...] [--quick]` builds the release binaries and runs
//! this with `BOSUN_TEST_BIN_DIR` naming them; it prints one table and writes
//! `target/bench/results.json`.
//!
//! Measures (design §9 has the budgets): `pickup`, `step-overhead`, `log-throughput`, `idle`,
//! `cache`, `server-claims`, `config`; with `--peer buildbot`, the first four again on Buildbot
//! (buildbot.rs), each reported as bosun's figure over Buildbot's.
//! Each checks its own answer (every job succeeded, every log byte arrived), so a fast wrong
//! run cannot pass.

mod buildbot;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun_tests::{AgentOptions, Proc, Server, git_repo, launch_agent, shared_tempdir};

/// One figure of a measure.
struct Figure {
    name: String,
    figure: f64,
    unit: &'static str,
    baseline: Option<f64>,
    /// `< 50` style: the figure must be below (or, with `>=`, at least) the budget.
    budget: Option<Budget>,
}

#[derive(Clone, Copy)]
enum Budget {
    Below(f64),
    /// The ratio to the baseline must be below this.
    RatioBelow(f64),
    /// The figure must not exceed the baseline (a peer's figure: bosun must stay ahead).
    AtMostBaseline,
}

impl Budget {
    fn text(self) -> String {
        match self {
            Budget::Below(b) => format!("< {b}"),
            Budget::RatioBelow(r) => format!("< {r}x"),
            Budget::AtMostBaseline => "<= peer".to_owned(),
        }
    }
}

impl Figure {
    fn new(name: impl Into<String>, figure: f64, unit: &'static str) -> Figure {
        Figure {
            name: name.into(),
            figure,
            unit,
            baseline: None,
            budget: None,
        }
    }

    fn baseline(mut self, baseline: f64) -> Figure {
        self.baseline = Some(baseline);
        self
    }

    fn below(mut self, budget: f64) -> Figure {
        self.budget = Some(Budget::Below(budget));
        self
    }

    fn ratio_below(mut self, budget: f64) -> Figure {
        self.budget = Some(Budget::RatioBelow(budget));
        self
    }

    fn at_most_baseline(mut self) -> Figure {
        self.budget = Some(Budget::AtMostBaseline);
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.figure / b)
    }

    fn pass(&self) -> Option<bool> {
        self.budget.map(|budget| match budget {
            Budget::Below(b) => self.figure < b,
            Budget::RatioBelow(r) => self.ratio().is_some_and(|ratio| ratio < r),
            Budget::AtMostBaseline => self.baseline.is_some_and(|b| self.figure <= b),
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "figure": round(self.figure),
            "unit": self.unit,
            "baseline": self.baseline.map(round),
            "ratio": self.ratio().map(round),
            "budget": self.budget.map(Budget::text),
            "pass": self.pass(),
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const MEASURES: &[&str] = &[
    "pickup",
    "step-overhead",
    "log-throughput",
    "idle",
    "cache",
    "server-claims",
    "config",
];

/// The measures `--peer buildbot` runs again on Buildbot.
const PEER_MEASURES: &[&str] = &["pickup", "step-overhead", "log-throughput", "idle"];

fn main() -> std::process::ExitCode {
    if std::env::var_os("BOSUN_TEST_BIN_DIR").is_none() {
        return usage(
            "BOSUN_TEST_BIN_DIR must name the release binaries (`cargo xtask bench` sets it)",
        );
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut out_file = PathBuf::from("target/bench/results.json");
    let mut names: Vec<String> = Vec::new();
    let mut runners: Option<usize> = None;
    let mut peer = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => {}
            "--runners" => match iter.next().and_then(|n| n.parse::<usize>().ok()) {
                Some(n) if (1..=50_000).contains(&n) => runners = Some(n),
                _ => return usage("--runners needs a number of runners, 1 to 50000"),
            },
            "--peer" => match iter.next().map(String::as_str) {
                Some("buildbot") => peer = true,
                _ => return usage("--peer names the peer to measure beside bosun: buildbot"),
            },
            "--out" => match iter.next() {
                Some(path) => out_file = PathBuf::from(path),
                None => return usage("--out needs a file"),
            },
            name if MEASURES.contains(&name) => names.push(name.to_owned()),
            other => return usage(&format!("unknown measure or flag `{other}`")),
        }
    }
    if names.is_empty() {
        names = MEASURES.iter().map(|s| (*s).to_owned()).collect();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut figures = Vec::new();
    for name in &names {
        let started = Instant::now();
        eprintln!("bench: {name}{} ...", if quick { " (quick)" } else { "" });
        let result = match name.as_str() {
            "pickup" => runtime.block_on(pickup(quick)),
            "step-overhead" => runtime.block_on(step_overhead(quick)),
            "log-throughput" => runtime.block_on(async {
                let mut figures = log_throughput(quick, 0).await?;
                figures.append(&mut log_throughput(quick, SECRETS).await?);
                Ok(figures)
            }),
            "idle" => runtime.block_on(idle(quick)),
            "cache" => runtime.block_on(cache(quick)),
            "server-claims" => runtime.block_on(server_claims(quick, runners)),
            "config" => config(quick),
            _ => unreachable!("checked above"),
        };
        match result {
            Ok(mut measured) => figures.append(&mut measured),
            Err(err) => {
                eprintln!("bench: {name} failed: {err:#}");
                return std::process::ExitCode::from(1);
            }
        }
        eprintln!(
            "bench: {name} took {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    // The peer after bosun, so each comparison has bosun's figure of this run.
    for name in names
        .iter()
        .filter(|n| peer && PEER_MEASURES.contains(&n.as_str()))
    {
        let started = Instant::now();
        eprintln!(
            "bench: {name} on buildbot{} ...",
            if quick { " (quick)" } else { "" }
        );
        let result = match name.as_str() {
            "pickup" => runtime.block_on(buildbot::pickup(quick, &figures)),
            "step-overhead" => runtime.block_on(buildbot::step_overhead(quick, &figures)),
            "log-throughput" => runtime.block_on(buildbot::log_throughput(quick, &figures)),
            "idle" => runtime.block_on(buildbot::idle(quick, &figures)),
            _ => unreachable!("PEER_MEASURES"),
        };
        match result {
            Ok(mut measured) => figures.append(&mut measured),
            Err(err) => {
                eprintln!("bench: {name} on buildbot failed: {err:#}");
                return std::process::ExitCode::from(1);
            }
        }
        eprintln!(
            "bench: {name} on buildbot took {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    print!("{}", table(&figures));
    let json = serde_json::json!({
        "machine": machine(),
        "quick": quick,
        "measures": figures.iter().map(Figure::json).collect::<Vec<_>>(),
    });
    if let Some(dir) = out_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(err) = std::fs::write(
        &out_file,
        serde_json::to_string_pretty(&json).unwrap_or_default() + "\n",
    ) {
        eprintln!("bench: writing {}: {err}", out_file.display());
        return std::process::ExitCode::from(1);
    }
    eprintln!("bench: wrote {}", out_file.display());
    std::process::ExitCode::SUCCESS
}

fn usage(why: &str) -> std::process::ExitCode {
    eprintln!(
        "bosun-bench: {why}\nusage: bosun-bench [{}...] [--quick] [--runners N] [--peer buildbot] [--out FILE]",
        MEASURES.join("|")
    );
    std::process::ExitCode::from(2)
}

fn table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<48} {:>12} {:<6} {:>12} {:>8} {:>10} {:>5}\n",
        "measure", "bosun", "unit", "baseline", "ratio", "budget", ""
    );
    for f in figures {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<48} {:>12.3} {:<6} {:>12} {:>8} {:>10} {:>5}\n",
            f.name,
            f.figure,
            f.unit,
            opt(f.baseline),
            opt(f.ratio()),
            f.budget.map(Budget::text).unwrap_or_else(|| "-".into()),
            match f.pass() {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "",
            }
        ));
    }
    out
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    serde_json::json!({
        "cpu": cpu,
        "cores": cores,
        "memory_mib": memory_kib / 1024,
        "kernel": kernel,
        "arch": std::env::consts::ARCH,
        "binaries": bosun_tests::bin_dir().display().to_string(),
    })
}

/// A server, one resource class with an idle launch-agent, and a project whose config is
/// `config`.
struct Rig {
    _dir: tempfile::TempDir,
    server: Server,
    agent: Proc,
    slug: String,
}

const CLASS: &str = "bench/runner";

async fn rig(config: &str) -> Rig {
    rig_with(config, &[], AgentOptions::default()).await
}

/// [`rig`] with more files in the project's repository and these agent options.
async fn rig_with(config: &str, files: &[(&str, &str)], options: AgentOptions) -> Rig {
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let agent = launch_agent(&server, &token, dir.path(), "bench", options);
    let mut all = vec![(".circleci/config.yml", config)];
    all.extend_from_slice(files);
    let repo = git_repo(dir.path(), &all);
    let slug = "local/bench/repo".to_owned();
    server.project(&slug, &repo).await;
    Rig {
        _dir: dir,
        server,
        agent,
        slug,
    }
}

fn job_config(steps: &[&str]) -> String {
    let mut config = format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {CLASS}\n    steps:\n"
    );
    for step in steps {
        config.push_str(&format!("      - run: {step}\n"));
    }
    config.push_str("workflows:\n  main:\n    jobs: [build]\n");
    config
}

/// Waits until the agent has claimed once and is idle again (its first long-poll is open).
async fn warm_up(rig: &Rig) -> anyhow::Result<()> {
    let pipeline = rig.server.trigger(&rig.slug, "main").await;
    let job = rig.server.job_id(&pipeline, "build").await;
    let detail = rig.server.wait_job(&job, Duration::from_secs(60)).await;
    anyhow::ensure!(detail.status == "success", "warm-up job: {detail:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// `pickup`: enqueue (the trigger answered) -> the first byte of the first step's output stored
/// at the server, one
/// pipeline at a time with the agent idle and long-polling. Baseline: the same pipelines with
/// the claim made at the next tick of a 3 s poll (GitLab Runner's default check interval)
/// counted from the agent's start, that is this run's figure plus the wait for that tick.
async fn pickup(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let runs = if quick { 20 } else { 200 };
    let rig = rig(&job_config(&["echo picked-up"])).await;
    warm_up(&rig).await?;
    let agent_start = Instant::now();
    let mut bosun = Vec::with_capacity(runs);
    let mut polled = Vec::with_capacity(runs);
    let mut triggers = Vec::with_capacity(runs);
    let mut pauses = Pauses::default();
    for _ in 0..runs {
        tokio::time::sleep(pauses.next()).await;
        let asked = Instant::now();
        let pipeline = rig.server.trigger(&rig.slug, "main").await;
        // The trigger has answered: the job is queued.
        let triggered = Instant::now();
        triggers.push(ms(triggered - asked));
        let job = rig.server.job_id(&pipeline, "build").await;
        let first_byte = loop {
            let detail = rig.server.job(&job).await;
            if detail.steps.first().is_some_and(|s| s.log_length > 0) {
                break triggered.elapsed();
            }
            anyhow::ensure!(
                triggered.elapsed() < Duration::from_secs(30),
                "no output of job {job} after 30 s ({detail:?})"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let detail = rig.server.wait_job(&job, Duration::from_secs(60)).await;
        anyhow::ensure!(detail.status == "success", "job {job}: {detail:?}");
        let log = rig.server.step_log(&job, 0).await;
        anyhow::ensure!(log == b"picked-up\n", "job {job} logged {log:?}");
        let phase = (triggered - agent_start).as_secs_f64() % 3.0;
        bosun.push(ms(first_byte));
        polled.push(ms(first_byte) + (3.0 - phase) * 1000.0);
    }
    drop(rig.agent);
    bosun.sort_by(f64::total_cmp);
    polled.sort_by(f64::total_cmp);
    triggers.sort_by(f64::total_cmp);
    Ok(vec![
        Figure::new("pickup p50", percentile(&bosun, 50.0), "ms")
            .baseline(percentile(&polled, 50.0))
            .below(50.0),
        Figure::new("pickup p99", percentile(&bosun, 99.0), "ms")
            .baseline(percentile(&polled, 99.0))
            .below(200.0),
        Figure::new("pickup trigger p50", percentile(&triggers, 50.0), "ms"),
    ])
}

/// Pauses of 20 to 220 ms between triggers, the same sequence every run: triggers at uneven
/// moments, as users make them, so a poll baseline samples every phase.
struct Pauses(u64);

impl Default for Pauses {
    fn default() -> Pauses {
        Pauses(0x9E37_79B9_7F4A_7C15)
    }
}

impl Pauses {
    fn next(&mut self) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(20 + self.0 % 200)
    }
}

/// Steps of the long job and repeats of `step-overhead`.
fn step_overhead_size(quick: bool) -> (usize, usize) {
    if quick { (50, 2) } else { (200, 5) }
}

/// What `bash -c true` costs, run `steps` times in a shell loop, best of `repeats`, per run.
fn bare_true_per_step(steps: usize, repeats: usize) -> anyhow::Result<f64> {
    let mut bare = Duration::MAX;
    for _ in 0..repeats {
        let started = Instant::now();
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("for i in $(seq {steps}); do bash -c true; done"))
            .status()?;
        anyhow::ensure!(status.success(), "the baseline loop failed");
        bare = bare.min(started.elapsed());
    }
    Ok(ms(bare) / steps as f64)
}

/// `step-overhead`: what one `run: true` step costs beyond `bash -c true`. A job of N steps
/// against a job of one, timed from trigger to the job's end (the same pipeline cost in both),
/// over N - 1 steps; the baseline is `bash -c true` run N times in a shell loop.
async fn step_overhead(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let (steps, repeats) = step_overhead_size(quick);
    let many: Vec<&str> = vec!["true"; steps];
    let wall = |config: String| async move {
        let rig = rig(&config).await;
        warm_up(&rig).await?;
        let mut best = Duration::MAX;
        for _ in 0..repeats {
            let started = Instant::now();
            let pipeline = rig.server.trigger(&rig.slug, "main").await;
            let job = rig.server.job_id(&pipeline, "build").await;
            let detail = rig.server.wait_job(&job, Duration::from_secs(300)).await;
            let took = started.elapsed();
            anyhow::ensure!(detail.status == "success", "job {job}: {detail:?}");
            anyhow::ensure!(
                detail
                    .steps
                    .iter()
                    .filter(|s| s.status == "success")
                    .count()
                    >= config.matches("- run:").count(),
                "job {job} ran {} steps",
                detail.steps.len()
            );
            best = best.min(took);
        }
        Ok::<Duration, anyhow::Error>(best)
    };
    let one = wall(job_config(&["true"])).await?;
    let all = wall(job_config(&many)).await?;
    let per_step = ms(all.saturating_sub(one)) / (steps - 1) as f64;
    // The baseline: the same number of `bash -c true`, one after another.
    let bare_per_step = bare_true_per_step(steps, repeats)?;
    Ok(vec![
        Figure::new("step-overhead per step", per_step - bare_per_step, "ms").below(1.0),
        Figure::new("step-overhead step wall", per_step, "ms").baseline(bare_per_step),
    ])
}

/// `idle`: the launch-agent's memory and CPU while it waits for work (after one job, so it
/// has done everything once).
async fn idle(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let seconds = idle_seconds(quick);
    let rig = rig(&job_config(&["true"])).await;
    warm_up(&rig).await?;
    let pid = rig.agent.pid();
    let before = cpu_seconds(pid)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu_percent = 100.0 * (cpu_seconds(pid)? - before) / started.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS:")? as f64 / 1024.0;
    let hwm = status_kib(pid, "VmHWM:")? as f64 / 1024.0;
    Ok(vec![
        Figure::new("idle launch-agent RSS", rss, "MiB").below(8.0),
        Figure::new("idle launch-agent peak RSS", hwm, "MiB"),
        Figure::new("idle launch-agent CPU", cpu_percent, "%").below(0.1),
    ])
}

/// How long `idle` watches.
fn idle_seconds(quick: bool) -> u64 {
    if quick { 20 } else { 60 }
}

fn status_kib(pid: i32, field: &str) -> anyhow::Result<u64> {
    bosun_tests::proc_status_kib(pid, field)
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))
}

/// `config`: compile time of every corpus config, in process (the compiler the server runs),
/// its total and the largest file's.
fn config(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("the corpus is missing: {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no config in {}", dir.display());
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            std::fs::read_to_string(p).map(|t| (name, t))
        })
        .collect::<Result<_, _>>()?;
    let rounds = if quick { 3 } else { 20 };
    let mut total = Duration::MAX;
    let mut compiled = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        compiled = 0;
        for (name, text) in &texts {
            if bosun_config::compile(text, name).is_ok() {
                compiled += 1;
            }
        }
        total = total.min(started.elapsed());
    }
    let (name, largest) = texts
        .iter()
        .max_by_key(|(_, t)| t.len())
        .map(|(n, t)| (n.clone(), t.clone()))
        .unwrap_or_default();
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        let _ = bosun_config::compile(&largest, &name);
        best = best.min(started.elapsed());
    }
    eprintln!(
        "bench: config: {} corpus files, {compiled} compile without a registry; largest {name} ({} bytes)",
        texts.len(),
        largest.len()
    );
    Ok(vec![
        Figure::new(
            format!("config total ({} files)", texts.len()),
            ms(total),
            "ms",
        ),
        Figure::new(format!("config largest ({name})"), ms(best), "ms"),
    ])
}

/// A config of one job `build` whose steps are `run` steps with these commands (block scalars,
/// so a command may hold any character).
fn job_config_block(steps: &[(&str, &str)]) -> String {
    let mut config = format!(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    resource_class: {CLASS}\n    steps:\n"
    );
    for (name, command) in steps {
        config.push_str(&format!(
            "      - run:\n          name: {name}\n          command: |\n"
        ));
        for line in command.lines() {
            config.push_str(&format!("            {line}\n"));
        }
    }
    config.push_str("workflows:\n  main:\n    jobs: [build]\n");
    config
}

/// Runs `script` with `bash -c`, its stdout captured; fails unless it exits 0.
fn shell(script: &str) -> anyhow::Result<String> {
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "`{script}` failed ({})",
        output.status
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The shortest wall time of `repeats` runs of `script`.
fn best_wall(script: &str, repeats: usize) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..repeats {
        let started = Instant::now();
        shell(script)?;
        best = best.min(started.elapsed());
    }
    Ok(best)
}

/// The `VmHWM` a step printed (`grep VmHWM /proc/$PPID/status`), in MiB.
fn printed_peak_mib(log: &[u8]) -> anyhow::Result<f64> {
    String::from_utf8_lossy(log)
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| anyhow::anyhow!("no VmHWM line in {:?}", String::from_utf8_lossy(log)))
}

/// The step that prints the task-agent's peak memory: the step's shell is its child.
const TASK_AGENT_PEAK: &str =
    "test \"$(cat /proc/$PPID/comm)\" = task-agent\ngrep VmHWM /proc/$PPID/status";

/// Bytes of the files under `dir`, recursively.
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_bytes(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The bytes `log-throughput` prints, 1 GiB (64 MiB with `--quick`), and the command printing
/// them: about 75 bytes a line, numbered, so the log is text that compresses as real logs do
/// (not one repeated line). `seq` writes it at about 350 MB/s here: a far chattier step than
/// any real build. (`head` ends the pipe early: run it without `pipefail`.)
fn log_generator(quick: bool) -> (u64, String) {
    let bytes: u64 = if quick { 64 << 20 } else { 1 << 30 };
    let generator = format!(
        "seq -f 'bosun bench line %.0f: compiling src/module.rs (release) ... ok' 1 {} | head -c {bytes}",
        bytes / 40
    );
    (bytes, generator)
}

/// How many masked secrets `log-throughput`'s second run has.
const SECRETS: usize = 100;

/// `log-throughput`: a step printing 1 GiB (64 MiB with `--quick`) of build-log-like lines
/// against the same command writing to /dev/null, wall from the trigger to the job's end (so
/// every byte is stored when the clock stops). The stored log is read back through the API and
/// its SHA-256 compared with the command's; its size at rest is compared with gzip's of the
/// same bytes; peak memory (VmHWM) of the launch-agent, the task-agent and the server. With
/// `secrets`, the project has that many secret variables (32 characters each, none in the
/// output: the hash shows nothing was masked that should not be), so the task-agent masks
/// every byte against them and their encoded forms; the figures' names say `N secrets`.
async fn log_throughput(quick: bool, secrets: usize) -> anyhow::Result<Vec<Figure>> {
    use sha2::Digest;
    let (bytes, generator) = log_generator(quick);
    let repeats = if quick { 2 } else { 5 };
    // `head` ends the pipe early: its status is the pipe's.
    let command = format!("set +o pipefail\n{generator}");
    let expected = shell(&format!("set +o pipefail; {generator} | sha256sum"))?;
    let expected = expected.split_whitespace().next().unwrap_or("").to_owned();
    let gzip_size: u64 = shell(&format!("set +o pipefail; {generator} | gzip -c | wc -c"))?
        .trim()
        .parse()?;
    let bare_script = format!("set +o pipefail; {generator} > /dev/null");
    let mut bare = Duration::MAX;

    let rig = rig(&job_config_block(&[
        ("print", &command),
        ("task-agent peak", TASK_AGENT_PEAK),
    ]))
    .await;
    for i in 0..secrets {
        rig.server
            .client
            .set_project_env(
                &rig.server.admin,
                &rig.slug,
                &bosun_api::types::CreateEnvVar {
                    name: format!("BENCH_SECRET_{i}"),
                    value: bosun_tests::secret_value(i as u64 + 1),
                },
            )
            .await?;
    }
    warm_up(&rig).await?;
    let mut best = Duration::MAX;
    let mut task_agent_peak = 0.0f64;
    let mut stored_size = 0;
    // CPU seconds of the server and the launch-agent while the job ran, summed over the runs.
    let (mut server_cpu, mut agent_cpu) = (0.0, 0.0);
    for _ in 0..repeats {
        // The bare command just before each job, so both see the same machine (its noise
        // here is larger than the difference measured).
        bare = bare.min(best_wall(&bare_script, 1)?);
        let logs_before = tree_bytes(&rig.server.data_dir.join("blobs/logs"));
        let cpu_before = (
            cpu_seconds(rig.server.proc.pid())?,
            cpu_seconds(rig.agent.pid())?,
        );
        let started = Instant::now();
        let pipeline = rig.server.trigger(&rig.slug, "main").await;
        let job = rig.server.job_id(&pipeline, "build").await;
        let detail = rig.server.wait_job(&job, Duration::from_secs(600)).await;
        let took = started.elapsed();
        server_cpu += cpu_seconds(rig.server.proc.pid())? - cpu_before.0;
        agent_cpu += cpu_seconds(rig.agent.pid())? - cpu_before.1;
        anyhow::ensure!(detail.status == "success", "job {job}: {detail:?}");
        anyhow::ensure!(
            detail.steps.first().map(|s| s.log_length) == Some(bytes),
            "job {job} stored {:?} bytes of {bytes}",
            detail.steps.first().map(|s| s.log_length)
        );
        // Every byte, read back page by page.
        let mut hash = sha2::Sha256::new();
        let mut read = 0u64;
        loop {
            let page = rig
                .server
                .client
                .step_log_page(&rig.server.admin, &job, 0, read)
                .await?;
            if page.is_empty() {
                break;
            }
            read += page.len() as u64;
            hash.update(&page);
        }
        let got: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        anyhow::ensure!(
            read == bytes && got == expected,
            "job {job}: read back {read} bytes hashing {got}, expected {bytes} hashing {expected}"
        );
        task_agent_peak =
            task_agent_peak.max(printed_peak_mib(&rig.server.step_log(&job, 1).await)?);
        stored_size = tree_bytes(&rig.server.data_dir.join("blobs/logs")) - logs_before;
        best = best.min(took);
    }
    let agent_peak = status_kib(rig.agent.pid(), "VmHWM:")? as f64 / 1024.0;
    let server_peak = status_kib(rig.server.proc.pid(), "VmHWM:")? as f64 / 1024.0;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let name = |what: &str| match secrets {
        0 => format!("log-throughput {what}"),
        n => format!("log-throughput {n} secrets {what}"),
    };
    Ok(vec![
        Figure::new(name(&format!("{gib} GiB wall")), ms(best), "ms")
            .baseline(ms(bare))
            .ratio_below(1.3),
        Figure::new(name("launch-agent peak RSS"), agent_peak, "MiB").below(32.0),
        Figure::new(name("task-agent peak RSS"), task_agent_peak, "MiB").below(32.0),
        Figure::new(name("server peak RSS"), server_peak, "MiB"),
        Figure::new(
            name("server CPU per GiB"),
            server_cpu / repeats as f64 / gib,
            "s",
        ),
        Figure::new(
            name("launch-agent CPU per GiB"),
            agent_cpu / repeats as f64 / gib,
            "s",
        ),
        Figure::new(
            name("stored size"),
            stored_size as f64 / (1 << 20) as f64,
            "MiB",
        )
        .baseline(gzip_size as f64 / (1 << 20) as f64)
        .ratio_below(2.0),
    ])
}

/// Writes a node_modules-like tree: `COUNT` files in packages of 40 (`pkg-N/lib/…`, with a
/// `package.json` each), sizes log-normal around 3 KiB (mean about 6.5 KiB, at most 2 MiB),
/// text cut from a pool of generated source lines, so it compresses as source does. The same
/// arguments write the same bytes.
const TREE_GENERATOR: &str = r#"import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(16)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 12)))
         for _ in range(5000)]
lines, size = [], 0
while size < (8 << 20):
    line = "  " * rng.randint(0, 4) + " ".join(rng.choice(words) for _ in range(rng.randint(2, 10))) + ";\n"
    lines.append(line)
    size += len(line)
pool = "".join(lines).encode()
for i in range(count):
    package = os.path.join(root, "pkg-%d" % (i // 40), "lib" if i % 40 else "")
    os.makedirs(package, exist_ok=True)
    name = "package.json" if i % 40 == 0 else "file-%d.js" % i
    length = min(2 << 20, int(rng.lognormvariate(8.1, 1.2)))
    start = rng.randrange(0, len(pool) - length)
    with open(os.path.join(package, name), "wb") as out:
        out.write(b"// %d\n" % i)
        out.write(pool[start:start + length])
"#;

/// Prints one SHA-256 over every file of `node_modules` (names and contents, in C order).
const TREE_FINGERPRINT: &str = "cd node_modules && find . -type f -print0 | LC_ALL=C sort -z \
     | xargs -0 sha256sum | sha256sum | cut -d' ' -f1 | sed 's/^/fingerprint: /'";

/// `cache`: `save_cache` + `restore_cache` of a generated node_modules-like tree (30,000
/// files, about 200 MB; 3,000 with `--quick`), each step's own duration as the task-agent
/// reports it, against `tar -I 'zstd -1 -T0'` create + extract and `tar czf` + `tar xzf` of the
/// same tree (generated the same way), and the archive sizes. The restored tree's fingerprint
/// must equal the saved one's.
async fn cache(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let files = if quick { 3_000 } else { 30_000 };
    let repeats = if quick { 1 } else { 3 };
    let work = shared_tempdir();
    let script = work.path().join("gen_tree.py");
    std::fs::write(&script, TREE_GENERATOR)?;
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    shell(&format!(
        "cd {0} && python3 {1} node_modules {files}",
        tree.display(),
        script.display()
    ))?;
    let tree_size = tree_bytes(&tree.join("node_modules"));
    let expected = shell(&format!("cd {} && {TREE_FINGERPRINT}", tree.display()))?;
    let baseline =
        |create: &str, extract: &str, archive: &str| -> anyhow::Result<(Duration, u64)> {
            let archive = work.path().join(archive);
            let out = work.path().join("out");
            let mut best = Duration::MAX;
            for _ in 0..repeats {
                let _ = std::fs::remove_file(&archive);
                let _ = std::fs::remove_dir_all(&out);
                std::fs::create_dir_all(&out)?;
                let started = Instant::now();
                shell(&format!(
                    "tar {create} -cf {} -C {} node_modules",
                    archive.display(),
                    tree.display()
                ))?;
                shell(&format!(
                    "tar {extract} -xf {} -C {}",
                    archive.display(),
                    out.display()
                ))?;
                best = best.min(started.elapsed());
            }
            let fingerprint = shell(&format!("cd {} && {TREE_FINGERPRINT}", out.display()))?;
            anyhow::ensure!(fingerprint == expected, "tar {create} did not round-trip");
            Ok((best, std::fs::metadata(&archive)?.len()))
        };
    let (zstd_wall, zstd_size) = baseline("-I 'zstd -1 -T0'", "-I 'zstd -d -T0'", "tree.tar.zst")?;
    let (gzip_wall, gzip_size) = baseline("-z", "-z", "tree.tar.gz")?;
    let _ = std::fs::remove_dir_all(work.path().join("out"));

    let config = format!(
        "version: 2.1
defaults: &defaults
  machine: true
  resource_class: {CLASS}
jobs:
  save:
    <<: *defaults
    steps:
      - checkout
      - run: python3 gen_tree.py node_modules {files}
      - run: {TREE_FINGERPRINT:?}
      - save_cache:
          key: bench-{{{{ .BuildNum }}}}
          paths: [node_modules]
  restore:
    <<: *defaults
    steps:
      - restore_cache:
          keys: [bench-]
      - run: {TREE_FINGERPRINT:?}
workflows:
  main:
    jobs:
      - save
      - restore:
          requires: [save]
"
    );
    // No clean-up of the save job's directory: on an ext4 without a journal (this VM's) files
    // created within minutes of 30,000 deletions cost 8x, as the kernel skips every recently
    // deleted inode (`recently_deleted` in ext4's inode allocator), which would time the file
    // system, not bosun (the tar baselines pay the same after a deletion; docs/benchmarks.md).
    let options = AgentOptions {
        cleanup: false,
        ..AgentOptions::default()
    };
    let rig = rig_with(&config, &[("gen_tree.py", TREE_GENERATOR)], options).await;
    let caches = rig.server.data_dir.join("blobs/caches");
    let (mut save, mut restore) = (Duration::MAX, Duration::MAX);
    let mut archive_size = 0;
    for _ in 0..repeats {
        let before = tree_bytes(&caches);
        let pipeline = rig.server.trigger(&rig.slug, "main").await;
        let mut durations = Vec::new();
        for (name, step, fingerprint_step) in [("save", 3, 2), ("restore", 0, 1)] {
            let job = rig.server.job_id(&pipeline, name).await;
            let detail = rig.server.wait_job(&job, Duration::from_secs(600)).await;
            anyhow::ensure!(detail.status == "success", "job {name}: {detail:?}");
            let log = rig.server.step_log(&job, fingerprint_step).await;
            anyhow::ensure!(
                String::from_utf8_lossy(&log) == expected,
                "job {name}: the tree's fingerprint {:?} is not the generated one's {expected:?}",
                String::from_utf8_lossy(&log)
            );
            let took = detail
                .steps
                .iter()
                .find(|s| s.index == step)
                .and_then(|s| s.duration_ms)
                .ok_or_else(|| anyhow::anyhow!("job {name} has no duration for step {step}"))?;
            durations.push(Duration::from_millis(took));
        }
        save = save.min(durations[0]);
        restore = restore.min(durations[1]);
        archive_size = tree_bytes(&caches) - before;
    }
    anyhow::ensure!(
        archive_size > 0,
        "no cache archive stored under {}",
        caches.display()
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "bench: cache: {files} files, {:.1} MiB; bosun save {} ms + restore {} ms",
        mib(tree_size),
        save.as_millis(),
        restore.as_millis()
    );
    Ok(vec![
        Figure::new(
            "cache save+restore vs tar zstd -1",
            ms(save + restore),
            "ms",
        )
        .baseline(ms(zstd_wall))
        .ratio_below(1.15),
        Figure::new("cache save+restore vs tar gzip", ms(save + restore), "ms")
            .baseline(ms(gzip_wall)),
        Figure::new("cache archive size vs zstd -1", mib(archive_size), "MiB")
            .baseline(mib(zstd_size)),
        Figure::new("cache archive size vs gzip", mib(archive_size), "MiB")
            .baseline(mib(gzip_size)),
    ])
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: i32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    // /proc counts in USER_HZ, 100 on every Linux architecture bosun builds for.
    Ok((utime + stime) as f64 / 100.0)
}

/// Raises this process's open-file limit to its hard limit (the server it starts inherits it):
/// every simulated runner holds a connection.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// What the simulated runners saw.
#[derive(Default)]
struct ClaimLog {
    /// Pipeline id -> when its trigger answered.
    triggered: std::collections::HashMap<String, Instant>,
    /// Pipeline id -> when a runner's claim of its task answered, and how often it was claimed.
    claimed: std::collections::HashMap<String, (Instant, u32)>,
    claims: u64,
    errors: u64,
    first_error: Option<String>,
}

/// `server-claims`: `runners` simulated runners (default 1,000; 200 with `--quick`) long-poll
/// one server's claim endpoint as launch-agents do (30 s waits, one connection each) while
/// pipelines arrive at 10 a second for 30 s (10 s with `--quick`); a runner that gets a task
/// reads its config, heartbeats once (the server holds that a second), completes it and claims
/// again. Claim latency is from a pipeline's trigger answering to the claim of its task
/// answering (0 when the claim came first). Checked: every task claimed exactly once, every job
/// succeeded. Server RSS and CPU over the load.
async fn server_claims(quick: bool, runners: Option<usize>) -> anyhow::Result<Vec<Figure>> {
    use std::sync::{Arc, Mutex};
    let runners = runners.unwrap_or(if quick { 200 } else { 1_000 });
    let seconds = if quick { 10 } else { 30 };
    let rate = 10u32;
    let nofile = raise_nofile();
    anyhow::ensure!(
        nofile > 2 * runners as u64 + 256,
        "{runners} runners need {} open files, the limit is {nofile} (ulimit -n)",
        2 * runners + 256
    );
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let repo = git_repo(
        dir.path(),
        &[(".circleci/config.yml", &job_config(&["true"]))],
    );
    let slug = "local/bench/claims".to_owned();
    server.project(&slug, &repo).await;
    let client = bosun_api::Client::new(&server.url)?;
    let log = Arc::new(Mutex::new(ClaimLog::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(runners);
    for i in 0..runners {
        let client = client.clone();
        let log = log.clone();
        let stop = stop.clone();
        let auth = bosun_api::Auth::Bearer(token.clone());
        let request = bosun_api::ClaimRequest {
            name: format!("sim-{i}"),
            hostname: format!("sim-{i}.bench"),
            ip: "127.0.0.1".into(),
            version: "bench".into(),
            running: 0,
            capacity: 1,
            draining: false,
            release_seen: None,
        };
        tasks.push(tokio::spawn(async move {
            let note_error = |err: String| {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.errors += 1;
                log.first_error.get_or_insert(err);
            };
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let answer = client.claim(&auth, &request, Duration::from_secs(30)).await;
                let claimed_at = Instant::now();
                log.lock().unwrap_or_else(|e| e.into_inner()).claims += 1;
                let claimed = match answer {
                    Ok(Some(claimed)) => claimed,
                    Ok(None) => continue,
                    Err(err) => {
                        note_error(format!("claim: {err}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let task = bosun_api::Auth::Bearer(claimed.task_token);
                let run = async {
                    let spec = client.task_config(&task).await?;
                    {
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        let entry = log
                            .claimed
                            .entry(spec.pipeline_id.clone())
                            .or_insert((claimed_at, 0));
                        entry.1 += 1;
                    }
                    client.heartbeat(&task, Duration::from_secs(1)).await?;
                    client
                        .complete(
                            &task,
                            &bosun_api::CompleteRequest {
                                status: "success".into(),
                                message: None,
                            },
                        )
                        .await
                };
                if let Err(err) = run.await {
                    note_error(format!("task: {err}"));
                }
            }
        }));
        // Connections open in batches, as a fleet starting up would not all at one instant.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Every runner's first claim is in (the inventory lists it) and waiting.
    let started = Instant::now();
    loop {
        let seen = server
            .client
            .instances(
                &server.admin,
                bosun_api::InstanceFilter::ResourceClass(CLASS),
            )
            .await?
            .len();
        if seen >= runners {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "only {seen} of {runners} runners claimed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pid = server.proc.pid();
    let cpu_before = cpu_seconds(pid)?;
    let load_started = Instant::now();
    let total = rate * seconds;
    let mut triggers = Vec::new();
    for n in 0..total {
        let due = load_started + Duration::from_secs_f64(f64::from(n) / f64::from(rate));
        tokio::time::sleep_until(due.into()).await;
        let asked = Instant::now();
        let pipeline = server.trigger(&slug, "main").await;
        triggers.push(ms(asked.elapsed()));
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .triggered
            .insert(pipeline, Instant::now());
    }
    // Every task claimed (each takes its runner about a second).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = log.lock().unwrap_or_else(|e| e.into_inner()).claimed.len();
        if done >= total as usize {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {total} tasks claimed 60 s after the last trigger"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load_seconds = load_started.elapsed().as_secs_f64();
    let cpu = 100.0 * (cpu_seconds(pid)? - cpu_before) / load_seconds;
    let rss = status_kib(pid, "VmRSS:")? as f64 / 1024.0;
    let hwm = status_kib(pid, "VmHWM:")? as f64 / 1024.0;
    // Let the last completions land, then stop the runners.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in &tasks {
        task.abort();
    }
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    let mut latencies = Vec::with_capacity(total as usize);
    for (pipeline, triggered) in &log.triggered {
        let Some((claimed, times)) = log.claimed.get(pipeline) else {
            anyhow::bail!("the task of pipeline {pipeline} was never claimed");
        };
        anyhow::ensure!(
            *times == 1,
            "pipeline {pipeline}'s task was claimed {times} times"
        );
        latencies.push(ms(claimed.saturating_duration_since(*triggered)));
    }
    anyhow::ensure!(
        log.claimed.len() == log.triggered.len(),
        "{} tasks claimed for {} pipelines",
        log.claimed.len(),
        log.triggered.len()
    );
    anyhow::ensure!(
        log.errors == 0,
        "{} runner calls failed, the first: {}",
        log.errors,
        log.first_error.unwrap_or_default()
    );
    for pipeline in log.triggered.keys() {
        let done = server
            .wait_pipeline(pipeline, Duration::from_secs(30))
            .await;
        anyhow::ensure!(done.status == "success", "pipeline {pipeline}: {done:?}");
    }
    latencies.sort_by(f64::total_cmp);
    triggers.sort_by(f64::total_cmp);
    eprintln!(
        "bench: server-claims: {runners} runners, {total} tasks in {load_seconds:.1} s, {} claim calls",
        log.claims
    );
    Ok(vec![
        Figure::new(
            format!("server-claims {runners} runners claim p50"),
            percentile(&latencies, 50.0),
            "ms",
        ),
        Figure::new(
            format!("server-claims {runners} runners claim p99"),
            percentile(&latencies, 99.0),
            "ms",
        )
        .below(100.0),
        Figure::new(
            format!("server-claims {runners} runners trigger p50"),
            percentile(&triggers, 50.0),
            "ms",
        ),
        Figure::new(
            format!("server-claims {runners} runners server RSS"),
            rss,
            "MiB",
        ),
        Figure::new(
            format!("server-claims {runners} runners server peak RSS"),
            hwm,
            "MiB",
        ),
        Figure::new(
            format!("server-claims {runners} runners server CPU"),
            cpu,
            "%",
        ),
    ])
}
