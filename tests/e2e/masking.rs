//! Secret masking end to end (issue 11): a project variable printed whole, one byte per write,
//! across 64 KiB chunk boundaries, base64-encoded and URL-encoded, and a token the job makes up
//! and registers with `circleci-agent mask`, never reach the stored log, the log API or the
//! output `bosun pipeline run --follow` prints; a 3-character value and `true` are not masked.

use std::process::Command;

use bosun_api::Auth;
use bosun_api::types::CreateEnvVar;
use bosun_tests::{AgentOptions, Fixture, bin_dir};

const CONFIG: &str = r#"version: 2.1
jobs:
  build:
    machine: true
    resource_class: e2e/masking
    steps:
      - run:
          name: leak it every way
          command: |
            echo "whole: $SECRET"
            printf 'bytes: '
            for ((i = 0; i < ${#SECRET}; i++)); do printf '%s' "${SECRET:$i:1}"; sleep 0.001; done
            echo
            for fill in 65530 65535 65536 131071; do
              head -c "$fill" /dev/zero | tr '\0' x
              printf '%s\n' "$SECRET"
            done
            echo "base64: $(printf '%s' "$SECRET" | base64 -w0)"
            echo "url: $(python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["SECRET"], safe=""))')"
            echo "quote: $(python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["SECRET"]))')"
            echo "short: $SHORT flag: $FLAG"
      - run:
          name: a token made at run time
          command: |
            token="tok-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
            printf '%s' "$token" > token.txt
            printf '%s\n' "$token" | circleci-agent mask
            echo "runtime: $token"
            echo "runtime again: ${token}"
      - store_artifacts:
          path: token.txt
"#;

/// Long, with characters base64 and URL encoding change.
const SECRET: &str = "s3cr3t/+value with spaces&more=9f2c41d7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_never_reaches_a_log_however_it_is_printed() {
    bosun_tests::require_program("python3", "the URL-encoding step of the masking test");
    let fixture = Fixture::with_files(
        "e2e/masking",
        &[(".circleci/config.yml", CONFIG)],
        AgentOptions::default(),
    )
    .await;
    let server = &fixture.server;
    for (name, value) in [("SECRET", SECRET), ("SHORT", "abc"), ("FLAG", "true")] {
        server
            .client
            .set_project_env(
                &server.admin,
                &fixture.slug,
                &CreateEnvVar {
                    name: name.into(),
                    value: value.into(),
                },
            )
            .await
            .expect("set variable");
    }

    let Auth::CircleToken(token) = &server.admin else {
        panic!("admin auth is a Circle-Token");
    };
    let output = Command::new(bin_dir().join("bosun"))
        .args([
            "pipeline",
            "run",
            &fixture.slug,
            "--branch",
            "main",
            "--follow",
        ])
        .env("BOSUN_HOST", &server.url)
        .env("BOSUN_TOKEN", token)
        .output()
        .expect("bosun pipeline run");
    let followed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "pipeline failed:\n{}\n{}",
        tail(&followed),
        String::from_utf8_lossy(&output.stderr)
    );

    // "pipeline ID (#N) created" comes first.
    let pipeline_id = followed
        .split_whitespace()
        .nth(1)
        .expect("the pipeline's id in the followed output")
        .to_owned();
    let jobs = server.jobs(&pipeline_id).await;
    let job_id = fixture.job(&jobs, "build").id.clone();
    let stored = [
        String::from_utf8_lossy(&server.step_log(&job_id, 0).await).into_owned(),
        String::from_utf8_lossy(&server.step_log(&job_id, 1).await).into_owned(),
    ];
    let token = artifact_text(&fixture, &job_id, "token.txt").await;
    assert!(token.starts_with("tok-") && token.len() > 20, "{token}");

    let base64 = encode_base64(SECRET.as_bytes());
    let url = url_encode(SECRET, false);
    let quoted = url_encode(SECRET, true);
    for (what, text) in [
        ("followed output", followed.as_str()),
        ("stored log of step 0", stored[0].as_str()),
        ("stored log of step 1", stored[1].as_str()),
    ] {
        for (form, needle) in [
            ("whole", SECRET),
            ("base64", base64.as_str()),
            ("URL-encoded", url.as_str()),
            ("URL-encoded keeping /", quoted.as_str()),
            ("registered at run time", token.as_str()),
        ] {
            assert!(
                !text.contains(needle),
                "the {what} holds the secret ({form})"
            );
        }
    }
    let log = &stored[0];
    assert!(log.contains("whole: ********"), "{log}");
    assert!(log.contains("bytes: ********"), "{}", tail(log));
    assert_eq!(log.matches("x********\n").count(), 4, "{}", tail(log));
    assert!(log.contains("base64: ********"), "{}", tail(log));
    assert!(log.contains("url: ********"), "{}", tail(log));
    assert!(log.contains("quote: ********"), "{}", tail(log));
    assert!(log.contains("short: abc flag: true"), "{}", tail(log));
    assert!(stored[1].contains("runtime: ********\n"), "{}", stored[1]);
    assert!(
        stored[1].contains("runtime again: ********\n"),
        "{}",
        stored[1]
    );
    assert!(followed.contains("whole: ********"), "{}", tail(&followed));
}

fn tail(text: &str) -> &str {
    let start = text
        .char_indices()
        .rev()
        .nth(600)
        .map(|(i, _)| i)
        .unwrap_or(0);
    &text[start..]
}

fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn url_encode(text: &str, keep_slash: bool) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b'~')
                || (keep_slash && b == b'/')
            {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The text of the job's artifact at `path` (artifacts are files: they are not masked).
async fn artifact_text(fixture: &Fixture, job_id: &str, path: &str) -> String {
    let server = &fixture.server;
    let list = server
        .client
        .job_artifacts(&server.admin, job_id)
        .await
        .expect("artifacts");
    let artifact = list
        .items
        .iter()
        .find(|a| a.path == path)
        .unwrap_or_else(|| panic!("no artifact {path} in {:?}", list.items));
    let download = server
        .client
        .download_artifact(&server.admin, &artifact.url)
        .await
        .expect("download");
    String::from_utf8(download.bytes().await.expect("bytes").to_vec()).expect("utf-8")
}
