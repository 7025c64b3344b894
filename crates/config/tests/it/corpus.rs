//! Real-world configs: compiling never panics, and every error has a position.
//!
//! Most of these configs use orbs, `commands` or `executors`, which bosun refuses for now;
//! refusing is fine, panicking or an error without a position is not.

use std::fs;
use std::path::{Path, PathBuf};

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/corpus/configs"
);

pub fn corpus() -> Vec<(PathBuf, String)> {
    // CI always has the corpus beside the checkout: without it these tests would pass having
    // checked nothing.
    let dir = fs::read_dir(CORPUS).unwrap_or_else(|e| {
        panic!("the corpus is missing: {CORPUS} (../shared/corpus beside the checkout): {e}")
    });
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text =
                fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (p, text)
        })
        .collect::<Vec<_>>()
        .tap_nonempty()
}

trait NonEmpty {
    fn tap_nonempty(self) -> Self;
}

impl NonEmpty for Vec<(PathBuf, String)> {
    fn tap_nonempty(self) -> Self {
        assert!(!self.is_empty(), "the corpus at {CORPUS} has no config");
        self
    }
}

pub fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn check(file: &str, text: &str) -> bool {
    match bosun_config::compile(text, file) {
        Ok(_) => true,
        Err(e) => {
            assert!(
                e.line >= 1 && e.column >= 1,
                "error without a position: {e:?}"
            );
            assert_eq!(e.file, file);
            assert!(!e.message.is_empty(), "error without a message: {e:?}");
            false
        }
    }
}

/// Reasons a real-world config may be refused: things bosun cannot do by design or yet.
/// Anything else is a compiler bug (or a new corpus file showing a gap to close).
pub const ALLOWED_REFUSALS: &[&str] = &[
    "registry orbs cannot be fetched by bosun: ",
    "orb not in registry: ",
    // Serializing jobs across pipelines needs a scheduler feature bosun lacks.
    "unsupported key `serial-group`",
    // optimism's `attach_workspace` has an `if:` CircleCI ignores; bosun refuses unknown keys.
    "unsupported key `if`",
];

/// Every corpus file compiles, or is refused for an allowed reason with a precise position.
/// New files dropped into the corpus folder are picked up with no code change.
#[test]
fn corpus_compiles_or_is_refused_for_an_allowed_reason() {
    let files = corpus();
    let mut compiled = 0;
    let mut refused: Vec<String> = Vec::new();
    let mut unexpected: Vec<String> = Vec::new();
    for (path, text) in &files {
        let file = name(path);
        check(&file, text);
        match bosun_config::compile(text, &file) {
            Ok(_) => compiled += 1,
            Err(e) if ALLOWED_REFUSALS.iter().any(|r| e.message.starts_with(r)) => {
                refused.push(e.to_string())
            }
            Err(e) => unexpected.push(e.to_string()),
        }
    }
    for r in &refused {
        println!("refused: {r}");
    }
    if let Some((path, text)) = files.iter().max_by_key(|(_, t)| t.len()) {
        let start = std::time::Instant::now();
        let runs = 20;
        for _ in 0..runs {
            let _ = bosun_config::compile(text, &name(path));
        }
        println!(
            "largest corpus file {} ({} bytes): {:?} per compile",
            name(path),
            text.len(),
            start.elapsed() / runs
        );
    }
    println!(
        "{compiled} of {} corpus configs compiled, {} refused for allowed reasons",
        files.len(),
        refused.len()
    );
    assert!(
        unexpected.is_empty(),
        "{} corpus configs failed for reasons not on the allowed list:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutated corpus configs (truncated, spliced, with YAML punctuation inserted) never panic.
/// `BOSUN_CONFIG_MUTATIONS` sets the number of mutations per file (default 40).
#[test]
fn mutated_corpus_never_panics() {
    let rounds: usize = std::env::var("BOSUN_CONFIG_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    const TOKENS: &[&str] = &[
        ":", "- ", "\n", "  ", "[", "]", "{", "}", "&a ", "*a", "<<: *a\n", "<<: ", "~", "\"", "'",
        "|\n", "? ", "!!str ", "#", ",", "\t", "---\n", "é",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (path, text) in corpus() {
        let file = name(&path);
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        for _ in 0..rounds {
            let at = boundaries[rng.below(boundaries.len())];
            let mutated = match rng.below(4) {
                0 => text[..at].to_owned(),
                1 => {
                    let to = boundaries[rng.below(boundaries.len())].max(at);
                    format!("{}{}", &text[..at], &text[to..])
                }
                _ => format!(
                    "{}{}{}",
                    &text[..at],
                    TOKENS[rng.below(TOKENS.len())],
                    &text[at..]
                ),
            };
            check(&file, &mutated);
        }
    }
}
