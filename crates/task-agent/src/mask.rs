//! Secret masking: every secret the task-agent knows, replaced by `********` in every log byte it
//! sends.
//!
//! The patterns of a value (see [`forms`]): the value itself, its standard base64 without
//! padding, its percent-encoded forms (RFC 3986 and form encoding, when they differ), and for a
//! multi-line value each line; only values of [`MIN_CHARS`] or more characters, and never
//! `true`/`false` (CircleCI's rule: such values would mask ordinary output).
//!
//! One [`Patterns`] (an Aho-Corasick automaton, leftmost-longest) is built per set of values;
//! the set grows when the job registers a value at run time (`circleci-agent mask`), and the
//! automaton is then rebuilt once for the new set. [`Masks`] holds the current set.
//!
//! Masking is streaming: a log arrives in chunks that split writes anywhere, so each log stream
//! keeps a [`Held`] tail. Of the pending bytes, only the longest suffix that is a proper prefix
//! of some pattern is held back (ordinary output is not delayed), and [`Patterns::finish`]
//! releases it, masked, when the stream ends. The output is the same, byte for byte, as masking
//! the whole stream at once. With no patterns there is no [`Patterns`] at all and a chunk goes
//! out untouched (no copy, no allocation).

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use aho_corasick::automaton::Automaton as _;
use aho_corasick::nfa::contiguous;
use aho_corasick::{AhoCorasick, Anchored, Input, MatchKind, StartKind};
use bosun_protocol::task::TaskSpec;
use bytes::Bytes;

/// What every match becomes.
pub const REPLACEMENT: &[u8] = b"********";

/// Values shorter than this (in characters) are not masked.
pub const MIN_CHARS: usize = 4;

/// Most values the job may register at run time (`circleci-agent mask`).
pub const MAX_RUNTIME_MASKS: usize = 1000;

/// Longest value the job may register at run time, in bytes.
pub const MAX_RUNTIME_VALUE: usize = 64 << 10;

/// Most bytes of all values registered at run time together: each costs automaton memory
/// (about five patterns per value) and a rebuild.
pub const MAX_RUNTIME_TOTAL: usize = 1 << 20;

/// Whether `value` is masked at all: [`MIN_CHARS`] or more characters, and not a boolean.
pub fn is_maskable(value: &str) -> bool {
    value.chars().count() >= MIN_CHARS && !matches!(value, "true" | "True" | "false" | "False")
}

/// The patterns that mask `value` (empty when it is not [`is_maskable`]): the value, its
/// standard base64 without padding (so `echo -n "$S" | base64` is masked), its percent-encoded
/// forms (every byte outside RFC 3986's unreserved set as `%XX`, upper-case; and the form
/// encoding with `+` for a space) when they differ from it, and each line of 4 or more
/// characters of a multi-line value.
pub fn forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    let mut forms = Vec::new();
    if !is_maskable(value) {
        return forms;
    }
    forms.push(value.to_owned());
    forms.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(value));
    // RFC 3986 (`encodeURIComponent`, `quote(v, safe="")`), form encoding (`+` for space),
    // and Python's `urllib.parse.quote` default, which keeps `/`.
    for (plus_for_space, keep_slash) in [(false, false), (true, false), (false, true)] {
        let encoded = percent_encode(value, plus_for_space, keep_slash);
        if encoded != value {
            forms.push(encoded);
        }
    }
    if value.contains('\n') {
        for line in value.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if is_maskable(line) {
                forms.push(line.to_owned());
            }
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

fn percent_encode(value: &str, plus_for_space: bool, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            b'/' if keep_slash => out.push('/'),
            b' ' if plus_for_space => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 15)]));
            }
        }
    }
    out
}

/// Every secret value of a task: its secret environment, its checkout credentials and its SSH
/// keys.
pub fn task_secrets(task: &TaskSpec) -> Vec<&str> {
    let mut values: Vec<&str> = task.secrets.0.values().map(String::as_str).collect();
    if let Some(auth) = &task.checkout_auth {
        values.extend(auth.ssh_private_key.iter().map(|key| key.0.as_str()));
        values.extend(auth.https_token.iter().map(|token| token.0.as_str()));
    }
    values.extend(task.ssh_keys.iter().map(|key| key.private_key.0.as_str()));
    values
}

/// The pending tail of one log stream: bytes that may be the start of a secret.
pub type Held = Vec<u8>;

/// Most bytes of patterns searched with a DFA (above, the crate's NFA).
const DFA_MAX_BYTES: usize = 32 << 10;

/// A compiled, non-empty set of patterns.
pub struct Patterns {
    /// Finds the matches: leftmost-longest, as if the whole stream were searched at once.
    searcher: AhoCorasick,
    /// The same patterns, anchored, stepped by hand to tell whether a tail of a chunk is the
    /// beginning of some pattern.
    prefixes: contiguous::NFA,
    /// `extendable[id]`: pattern `id` is a proper prefix of another pattern.
    extendable: Vec<bool>,
    /// Whether some pattern begins with this byte: most tails are ruled out by it at once.
    first_bytes: [bool; 256],
    max_len: usize,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the patterns themselves: they are the secrets.
        f.debug_struct("Patterns")
            .field("count", &self.extendable.len())
            .finish_non_exhaustive()
    }
}

/// The result of scanning a buffer: what to send and where the held tail starts.
struct Scan {
    /// The masked bytes before `hold_from`, or `None` when there was no match (send the
    /// buffer's first `hold_from` bytes unchanged).
    masked: Option<Vec<u8>>,
    hold_from: usize,
}

impl Patterns {
    /// Compiles `patterns`; `None` when there are none. Errors only when the automaton would
    /// be too large (which the bounds on values rule out).
    pub fn new(patterns: &BTreeSet<String>) -> Result<Option<Patterns>, String> {
        if patterns.is_empty() {
            return Ok(None);
        }
        // Sorted and distinct (a set): every pattern that `p` is a proper prefix of comes right
        // after `p`.
        let list: Vec<&String> = patterns.iter().collect();
        let extendable = (0..list.len())
            .map(|i| {
                list.get(i + 1)
                    .is_some_and(|next| next.as_bytes().starts_with(list[i].as_bytes()))
            })
            .collect();
        // A DFA searches about twice as fast as the NFA the crate picks past 100 patterns
        // (504 vs 215 MiB/s for 100 secrets of 32 characters), at a memory cost that grows
        // with the patterns' bytes: worth it up to a few MiB, so up to `DFA_MAX_BYTES`.
        let pattern_bytes: usize = list.iter().map(|p| p.len()).sum();
        let kind = (pattern_bytes <= DFA_MAX_BYTES).then_some(aho_corasick::AhoCorasickKind::DFA);
        let searcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(StartKind::Unanchored)
            .kind(kind)
            .build(&list)
            .map_err(|err| format!("cannot build the secret masker: {err}"))?;
        let prefixes = contiguous::NFA::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .prefilter(false)
            .build(&list)
            .map_err(|err| format!("cannot build the secret masker: {err}"))?;
        let mut first_bytes = [false; 256];
        for pattern in &list {
            if let Some(&byte) = pattern.as_bytes().first() {
                first_bytes[usize::from(byte)] = true;
            }
        }
        let max_len = list.iter().map(|p| p.len()).max().unwrap_or(0);
        Ok(Some(Patterns {
            searcher,
            prefixes,
            extendable,
            first_bytes,
            max_len,
        }))
    }

    /// Heap bytes of the automata.
    pub fn memory_usage(&self) -> usize {
        self.searcher.memory_usage() + self.prefixes.memory_usage()
    }

    /// Masks the next chunk of a stream whose pending tail is `held`: returns what can be sent
    /// now (possibly empty) and leaves in `held` what must wait for the next chunk.
    pub fn mask_chunk(&self, held: &mut Held, chunk: Bytes) -> Bytes {
        if held.is_empty() {
            let scan = self.scan(&chunk, false);
            held.extend_from_slice(&chunk[scan.hold_from..]);
            return match scan.masked {
                Some(masked) => Bytes::from(masked),
                None => chunk.slice(..scan.hold_from),
            };
        }
        held.extend_from_slice(&chunk);
        let scan = self.scan(held, false);
        let out = match scan.masked {
            Some(masked) => Bytes::from(masked),
            None => Bytes::copy_from_slice(&held[..scan.hold_from]),
        };
        held.drain(..scan.hold_from);
        out
    }

    /// The end of the stream: the held tail, masked.
    pub fn finish(&self, held: &mut Held) -> Bytes {
        let tail = std::mem::take(held);
        let scan = self.scan(&tail, true);
        match scan.masked {
            Some(masked) => Bytes::from(masked),
            None => Bytes::from(tail),
        }
    }

    /// Masks a whole text (a test case's message).
    pub fn mask_str(&self, text: &str) -> String {
        match self.scan(text.as_bytes(), true).masked {
            // Patterns are valid UTF-8 and UTF-8 is self-synchronizing, so a match never
            // splits a character: the result is text.
            Some(masked) => String::from_utf8_lossy(&masked).into_owned(),
            None => text.to_owned(),
        }
    }

    fn scan(&self, buf: &[u8], at_end: bool) -> Scan {
        let hold_start = |from: usize| {
            if at_end {
                buf.len()
            } else {
                self.hold_start(buf, from)
            }
        };
        let first_hold = hold_start(0);
        let mut pos = 0;
        let mut masked: Option<Vec<u8>> = None;
        loop {
            // Before `hold`, no position starts a pattern that could end past the buffer, so a
            // match found there is final.
            let hold = if pos <= first_hold {
                first_hold
            } else {
                hold_start(pos)
            };
            let found = self.searcher.find(Input::new(buf).span(pos..buf.len()));
            match found {
                Some(m) if m.start() < hold => {
                    let out = masked.get_or_insert_with(|| Vec::with_capacity(buf.len()));
                    out.extend_from_slice(&buf[pos..m.start()]);
                    out.extend_from_slice(REPLACEMENT);
                    pos = m.end();
                }
                _ => {
                    if let Some(out) = masked.as_mut() {
                        out.extend_from_slice(&buf[pos..hold]);
                    }
                    return Scan {
                        masked,
                        hold_from: hold,
                    };
                }
            }
        }
    }

    /// The earliest position at or after `from` whose suffix of `buf` is a proper prefix of a
    /// pattern (more bytes could complete or lengthen a match there); `buf.len()` if none.
    fn hold_start(&self, buf: &[u8], from: usize) -> usize {
        let window = buf.len().saturating_sub(self.max_len.saturating_sub(1));
        let Ok(start) = self.prefixes.start_state(Anchored::Yes) else {
            return buf.len();
        };
        for p in from.max(window)..buf.len() {
            if !self.first_bytes[usize::from(buf[p])] {
                continue;
            }
            let mut sid = start;
            let mut dead = false;
            for &byte in &buf[p..] {
                sid = self.prefixes.next_state(Anchored::Yes, sid, byte);
                if self.prefixes.is_dead(sid) {
                    dead = true;
                    break;
                }
            }
            if dead {
                continue;
            }
            // A live state: `buf[p..]` is a prefix of some pattern. It is a proper prefix
            // unless it is a whole pattern that nothing extends.
            let whole_and_final = self.prefixes.is_match(sid)
                && (0..self.prefixes.match_len(sid)).any(|i| {
                    let pid = self.prefixes.match_pattern(sid, i);
                    self.prefixes.pattern_len(pid) == buf.len() - p
                        && !self.extendable[pid.as_usize()]
                });
            if !whole_and_final {
                return p;
            }
        }
        buf.len()
    }
}

/// Why a value registered at run time is not masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("the value is empty")]
    Empty,
    #[error("the value is longer than {MAX_RUNTIME_VALUE} bytes")]
    TooLong,
    #[error(
        "too many masks: at most {MAX_RUNTIME_MASKS} values (and {MAX_RUNTIME_TOTAL} bytes) per task"
    )]
    TooMany,
    #[error("{0}")]
    Build(String),
}

/// What registering a value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Masked from now on.
    Masked,
    /// Masked already.
    Known,
    /// Too short, or `true`/`false`: not masked (CircleCI's rule).
    NotMaskable,
}

/// The task's mask set, shared by every log stream; cheap to read.
#[derive(Default)]
pub struct Masks {
    inner: RwLock<MaskSet>,
}

impl std::fmt::Debug for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: the values are the secrets.
        let set = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f.debug_struct("Masks")
            .field("values", &set.values.len())
            .field("patterns", &set.patterns.len())
            .field("runtime", &set.runtime_count)
            .finish()
    }
}

#[derive(Default)]
struct MaskSet {
    values: BTreeSet<String>,
    patterns: BTreeSet<String>,
    compiled: Option<Arc<Patterns>>,
    runtime_count: usize,
    runtime_bytes: usize,
}

impl Masks {
    pub fn new() -> Masks {
        Masks::default()
    }

    /// The current patterns, or `None` when there is nothing to mask.
    pub fn current(&self) -> Option<Arc<Patterns>> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .compiled
            .clone()
    }

    /// Adds the task's secrets (before its first step); returns how many values are masked.
    pub fn add_task_secrets(&self, task: &TaskSpec) -> Result<usize, MaskError> {
        let mut set = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut patterns = set.patterns.clone();
        let mut values = set.values.clone();
        for value in task_secrets(task) {
            if is_maskable(value) && values.insert(value.to_owned()) {
                patterns.extend(forms(value));
            }
        }
        set.compile(values, patterns)?;
        Ok(set.values.len())
    }

    /// Adds a value the job registered at run time (bounded: [`MAX_RUNTIME_MASKS`],
    /// [`MAX_RUNTIME_VALUE`], [`MAX_RUNTIME_TOTAL`]). Once this returns, every chunk masked
    /// after it masks the value.
    pub fn add_runtime(&self, value: &str) -> Result<Added, MaskError> {
        if value.is_empty() {
            return Err(MaskError::Empty);
        }
        if value.len() > MAX_RUNTIME_VALUE {
            return Err(MaskError::TooLong);
        }
        if !is_maskable(value) {
            return Ok(Added::NotMaskable);
        }
        let mut set = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if set.values.contains(value) {
            return Ok(Added::Known);
        }
        if set.runtime_count >= MAX_RUNTIME_MASKS
            || set.runtime_bytes + value.len() > MAX_RUNTIME_TOTAL
        {
            return Err(MaskError::TooMany);
        }
        let mut values = set.values.clone();
        values.insert(value.to_owned());
        let mut patterns = set.patterns.clone();
        patterns.extend(forms(value));
        set.compile(values, patterns)?;
        set.runtime_count += 1;
        set.runtime_bytes += value.len();
        Ok(Added::Masked)
    }
}

impl MaskSet {
    fn compile(
        &mut self,
        values: BTreeSet<String>,
        patterns: BTreeSet<String>,
    ) -> Result<(), MaskError> {
        if patterns != self.patterns || self.compiled.is_none() {
            self.compiled = Patterns::new(&patterns)
                .map_err(MaskError::Build)?
                .map(Arc::new);
        }
        self.values = values;
        self.patterns = patterns;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-V@lue with space/and:colon1";

    fn patterns(values: &[&str]) -> Patterns {
        let set: BTreeSet<String> = values.iter().flat_map(|value| forms(value)).collect();
        Patterns::new(&set).unwrap().expect("patterns")
    }

    /// Masks `input` written in `pieces` of the given sizes (cycled), then the end.
    fn stream(patterns: &Patterns, input: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut held = Held::new();
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len()).max(1);
            i += 1;
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            out.extend_from_slice(&patterns.mask_chunk(&mut held, Bytes::copy_from_slice(piece)));
            assert!(held.len() < patterns.max_len, "held more than a pattern");
        }
        out.extend_from_slice(&patterns.finish(&mut held));
        assert!(held.is_empty());
        out
    }

    fn whole(patterns: &Patterns, input: &str) -> String {
        patterns.mask_str(input)
    }

    #[test]
    fn masks_a_whole_value() {
        let p = patterns(&[SECRET]);
        let input = format!("before {SECRET} after\n");
        assert_eq!(whole(&p, &input), "before ******** after\n");
        let out = stream(&p, input.as_bytes(), &[usize::MAX]);
        assert_eq!(out, b"before ******** after\n");
    }

    #[test]
    fn one_byte_per_write_is_masked_and_every_split_agrees() {
        let p = patterns(&[SECRET, "abcd", "abcdefgh"]);
        let input = format!("x{SECRET}y abcdefgh abcdefg abc {SECRET}{SECRET}\n");
        let expected = whole(&p, &input);
        assert_eq!(
            expected,
            "x********y ******** ********efg abc ****************\n"
        );
        for sizes in [&[1][..], &[2], &[3], &[5, 1, 7], &[11, 2]] {
            let out = stream(&p, input.as_bytes(), sizes);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "sizes {sizes:?}");
        }
    }

    #[test]
    fn a_value_across_a_64k_boundary_is_masked() {
        let p = patterns(&[SECRET]);
        for filler in [65535usize, 65536, 65536 - SECRET.len() / 2] {
            let mut input = vec![b'a'; filler];
            input.extend_from_slice(SECRET.as_bytes());
            input.extend_from_slice(b"\n");
            let out = stream(&p, &input, &[64 << 10]);
            let mut expected = vec![b'a'; filler];
            expected.extend_from_slice(b"********\n");
            assert_eq!(out, expected, "filler {filler}");
        }
    }

    #[test]
    fn base64_and_url_forms_are_masked() {
        use base64::Engine as _;
        let p = patterns(&[SECRET]);
        let padded = base64::engine::general_purpose::STANDARD.encode(SECRET);
        assert!(padded.ends_with('='), "the test wants a padded encoding");
        assert_eq!(whole(&p, &format!("{padded}\n")), "********==\n");
        let url = "s3cr3t-V%40lue%20with%20space%2Fand%3Acolon1";
        assert_eq!(whole(&p, &format!("u={url}&")), "u=********&");
        let form = "s3cr3t-V%40lue+with+space%2Fand%3Acolon1";
        assert_eq!(whole(&p, &format!("u={form}&")), "u=********&");
        // A value with nothing to encode has one form less, not a duplicate.
        assert_eq!(forms("plainvalue").len(), 2);
    }

    #[test]
    fn short_values_and_booleans_are_not_masked() {
        for value in ["abc", "true", "True", "false", "False", "é€"] {
            assert!(forms(value).is_empty(), "{value}");
        }
        assert_eq!(forms("ab€d").len(), 3, "value, base64, percent-encoded");
        let set: BTreeSet<String> = ["abc", "true"].iter().flat_map(|v| forms(v)).collect();
        assert!(Patterns::new(&set).unwrap().is_none());
    }

    #[test]
    fn overlapping_and_nested_patterns_mask_the_longest_leftmost() {
        let p = patterns(&["abcdef", "cdefgh", "bcde"]);
        assert_eq!(whole(&p, "abcdefgh"), "********gh");
        assert_eq!(whole(&p, "xbcdefgh"), "x********fgh");
        assert_eq!(whole(&p, "abcdcdefgh"), "abcd********");
        for sizes in [&[1][..], &[2], &[3]] {
            for input in ["abcdefgh", "xbcdefgh", "abcdcdefgh", "abcdeabcdef"] {
                let out = stream(&p, input.as_bytes(), sizes);
                assert_eq!(String::from_utf8(out).unwrap(), whole(&p, input));
            }
        }
    }

    #[test]
    fn random_splits_of_secret_fragments_mask_as_the_whole_stream_does() {
        // Inputs made of pieces of the patterns (prefixes, overlaps, repeats), split at random:
        // the streaming result must equal masking the whole input, and no pattern survives.
        let values = ["abcabd", "abcabdab", "bcab", "cabdzz", "zzzz"];
        let p = patterns(&values);
        let pieces = [
            "a", "ab", "abc", "abca", "abcab", "b", "bc", "d", "z", "zz", "c", " ",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let mut input = String::new();
            for _ in 0..(next() % 30) {
                input.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let expected = whole(&p, &input);
            for value in values {
                assert!(!expected.contains(value), "{input:?} -> {expected:?}");
            }
            let sizes: Vec<usize> = (0..5).map(|_| 1 + (next() % 7) as usize).collect();
            let out = stream(&p, input.as_bytes(), &sizes);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "{input:?} {sizes:?}"
            );
        }
    }

    #[test]
    fn a_held_prefix_that_is_no_secret_is_released_unchanged() {
        let p = patterns(&[SECRET]);
        let mut held = Held::new();
        let out = p.mask_chunk(&mut held, Bytes::from_static(b"hello s3cr3t"));
        assert_eq!(&out[..], b"hello ");
        assert_eq!(held, b"s3cr3t");
        let out = p.mask_chunk(&mut held, Bytes::from_static(b"ive world\n"));
        assert_eq!(&out[..], b"s3cr3tive world\n");
        assert!(held.is_empty());
    }

    #[test]
    fn ordinary_output_is_not_delayed_or_copied() {
        let p = patterns(&[SECRET]);
        let mut held = Held::new();
        let chunk = Bytes::from(vec![b'z'; 1000]);
        let pointer = chunk.as_ptr();
        let out = p.mask_chunk(&mut held, chunk);
        assert_eq!(out.len(), 1000);
        assert_eq!(out.as_ptr(), pointer, "the chunk was copied");
        assert!(held.is_empty());
        // A whole secret at the very end is masked at once, not held.
        let out = p.mask_chunk(&mut held, Bytes::from(format!("= {SECRET}")));
        assert_eq!(&out[..], b"= ********");
        assert!(held.is_empty());
    }

    #[test]
    fn the_end_of_the_stream_flushes_the_held_tail() {
        let p = patterns(&[SECRET, "abcd", "abcdefgh"]);
        let mut held = Held::new();
        let out = p.mask_chunk(&mut held, Bytes::from_static(b"x s3cr"));
        assert_eq!(&out[..], b"x ");
        assert_eq!(&p.finish(&mut held)[..], b"s3cr");
        // `abcd` could still grow into `abcdefgh`: held, then masked at the end.
        let out = p.mask_chunk(&mut held, Bytes::from_static(b"y abcd"));
        assert_eq!(&out[..], b"y ");
        assert_eq!(&p.finish(&mut held)[..], b"********");
    }

    #[test]
    fn each_line_of_a_multi_line_value_is_masked() {
        let value = "-----BEGIN KEY-----\r\nMIIEabcdefgh\nxyz\n-----END KEY-----\n";
        let p = patterns(&[value]);
        assert_eq!(whole(&p, value), "********");
        assert_eq!(
            whole(&p, "MIIEabcdefgh xyz -----END KEY-----"),
            "******** xyz ********"
        );
        let out = stream(&p, format!("a{value}b").as_bytes(), &[1]);
        assert_eq!(out, b"a********b");
    }

    #[test]
    fn runtime_masks_are_bounded_and_take_effect_at_once() {
        let masks = Masks::new();
        assert!(masks.current().is_none());
        assert_eq!(masks.add_runtime(""), Err(MaskError::Empty));
        assert_eq!(masks.add_runtime("abc"), Ok(Added::NotMaskable));
        assert_eq!(masks.add_runtime("true"), Ok(Added::NotMaskable));
        assert!(masks.current().is_none());
        assert_eq!(masks.add_runtime("tok-123"), Ok(Added::Masked));
        assert_eq!(masks.add_runtime("tok-123"), Ok(Added::Known));
        let p = masks.current().unwrap();
        assert_eq!(p.mask_str("a tok-123 b"), "a ******** b");
        let long = "x".repeat(MAX_RUNTIME_VALUE + 1);
        assert_eq!(masks.add_runtime(&long), Err(MaskError::TooLong));
        for i in 1..MAX_RUNTIME_MASKS {
            masks.add_runtime(&format!("value-{i:04}")).unwrap();
        }
        assert_eq!(masks.add_runtime("one-too-many"), Err(MaskError::TooMany));
    }

    #[test]
    fn debug_shows_no_pattern() {
        let p = patterns(&[SECRET]);
        assert!(!format!("{p:?}").contains("s3cr3t"));
        let masks = Masks::new();
        masks.add_runtime(SECRET).unwrap();
        assert!(!format!("{masks:?}").contains("s3cr3t"));
    }
}
