//! `circleci` and `circleci-agent`: glob, split, env subst, argument errors, and `step halt`
//! through the engine.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bosun_protocol::task::When;
use bosun_protocol::{StepStatus, TaskStatus};
use bosun_task_agent::cli::{self, NO_TIMINGS, Plan, SplitBy, Timing, TimingsType};

use crate::harness::{run, run_task, step, task};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

fn by_name() -> Plan<'static> {
    Plan {
        split_by: SplitBy::Name,
        timings_type: TimingsType::Autodetect,
        time_default: Duration::from_secs(10),
        timings: None,
    }
}

/// Every name is in exactly one share.
fn assert_partition(all: &[String], shares: &[Vec<String>]) {
    let mut seen = BTreeSet::new();
    for share in shares {
        for name in share {
            assert!(seen.insert(name.clone()), "{name} is in two shares");
        }
    }
    assert_eq!(seen, all.iter().cloned().collect::<BTreeSet<_>>());
}

#[test]
fn glob_matches_across_directories_with_alternatives_sorted_once() {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "src/x.py",
        "src/a/y.py",
        "src/a/b/z.py",
        "src/a/b/w.txt",
        "src/q1.rb",
        "src/q22.rb",
        "other/o.py",
    ] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("src/dir.py")).unwrap();
    let glob = |patterns: &[&str]| cli::glob(&names(patterns), dir.path()).unwrap();
    assert_eq!(
        glob(&["src/**/*.py"]),
        ["src/a/b/z.py", "src/a/y.py", "src/x.py"],
        "`**` crosses directories (and matches none); directories are not listed"
    );
    assert_eq!(glob(&["src/*.py"]), ["src/x.py"], "`*` does not cross `/`");
    assert_eq!(
        glob(&["{src,other}/*.py", "src/*.py"]),
        ["other/o.py", "src/x.py"],
        "alternatives, deduplicated"
    );
    assert_eq!(glob(&["src/q?.rb"]), ["src/q1.rb"]);
    assert_eq!(glob(&["src/q[0-9][0-9].rb"]), ["src/q22.rb"]);
    assert!(glob(&["nothing/**/*"]).is_empty());
    assert!(cli::glob(&names(&["src/[.py"]), dir.path()).is_err());
}

#[test]
fn braces_expand_nested_and_stay_literal_without_commas() {
    assert_eq!(
        cli::expand_braces("a{b,c{d,e}}f").unwrap(),
        ["abf", "acdf", "acef"]
    );
    assert_eq!(cli::expand_braces("a{b}c").unwrap(), ["a{b}c"]);
    assert_eq!(cli::expand_braces("a{b,c").unwrap(), ["a{b,c"]);
    // 2^13 alternatives is over the bound.
    let bomb = "{a,b}".repeat(13);
    assert!(cli::expand_braces(&bomb).is_err());
}

#[test]
fn name_split_is_contiguous_sorted_and_a_partition() {
    let all = names(&["e", "a", "c", "b", "d"]);
    let mut sorted = all.clone();
    sorted.sort();
    let shares = cli::split(&sorted, 2, &by_name(), &mut |_| {});
    assert_eq!(shares, [names(&["a", "b", "c"]), names(&["d", "e"])]);
    for total in 1..8 {
        let shares = cli::split(&sorted, total, &by_name(), &mut |_| {});
        assert_eq!(shares.len(), total);
        assert_partition(&sorted, &shares);
    }
}

#[test]
fn filesize_split_puts_the_largest_files_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for (name, size) in [
        ("big1", 1000),
        ("big2", 900),
        ("s1", 10),
        ("s2", 10),
        ("s3", 10),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![b'x'; size]).unwrap();
        all.push(path.to_string_lossy().into_owned());
    }
    all.sort();
    let plan = Plan {
        split_by: SplitBy::Filesize,
        ..by_name()
    };
    let shares = cli::split(&all, 2, &plan, &mut |_| {});
    assert_partition(&all, &shares);
    let has = |share: &[String], name: &str| share.iter().any(|path| path.ends_with(name));
    assert!(has(&shares[0], "big1") && !has(&shares[0], "big2"));
    assert!(has(&shares[1], "big2"));
}

#[test]
fn timings_split_30_names_over_3_nodes_within_20_percent_of_the_ideal() {
    // Run times 1..=30 seconds, deliberately uneven.
    let timings: Vec<Timing> = (1..=30)
        .map(|n| Timing {
            file: format!("./tests/test_{n:02}.py"),
            classname: format!("tests.test_{n:02}"),
            name: format!("test_{n:02}"),
            run_time: f64::from(n * n % 37 + 1),
        })
        .collect();
    let all: Vec<String> = (1..=30).map(|n| format!("tests/test_{n:02}.py")).collect();
    let plan = Plan {
        split_by: SplitBy::Timings,
        timings: Some(&timings),
        ..by_name()
    };
    let mut messages = Vec::new();
    let shares = cli::split(&all, 3, &plan, &mut |line| messages.push(line.to_owned()));
    assert_partition(&all, &shares);
    assert_eq!(messages, ["Autodetected filename timings."]);
    let time_of = |name: &str| {
        timings
            .iter()
            .find(|timing| timing.file.ends_with(name))
            .unwrap()
            .run_time
    };
    let loads: Vec<f64> = shares
        .iter()
        .map(|share| share.iter().map(|name| time_of(name)).sum())
        .collect();
    let ideal = loads.iter().sum::<f64>() / 3.0;
    let busiest = loads.iter().cloned().fold(0.0, f64::max);
    assert!(busiest <= ideal * 1.2, "loads {loads:?}, ideal {ideal}");
    // Deterministic: the same input gives the same shares.
    assert_eq!(cli::split(&all, 3, &plan, &mut |_| {}), shares);

    // By classname and by test name too.
    let classes: Vec<String> = {
        let mut classes: Vec<String> = timings.iter().map(|t| t.classname.clone()).collect();
        classes.sort();
        classes
    };
    let plan = Plan {
        split_by: SplitBy::Timings,
        timings_type: TimingsType::Classname,
        timings: Some(&timings),
        ..by_name()
    };
    let shares = cli::split(&classes, 3, &plan, &mut |_| {});
    assert_partition(&classes, &shares);
    assert_ne!(shares, cli::split(&classes, 3, &by_name(), &mut |_| {}));
}

#[test]
fn autodetect_tells_class_names_from_file_names() {
    let timings = vec![
        Timing {
            classname: "com.example.FooTest".into(),
            file: "src/test/FooTest.java".into(),
            run_time: 30.0,
            ..Timing::default()
        },
        Timing {
            classname: "com.example.BarTest".into(),
            file: "src/test/BarTest.java".into(),
            run_time: 1.0,
            ..Timing::default()
        },
    ];
    let plan = Plan {
        split_by: SplitBy::Timings,
        timings: Some(&timings),
        ..by_name()
    };
    for (all, kind) in [
        (
            names(&["com.example.BarTest", "com.example.FooTest"]),
            "classname",
        ),
        (
            names(&["src/test/BarTest.java", "src/test/FooTest.java"]),
            "filename",
        ),
        (names(&["BarTest.java", "x.py"]), "filename"),
    ] {
        let mut messages = Vec::new();
        cli::split(&all, 2, &plan, &mut |line| messages.push(line.to_owned()));
        assert_eq!(
            messages[0],
            format!("Autodetected {kind} timings."),
            "{all:?}"
        );
    }
}

#[test]
fn timings_that_match_nothing_fall_back_to_name_with_circlecis_message() {
    let timings = vec![Timing {
        file: "elsewhere.py".into(),
        run_time: 5.0,
        ..Timing::default()
    }];
    let all = names(&["a.py", "b.py", "c.py"]);
    let plan = Plan {
        split_by: SplitBy::Timings,
        timings: Some(&timings),
        ..by_name()
    };
    let mut messages = Vec::new();
    let shares = cli::split(&all, 2, &plan, &mut |line| messages.push(line.to_owned()));
    assert_eq!(shares, cli::split(&all, 2, &by_name(), &mut |_| {}));
    assert!(
        messages.iter().any(|line| line == NO_TIMINGS),
        "{messages:?}"
    );
}

#[test]
fn timings_file_parses_the_test_results_subset() {
    let text = r#"{"tests":[{"name":"t","classname":"c","file":"f.py","run_time":1.5,"result":"success"},{"name":"u"}]}"#;
    let timings = cli::parse_timings(text).unwrap();
    assert_eq!(timings.len(), 2);
    assert_eq!(timings[0].file, "f.py");
    assert_eq!(timings[0].run_time, 1.5);
    assert_eq!(timings[1].run_time, 0.0);
    assert!(cli::parse_timings("not json").is_err());
}

#[test]
fn durations_parse() {
    assert_eq!(cli::parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(
        cli::parse_duration("250ms").unwrap(),
        Duration::from_millis(250)
    );
    assert_eq!(cli::parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(cli::parse_duration("3").unwrap(), Duration::from_secs(3));
    assert!(cli::parse_duration("ten").is_err());
    assert!(cli::parse_duration("5y").is_err());
}

#[test]
fn env_subst_replaces_set_and_unset_variables_like_envsubst() {
    let lookup = |name: &str| match name {
        "HOME" => Some("/home/u"),
        "A_1" => Some("v"),
        _ => None,
    };
    assert_eq!(
        cli::subst("$HOME/x ${A_1}y $UNSET. ${UNSET} $1 $ ${bad-} end$", lookup),
        "/home/u/x vy .  $1 $ ${bad-} end$"
    );
    assert_eq!(cli::subst("no vars ünïcode", lookup), "no vars ünïcode");
}

/// The task-agent binary called `name` (a symlink in `dir`).
fn as_cli(dir: &Path, name: &str) -> Command {
    let link = dir.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_task-agent"), &link).unwrap();
    }
    let mut command = Command::new(link);
    command
        .current_dir(dir)
        .env_remove("CIRCLE_NODE_INDEX")
        .env_remove("CIRCLE_NODE_TOTAL")
        .env_remove(cli::TIMINGS_FILE_ENV)
        .env_remove(cli::TASK_DATA_ENV);
    command
}

fn output(mut command: Command, stdin: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_answers_as_circleci_and_circleci_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut split = as_cli(dir.path(), "circleci");
    split.args(["tests", "split", "--index", "1", "--total", "2"]);
    assert_eq!(
        output(split, "d a\nc b\n"),
        (0, "c\nd\n".into(), String::new())
    );

    let mut split = as_cli(dir.path(), "circleci-agent");
    split
        .args(["tests", "split", "--split-by=timings"])
        .env("CIRCLE_NODE_INDEX", "0")
        .env("CIRCLE_NODE_TOTAL", "2");
    let (code, out, err) = output(split, "b a c");
    assert_eq!((code, out.as_str()), (0, "a\nb\n"));
    assert!(err.contains(NO_TIMINGS), "{err}");

    let mut run = as_cli(dir.path(), "circleci");
    run.args(["tests", "run", "--command", "sed s/^/got-/; exit 7"]);
    assert_eq!(
        output(run, "y x"),
        (7, "got-x\ngot-y\n".into(), String::new())
    );

    let mut subst = as_cli(dir.path(), "circleci-agent");
    subst.args(["env", "subst"]).env("GREETING", "hi");
    assert_eq!(
        output(subst, "${GREETING} $GREETING!"),
        (0, "hi hi!".into(), String::new())
    );

    let mut help = as_cli(dir.path(), "circleci");
    help.arg("--help");
    let (code, out, _) = output(help, "");
    assert_eq!(code, 0);
    assert!(out.contains("tests"), "{out}");
}

#[test]
fn argument_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["foo"][..],
        &[],
        &["tests", "nope"],
        &["tests", "split", "--index", "2", "--total", "2"],
        &["tests", "split", "--total", "0"],
        &["tests", "split", "--total", "1000000000"],
        &["tests", "split", "--split-by", "color"],
        &["tests", "glob"],
    ] {
        let mut command = as_cli(dir.path(), "circleci-agent");
        command.args(args);
        let (code, out, err) = output(command, "");
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(!err.is_empty(), "{args:?}");
    }
    let mut command = as_cli(dir.path(), "circleci-agent");
    command.arg("foo");
    let (_, _, err) = output(command, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("tests split") && err.contains("step halt"),
        "{err}"
    );

    // `step halt` outside a job: no task-data directory.
    let mut command = as_cli(dir.path(), "circleci-agent");
    command.args(["step", "halt"]);
    let (code, _, err) = output(command, "");
    assert_eq!(code, 1);
    assert!(err.contains(cli::TASK_DATA_ENV), "{err}");
}

#[tokio::test]
async fn step_halt_skips_every_later_step_and_the_job_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut always = run("always", "echo should-not-run");
    always.when = When::Always;
    let task = task(vec![
        step(run("first", "echo one")),
        step(run(
            "halt",
            "circleci-agent step halt && echo halted; command -v circleci",
        )),
        step(run("third", "echo should-not-run")),
        step(always),
    ]);
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert_eq!(report.finished(0), (StepStatus::Success, Some(0)));
    assert_eq!(report.finished(1), (StepStatus::Success, Some(0)));
    let log = report.log(1);
    assert!(log.starts_with("halted\n"), "{log}");
    assert!(log.contains("/bin/circleci\n"), "{log}");
    assert!(log.contains("the job was halted"), "{log}");
    assert_eq!(report.finished(2), (StepStatus::Skipped, None));
    assert_eq!(report.finished(3), (StepStatus::Skipped, None));
    assert_eq!(report.task_status(), TaskStatus::Success);
}

#[tokio::test]
async fn our_circleci_comes_before_the_hosts_and_the_tasks_path() {
    let dir = tempfile::tempdir().unwrap();
    let host_bin = dir.path().join("host-bin");
    std::fs::create_dir(&host_bin).unwrap();
    let fake = host_bin.join("circleci");
    std::fs::write(&fake, "#!/bin/sh\necho host-circleci\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", host_bin.display());
    let mut task = task(vec![step(run(
        "which",
        "command -v circleci; echo \"$PATH\" | cut -d: -f2-; echo a b c d | circleci tests split",
    ))]);
    // A task `PATH` replaces the agent's, and ours still comes first.
    task.environment
        .insert("PATH".into(), format!("{path}:/task-bin"));
    let report = crate::harness::Agent::start_with(
        &task,
        dir.path(),
        crate::harness::RootMode::Flag,
        &[("PATH", &path)],
    )
    .await
    .finish(crate::harness::Report::default())
    .await;
    let log = report.log(0);
    let mut lines = log.lines();
    let which = lines.next().unwrap_or_default();
    assert!(
        which.ends_with("/bin/circleci") && !which.contains("host-bin"),
        "{log}"
    );
    assert_eq!(
        lines.next(),
        Some(format!("{path}:/task-bin").as_str()),
        "{log}"
    );
    // The split defaults to the task's node: index 1 of 3 (the harness's task), so `c`.
    assert_eq!(lines.collect::<Vec<_>>(), ["c"], "{log}");
}
