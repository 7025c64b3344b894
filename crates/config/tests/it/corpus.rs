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

fn corpus() -> Vec<(PathBuf, String)> {
    let Ok(dir) = fs::read_dir(CORPUS) else {
        println!("skipping: no corpus at {CORPUS}");
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| fs::read_to_string(&p).ok().map(|text| (p, text)))
        .collect()
}

fn name(path: &Path) -> String {
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

#[test]
fn corpus_compiles_or_fails_with_positions() {
    let files = corpus();
    let mut compiled = 0;
    for (path, text) in &files {
        let file = name(path);
        if check(&file, text) {
            compiled += 1;
        } else if let Err(e) = bosun_config::compile(text, &file) {
            println!("{e}");
        }
    }
    println!("{compiled} of {} corpus configs compiled", files.len());
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
