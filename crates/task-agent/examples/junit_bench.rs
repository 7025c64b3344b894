//! Times the JUnit parser on a generated report and prints the process's peak RSS:
//! `cargo run --release -p bosun-task-agent --example junit_bench -- [CASES]` (50000 by default).
//!
//! The report is written to a temporary file a line at a time (so writing it does not add to the
//! peak): one case in ten fails with a 1 KiB trace, one in twenty is skipped, every case has a
//! `file`, and every suite of 100 cases has `<properties>` and a `<system-out>`. After parsing,
//! the cases are encoded as the step's upload is, and the peak is printed again.

use std::io::{BufWriter, Write};
use std::time::Instant;

use bosun_protocol::task::TestResults;
use bosun_task_agent::junit::{Limits, parse_file};

/// `VmHWM`, the peak RSS of this process's memory: unlike `getrusage`'s `ru_maxrss`, it does
/// not carry the peak of the process that forked it (cargo, under `cargo run`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let cases: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().expect("CASES is a number"))
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("report.xml");
    {
        let file = std::fs::File::create(&path).expect("the report file");
        let mut out = BufWriter::new(file);
        let trace = "    at com.example.Widget.frobnicate(Widget.java:123)\n".repeat(20);
        writeln!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"bench\">"
        )
        .unwrap();
        for index in 0..cases {
            if index % 100 == 0 {
                if index > 0 {
                    writeln!(
                        out,
                        "    <system-out>suite output &amp; more</system-out>\n  </testsuite>"
                    )
                    .unwrap();
                }
                writeln!(
                    out,
                    "  <testsuite name=\"suite{}\" tests=\"100\" time=\"1.5\">\n    <properties><property name=\"seed\" value=\"{index}\"/></properties>",
                    index / 100
                )
                .unwrap();
            }
            let head = format!(
                "    <testcase classname=\"com.example.suite{}.WidgetTest\" name=\"test_number_{index}\" file=\"src/test/java/com/example/suite{}/WidgetTest.java\" time=\"0.{:03}\"",
                index / 100,
                index / 100,
                index % 1000
            );
            if index % 10 == 3 {
                writeln!(
                    out,
                    "{head}>\n      <failure message=\"expected &lt;1&gt; but was &lt;2&gt;\" type=\"AssertionError\">{trace}</failure>\n    </testcase>"
                )
                .unwrap();
            } else if index % 20 == 7 {
                writeln!(
                    out,
                    "{head}>\n      <skipped message=\"flaky\"/>\n    </testcase>"
                )
                .unwrap();
            } else {
                writeln!(out, "{head}/>").unwrap();
            }
        }
        writeln!(out, "  </testsuite>\n</testsuites>").unwrap();
        out.flush().unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let before = peak_rss_kib();
    let started = Instant::now();
    let parsed = parse_file(&path, "report.xml", &Limits::default()).expect("the report parses");
    let parse_time = started.elapsed();
    let after_parse = peak_rss_kib();
    assert_eq!(parsed.len(), cases);
    let started = Instant::now();
    let json = serde_json::to_vec(&TestResults { tests: parsed }).unwrap();
    let encode_time = started.elapsed();
    let after_encode = peak_rss_kib();
    println!(
        "{cases} cases, {size} bytes of XML: parsed in {:.3}s, encoded ({} bytes of JSON) in {:.3}s",
        parse_time.as_secs_f64(),
        json.len(),
        encode_time.as_secs_f64()
    );
    println!(
        "peak RSS: {before} KiB before parsing, {after_parse} KiB after parsing, {after_encode} KiB after encoding"
    );
}
