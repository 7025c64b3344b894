//! JUnit XML reports, read as a stream of `quick-xml` events into [`TestCase`]s.
//!
//! No tree of the document is ever built: the reader keeps one event in its buffer, and the
//! parser keeps only the stack of open element names' kinds, the enclosing suites' `file`
//! attributes and the case being read. Every input is bounded ([`Limits`]): the file's size, the
//! number of elements, the nesting depth, the number of cases, and the length of each field (a
//! longer failure message is cut at [`MAX_MESSAGE`] bytes and says so).
//!
//! The dialects in use differ in small ways, all of which are accepted: a `<testsuites>` or a
//! `<testsuite>` root (Maven Surefire), nested suites (PHPUnit), `file` on cases (pytest, RSpec,
//! PHPUnit) or only on an enclosing suite (PHPUnit, jest-junit: the case inherits it), `class`
//! instead of `classname`, `time` missing, empty or written with commas, `<failure>`, `<error>`
//! and `<skipped>` with a `message` attribute, a body, both or neither, and anything else
//! (`<properties>`, `<system-out>`, nextest's `<flakyFailure>`) ignored.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use bosun_protocol::task::{TestCase, TestResult};
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

/// Largest results file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 128 << 20;
/// Most test cases one `store_test_results` step stores.
pub const MAX_CASES: usize = 1_000_000;
/// Most elements one file may hold (a case with a failure and its output is about four).
pub const MAX_ELEMENTS: u64 = 10_000_000;
/// Deepest nesting of elements (PHPUnit nests a suite per class and per data provider).
pub const MAX_DEPTH: usize = 64;
/// Longest failure, error or skip message kept, in bytes; longer ones are cut.
pub const MAX_MESSAGE: usize = 64 << 10;
/// Longest name, classname or file kept, in bytes; longer ones are cut.
pub const MAX_FIELD: usize = 4 << 10;
/// Most bytes of text (names, classnames, files, messages) the cases of one step hold: what
/// bounds the step's memory, as [`MAX_CASES`] alone would allow 1M cases of 64 KiB messages.
pub const MAX_TEXT_BYTES: usize = 256 << 20;

/// What [`parse_file`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_file_bytes: u64,
    pub max_cases: usize,
    pub max_elements: u64,
    pub max_depth: usize,
    pub max_message: usize,
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file_bytes: MAX_FILE_BYTES,
            max_cases: MAX_CASES,
            max_elements: MAX_ELEMENTS,
            max_depth: MAX_DEPTH,
            max_message: MAX_MESSAGE,
            max_text_bytes: MAX_TEXT_BYTES,
        }
    }
}

/// Why a results file was not read: `FILE:LINE: what`, or `FILE: what` when no line applies.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {what}", line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct JunitError {
    /// The file as the log names it.
    pub file: String,
    /// 1-based; `None` for errors about the whole file (cannot open it, too large).
    pub line: Option<u64>,
    pub what: String,
}

/// Where a parse failed, before the line is known.
struct Failure {
    /// Byte offset in the input, when the failure is at a place in it.
    at: Option<u64>,
    what: String,
}

impl Failure {
    fn at(at: u64, what: impl Into<String>) -> Failure {
        Failure {
            at: Some(at),
            what: what.into(),
        }
    }
}

/// Parses the JUnit report at `path`; `name` is how errors name it. Every case's `source` is
/// left empty for the caller.
pub fn parse_file(path: &Path, name: &str, limits: &Limits) -> Result<Vec<TestCase>, JunitError> {
    let whole = |what: String| JunitError {
        file: name.to_owned(),
        line: None,
        what,
    };
    let file = open_nofollow(path).map_err(|err| whole(format!("cannot open it: {err}")))?;
    let size = file
        .metadata()
        .map_err(|err| whole(format!("cannot read it: {err}")))?
        .len();
    if size > limits.max_file_bytes {
        return Err(whole(format!(
            "it is {size} bytes; test results files are read up to {} bytes",
            limits.max_file_bytes
        )));
    }
    // `take`: a file that grows while it is read still stops at the limit (plus one byte, to
    // tell a file of exactly the limit from a longer one).
    let reader = BufReader::with_capacity(64 << 10, file.take(limits.max_file_bytes + 1));
    parse(reader, limits).map_err(|failure| {
        let line = failure.at.map(|at| line_of(path, at));
        JunitError {
            file: name.to_owned(),
            line,
            what: failure.what,
        }
    })
}

/// Parses a report held in memory (tests, small inputs); `name` is how errors name it.
pub fn parse_bytes(bytes: &[u8], name: &str, limits: &Limits) -> Result<Vec<TestCase>, JunitError> {
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(JunitError {
            file: name.to_owned(),
            line: None,
            what: format!(
                "it is {} bytes; test results files are read up to {} bytes",
                bytes.len(),
                limits.max_file_bytes
            ),
        });
    }
    parse(bytes, limits).map_err(|failure| JunitError {
        file: name.to_owned(),
        line: failure.at.map(|at| {
            let end = (at as usize).min(bytes.len());
            1 + bytes[..end].iter().filter(|&&b| b == b'\n').count() as u64
        }),
        what: failure.what,
    })
}

fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // `O_NOFOLLOW`: a file swapped for a symlink after the walk is refused, not followed.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// The 1-based line of byte `at` of the file, read again only when a parse failed.
fn line_of(path: &Path, at: u64) -> u64 {
    let Ok(file) = open_nofollow(path) else {
        return 0;
    };
    let mut reader = BufReader::new(file.take(at));
    let mut line = 1u64;
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) | Err(_) => return line,
            Ok(buf) => buf,
        };
        line += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let len = buf.len();
        reader.consume(len);
    }
}

/// What an open element is, as far as the parser cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Suites,
    Suite,
    Case,
    /// `<failure>`, `<error>` or `<skipped>` directly inside the case being read.
    Outcome,
    Other,
}

/// The case being read.
struct Case {
    case: TestCase,
    /// The result element was seen (the first one counts; nextest's reruns come after).
    decided: bool,
    /// The body of the result element, as it is read.
    body: String,
    body_cut: bool,
}

fn parse<R: BufRead>(mut reader: R, limits: &Limits) -> Result<Vec<TestCase>, Failure> {
    let mut xml = quick_xml::Reader::from_reader(&mut reader);
    let config = xml.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut buf = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    // The `file` of each open suite, innermost last (`None` where a suite names none).
    let mut suite_files: Vec<Option<String>> = Vec::new();
    let mut current: Option<Case> = None;
    let mut cases = Vec::new();
    let mut elements = 0u64;
    let mut text_bytes = 0usize;
    let mut seen_root = false;
    loop {
        buf.clear();
        let event = match xml.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(err) => return Err(Failure::at(xml.error_position(), format!("{err}"))),
        };
        let here = xml.buffer_position().saturating_sub(1);
        if xml.buffer_position() > limits.max_file_bytes {
            return Err(Failure {
                at: None,
                what: format!(
                    "it grew past {} bytes while it was read",
                    limits.max_file_bytes
                ),
            });
        }
        match event {
            Event::Start(ref element) | Event::Empty(ref element) => {
                let empty = matches!(event, Event::Empty(_));
                elements += 1;
                if elements > limits.max_elements {
                    return Err(Failure::at(
                        here,
                        format!("more than {} elements", limits.max_elements),
                    ));
                }
                if stack.len() >= limits.max_depth {
                    return Err(Failure::at(
                        here,
                        format!("elements nested deeper than {}", limits.max_depth),
                    ));
                }
                let local = element.local_name();
                let local = local.as_ref();
                let open = if !seen_root {
                    seen_root = true;
                    match local {
                        b"testsuites" => Open::Suites,
                        b"testsuite" => Open::Suite,
                        other => {
                            return Err(Failure::at(
                                here,
                                format!(
                                    "not a JUnit report: the root element is <{}>, not <testsuites> or <testsuite>",
                                    cut(String::from_utf8_lossy(other).into_owned(), 64)
                                ),
                            ));
                        }
                    }
                } else {
                    match (stack.last(), local) {
                        (Some(Open::Suites | Open::Suite), b"testsuite") => Open::Suite,
                        (Some(Open::Suite), b"testcase") => Open::Case,
                        (Some(Open::Case), b"failure" | b"error" | b"skipped") => Open::Outcome,
                        _ => Open::Other,
                    }
                };
                match open {
                    Open::Suite => {
                        let file = attribute(element, b"file", here)?.map(|f| cut(f, MAX_FIELD));
                        suite_files.push(file);
                    }
                    Open::Case => {
                        if cases.len() >= limits.max_cases {
                            return Err(Failure::at(
                                here,
                                format!(
                                    "more than {} test cases; a step stores at most {}",
                                    limits.max_cases, limits.max_cases
                                ),
                            ));
                        }
                        current = Some(start_case(element, &suite_files, here)?);
                    }
                    Open::Outcome => {
                        if let Some(case) = current.as_mut() {
                            if !case.decided {
                                case.decided = true;
                                case.case.result = match local {
                                    b"failure" => TestResult::Failure,
                                    b"error" => TestResult::Error,
                                    _ => TestResult::Skipped,
                                };
                                case.case.message = attribute(element, b"message", here)?
                                    .filter(|message| !message.is_empty())
                                    .map(|message| cut_message(message, limits.max_message));
                            }
                        }
                    }
                    Open::Suites | Open::Other => {}
                }
                if empty {
                    close(open, &mut current, &mut suite_files, &mut cases, limits);
                    count_text(&cases, open, &mut text_bytes, limits, here)?;
                } else {
                    stack.push(open);
                }
            }
            Event::End(_) => {
                // quick-xml checked that the name matches the start.
                let Some(open) = stack.pop() else {
                    return Err(Failure::at(here, "an end tag with no start"));
                };
                close(open, &mut current, &mut suite_files, &mut cases, limits);
                count_text(&cases, open, &mut text_bytes, limits, here)?;
            }
            Event::Text(ref text) => {
                if stack.last() == Some(&Open::Outcome) {
                    let text = text
                        .xml10_content()
                        .map_err(|err| Failure::at(here, format!("{err}")))?;
                    append_body(&mut current, &text, limits);
                } else if !seen_root && !text.iter().all(u8::is_ascii_whitespace) {
                    return Err(Failure::at(
                        here,
                        "not a JUnit report: text before the root element",
                    ));
                }
            }
            Event::CData(ref data) => {
                if stack.last() == Some(&Open::Outcome) {
                    let text = data
                        .xml10_content()
                        .map_err(|err| Failure::at(here, format!("{err}")))?;
                    append_body(&mut current, &text, limits);
                }
            }
            Event::GeneralRef(ref reference) => {
                if stack.last() == Some(&Open::Outcome) {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(ch)) => ch.to_string(),
                        Ok(None) => {
                            let name = reference
                                .decode()
                                .map_err(|err| Failure::at(here, format!("{err}")))?;
                            match quick_xml::escape::resolve_predefined_entity(&name) {
                                Some(text) => text.to_owned(),
                                // Entities a DTD declares are never expanded (no entity
                                // bombs); the reference is kept as written.
                                None => format!("&{name};"),
                            }
                        }
                        Err(err) => return Err(Failure::at(here, format!("{err}"))),
                    };
                    append_body(&mut current, &resolved, limits);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !seen_root {
        return Err(Failure {
            at: None,
            what: "not a JUnit report: it has no root element".to_owned(),
        });
    }
    if !stack.is_empty() {
        return Err(Failure::at(
            xml.buffer_position(),
            "the file ends inside an element",
        ));
    }
    Ok(cases)
}

/// A case from its `<testcase>` element.
fn start_case(
    element: &BytesStart<'_>,
    suite_files: &[Option<String>],
    here: u64,
) -> Result<Case, Failure> {
    let name = attribute(element, b"name", here)?.unwrap_or_default();
    let classname = match attribute(element, b"classname", here)? {
        Some(classname) => classname,
        None => attribute(element, b"class", here)?.unwrap_or_default(),
    };
    let file = match attribute(element, b"file", here)? {
        Some(file) if !file.is_empty() => Some(file),
        _ => suite_files.iter().rev().find_map(|file| file.clone()),
    };
    let run_time = attribute(element, b"time", here)?
        .map(|time| parse_time(&time))
        .unwrap_or(0.0);
    Ok(Case {
        case: TestCase {
            name: cut(name, MAX_FIELD),
            classname: cut(classname, MAX_FIELD),
            file: file.map(|file| cut(file, MAX_FIELD)),
            result: TestResult::Success,
            message: None,
            run_time,
            source: String::new(),
        },
        decided: false,
        body: String::new(),
        body_cut: false,
    })
}

/// Adds the text of the case just completed (if `open` was a case) to `text_bytes`, failing
/// past [`Limits::max_text_bytes`].
fn count_text(
    cases: &[TestCase],
    open: Open,
    text_bytes: &mut usize,
    limits: &Limits,
    here: u64,
) -> Result<(), Failure> {
    if open != Open::Case {
        return Ok(());
    }
    if let Some(case) = cases.last() {
        *text_bytes += text_len(case);
    }
    if *text_bytes > limits.max_text_bytes {
        return Err(Failure::at(
            here,
            format!(
                "the test cases hold more than {} bytes of names and messages; a step stores at most that",
                limits.max_text_bytes
            ),
        ));
    }
    Ok(())
}

/// The bytes of text a case holds, as [`Limits::max_text_bytes`] counts them.
pub fn text_len(case: &TestCase) -> usize {
    case.name.len()
        + case.classname.len()
        + case.file.as_ref().map_or(0, String::len)
        + case.message.as_ref().map_or(0, String::len)
}

/// Ends an element: a case is complete, a suite's `file` is no longer in scope.
fn close(
    open: Open,
    current: &mut Option<Case>,
    suite_files: &mut Vec<Option<String>>,
    cases: &mut Vec<TestCase>,
    limits: &Limits,
) {
    match open {
        Open::Suite => {
            suite_files.pop();
        }
        Open::Case => {
            if let Some(case) = current.take() {
                cases.push(finish_case(case, limits));
            }
        }
        Open::Suites | Open::Outcome | Open::Other => {}
    }
}

/// The message is the `message` attribute, then the element's body (a stack trace, usually),
/// cut at `max_message` bytes in all.
fn finish_case(mut case: Case, limits: &Limits) -> TestCase {
    let body = case.body.trim();
    if !body.is_empty() || case.body_cut {
        let mut message = match case.case.message.take() {
            Some(attr) if attr.trim() != body => format!("{attr}\n{body}"),
            Some(attr) => attr,
            None => body.to_owned(),
        };
        if case.body_cut {
            message.push_str(TRUNCATED);
        }
        case.case.message = Some(cut_message(message, limits.max_message));
    }
    case.case
}

const TRUNCATED: &str = "\n[bosun: message truncated]";

fn append_body(current: &mut Option<Case>, text: &str, limits: &Limits) {
    let Some(case) = current.as_mut() else {
        return;
    };
    if case.body_cut {
        return;
    }
    // Only the first result element's body counts, like its message.
    let room = limits.max_message.saturating_sub(case.body.len());
    if text.len() <= room {
        case.body.push_str(text);
    } else {
        case.body.push_str(&text[..floor_char_boundary(text, room)]);
        case.body_cut = true;
    }
}

/// An attribute's value, entities resolved, or `None` if absent.
fn attribute(element: &BytesStart<'_>, name: &[u8], here: u64) -> Result<Option<String>, Failure> {
    for attr in element.attributes() {
        let attr = attr.map_err(|err| Failure::at(here, format!("{err}")))?;
        if attr.key.local_name().as_ref() == name {
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| Failure::at(here, format!("{err}")))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// Seconds from a `time` attribute: `1.5`, `1,234.5` (thousands separators, Surefire) or `0,5`
/// (a decimal comma, some locales). Anything else, negative or not finite is 0.
pub fn parse_time(time: &str) -> f64 {
    let time = time.trim();
    let normalized = if time.contains('.') {
        time.replace(',', "")
    } else {
        time.replacen(',', ".", 1)
    };
    match normalized.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => seconds,
        _ => 0.0,
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = floor_char_boundary(&text, max);
        text.truncate(end);
    }
    text
}

/// A message cut to `max` bytes, saying so when it was.
fn cut_message(message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let mut message = cut(message, max.saturating_sub(TRUNCATED.len()));
    message.push_str(TRUNCATED);
    message
}

/// `str::floor_char_boundary` is not stable on Rust 1.85.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<Vec<TestCase>, JunitError> {
        parse_bytes(xml.as_bytes(), "r.xml", &Limits::default())
    }

    #[test]
    fn times_accept_commas_and_default_to_zero() {
        assert_eq!(parse_time("1.5"), 1.5);
        assert_eq!(parse_time("1,234.5"), 1234.5);
        assert_eq!(parse_time("0,25"), 0.25);
        assert_eq!(parse_time(""), 0.0);
        assert_eq!(parse_time("-1"), 0.0);
        assert_eq!(parse_time("NaN"), 0.0);
    }

    #[test]
    fn a_case_inherits_its_innermost_suites_file() {
        let cases = parse(
            r#"<testsuites><testsuite file="outer.php"><testsuite name="A" file="a.php">
               <testcase name="t1"/></testsuite><testcase name="t2" file=""/></testsuite></testsuites>"#,
        )
        .unwrap();
        assert_eq!(cases[0].file.as_deref(), Some("a.php"));
        assert_eq!(cases[1].file.as_deref(), Some("outer.php"));
    }

    #[test]
    fn messages_join_attribute_and_body_and_resolve_entities() {
        let cases = parse(
            r#"<testsuite><testcase name="t" time=""><failure message="a &lt; b">trace &amp; <![CDATA[<more>]]> &#65;</failure></testcase></testsuite>"#,
        )
        .unwrap();
        assert_eq!(cases[0].result, TestResult::Failure);
        assert_eq!(cases[0].message.as_deref(), Some("a < b\ntrace & <more> A"));
        assert_eq!(cases[0].run_time, 0.0);
    }

    #[test]
    fn long_messages_are_cut_and_say_so() {
        let body = "x".repeat(200_000);
        let xml = format!(
            r#"<testsuite><testcase name="t"><error message="m">{body}</error></testcase></testsuite>"#
        );
        let cases = parse(&xml).unwrap();
        let message = cases[0].message.as_deref().unwrap();
        assert!(message.len() <= MAX_MESSAGE, "{}", message.len());
        assert!(message.ends_with(TRUNCATED));
    }

    #[test]
    fn malformed_xml_names_the_file_and_line() {
        let err =
            parse("<testsuites>\n<testsuite>\n<testcase name=\"a\">\n</testsuite>\n").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.to_string().starts_with("r.xml:4: "), "{err}");
        let err = parse("<html>\n</html>").unwrap_err();
        assert_eq!(
            err.to_string().split(": ").nth(1),
            Some("not a JUnit report")
        );
        assert!(parse("").is_err());
        assert!(parse("<testsuites><testsuite>").is_err());
    }

    #[test]
    fn a_bom_a_doctype_and_unknown_entities_are_accepted() {
        let xml = "\u{feff}<?xml version=\"1.0\"?>\n<!DOCTYPE testsuite [<!ENTITY boom \"bang\">]>\n<testsuite><testcase name=\"t\"><failure>&boom;</failure></testcase></testsuite>";
        let cases = parse(xml).unwrap();
        // A DTD's entities are not expanded: the reference stays as written.
        assert_eq!(cases[0].message.as_deref(), Some("&boom;"));
        let err = parse("hello").unwrap_err();
        assert!(err.to_string().contains("not a JUnit report"), "{err}");
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_cases: 2,
            max_depth: 4,
            ..Limits::default()
        };
        let three = "<testsuite><testcase name=\"a\"/><testcase name=\"b\"/>\n<testcase name=\"c\"/></testsuite>";
        let err = parse_bytes(three.as_bytes(), "r.xml", &limits).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let texts = Limits {
            max_text_bytes: 2,
            ..Limits::default()
        };
        assert!(parse_bytes(three.as_bytes(), "r.xml", &texts).is_err());
        let deep = "<testsuites><testsuite><testsuite><testsuite><testsuite/></testsuite></testsuite></testsuite></testsuites>";
        assert!(parse_bytes(deep.as_bytes(), "r.xml", &limits).is_err());
        let small = Limits {
            max_file_bytes: 10,
            ..Limits::default()
        };
        assert!(parse_bytes(three.as_bytes(), "r.xml", &small).is_err());
    }
}
