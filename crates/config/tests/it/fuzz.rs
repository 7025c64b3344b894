//! Property tests: the compiler never panics, whatever it is given. Errors are values.
//!
//! Inputs come from a grammar of CircleCI keys and 2.1 constructs (parameters, commands,
//! executors, matrices, `when` logic, anchors and merge keys) rendered as block YAML, and from
//! arbitrary text. `PROPTEST_CASES` sets the number of cases (default 256 per property).
//! Crashing inputs found this way are kept below as plain regression tests.

use proptest::prelude::*;
use proptest::test_runner::Config;

use bosun_config::PipelineContext;

/// Keys the generator draws map keys from: CircleCI's, plus names used across sections.
const KEYS: &[&str] = &[
    "version",
    "jobs",
    "workflows",
    "commands",
    "executors",
    "orbs",
    "parameters",
    "steps",
    "run",
    "command",
    "name",
    "machine",
    "docker",
    "macos",
    "image",
    "resource_class",
    "when",
    "unless",
    "condition",
    "and",
    "or",
    "not",
    "equal",
    "matches",
    "pattern",
    "value",
    "matrix",
    "alias",
    "exclude",
    "requires",
    "filters",
    "branches",
    "tags",
    "only",
    "ignore",
    "type",
    "default",
    "enum",
    "environment",
    "parallelism",
    "executor",
    "checkout",
    "setup",
    "context",
    "description",
    "working_directory",
    "shell",
    "no_output_timeout",
    "background",
    "save_cache",
    "restore_cache",
    "key",
    "keys",
    "paths",
    "persist_to_workspace",
    "attach_workspace",
    "root",
    "at",
    "store_artifacts",
    "store_test_results",
    "path",
    "pre-steps",
    "post-steps",
    "add_ssh_keys",
    "fingerprints",
    "triggers",
    "schedule",
    "cron",
    "build",
    "test",
    "deploy",
    "greet",
    "linux",
    "o",
    "o/greet",
    "o/build",
    "x",
    "y",
];

/// Scalars: plain values, types and 2.1 interpolations.
const SCALARS: &[&str] = &[
    "",
    "~",
    "null",
    "true",
    "false",
    "0",
    "1",
    "-1",
    "2",
    "2.1",
    "2.0",
    "1e400",
    "99999999999999999999",
    "build",
    "test",
    "deploy",
    "greet",
    "linux",
    "checkout",
    "x",
    "y",
    "o/greet",
    "o/build",
    "o/linux",
    "circleci/node@5",
    "string",
    "boolean",
    "integer",
    "enum",
    "steps",
    "executor",
    "env_var_name",
    "approval",
    "no-op",
    "always",
    "on_fail",
    "on_success",
    "main",
    "/.*/",
    "/[/",
    "/^v.*/",
    "10m",
    "1h",
    "0s",
    "ubuntu-2204:current",
    "'quoted'",
    "\"dq\\u00e9\"",
    "é",
    "{}",
    "[]",
    "[a, b]",
    "{x: 1}",
];

/// 2.1 interpolations, valid and not: rarer, since one bad reference ends compilation early.
const INTERPOLATIONS: &[&str] = &[
    "<< parameters.x >>",
    "<< parameters.y >>",
    "<< parameters.steps >>",
    "<<parameters.x>>",
    "<< pipeline.parameters.x >>",
    "<< pipeline.parameters.nope >>",
    "<< pipeline.git.branch >>",
    "<< pipeline.number >>",
    "<< pipeline.id >>",
    "<< matrix.x >>",
    "<< matrix.nope >>",
    "build-<< matrix.x >>",
    "<< parameters.x",
    "<< >>",
    "<< pipeline. >>",
];

/// Scalars YAML treats specially (aliases, anchors, tags): rarer, they mostly make YAML errors.
const WEIRD: &[&str] = &[
    "*a",
    "&b x",
    "!!str 1",
    "!!int x",
    "!!binary x",
    "{a: *a}",
    "[*a, *a]",
    "<<",
    ">>",
    "|",
    ">",
    "- x",
    "a: b",
    "#",
    "? x",
    "@x",
    "`x`",
    "%x",
];

/// A generated YAML value.
#[derive(Debug, Clone)]
enum V {
    Scalar(String),
    Seq(Vec<V>),
    Map(Vec<(String, V)>),
}

fn s(text: &str) -> V {
    V::Scalar(text.to_owned())
}

/// A map with duplicate keys removed (the first wins): duplicates are a YAML error that would
/// hide everything after it.
fn map(entries: Vec<(String, V)>) -> V {
    let mut seen = std::collections::HashSet::new();
    V::Map(
        entries
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect(),
    )
}

fn scalar() -> impl Strategy<Value = V> {
    prop_oneof![
        1000 => proptest::sample::select(SCALARS).prop_map(s),
        60 => proptest::sample::select(INTERPOLATIONS).prop_map(s),
        3 => proptest::sample::select(WEIRD).prop_map(s),
        1 => "[a-z<>{}. :*&!|-]{0,12}".prop_map(V::Scalar),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        400 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z<>&*. -]{0,6}",
    ]
}

/// Any tree over CircleCI keys and scalars.
fn tree() -> impl Strategy<Value = V> {
    scalar().prop_recursive(5, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(V::Seq),
            proptest::collection::vec((key(), inner), 0..4).prop_map(map),
        ]
    })
}

fn name() -> impl Strategy<Value = String> {
    proptest::sample::select(&["build", "test", "deploy", "greet", "linux", "x", "o/greet"][..])
        .prop_map(str::to_owned)
}

/// A logic statement for `when`/`unless`/`condition`.
fn condition() -> impl Strategy<Value = V> {
    scalar().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| map(vec![("and".into(), V::Seq(v))])),
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| map(vec![("or".into(), V::Seq(v))])),
            inner.clone().prop_map(|v| map(vec![("not".into(), v)])),
            proptest::collection::vec(scalar(), 0..3)
                .prop_map(|v| map(vec![("equal".into(), V::Seq(v))])),
            (scalar(), scalar()).prop_map(|(p, v)| map(vec![(
                "matches".into(),
                map(vec![("pattern".into(), p), ("value".into(), v)])
            )])),
        ]
    })
}

/// A step: built-in, command invocation, `when`/`unless`, or anything.
fn step() -> impl Strategy<Value = V> {
    let leaf = prop_oneof![
        1 => proptest::sample::select(&["checkout", "greet", "o/greet", "x", "run"][..]).prop_map(s),
        1 => scalar().prop_map(|v| map(vec![("run".into(), v)])),
        1 => (scalar(), scalar(), scalar()).prop_map(|(c, n, w)| map(vec![(
            "run".into(),
            map(vec![("command".into(), c), ("name".into(), n), ("when".into(), w)])
        )])),
        1 => (name(), proptest::collection::vec((key(), scalar()), 0..3))
            .prop_map(|(n, args)| map(vec![(n, map(args))])),
        3 => tree(),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        (
            proptest::sample::select(&["when", "unless"][..]),
            condition(),
            proptest::collection::vec(inner, 0..3),
        )
            .prop_map(|(w, c, steps)| {
                map(vec![(
                    w.into(),
                    map(vec![
                        ("condition".into(), c),
                        ("steps".into(), V::Seq(steps)),
                    ]),
                )])
            })
    })
}

/// Parameter declarations: `{x: {type: T, default: D, enum: [..]}}`.
fn parameters() -> impl Strategy<Value = V> {
    proptest::collection::vec(
        (
            proptest::sample::select(&["x", "y", "steps", "e", "flag"][..]),
            prop_oneof![
                4 => proptest::sample::select(
                    &["string", "boolean", "integer", "enum", "steps", "executor", "env_var_name"][..]
                )
                .prop_map(s),
                1 => scalar(),
            ],
            proptest::option::of(scalar()),
            proptest::option::of(proptest::collection::vec(scalar(), 0..3)),
        ),
        0..3,
    )
    .prop_map(|params| {
        map(params
            .into_iter()
            .map(|(n, t, d, e)| {
                let mut body = vec![("type".to_owned(), t)];
                if let Some(d) = d {
                    body.push(("default".into(), d));
                }
                if let Some(e) = e {
                    body.push(("enum".into(), V::Seq(e)));
                }
                (n.to_owned(), map(body))
            })
            .collect())
    })
}

/// A job, command or executor body.
fn body() -> impl Strategy<Value = V> {
    (
        proptest::option::of(prop_oneof![
            Just(("machine".to_owned(), s("true"))),
            scalar().prop_map(|i| (
                "docker".to_owned(),
                V::Seq(vec![map(vec![("image".into(), i)])])
            )),
            scalar().prop_map(|e| ("executor".to_owned(), e)),
        ]),
        proptest::option::of(parameters()),
        proptest::collection::vec(step(), 0..5),
        proptest::collection::vec((key(), tree()), 0..2),
    )
        .prop_map(|(exec, params, steps, extra)| {
            let mut entries = Vec::new();
            entries.extend(exec);
            if let Some(p) = params {
                entries.push(("parameters".into(), p));
            }
            entries.push(("steps".into(), V::Seq(steps)));
            entries.extend(extra);
            map(entries)
        })
}

/// A workflow job entry: a name, or a name with `requires`, `matrix`, `filters`, arguments.
fn workflow_job() -> impl Strategy<Value = V> {
    prop_oneof![
        name().prop_map(V::Scalar),
        (
            name(),
            proptest::collection::vec(name().prop_map(V::Scalar), 0..3),
            proptest::option::of(proptest::collection::vec(scalar(), 0..3)),
            proptest::option::of(tree()),
            proptest::collection::vec((key(), scalar()), 0..3),
        )
            .prop_map(|(n, requires, matrix, filters, args)| {
                let mut entries = vec![("requires".to_owned(), V::Seq(requires))];
                if let Some(values) = matrix {
                    entries.push((
                        "matrix".into(),
                        map(vec![(
                            "parameters".into(),
                            map(vec![("x".into(), V::Seq(values))]),
                        )]),
                    ));
                }
                if let Some(f) = filters {
                    entries.push(("filters".into(), f));
                }
                entries.extend(args);
                map(vec![(n, map(entries))])
            }),
    ]
}

fn workflow() -> impl Strategy<Value = V> {
    (
        proptest::collection::vec(workflow_job(), 0..4),
        proptest::option::of(condition()),
    )
        .prop_map(|(jobs, when)| {
            let mut entries = vec![("jobs".to_owned(), V::Seq(jobs))];
            if let Some(w) = when {
                entries.push(("when".into(), w));
            }
            map(entries)
        })
}

fn named<S: Strategy<Value = V>>(each: S) -> impl Strategy<Value = V> {
    proptest::collection::vec((name(), each), 0..3).prop_map(map)
}

/// A whole config: a version and some of the top-level sections, with an anchor and a merge
/// key now and then.
fn config() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            8 => Just("2.1"),
            1 => proptest::sample::select(&["2", "2.0", "'2.1'", "3"][..]),
        ],
        named(body()),
        proptest::option::of(named(workflow())),
        proptest::option::of(named(body())),
        proptest::option::of(named(body())),
        proptest::option::of(parameters()),
        proptest::option::of(named((named(body()), named(body())).prop_map(
            |(jobs, commands)| map(vec![("jobs".into(), jobs), ("commands".into(), commands)]),
        ))),
        proptest::option::of(prop_oneof![
            8 => proptest::sample::select(&["true", "false"][..]).prop_map(s),
            1 => tree(),
        ]),
        any::<bool>(),
    )
        .prop_map(
            |(version, jobs, workflows, commands, executors, params, orbs, setup, anchors)| {
                let mut out = format!("version: {version}\n");
                if anchors {
                    out.push_str("x-defaults: &a\n  machine: true\n  steps: [checkout]\n");
                }
                let mut top = vec![("jobs".to_owned(), jobs)];
                let optional = [
                    ("workflows", workflows),
                    ("commands", commands),
                    ("executors", executors),
                    ("parameters", params),
                    ("orbs", orbs),
                    ("setup", setup),
                ];
                for (k, v) in optional {
                    if let Some(v) = v {
                        top.push((k.to_owned(), v));
                    }
                }
                for (key, body) in top {
                    out.push_str(&key);
                    out.push_str(":\n");
                    if anchors && key == "jobs" {
                        out.push_str("  merged:\n    <<: *a\n");
                        if matches!(&body, V::Map(e) if e.is_empty()) {
                            continue;
                        }
                    }
                    render(&body, 2, &mut out);
                }
                out
            },
        )
}

/// Block-style YAML for `v` at `indent` (after a `key:` line or a `-` line).
fn render(v: &V, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        V::Scalar(s) => {
            out.push_str(&pad);
            out.push_str(s);
            out.push('\n');
        }
        V::Seq(items) => {
            if items.is_empty() {
                out.push_str(&pad);
                out.push_str("[]\n");
            }
            for item in items {
                out.push_str(&pad);
                out.push_str("-\n");
                render(item, indent + 2, out);
            }
        }
        V::Map(entries) => {
            if entries.is_empty() {
                out.push_str(&pad);
                out.push_str("{}\n");
            }
            for (k, item) in entries {
                out.push_str(&pad);
                out.push_str(k);
                out.push_str(":\n");
                render(item, indent + 2, out);
            }
        }
    }
}

/// A pipeline's context; `with_parameters` gives pipeline parameters `x`, `flag` and `n`.
fn context(with_parameters: bool) -> PipelineContext {
    let mut ctx = PipelineContext {
        branch: Some("main".into()),
        tag: None,
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        number: Some(7),
        id: Some("00000000-0000-0000-0000-000000000000".into()),
        trigger_source: Some("api".into()),
        ..PipelineContext::default()
    };
    if with_parameters {
        ctx.parameters
            .insert("x".into(), serde_json::json!("value"));
        ctx.parameters
            .insert("flag".into(), serde_json::json!(true));
        ctx.parameters.insert("n".into(), serde_json::json!(3));
    }
    ctx
}

/// Runs every entry point on `source`; a panic fails the calling test.
fn never_panics(source: &str) {
    let _ = bosun_config::compile(source, "fuzz.yml");
    let _ = bosun_config::compile_pipeline(source, "fuzz.yml", &context(true));
    let ctx = context(false);
    let _ = bosun_config::compile_pipeline(source, "fuzz.yml", &ctx);
    if let Ok(yaml) = bosun_config::process(source, "fuzz.yml", &ctx) {
        // Processed output is a config in its own right: it compiles without panicking too.
        let _ = bosun_config::compile(&yaml, "processed.yml");
    }
    let _ = bosun_config::process_json(source, "fuzz.yml", &ctx);
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        // Crashes are kept as the named regression tests below, not in a side file.
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn grammar_configs_never_panic(source in config()) {
        never_panics(&source);
    }

    #[test]
    fn arbitrary_text_never_panics(source in "(?s).{0,400}") {
        never_panics(&source);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        never_panics(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_punctuation_never_panics(
        parts in proptest::collection::vec(
            proptest::sample::select(&[
                "version: 2.1\n", "jobs:\n", "  a:\n", "    steps:\n", "      - ", "run", ": ",
                "<<: *a\n", "&a ", "*a", "[", "]", "{", "}", ",", "? ", "|\n", ">-\n", "'", "\"",
                "\n", "  ", "- ", "#", "!!map ", "!!seq ", "%YAML 1.2\n", "---\n", "...\n", "\t",
                "<< parameters.x >>", "\u{feff}", "\r\n",
            ][..]),
            0..60,
        )
    ) {
        never_panics(&parts.concat());
    }
}

/// The grammar reaches past the YAML parser: some generated configs compile, and most errors
/// come from 2.1 processing and validation, not from YAML syntax.
#[test]
fn grammar_reaches_the_compiler() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = config();
    let (mut ok, mut yaml_errors, mut others) = (0, 0, 0);
    let mut messages = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..2000 {
        let source = strategy.new_tree(&mut runner).expect("generates").current();
        match bosun_config::compile_pipeline(&source, "g.yml", &context(false)) {
            Ok(_) => ok += 1,
            Err(e) => {
                let head: String = e.message.chars().take(40).collect();
                *messages.entry(head).or_default() += 1;
                if bosun_config::yaml::parse(&source, &bosun_config::Limits::DEFAULT).is_err() {
                    yaml_errors += 1;
                } else {
                    others += 1;
                }
            }
        }
    }
    let mut top: Vec<_> = messages.into_iter().collect();
    top.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    for (m, n) in top.iter().take(25) {
        println!("{n:5} {m}");
    }
    println!("compiled {ok}, YAML errors {yaml_errors}, other errors {others}");
    assert!(
        others > yaml_errors,
        "the grammar mostly produces YAML syntax errors"
    );
}
