//! CircleCI's published JSON Schema (draft-07, `shared/corpus/circleci-schema.json`): every
//! corpus config as written, every `process` snapshot and the processed output of every corpus
//! config that compiles validate against it.
//!
//! The schema only has local `#/definitions/...` references, so the validator is built without
//! any remote resolution.

use std::path::Path;
use std::sync::OnceLock;

use bosun_config::{Limits, PipelineContext};

const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/corpus/circleci-schema.json"
);

/// Where CircleCI's JSON Schema (the YAML language server's) is stricter than CircleCI itself.
///
/// Real configs that run on CircleCI fail it in these ways. A violation is excused only when
/// *every* error under it (for a `oneOf`: every error of at least one branch) matches one of
/// these rules; anything else fails the test. Each rule must still be needed by some file, so a
/// rule the schema or the corpus no longer needs fails the test too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quirk {
    /// The schema's `version` enum is `2.1` only; CircleCI runs `version: 2` / `2.0` configs,
    /// and `circleci config process` itself prints `version: 2` (as bosun's `process` does).
    Version2,
    /// `jobs` property names must match `^[A-Za-z][A-Za-z\s\d_-]*$`; CircleCI accepts any job
    /// name (`Codegen (@graphql-codegen v7)`, `test-linux-2.0`), generates names with dots from
    /// matrices (`ruby-2.7-spec`) and names orb jobs `orb/job` in processed output.
    JobName,
    /// `resource_class` must be one of the schema's fixed names or `namespace/name`; CircleCI's
    /// newer classes (`large.gen3`, `medium+.gen2`, `windows.medium`, `macos.x86.medium.gen2`)
    /// are missing from its enum.
    ResourceClassName,
    /// A 2.1 `<< parameters.x >>` / `<< pipeline.x >>` interpolation in a field the schema types
    /// strictly (`no_output_timeout`, `when`, `parallelism`): the schema checks the text before
    /// substitution. Only excused in configs as written, never in processed output.
    Interpolation,
    /// A single string where the schema wants a list (`save_cache.paths`,
    /// `persist_to_workspace.paths`, `add_ssh_keys.fingerprints`); CircleCI takes either.
    StringForList,
    /// `when` on a built-in step other than `run` (`store_artifacts: {when: on_fail}`): CircleCI
    /// honours it, the schema only allows it on `run`.
    WhenOnBuiltinStep,
    /// One of the [`LISTED`] file-specific exceptions.
    Listed,
}

/// File-specific violations that are not a schema quirk but a mistake in the config itself,
/// which CircleCI tolerates: (file, instance path, unexpected key, why it is excused).
const LISTED: &[(&str, &str, &str, &str)] = &[(
    "ethereum-optimism__optimism.yml",
    "/jobs/fuzz-golang/steps/2/attach_workspace",
    "if",
    "`attach_workspace: {at: ., if: ${{ uses_artifacts }}}`: GitHub Actions syntax left in a \
     CircleCI config; CircleCI does not validate built-in step arguments against the schema \
     and ignores the key (bosun would refuse it as an unsupported key, but this file is \
     refused earlier for its registry orbs)",
)];

/// Which input a violation comes from: a config as written, or `process` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Written,
    Processed,
}

fn quirk(e: &jsonschema::ValidationError<'_>, input: Input, file: &str) -> Option<Quirk> {
    use jsonschema::error::ValidationErrorKind as K;
    let path = e.instance_path().to_string();
    if let K::AdditionalProperties { unexpected } = e.kind() {
        let listed = LISTED.iter().any(|(f, p, key, _why)| {
            *f == file && *p == path && unexpected.len() == 1 && unexpected[0] == *key
        });
        if listed && input == Input::Written {
            return Some(Quirk::Listed);
        }
    }
    let schema = e.schema_path().to_string();
    let value = e.instance();
    let text = value.as_str();
    match e.kind() {
        K::Enum { .. } if path == "/version" => match value.as_ref() {
            serde_json::Value::Number(n) if n.as_f64() == Some(2.0) => Some(Quirk::Version2),
            serde_json::Value::String(s) if s == "2" || s == "2.0" => Some(Quirk::Version2),
            _ => None,
        },
        _ if schema == "/properties/jobs/propertyNames/pattern" => Some(Quirk::JobName),
        K::PropertyNames { .. } if path == "/jobs" => Some(Quirk::JobName),
        K::Enum { .. } | K::Pattern { .. }
            if path.ends_with("/resource_class")
                && text.is_some_and(|t| {
                    t.contains('.')
                        && t.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'+'
                        })
                }) =>
        {
            Some(Quirk::ResourceClassName)
        }
        K::Enum { .. } | K::Pattern { .. } | K::Type { .. }
            if input == Input::Written
                && text.is_some_and(|t| t.contains("<<") && t.contains(">>")) =>
        {
            Some(Quirk::Interpolation)
        }
        K::Type { .. }
            if text.is_some()
                && (path.ends_with("/paths") || path.ends_with("/fingerprints"))
                && schema.ends_with("/type") =>
        {
            Some(Quirk::StringForList)
        }
        K::AdditionalProperties { unexpected }
            if unexpected == &["when".to_owned()]
                && !path.ends_with("/run")
                && schema.contains("/definitions/step/") =>
        {
            Some(Quirk::WhenOnBuiltinStep)
        }
        _ => None,
    }
}

/// The quirks that excuse `e` entirely, or `None` if some part of it is a real violation.
fn excuse(e: &jsonschema::ValidationError<'_>, input: Input, file: &str) -> Option<Vec<Quirk>> {
    use jsonschema::error::ValidationErrorKind as K;
    if let Some(q) = quirk(e, input, file) {
        return Some(vec![q]);
    }
    let branches = match e.kind() {
        K::OneOfNotValid { context } | K::AnyOf { context } => context,
        K::PropertyNames { error } => return excuse(error, input, file),
        _ => return None,
    };
    branches.iter().find_map(|branch| {
        let mut all = Vec::new();
        for sub in branch {
            all.extend(excuse(sub, input, file)?);
        }
        (!all.is_empty()).then_some(all)
    })
}

const ALL_QUIRKS: &[Quirk] = &[
    Quirk::Version2,
    Quirk::JobName,
    Quirk::ResourceClassName,
    Quirk::Interpolation,
    Quirk::StringForList,
    Quirk::WhenOnBuiltinStep,
    Quirk::Listed,
];

/// Checks values against the schema, collecting real violations and the quirks used.
#[derive(Default)]
struct Check {
    failures: Vec<String>,
    quirks: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Check {
    fn value(
        &mut self,
        v: &jsonschema::Validator,
        label: &str,
        value: &serde_json::Value,
        input: Input,
    ) {
        let mut real = Vec::new();
        for e in v.iter_errors(value) {
            let file = label.split(' ').next().unwrap_or(label);
            match excuse(&e, input, file) {
                Some(quirks) => {
                    for q in quirks {
                        self.quirks
                            .entry(format!("{q:?}"))
                            .or_default()
                            .insert(label.to_owned());
                    }
                }
                None => explain(&e, 0, &mut real),
            }
        }
        if !real.is_empty() {
            self.failures
                .push(format!("{label}:\n  {}", real.join("\n  ")));
        }
    }

    fn finish(self, what: &str, every_quirk_needed: bool) {
        for (q, files) in &self.quirks {
            println!(
                "schema quirk {q}: {} ({})",
                files.len(),
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        assert!(
            self.failures.is_empty(),
            "{what} failing CircleCI's schema:\n{}",
            self.failures.join("\n")
        );
        if every_quirk_needed {
            for q in ALL_QUIRKS {
                assert!(
                    self.quirks.contains_key(&format!("{q:?}")),
                    "schema quirk {q:?} is no longer needed by any corpus file: remove it"
                );
            }
        }
    }
}

fn validator() -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(SCHEMA).unwrap_or_else(|e| {
            panic!("the schema is missing: {SCHEMA} (../shared/corpus beside the checkout): {e}")
        });
        let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
        Some(jsonschema::draft7::new(&schema).expect("schema compiles as draft-07"))
    })
    .as_ref()
}

/// The violations of `value` without excusing anything, one line each (`instance path (schema
/// path): message`, then, for a failed `oneOf`, the errors of each branch, indented).
fn violations(v: &jsonschema::Validator, value: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for e in v.iter_errors(value) {
        explain(&e, 0, &mut out);
    }
    out
}

fn explain(e: &jsonschema::ValidationError<'_>, depth: usize, out: &mut Vec<String>) {
    let indent = "    ".repeat(depth);
    out.push(format!(
        "{indent}{} (schema {}): {}",
        e.instance_path(),
        e.schema_path(),
        truncate(&e.to_string())
    ));
    if depth >= 3 {
        return;
    }
    if let jsonschema::error::ValidationErrorKind::OneOfNotValid { context } = e.kind() {
        for (i, branch) in context.iter().enumerate() {
            out.push(format!("{indent}  branch {i}:"));
            for sub in branch {
                explain(sub, depth + 1, out);
            }
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= 160 {
        return s.to_owned();
    }
    let mut end = 160;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A YAML text as JSON (scalars typed by YAML's core schema, as CircleCI reads them).
fn yaml_json(text: &str) -> serde_json::Value {
    bosun_config::yaml::parse(text, &Limits::DEFAULT)
        .expect("parses")
        .map(|n| n.to_json())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn corpus_configs_validate_against_circleci_schema() {
    let Some(v) = validator() else { return };
    let mut check = Check::default();
    let files = super::corpus::corpus();
    for (path, text) in &files {
        let file = super::corpus::name(path);
        check.value(v, &file, &yaml_json(text), Input::Written);
    }
    println!("{} corpus configs checked against the schema", files.len());
    check.finish("corpus configs", !files.is_empty());
}

#[test]
fn processed_corpus_configs_validate_against_circleci_schema() {
    let Some(v) = validator() else { return };
    let mut check = Check::default();
    let mut checked = 0;
    for (path, text) in super::corpus::corpus() {
        let file = super::corpus::name(&path);
        let Ok(out) = bosun_config::process_json(&text, &file, &PipelineContext::default()) else {
            continue;
        };
        checked += 1;
        check.value(v, &format!("{file} (process_json)"), &out, Input::Processed);
        // The YAML text `process` prints is what people see: it must validate too.
        let yaml = bosun_config::process(&text, &file, &PipelineContext::default())
            .expect("process agrees with process_json");
        check.value(
            v,
            &format!("{file} (process)"),
            &yaml_json(&yaml),
            Input::Processed,
        );
    }
    println!("{checked} processed corpus configs checked against the schema");
    check.finish("processed corpus configs", false);
}

#[test]
fn process_snapshots_validate_against_circleci_schema() {
    let Some(v) = validator() else { return };
    let mut check = Check::default();
    for (path, text) in &super::process::configs() {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        // The input of each snapshot is a config people could write: it validates too.
        check.value(v, &format!("{name}.yml"), &yaml_json(text), Input::Written);
        let ctx = super::process::context(text);
        let out = bosun_config::process_json(text, "c.yml", &ctx)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check.value(v, &format!("{name} (process_json)"), &out, Input::Processed);
        let expected = Path::new(path).with_file_name(format!("{name}.expected.yml"));
        let expected = std::fs::read_to_string(&expected).expect("snapshot exists");
        check.value(
            v,
            &format!("{name}.expected.yml"),
            &yaml_json(&expected),
            Input::Processed,
        );
    }
    check.finish("`process` snapshots", false);
}

/// The excusing logic is not vacuous: real violations are reported, alone or next to a quirk.
#[test]
fn schema_check_reports_real_violations() {
    let Some(v) = validator() else { return };
    let bad = yaml_json("version: 2.1\njobs:\n  build:\n    machine: true\n    steps: 5\n");
    assert!(!violations(v, &bad).is_empty());
    let mut check = Check::default();
    check.value(v, "bad.yml", &bad, Input::Written);
    assert_eq!(check.failures.len(), 1, "{:?}", check.failures);
    // A quirk (`version: 2`) next to a real error (`paths: 5`) excuses only the quirk.
    let mixed = yaml_json(
        "version: 2\njobs:\n  build:\n    machine: true\n    steps:\n      - save_cache: {key: k, paths: 5}\n",
    );
    let mut check = Check::default();
    check.value(v, "mixed.yml", &mixed, Input::Written);
    assert_eq!(check.failures.len(), 1, "{:?}", check.failures);
    assert!(
        check.failures[0].contains("/paths"),
        "{}",
        check.failures[0]
    );
    assert!(
        !check.failures[0].contains("/version"),
        "{}",
        check.failures[0]
    );
    // Interpolations are excused as written, never in processed output.
    let interp = yaml_json(
        "version: 2.1\njobs:\n  build:\n    machine: true\n    steps:\n      - run: {command: x, no_output_timeout: << parameters.t >>}\n",
    );
    let mut check = Check::default();
    check.value(v, "w.yml", &interp, Input::Written);
    assert!(check.failures.is_empty(), "{:?}", check.failures);
    check.value(v, "p.yml", &interp, Input::Processed);
    assert_eq!(check.failures.len(), 1, "{:?}", check.failures);
}
