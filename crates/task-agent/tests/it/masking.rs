//! Secret masking through the real task-agent: the task's secrets and values registered with
//! `circleci-agent mask` never reach the log, however the job writes them.

use std::collections::BTreeMap;

use base64::Engine as _;
use bosun_protocol::task::{CheckoutAuth, CheckoutStep, SecretString, Step, TaskSpec};
use bosun_protocol::{StepStatus, TaskStatus};

use crate::harness::{Report, run, run_task, step, task};

/// Characters that URL encoding changes (no `/`: Python's `quote` keeps it by default).
const SECRET: &str = "pa55:w0rd@Ex ample!zz";
const SHORT: &str = "xyz";

fn with_secrets(steps: Vec<Step>) -> TaskSpec {
    let mut task = task(steps);
    task.secrets.0 = BTreeMap::from([
        ("API_KEY".to_owned(), SECRET.to_owned()),
        ("SHORT".to_owned(), SHORT.to_owned()),
        ("FLAG".to_owned(), "true".to_owned()),
    ]);
    task
}

/// A `run` step with `$S` set to the secret (the secret environment is not the masker's
/// concern: the step gets it explicitly).
fn printing(name: &str, command: &str) -> Step {
    let mut run = run(name, command);
    run.environment = BTreeMap::from([("S".to_owned(), SECRET.to_owned())]);
    step(run)
}

fn forms(value: &str) -> Vec<String> {
    vec![
        value.to_owned(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(value),
        value
            .replace('%', "%25")
            .replace(':', "%3A")
            .replace('@', "%40")
            .replace(' ', "%20")
            .replace('!', "%21"),
    ]
}

/// Fails (never skips) when `program` is missing: the test needs it.
fn require_program(program: &str) {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "{program} is not installed: this test URL-encodes with it"
    );
}

fn assert_masked(report: &Report, step: u32, value: &str) -> String {
    let log = report.log(step);
    for form in forms(value) {
        assert!(!log.contains(&form), "step {step} leaks {form:?}: {log}");
    }
    assert!(
        log.contains("********"),
        "step {step} masked nothing: {log}"
    );
    log
}

#[tokio::test]
async fn a_secret_is_masked_however_the_step_writes_it() {
    require_program("python3");
    let dir = tempfile::tempdir().unwrap();
    let task = with_secrets(vec![
        printing("whole", r#"echo "key=$S."; echo "again $S""#),
        printing(
            "one byte per write",
            r#"for ((i=0;i<${#S};i++)); do printf %s "${S:$i:1}"; done; echo"#,
        ),
        printing(
            "after 65535 bytes",
            r#"head -c 65535 /dev/zero | tr '\0' a; printf %s "$S"; echo"#,
        ),
        printing(
            "after 65536 bytes",
            r#"head -c 65536 /dev/zero | tr '\0' a; printf %s "$S"; echo"#,
        ),
        printing("base64", r#"printf %s "$S" | base64"#),
        printing(
            "url-encoded",
            r#"python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["S"])); print(urllib.parse.quote_plus(os.environ["S"]))'"#,
        ),
        printing(
            "not secrets",
            &format!("echo 'short {SHORT} flag true'; printf 'pa55:w0rd@Ex'; echo ' end'"),
        ),
        printing("at the very end", r#"printf 'tail %s' "$S""#),
    ]);
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert_eq!(report.task_status(), TaskStatus::Success);
    for step in 0..8 {
        assert_eq!(
            report.finished(step).0,
            StepStatus::Success,
            "{}",
            report.log(step)
        );
    }
    assert_eq!(
        assert_masked(&report, 0, SECRET),
        "key=********.\nagain ********\n"
    );
    assert_eq!(assert_masked(&report, 1, SECRET), "********\n");
    for (step, filler) in [(2, 65535), (3, 65536)] {
        let log = assert_masked(&report, step, SECRET);
        assert_eq!(log, format!("{}********\n", "a".repeat(filler)));
    }
    // 21 bytes: a base64 without padding.
    assert_eq!(assert_masked(&report, 4, SECRET), "********\n");
    assert_eq!(assert_masked(&report, 5, SECRET), "********\n********\n");
    // A prefix of the secret that turns out not to be it, a 3-character value and `true`.
    assert_eq!(report.log(6), "short xyz flag true\npa55:w0rd@Ex end\n");
    // Held back to the step's end, then masked.
    assert_eq!(assert_masked(&report, 7, SECRET), "tail ********");
}

#[tokio::test]
async fn git_output_and_the_agents_own_lines_are_masked_in_a_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let token = "ghs_checkoutT0ken42";
    let mut task = task(vec![Step::Checkout(CheckoutStep {
        name: "checkout".into(),
        path: None,
    })]);
    // The token in the URL: the agent's `Cloning ...` line and git's error both name it.
    task.repository_url = format!("/nonexistent/{token}/repo");
    task.checkout_auth = Some(CheckoutAuth {
        ssh_private_key: None,
        known_hosts: Vec::new(),
        https_token: Some(SecretString(token.to_owned())),
    });
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert_eq!(report.finished(0).0, StepStatus::Failed);
    let log = assert_masked(&report, 0, token);
    assert!(log.contains("Cloning /nonexistent/********/repo"), "{log}");
    // git's own line, which names the path.
    assert!(
        log.matches("/nonexistent/********/repo").count() >= 2,
        "{log}"
    );
}

#[tokio::test]
async fn a_value_registered_with_circleci_agent_mask_is_masked_from_then_on() {
    let dir = tempfile::tempdir().unwrap();
    let tok = "rt-T0ken:9f8e7d";
    let mut register = run(
        "register",
        r#"echo "before $TOK"
printf '%s\n' "$TOK" | circleci-agent mask
echo "after $TOK"
for ((i=0;i<${#TOK};i++)); do printf %s "${TOK:$i:1}"; done; echo
printf %s "$TOK" | base64
printf '' | circleci-agent mask || echo "empty refused"
printf abc | circleci-agent mask && echo "abc short"
head -c 70000 /dev/zero | tr '\0' a | circleci-agent mask 2>&1 >/dev/null | cut -c1-60 || true
printf %s "$TOK" | CIRCLE_INTERNAL_TASK_DATA=/nonexistent circleci-agent mask || echo "no agent refused"
"#,
    );
    register.environment = BTreeMap::from([("TOK".to_owned(), tok.to_owned())]);
    let mut later = run("later step", r#"echo "later $TOK""#);
    later.environment = register.environment.clone();
    let task = task(vec![step(register), step(later)]);
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    assert_eq!(
        report.finished(0).0,
        StepStatus::Success,
        "{}",
        report.log(0)
    );
    let log = report.log(0);
    // Before the command it is not a secret yet; everything after is masked.
    let (before, after) = log.split_once('\n').unwrap();
    assert_eq!(before, format!("before {tok}"));
    for form in forms(tok) {
        assert!(!after.contains(&form), "leaks {form:?}: {log}");
    }
    assert!(
        after.starts_with("after ********\n********\n********\n"),
        "{log}"
    );
    assert!(
        after.contains("circleci-agent mask: the value on stdin is empty"),
        "{log}"
    );
    assert!(after.contains("empty refused"), "{log}");
    assert!(
        after.contains("circleci-agent mask: the value is not masked"),
        "{log}"
    );
    assert!(after.contains("abc short"), "{log}");
    assert!(
        after.contains("circleci-agent mask: the value is longer than 65536 bytes"),
        "{log}"
    );
    assert!(
        after.contains("circleci-agent mask: no task-agent listens at /nonexistent/mask.sock"),
        "{log}"
    );
    assert!(after.contains("no agent refused"), "{log}");
    assert_eq!(report.log(1), "later ********\n");
}

#[tokio::test]
async fn a_background_step_is_masked_and_its_tail_released_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut background = run(
        "background",
        r#"for ((i=0;i<${#S};i++)); do printf %s "${S:$i:1}"; done; printf ' pa55'"#,
    );
    background.background = true;
    background.environment = BTreeMap::from([("S".to_owned(), SECRET.to_owned())]);
    let task = with_secrets(vec![
        step(background),
        printing("foreground", r#"sleep 1; printf %s "$S""#),
    ]);
    let report = run_task(&task, dir.path()).await;
    report.assert_clean_exit();
    // `pa55` may begin the secret: held to the step's end, then released as it is.
    assert_eq!(assert_masked(&report, 0, SECRET), "******** pa55");
    assert_eq!(assert_masked(&report, 1, SECRET), "********");
}
