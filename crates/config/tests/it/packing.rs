//! Orbs: packing the real orb source trees of `../shared/orbs/`, validating what they pack
//! to, and compiling the corpus with every orb it uses resolved from them, as the server's
//! registry resolves them. The orb trees and the corpus must be there: a checkout without them
//! fails these tests rather than passing them vacuously.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bosun_config::{
    OrbRef, PipelineContext, ResolvedOrb, ResolvedOrbs, VersionSpec, orb_imports, pack,
    resolve_orbs, validate_orb,
};

use crate::corpus::{corpus, name};

const ORBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/orbs");

/// One orb version of the test data.
pub struct SharedOrb {
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
}

impl SharedOrb {
    pub fn reference(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.name, self.version)
    }

    /// The packed orb: `src/` packed, or the `orb.yml` of an orb published packed.
    pub fn packed(&self) -> String {
        let src = self.dir.join("src");
        if src.join("@orb.yml").is_file() {
            pack(&src).unwrap_or_else(|e| panic!("{} does not pack: {e}", self.reference()))
        } else {
            std::fs::read_to_string(self.dir.join("orb.yml")).unwrap_or_else(|e| {
                panic!("{} has neither src/ nor orb.yml: {e}", self.reference())
            })
        }
    }
}

/// Every `namespace/name/version` of `../shared/orbs/` (not the URL orbs).
pub fn shared_orbs() -> Vec<SharedOrb> {
    let root = Path::new(ORBS);
    assert!(
        root.join("MANIFEST.tsv").is_file(),
        "the orb test data is missing: {ORBS} (../shared/orbs beside the checkout) has no MANIFEST.tsv"
    );
    let mut out = Vec::new();
    for ns in sorted_dirs(root) {
        let namespace = file_name(&ns);
        if namespace == "url" {
            continue;
        }
        for orb in sorted_dirs(&ns) {
            for version in sorted_dirs(&orb) {
                out.push(SharedOrb {
                    namespace: namespace.clone(),
                    name: file_name(&orb),
                    version: file_name(&version),
                    dir: version,
                });
            }
        }
    }
    assert!(
        out.len() >= 30,
        "only {} orb versions under {ORBS}",
        out.len()
    );
    out
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A published version and its packed source.
type Published = ((u64, u64, u64), String);

/// A registry of packed orbs resolving references as CircleCI's does.
pub struct Registry {
    /// `namespace/name` -> (version, packed source)
    orbs: BTreeMap<String, Vec<Published>>,
}

impl Registry {
    /// Every shared orb packed, once per test process (the suite also runs under qemu).
    pub fn of_shared() -> &'static Registry {
        static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        REGISTRY.get_or_init(Registry::pack_shared)
    }

    fn pack_shared() -> Registry {
        let mut orbs: BTreeMap<String, Vec<Published>> = BTreeMap::new();
        for orb in shared_orbs() {
            let v: Vec<u64> = orb.version.split('.').map(|p| p.parse().unwrap()).collect();
            orbs.entry(format!("{}/{}", orb.namespace, orb.name))
                .or_default()
                .push(((v[0], v[1], v[2]), orb.packed()));
        }
        Registry { orbs }
    }

    pub fn fetch(&self, reference: &str) -> Option<ResolvedOrb> {
        let r = OrbRef::parse(reference).ok()?;
        let versions = self.orbs.get(&r.full_name())?;
        let (v, source) = versions
            .iter()
            .filter(|(v, _)| r.version.matches(*v))
            .max_by_key(|(v, _)| *v)?;
        Some(ResolvedOrb {
            reference: reference.to_owned(),
            version: format!("{}@{}.{}.{}", r.full_name(), v.0, v.1, v.2),
            source: source.clone(),
        })
    }

    pub fn resolve(
        &self,
        source: &str,
        file: &str,
    ) -> Result<ResolvedOrbs, bosun_config::ConfigError> {
        block_on(resolve_orbs(source, file, |reference| {
            std::future::ready(Ok(self.fetch(&reference)))
        }))
    }
}

/// Runs a future whose every await is ready (the registry above answers at once).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// The references MANIFEST.tsv says have no source (`unavailable`).
fn unavailable() -> Vec<String> {
    let manifest = std::fs::read_to_string(Path::new(ORBS).join("MANIFEST.tsv")).unwrap();
    manifest
        .lines()
        .skip(1)
        .filter(|l| l.split('\t').nth(2) == Some("unavailable"))
        .map(|l| l.split('\t').next().unwrap_or("").to_owned())
        .collect()
}

/// Every orb version packs, and what it packs to validates with the orbs it imports resolved
/// from the same data; an orb whose import has no source (the manifest says which) is refused
/// naming that import.
#[test]
fn every_shared_orb_packs_and_validates() {
    let registry = Registry::of_shared();
    let missing = unavailable();
    let (mut valid, mut refused, mut invalid) = (0, Vec::new(), Vec::new());
    for orb in shared_orbs() {
        let packed = orb.packed();
        let file = orb.reference();
        let imports = registry
            .resolve(&packed, &file)
            .unwrap_or_else(|e| panic!("resolving the imports of {file}: {e}"));
        let ctx = PipelineContext {
            orbs: imports.shared(),
            ..PipelineContext::default()
        };
        match validate_orb(&packed, &file, &ctx) {
            Ok(summary) => {
                assert!(
                    summary.commands + summary.jobs + summary.executors > 0,
                    "{file} packed to an orb with no element"
                );
                valid += 1;
            }
            Err(e) => {
                let named = missing.iter().any(|m| {
                    e.message.starts_with("orb not in registry") && e.message.contains(m.as_str())
                });
                if named {
                    refused.push(format!("{file}: {e}"));
                } else {
                    invalid.push(format!("{file} does not validate: {e}"));
                }
            }
        }
    }
    println!("{valid} orb versions valid; refused for an import without source: {refused:#?}");
    assert!(invalid.is_empty(), "{invalid:#?}");
    assert!(refused.len() <= 1, "{refused:#?}");
}

/// The packed form of a few orbs, kept as snapshots (`UPDATE_EXPECT=1` refreshes them).
#[test]
fn packed_snapshots() {
    for (reference, snapshot) in [
        (
            "circleci/slack@4.12.5",
            expect_test::expect_file!["packed/circleci-slack-4.12.5.yml"],
        ),
        (
            "circleci/go@1.11.0",
            expect_test::expect_file!["packed/circleci-go-1.11.0.yml"],
        ),
        (
            "circleci/continuation@1.1.0",
            expect_test::expect_file!["packed/circleci-continuation-1.1.0.yml"],
        ),
    ] {
        let orb = shared_orbs()
            .into_iter()
            .find(|o| o.reference() == reference)
            .unwrap_or_else(|| panic!("{reference} is not in the orb test data"));
        snapshot.assert_eq(&orb.packed());
    }
}

/// With every orb of the test data in a registry, every corpus config whose registry orbs are
/// all there compiles (or is refused for an allowed reason that is not about orbs); the others
/// are refused naming the orb the registry lacks.
#[test]
fn corpus_compiles_with_its_orbs_resolved() {
    let registry = Registry::of_shared();
    let files = corpus();
    let (mut compiled, mut missing, mut before) = (0, Vec::new(), 0);
    let mut unexpected = Vec::new();
    let mut largest: Option<(usize, String, String, Arc<ResolvedOrbs>)> = None;
    for (path, text) in &files {
        let file = name(path);
        if bosun_config::compile(text, &file).is_ok() {
            before += 1;
        }
        let orbs = registry
            .resolve(text, &file)
            .unwrap_or_else(|e| panic!("resolving the orbs of {file}: {e}"));
        let orbs = Arc::new(orbs);
        let ctx = PipelineContext {
            orbs: Some(orbs.clone()),
            project_slug: Some("gh/bosun/corpus".into()),
            ..PipelineContext::default()
        };
        match bosun_config::compile_pipeline(text, &file, &ctx) {
            Ok(_) => {
                compiled += 1;
                if !orbs.is_empty() && largest.as_ref().is_none_or(|l| l.0 < text.len()) {
                    largest = Some((text.len(), file.clone(), text.clone(), orbs.clone()));
                }
            }
            Err(e) if e.message.starts_with("orb not in registry: ") => missing.push(e.to_string()),
            Err(e) => {
                let allowed = crate::corpus::ALLOWED_REFUSALS
                    .iter()
                    .any(|r| e.message.starts_with(r));
                if !allowed {
                    unexpected.push(format!("{file} is refused with its orbs resolved: {e}"));
                }
                println!("refused (not for an orb): {e}");
            }
        }
    }
    for m in &missing {
        println!("orb missing: {}", m.chars().take(300).collect::<String>());
    }
    if let Some((size, file, text, orbs)) = &largest {
        let ctx = PipelineContext {
            orbs: Some(orbs.clone()),
            ..PipelineContext::default()
        };
        let runs = 20;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            bosun_config::compile_pipeline(text, file, &ctx).unwrap();
        }
        println!(
            "largest corpus config using orbs: {file} ({size} bytes, {} orbs): {:?} per compile",
            orbs.len(),
            start.elapsed() / runs
        );
    }
    println!(
        "{compiled} of {} corpus configs compile with their orbs resolved (without: {before}); \
         {} refused for a missing orb",
        files.len(),
        missing.len()
    );
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert!(
        compiled > before,
        "resolving orbs compiled no more configs than before"
    );
    // Every config that names only orbs of the test data compiles.
    for (path, text) in &files {
        let all_present = orb_imports(text, &name(path))
            .unwrap()
            .iter()
            .all(|i| registry.fetch(&i.reference).is_some());
        let file = name(path);
        if all_present {
            assert!(
                !missing.iter().any(|m| m.starts_with(&format!("{file}:"))),
                "{file} has all its orbs and is refused for a missing one"
            );
        }
    }
}

#[test]
fn version_specs_resolve_as_circleci_does() {
    let registry = Registry::of_shared();
    for (reference, version) in [
        ("circleci/node@7.2", "circleci/node@7.2.1"),
        ("circleci/node@7", "circleci/node@7.2.1"),
        ("circleci/node@5.0.2", "circleci/node@5.0.2"),
        ("circleci/node@volatile", "circleci/node@7.2.1"),
        ("circleci/slack@4", "circleci/slack@4.12.5"),
        ("circleci/slack@4.1", "circleci/slack@4.1.4"),
    ] {
        assert_eq!(
            registry.fetch(reference).map(|o| o.version).as_deref(),
            Some(version),
            "{reference}"
        );
    }
    assert!(registry.fetch("circleci/node@8").is_none());
    assert_eq!(
        VersionSpec::parse("dev:alpha"),
        Some(VersionSpec::Dev("alpha".into()))
    );
    for bad in ["1.2.3.4", "01.2", "", "dev:", "latest", "1.x", "dev:a b"] {
        assert_eq!(VersionSpec::parse(bad), None, "{bad}");
    }
    for bad in [
        "circleci/node",
        "node@1",
        "Circle/node@1",
        "a/b@x",
        "../x@1",
    ] {
        assert!(OrbRef::parse(bad).is_err(), "{bad}");
    }
}

/// Orbs importing orbs: resolved recursively, a cycle refused naming it, depth bounded.
#[test]
fn imports_resolve_recursively_and_cycles_are_refused() {
    let orb = |imports: &[(&str, &str)]| {
        let mut text =
            String::from("version: 2.1\ncommands:\n  hello:\n    steps:\n      - run: echo hi\n");
        if !imports.is_empty() {
            text.push_str("orbs:\n");
            for (alias, reference) in imports {
                text.push_str(&format!("  {alias}: {reference}\n"));
            }
        }
        text
    };
    let sources: BTreeMap<&str, String> = [
        ("t/a@1.0.0", orb(&[("b", "t/b@1.0.0")])),
        ("t/b@1.0.0", orb(&[("c", "t/c@1.0.0")])),
        ("t/c@1.0.0", orb(&[])),
        ("t/x@1.0.0", orb(&[("y", "t/y@1.0.0")])),
        ("t/y@1.0.0", orb(&[("x", "t/x@1.0.0")])),
    ]
    .into_iter()
    .collect();
    let fetch = |reference: String| {
        std::future::ready(Ok(sources.get(reference.as_str()).map(|s| ResolvedOrb {
            version: reference.clone(),
            reference,
            source: s.clone(),
        })))
    };
    let config = "version: 2.1\norbs:\n  a: t/a@1.0.0\njobs:\n  build:\n    machine: true\n    steps:\n      - a/b/c/hello\n";
    let orbs = block_on(resolve_orbs(config, "config.yml", fetch)).unwrap();
    assert_eq!(orbs.len(), 3);
    let ctx = PipelineContext {
        orbs: orbs.shared(),
        ..PipelineContext::default()
    };
    let pipeline = bosun_config::compile_pipeline(config, "config.yml", &ctx).unwrap();
    assert_eq!(pipeline.jobs["build"].steps.len(), 1);

    let cycle = "version: 2.1\norbs:\n  x: t/x@1.0.0\njobs:\n  build:\n    machine: true\n    steps:\n      - run: true\n";
    let e = block_on(resolve_orbs(cycle, "config.yml", fetch)).unwrap_err();
    assert_eq!(e.message, "orb import cycle: t/x imports t/y imports t/x");
    assert_eq!(e.file, "t/y@1.0.0");

    // A chain deeper than the bound.
    let deep: BTreeMap<String, String> = (0..12)
        .map(|i| {
            (
                format!("t/d{i}@1.0.0"),
                orb(&[("n", &format!("t/d{}@1.0.0", i + 1))]),
            )
        })
        .collect();
    let fetch = |reference: String| {
        std::future::ready(Ok(deep.get(&reference).map(|s| ResolvedOrb {
            version: reference.clone(),
            reference,
            source: s.clone(),
        })))
    };
    let config = "version: 2.1\norbs:\n  d: t/d0@1.0.0\njobs:\n  build:\n    machine: true\n    steps:\n      - run: true\n";
    let e = block_on(resolve_orbs(config, "config.yml", fetch)).unwrap_err();
    assert!(
        e.message.starts_with("orbs import orbs more than 8 deep"),
        "{e}"
    );

    // A used orb the registry lacks is refused naming it.
    let fetch = |_reference: String| std::future::ready(Ok(None));
    let config = "version: 2.1\norbs:\n  s: circleci/slack@4.12\njobs:\n  build:\n    machine: true\n    steps:\n      - s/notify\n";
    let orbs = block_on(resolve_orbs(config, "config.yml", fetch)).unwrap();
    let ctx = PipelineContext {
        orbs: orbs.shared(),
        ..PipelineContext::default()
    };
    let e = bosun_config::compile_pipeline(config, "config.yml", &ctx).unwrap_err();
    assert!(
        e.message
            .starts_with("orb not in registry: `s` (circleci/slack@4.12)"),
        "{e}"
    );
    assert_eq!((e.line, e.path.as_str()), (3, "orbs.s"));
}

/// `<<include(...)>>` never reaches outside the source directory, and errors name the file.
#[test]
fn pack_refuses_includes_outside_the_source_and_names_files() {
    let dir = std::env::temp_dir().join(format!("bosun-pack-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("commands")).unwrap();
    std::fs::create_dir_all(src.join("scripts")).unwrap();
    std::fs::write(dir.join("secret.txt"), "outside").unwrap();
    std::fs::write(src.join("@orb.yml"), "version: 2.1\ndescription: test\n").unwrap();
    std::fs::write(src.join("scripts/hi.sh"), "echo hi\n").unwrap();
    std::fs::write(
        src.join("commands/hi.yml"),
        "steps:\n  - run:\n      command: <<include(scripts/hi.sh)>>\n",
    )
    .unwrap();
    let packed = pack(&src).unwrap();
    assert!(packed.contains("echo hi"), "{packed}");
    validate_orb(&packed, "t.yml", &PipelineContext::default()).unwrap();

    for bad in ["../secret.txt", "/etc/passwd", "scripts/none.sh"] {
        std::fs::write(
            src.join("commands/hi.yml"),
            format!("steps:\n  - run:\n      command: <<include({bad})>>\n"),
        )
        .unwrap();
        let e = pack(&src).unwrap_err();
        assert!(e.file.ends_with("commands/hi.yml"), "{e}");
        assert_eq!(e.line, 3, "{e}");
        assert!(!e.to_string().contains("outside"), "{e}");
    }
    std::os::unix::fs::symlink(dir.join("secret.txt"), src.join("scripts/link.sh")).unwrap();
    std::fs::write(
        src.join("commands/hi.yml"),
        "steps:\n  - run:\n      command: <<include(scripts/link.sh)>>\n",
    )
    .unwrap();
    let e = pack(&src).unwrap_err();
    assert!(e.message.contains("not a file inside"), "{e}");
    std::fs::write(src.join("commands/hi.yml"), "steps:\n  - run: [\n").unwrap();
    let e = pack(&src).unwrap_err();
    assert!(e.file.ends_with("commands/hi.yml") && e.line >= 2, "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A compiled job says which orb defines it and which executor (of which orb) it named, so a
/// refusal can name them; a Windows machine image compiles to a Windows executor.
#[test]
fn jobs_know_the_orb_and_executor_they_come_from() {
    let registry = Registry::of_shared();
    let config = "version: 2.1\norbs:\n  win: circleci/windows@5.0.0\n  node: circleci/node@7.2.1\n\
                  jobs:\n  build:\n    executor: win/default\n    steps:\n      - run: dir\n\
                  workflows:\n  main:\n    jobs: [build, node/test]\n";
    let orbs = registry.resolve(config, "config.yml").unwrap();
    let ctx = PipelineContext {
        orbs: orbs.shared(),
        ..PipelineContext::default()
    };
    let pipeline = bosun_config::compile_pipeline(config, "config.yml", &ctx).unwrap();
    let build = &pipeline.jobs["build"];
    assert_eq!(build.orb, None);
    assert_eq!(build.executor_name.as_deref(), Some("win/default"));
    assert_eq!(
        build.executor_orb.as_deref(),
        Some("circleci/windows@5.0.0")
    );
    assert!(
        matches!(&build.executor, bosun_config::Executor::Windows { image } if image.starts_with("windows-server-2022")),
        "{:?}",
        build.executor
    );
    let test = &pipeline.jobs["node/test"];
    assert_eq!(test.orb.as_deref(), Some("circleci/node@7.2.1"));
    assert_eq!(test.executor_name.as_deref(), Some("node/default"));
    assert_eq!(test.executor_orb.as_deref(), Some("circleci/node@7.2.1"));
}
