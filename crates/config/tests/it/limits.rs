//! Hostile inputs: size, depth and alias expansion are bounded.

use bosun_config::{Limits, compile_with_limits};

use crate::{err, err_text};

#[test]
fn billion_laughs_is_refused() {
    let mut src = String::from(
        "version: 2.1\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (name, prev) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        src.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let e = err(&src);
    // `a` holds 10 nodes, `b` 91, `c` 820, ... the first `*f` inside `g` crosses one million.
    assert_eq!((e.line, e.column), (8, 8), "{e}");
    assert_eq!(e.path, "");
    assert_eq!(
        e.message,
        "aliases expand to more than 1000000 nodes; refusing the document (is it a \"billion \
         laughs\" attack?)"
    );
}

#[test]
fn alias_text_expansion_is_bounded() {
    let big = "x".repeat(1024 * 1024);
    let mut src = format!("version: 2.1\na: &a {big}\nb:\n");
    for _ in 0..40 {
        src.push_str("  - *a\n");
    }
    let e = err(&src);
    assert_eq!((e.line, e.column), (36, 5), "{e}");
    assert_eq!(
        e.message,
        "aliases expand to more than 33554432 bytes of text; refusing the document"
    );
}

#[test]
fn nesting_depth_is_limited() {
    let nested = |depth: usize| {
        format!(
            "version: 2.1\nx: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    // The top-level map is level 1, so 63 brackets reach level 64: parsed (then refused for
    // lack of `jobs`).
    assert_eq!(
        err_text(&nested(63)),
        "config.yml:1:1: missing required key `jobs`"
    );
    assert_eq!(
        err_text(&nested(64)),
        "config.yml:2:67: the config nests deeper than 64 levels"
    );
    // Far deeper than any stack could recurse: refused early, never overflowing the stack.
    // (yaml-rust2's scanner looks ahead and may stop it first, with its own message.)
    let deep = err("[".repeat(1_000_000).as_str());
    assert_eq!(deep.line, 1);
    assert!(
        deep.message.contains("deeper than 64 levels") || deep.message.contains("recursion limit"),
        "{deep}"
    );
    let deep_maps = "a: ".repeat(100_000);
    assert!(err_text(&deep_maps).starts_with("config.yml:1:"));
}

#[test]
fn aliases_count_towards_depth() {
    // `x` is 60 levels high. Inside `y` (level 1 is the top-level map) three brackets put it
    // at levels 5 to 64; four put it one level too deep.
    let src = |brackets: usize| {
        format!(
            "version: 2.1\nx: &x {}{}\ny: {}*x{}\n",
            "[".repeat(60),
            "]".repeat(60),
            "[".repeat(brackets),
            "]".repeat(brackets)
        )
    };
    assert_eq!(
        err_text(&src(3)),
        "config.yml:1:1: missing required key `jobs`"
    );
    assert_eq!(
        err_text(&src(4)),
        "config.yml:3:8: the config nests deeper than 64 levels"
    );
}

#[test]
fn input_size_is_limited() {
    let limit = Limits::DEFAULT.max_bytes;
    assert_eq!(limit, 4 * 1024 * 1024);
    let mut src = String::from("version: 2.1\n#");
    src.push_str(&" ".repeat(limit + 1 - src.len()));
    assert_eq!(
        err_text(&src),
        "config.yml:1:1: config is 4194305 bytes, the limit is 4194304 bytes"
    );
    let small = Limits {
        max_bytes: 10,
        ..Limits::DEFAULT
    };
    let e = compile_with_limits("version: 2.1\n", "c.yml", &small).unwrap_err();
    assert_eq!(
        e.to_string(),
        "c.yml:1:1: config is 13 bytes, the limit is 10 bytes"
    );
}
