//! `bosun-bench`: bosun's speed measured from outside, beside a baseline measured in the same
//! run (issue 16). `cargo xtask bench [NAME...] [--quick]` builds the release binaries and runs
//! this with `BOSUN_TEST_BIN_DIR` naming them; it prints one table and writes
//! `target/bench/results.json`.
//!
//! Measures so far (design §9 has the budgets): `pickup`, `step-overhead`, `idle`, `config`.
//! Each checks its own answer (every job succeeded, every log byte arrived), so a fast wrong
//! run cannot pass.

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

    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.figure / b)
    }

    fn pass(&self) -> Option<bool> {
        self.budget.map(|Budget::Below(b)| self.figure < b)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "figure": round(self.figure),
            "unit": self.unit,
            "baseline": self.baseline.map(round),
            "ratio": self.ratio().map(round),
            "budget": self.budget.map(|Budget::Below(b)| format!("< {b}")),
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

const MEASURES: &[&str] = &["pickup", "step-overhead", "idle", "config"];

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
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => {}
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
            "idle" => runtime.block_on(idle(quick)),
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
        "bosun-bench: {why}\nusage: bosun-bench [{}...] [--quick] [--out FILE]",
        MEASURES.join("|")
    );
    std::process::ExitCode::from(2)
}

fn table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<42} {:>12} {:<6} {:>12} {:>8} {:>10} {:>5}\n",
        "measure", "bosun", "unit", "baseline", "ratio", "budget", ""
    );
    for f in figures {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<42} {:>12.3} {:<6} {:>12} {:>8} {:>10} {:>5}\n",
            f.name,
            f.figure,
            f.unit,
            opt(f.baseline),
            opt(f.ratio()),
            f.budget
                .map(|Budget::Below(b)| format!("< {b}"))
                .unwrap_or_else(|| "-".into()),
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
    let dir = shared_tempdir();
    let server = Server::start(dir.path());
    server.resource_class(CLASS).await;
    let token = server.token(CLASS).await;
    let agent = launch_agent(
        &server,
        &token,
        dir.path(),
        "bench",
        AgentOptions::default(),
    );
    let repo = git_repo(dir.path(), &[(".circleci/config.yml", config)]);
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
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..runs {
        // Triggers at uneven moments, as users do, so a poll baseline samples every phase.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(20 + rng % 200)).await;
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

/// `step-overhead`: what one `run: true` step costs beyond `bash -c true`. A job of N steps
/// against a job of one, timed from trigger to the job's end (the same pipeline cost in both),
/// over N - 1 steps; the baseline is `bash -c true` run N times in a shell loop.
async fn step_overhead(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let steps = if quick { 50 } else { 200 };
    let repeats = if quick { 2 } else { 5 };
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
    let bare_per_step = ms(bare) / steps as f64;
    Ok(vec![
        Figure::new("step-overhead per step", per_step - bare_per_step, "ms").below(1.0),
        Figure::new("step-overhead step wall", per_step, "ms").baseline(bare_per_step),
    ])
}

/// `idle`: the launch-agent's memory and CPU while it waits for work (after one job, so it
/// has done everything once).
async fn idle(quick: bool) -> anyhow::Result<Vec<Figure>> {
    let seconds = if quick { 20 } else { 60 };
    let rig = rig(&job_config(&["true"])).await;
    warm_up(&rig).await?;
    let pid = rig.agent.pid();
    let ticks = || -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        Ok(utime + stime)
    };
    // /proc counts in USER_HZ, 100 on every Linux architecture bosun builds for.
    let hz = 100.0;
    let before = ticks()?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu_seconds = (ticks()? - before) as f64 / hz;
    let cpu_percent = 100.0 * cpu_seconds / started.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS:")? as f64 / 1024.0;
    let hwm = status_kib(pid, "VmHWM:")? as f64 / 1024.0;
    Ok(vec![
        Figure::new("idle launch-agent RSS", rss, "MiB").below(8.0),
        Figure::new("idle launch-agent peak RSS", hwm, "MiB"),
        Figure::new("idle launch-agent CPU", cpu_percent, "%").below(0.1),
    ])
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
