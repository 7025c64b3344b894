//! Cache key templates, rendered as CircleCI renders them (a small subset of Go's `text/template`).
//!
//! Supported, with optional whitespace inside the braces: `{{ .Branch }}`, `{{ .Revision }}`,
//! `{{ .BuildNum }}`, `{{ .Environment.VAR }}` (a variable the job does not have renders
//! `<no value>`, as Go does), `{{ .CheckoutKey }}` (renders empty: bosun checks out without a
//! deploy key, so there is no key fingerprint to name), `{{ checksum "FILE" }}` (base64, standard
//! alphabet with padding, of the SHA-256 of the file's bytes; `FILE` is relative to the working
//! directory or starts with `~`), `{{ epoch }}` (seconds since the Unix epoch), `{{ epoch | round
//! "72h" }}` (rounded to the nearest multiple of a Go duration, as real configs use it) and
//! `{{ arch }}` (`arch1-linux-amd64-6_85`: os, Go's name for the architecture and, on x86, the CPU
//! family and model). Anything else is an error naming the template.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::Digest as _;

use super::{Job, resolve_path};

/// Longest rendered key, in bytes (the server refuses longer names anyway).
pub const MAX_KEY_LEN: usize = 1024;

/// What a template may refer to.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub branch: &'a str,
    pub revision: &'a str,
    pub build_num: u64,
    pub env: &'a std::collections::BTreeMap<String, String>,
    pub working_dir: &'a Path,
    pub home: &'a Path,
    /// Seconds since the Unix epoch.
    pub epoch: u64,
}

impl<'a> Context<'a> {
    pub fn of(job: &'a Job) -> Context<'a> {
        Context {
            branch: job.task.branch.as_deref().unwrap_or(""),
            revision: &job.task.revision,
            build_num: job.task.build_num,
            env: &job.env,
            working_dir: &job.working_dir,
            home: &job.home,
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0),
        }
    }
}

/// Why a key did not render.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown template `{{{{{0}}}}}`")]
    Unknown(String),
    #[error("unclosed `{{{{` in `{0}`")]
    Unclosed(String),
    #[error("cannot compute `{{{{ checksum \"{file}\" }}}}`: cannot read {path}: {source}")]
    Checksum {
        file: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{{{{{template}}}}}`: {reason}")]
    Invalid { template: String, reason: String },
    #[error("the rendered key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
}

/// Renders `key`.
pub fn render(key: &str, context: &Context<'_>) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = key;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(key.to_owned()))?;
        out.push_str(&action(&after[..end], context)?);
        rest = &after[end + 2..];
        if out.len() > MAX_KEY_LEN {
            return Err(TemplateError::TooLong);
        }
    }
    out.push_str(rest);
    if out.len() > MAX_KEY_LEN {
        return Err(TemplateError::TooLong);
    }
    Ok(out)
}

/// One `{{ ... }}` (without the braces).
fn action(inner: &str, context: &Context<'_>) -> Result<String, TemplateError> {
    let unknown = || TemplateError::Unknown(inner.to_owned());
    let trimmed = inner.trim();
    if let Some(field) = trimmed.strip_prefix('.') {
        return match field {
            "Branch" => Ok(context.branch.to_owned()),
            "Revision" => Ok(context.revision.to_owned()),
            "BuildNum" => Ok(context.build_num.to_string()),
            "CheckoutKey" => Ok(String::new()),
            _ => match field.strip_prefix("Environment.") {
                Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                    Ok(context
                        .env
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| "<no value>".to_owned()))
                }
                _ => Err(unknown()),
            },
        };
    }
    let mut pipeline = trimmed.split('|').map(str::trim);
    let head = pipeline.next().unwrap_or("");
    let filters: Vec<&str> = pipeline.collect();
    let (name, argument) = match head.split_once(char::is_whitespace) {
        Some((name, argument)) => (name, Some(argument.trim())),
        None => (head, None),
    };
    match (name, argument, filters.as_slice()) {
        ("epoch", None, []) => Ok(context.epoch.to_string()),
        ("epoch", None, [filter]) => {
            let invalid = |reason: String| TemplateError::Invalid {
                template: inner.to_owned(),
                reason,
            };
            let duration = match filter.split_once(char::is_whitespace) {
                Some(("round", duration)) => quoted(duration.trim()).ok_or_else(unknown)?,
                _ => return Err(unknown()),
            };
            let secs = go_duration_secs(duration)
                .ok_or_else(|| invalid(format!("`{duration}` is not a duration such as 72h")))?;
            Ok(round(context.epoch, secs).to_string())
        }
        ("arch", None, []) => Ok(arch()),
        ("checksum", Some(argument), []) => {
            let file = quoted(argument).ok_or_else(unknown)?;
            checksum(file, context)
        }
        _ => Err(unknown()),
    }
}

/// The contents of a Go string literal in double quotes or backquotes (no escapes).
fn quoted(literal: &str) -> Option<&str> {
    literal
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .or_else(|| {
            literal
                .strip_prefix('`')
                .and_then(|rest| rest.strip_suffix('`'))
        })
        .filter(|inner| !inner.contains('"'))
}

/// `value` rounded to the nearest multiple of `step` (halfway rounds up), as Go's `Time.Round`.
fn round(value: u64, step: u64) -> u64 {
    if step == 0 {
        return value;
    }
    let below = value - value % step;
    if value % step >= step - step / 2 {
        below.saturating_add(step)
    } else {
        below
    }
}

/// Whole seconds of a Go duration such as `72h`, `1h30m`, `90s`.
fn go_duration_secs(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut digits = String::new();
    let mut any = false;
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let number: u64 = digits.parse().ok()?;
        digits.clear();
        total = total.checked_add(number.checked_mul(unit)?)?;
        any = true;
    }
    (any && digits.is_empty()).then_some(total)
}

fn checksum(file: &str, context: &Context<'_>) -> Result<String, TemplateError> {
    let path = resolve_path(context.working_dir, file, context.home);
    let fail = |source| TemplateError::Checksum {
        file: file.to_owned(),
        path: path.clone(),
        source,
    };
    let mut reader = std::fs::File::open(&path).map_err(fail)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let read = reader.read(&mut buf).map_err(fail)?;
        if read == 0 {
            break;
        }
        hasher.update(&buf[..read]);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

/// CircleCI's `{{ arch }}`: `arch1-<os>-<goarch>` and, on x86, `-<family>_<model>`.
pub fn arch() -> String {
    let goarch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    };
    let mut rendered = format!("arch1-{}-{goarch}", std::env::consts::OS);
    if matches!(goarch, "amd64" | "386") {
        if let Some((family, model)) = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| cpu_family_model(&text))
        {
            rendered.push_str(&format!("-{family}_{model}"));
        }
    }
    rendered
}

/// `cpu family` and `model` of the first processor in `/proc/cpuinfo`.
fn cpu_family_model(cpuinfo: &str) -> Option<(String, String)> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    Some((field("cpu family")?, field("model")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn with_context<T>(test: impl FnOnce(&Context<'_>, &Path) -> T) -> T {
        let dir = tempfile::tempdir().unwrap();
        let mut env = BTreeMap::new();
        env.insert("CIRCLE_JOB".to_owned(), "build".to_owned());
        let context = Context {
            branch: "main",
            revision: "abc123",
            build_num: 42,
            env: &env,
            working_dir: dir.path(),
            home: dir.path(),
            epoch: 1_700_000_000,
        };
        test(&context, dir.path())
    }

    #[test]
    fn fields_and_environment_render() {
        with_context(|context, _| {
            assert_eq!(
                render(
                    "v1-{{ .Branch }}-{{.Revision}}-{{ .BuildNum }}-{{ .Environment.CIRCLE_JOB }}",
                    context
                )
                .unwrap(),
                "v1-main-abc123-42-build"
            );
            assert_eq!(
                render("x-{{ .Environment.NOPE }}", context).unwrap(),
                "x-<no value>"
            );
            assert_eq!(render("k{{ .CheckoutKey }}", context).unwrap(), "k");
            assert_eq!(render("plain-key", context).unwrap(), "plain-key");
        });
    }

    #[test]
    fn checksum_is_base64_of_sha256() {
        with_context(|context, dir| {
            std::fs::write(dir.join("package-lock.json"), "hello\n").unwrap();
            // printf 'hello\n' | openssl dgst -sha256 -binary | base64
            let expected = "WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM=";
            assert_eq!(
                render("deps-{{ checksum \"package-lock.json\" }}", context).unwrap(),
                format!("deps-{expected}")
            );
            assert_eq!(
                render("{{checksum  \"./package-lock.json\"}}", context).unwrap(),
                expected
            );
            let err = render("{{ checksum \"missing.lock\" }}", context).unwrap_err();
            assert!(err.to_string().contains("missing.lock"), "{err}");
        });
    }

    #[test]
    fn epoch_and_rounding() {
        with_context(|context, _| {
            assert_eq!(render("{{ epoch }}", context).unwrap(), "1700000000");
            let step = 72 * 3600;
            let rounded: u64 = render("{{ epoch | round \"72h\" }}", context)
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(rounded % step, 0);
            assert!(rounded.abs_diff(1_700_000_000) <= step / 2);
        });
        assert_eq!(round(10, 4), 12);
        assert_eq!(round(9, 4), 8);
        assert_eq!(go_duration_secs("1h30m"), Some(5400));
        assert_eq!(go_duration_secs("72"), None);
    }

    #[test]
    fn arch_names_os_and_architecture() {
        let arch = arch();
        assert!(arch.starts_with("arch1-linux-"), "{arch}");
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\nmodel name\t: Xeon\n";
        assert_eq!(
            cpu_family_model(info),
            Some(("6".to_owned(), "85".to_owned()))
        );
    }

    #[test]
    fn unknown_and_malformed_templates_are_errors() {
        with_context(|context, _| {
            let err = render("v1-{{ .Nope }}", context).unwrap_err();
            assert_eq!(err.to_string(), "unknown template `{{ .Nope }}`");
            let err = render("v1-{{ uses_artifacts }}", context).unwrap_err();
            assert_eq!(err.to_string(), "unknown template `{{ uses_artifacts }}`");
            assert!(matches!(
                render("v1-{{ .Branch", context),
                Err(TemplateError::Unclosed(_))
            ));
            assert!(render("{{ epoch | round \"soon\" }}", context).is_err());
        });
    }
}
