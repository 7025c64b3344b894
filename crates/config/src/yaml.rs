//! A YAML document tree in which every node knows where it came from.
//!
//! yaml-rust2's own `Yaml` type drops positions, so this module builds its own tree from the
//! parser's event stream. Anchors, aliases and merge keys (`<<: *a`, `<<: [*a, *b]`) are
//! resolved while the tree is built. Aliased nodes are shared (a [`Node`] is a reference-counted
//! handle), never copied, and every input is bounded: its size, its nesting depth (aliases
//! included) and the amount of content that alias expansion may produce, so a "billion laughs"
//! document is refused in milliseconds instead of exhausting memory.
//!
//! The parser is driven one event at a time with an explicit stack: nothing here recurses on
//! untrusted input, and dropping a tree recurses at most [`Limits::max_depth`] levels.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source text. Both fields are 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    /// Line, starting at 1.
    pub line: usize,
    /// Column (in characters), starting at 1.
    pub column: usize,
}

impl Mark {
    /// The first character of a document.
    pub const START: Mark = Mark { line: 1, column: 1 };

    fn from_marker(marker: &Marker) -> Mark {
        // yaml-rust2's lines are 1-based and its columns 0-based.
        Mark {
            line: marker.line().max(1),
            column: marker.col().saturating_add(1),
        }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Limits applied while parsing. Every field bounds the work or memory an input can demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of sequences and maps, counting the contents of aliases.
    pub max_depth: usize,
    /// Most nodes that alias expansion may produce in one document.
    pub max_alias_nodes: u64,
    /// Most scalar bytes that alias expansion may produce in one document.
    pub max_alias_bytes: u64,
}

impl Limits {
    /// The default limits: 4 MiB of input, 64 levels of nesting, one million nodes and
    /// 32 MiB of scalar text from aliases.
    pub const DEFAULT: Limits = Limits {
        max_bytes: 4 * 1024 * 1024,
        max_depth: 64,
        max_alias_nodes: 1_000_000,
        max_alias_bytes: 32 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// How a scalar was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    /// Unquoted: `foo`, `1`, `true`, `~`.
    Plain,
    /// `'foo'`
    SingleQuoted,
    /// `"foo"`
    DoubleQuoted,
    /// `|` block.
    Literal,
    /// `>` block.
    Folded,
}

/// A scalar: its text exactly as the YAML parser produced it, plus how it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    /// The scalar's text (after unquoting and block folding).
    pub value: String,
    /// How it was written.
    pub style: ScalarStyle,
    /// Its explicit tag, if any, as `handle` + `suffix` (`tag:yaml.org,2002:str` for `!!str`).
    pub tag: Option<String>,
}

impl Scalar {
    /// Whether the scalar is plain and untagged, so YAML's core schema would resolve its type
    /// from its text (`true`, `1`, `null`, ...).
    pub fn is_plain(&self) -> bool {
        self.style == ScalarStyle::Plain && self.tag.is_none()
    }

    /// Whether this is a null: a plain `~`, `null` (any case YAML allows) or nothing at all.
    pub fn is_null(&self) -> bool {
        self.is_plain() && matches!(self.value.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }

    /// The boolean this scalar denotes if it is a plain `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        if !self.is_plain() {
            return None;
        }
        match self.value.as_str() {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        }
    }
}

/// The content of a node.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A map, entries in document order. Keys are scalars and unique; merge keys are resolved.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, PartialEq, Eq)]
struct Inner {
    mark: Mark,
    kind: Kind,
    /// Nodes in this subtree, aliases expanded (saturating).
    weight: u64,
    /// Scalar bytes in this subtree, aliases expanded (saturating).
    bytes: u64,
    /// Nesting levels of collections in this subtree (a scalar is 0), aliases expanded.
    height: usize,
}

/// A node of the tree: a cheap, shareable handle (aliases share the anchored node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node(Arc<Inner>);

impl Node {
    fn new(mark: Mark, kind: Kind) -> Node {
        let (weight, bytes, height) = match &kind {
            Kind::Scalar(s) => (1, s.value.len() as u64, 0),
            Kind::Seq(items) => items.iter().fold((1u64, 0u64, 1usize), |acc, n| {
                (
                    acc.0.saturating_add(n.0.weight),
                    acc.1.saturating_add(n.0.bytes),
                    acc.2.max(n.0.height.saturating_add(1)),
                )
            }),
            Kind::Map(entries) => entries.iter().fold((1u64, 0u64, 1usize), |acc, (k, v)| {
                (
                    acc.0.saturating_add(k.0.weight).saturating_add(v.0.weight),
                    acc.1.saturating_add(k.0.bytes).saturating_add(v.0.bytes),
                    acc.2.max(v.0.height.saturating_add(1)),
                )
            }),
        };
        Node(Arc::new(Inner {
            mark,
            kind,
            weight,
            bytes,
            height,
        }))
    }

    /// A scalar node built by the 2.1 processor (a substituted value).
    pub(crate) fn new_scalar(mark: Mark, value: String, style: ScalarStyle) -> Node {
        Node::new(
            mark,
            Kind::Scalar(Scalar {
                value,
                style,
                tag: None,
            }),
        )
    }

    /// A sequence node built by the 2.1 processor.
    pub(crate) fn new_seq(mark: Mark, items: Vec<Node>) -> Node {
        Node::new(mark, Kind::Seq(items))
    }

    /// A map node built by the 2.1 processor. Keys must be scalars and unique.
    pub(crate) fn new_map(mark: Mark, entries: Vec<(Node, Node)>) -> Node {
        Node::new(mark, Kind::Map(entries))
    }

    /// Whether both handles share one node (no copy was made).
    pub(crate) fn same_handle(&self, other: &Node) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Nodes in this subtree, aliases expanded (saturating).
    pub(crate) fn weight(&self) -> u64 {
        self.0.weight
    }

    /// Where the node starts in the source (for an alias: where the anchored node starts).
    pub fn mark(&self) -> Mark {
        self.0.mark
    }

    /// The node's content.
    pub fn kind(&self) -> &Kind {
        &self.0.kind
    }

    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.0.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar's text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        self.as_scalar().map(|s| s.value.as_str())
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.0.kind {
            Kind::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The entries, if this is a map.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.0.kind {
            Kind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// Whether this is a null scalar.
    pub fn is_null(&self) -> bool {
        self.as_scalar().is_some_and(Scalar::is_null)
    }

    /// The subtree as JSON, scalars typed as YAML's core schema would type them (plain `1` is a
    /// number, plain `true` a boolean, quoted text a string). Used to check configs against
    /// CircleCI's JSON Schema.
    pub fn to_json(&self) -> serde_json::Value {
        crate::expand::to_json(self)
    }

    /// A short description of what the node is, for error messages: "a string", "a number",
    /// "a boolean", "null", "a sequence" or "a map".
    pub fn describe(&self) -> &'static str {
        match &self.0.kind {
            Kind::Scalar(s) if s.is_null() => "null",
            Kind::Scalar(s) if s.as_bool().is_some() => "a boolean",
            Kind::Scalar(s) if s.is_plain() && looks_numeric(&s.value) => "a number",
            Kind::Scalar(_) => "a string",
            Kind::Seq(_) => "a sequence",
            Kind::Map(_) => "a map",
        }
    }
}

fn looks_numeric(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-._eEoxXabcdefABCDEF".contains(&b))
        && text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b"+-.".contains(&b))
}

/// A parse error: what went wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Where.
    pub mark: Mark,
    /// What.
    pub message: String,
}

impl Error {
    fn new(mark: Mark, message: impl Into<String>) -> Error {
        Error {
            mark,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.mark, self.message)
    }
}

impl std::error::Error for Error {}

/// Parses a single YAML document. `Ok(None)` means the stream holds no document at all
/// (empty, or only comments).
pub fn parse(source: &str, limits: &Limits) -> Result<Option<Node>, Error> {
    if source.len() > limits.max_bytes {
        return Err(Error::new(
            Mark::START,
            format!(
                "config is {} bytes, the limit is {} bytes",
                source.len(),
                limits.max_bytes
            ),
        ));
    }
    let mut builder = Builder {
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        open_anchors: Vec::new(),
        alias_nodes: 0,
        alias_bytes: 0,
        root: None,
    };
    let mut parser = Parser::new_from_str(source);
    let mut documents = 0usize;
    loop {
        let (event, marker) = parser
            .next_token()
            .map_err(|e| Error::new(Mark::from_marker(e.marker()), e.info()))?;
        let mark = Mark::from_marker(&marker);
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(Error::new(
                        mark,
                        "the config holds more than one YAML document (a second `---`)",
                    ));
                }
            }
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            other => builder.event(other, mark)?,
        }
    }
    Ok(builder.root)
}

enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        /// Keys so far, to refuse duplicates in O(1).
        keys: HashSet<String>,
        /// `<<` values and the index in `entries` where their keys go.
        merges: Vec<(usize, Node)>,
        pending_key: Option<Node>,
    },
}

struct Builder<'l> {
    limits: &'l Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    /// Anchors of collections still being built: an alias to one of them would be recursive.
    open_anchors: Vec<usize>,
    alias_nodes: u64,
    alias_bytes: u64,
    root: Option<Node>,
}

fn tag_text(tag: Option<Tag>) -> Option<String> {
    tag.map(|t| format!("{}{}", t.handle, t.suffix))
}

fn style(style: TScalarStyle) -> ScalarStyle {
    match style {
        TScalarStyle::Plain => ScalarStyle::Plain,
        TScalarStyle::SingleQuoted => ScalarStyle::SingleQuoted,
        TScalarStyle::DoubleQuoted => ScalarStyle::DoubleQuoted,
        TScalarStyle::Literal => ScalarStyle::Literal,
        TScalarStyle::Folded => ScalarStyle::Folded,
    }
}

impl Builder<'_> {
    fn event(&mut self, event: Event, mark: Mark) -> Result<(), Error> {
        match event {
            Event::Scalar(value, st, anchor, tag) => {
                let node = Node::new(
                    mark,
                    Kind::Scalar(Scalar {
                        value,
                        style: style(st),
                        tag: tag_text(tag),
                    }),
                );
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some(node) => node.clone(),
                    None if self.open_anchors.contains(&id) => {
                        return Err(Error::new(
                            mark,
                            "this alias refers to a node that contains it (a recursive alias)",
                        ));
                    }
                    None => return Err(Error::new(mark, "this alias refers to an unknown anchor")),
                };
                self.alias_nodes = self.alias_nodes.saturating_add(node.0.weight);
                if self.alias_nodes > self.limits.max_alias_nodes {
                    return Err(Error::new(
                        mark,
                        format!(
                            "aliases expand to more than {} nodes; refusing the document \
                             (is it a \"billion laughs\" attack?)",
                            self.limits.max_alias_nodes
                        ),
                    ));
                }
                self.alias_bytes = self.alias_bytes.saturating_add(node.0.bytes);
                if self.alias_bytes > self.limits.max_alias_bytes {
                    return Err(Error::new(
                        mark,
                        format!(
                            "aliases expand to more than {} bytes of text; refusing the document",
                            self.limits.max_alias_bytes
                        ),
                    ));
                }
                if self.stack.len().saturating_add(node.0.height) > self.limits.max_depth {
                    return Err(self.too_deep(mark));
                }
                self.push(node)
            }
            Event::SequenceStart(anchor, _tag) => {
                self.open(mark, anchor)?;
                self.stack.push(Frame::Seq {
                    mark,
                    anchor,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(anchor, _tag) => {
                self.open(mark, anchor)?;
                self.stack.push(Frame::Map {
                    mark,
                    anchor,
                    entries: Vec::new(),
                    keys: HashSet::new(),
                    merges: Vec::new(),
                    pending_key: None,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        mark,
                        anchor,
                        items,
                    }) => (Node::new(mark, Kind::Seq(items)), anchor),
                    Some(Frame::Map {
                        mark,
                        anchor,
                        entries,
                        merges,
                        ..
                    }) => (Node::new(mark, Kind::Map(merge(entries, merges)?)), anchor),
                    None => return Err(Error::new(mark, "unbalanced YAML collection end")),
                };
                if anchor > 0 {
                    self.open_anchors.retain(|&a| a != anchor);
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => Ok(()),
        }
    }

    fn too_deep(&self, mark: Mark) -> Error {
        Error::new(
            mark,
            format!(
                "the config nests deeper than {} levels",
                self.limits.max_depth
            ),
        )
    }

    fn open(&mut self, mark: Mark, anchor: usize) -> Result<(), Error> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.too_deep(mark));
        }
        if let Some(Frame::Map {
            pending_key: None, ..
        }) = self.stack.last()
        {
            return Err(Error::new(
                mark,
                "map keys must be scalars, not sequences or maps",
            ));
        }
        if anchor > 0 {
            self.open_anchors.push(anchor);
        }
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<(), Error> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                mark,
                entries,
                keys,
                merges,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let Some(scalar) = node.as_scalar() else {
                        return Err(Error::new(
                            node.mark(),
                            "map keys must be scalars, not sequences or maps",
                        ));
                    };
                    // Several `<<` keys in one map are common in real configs and accepted
                    // by CircleCI; they merge in order, like one `<<: [..]` list.
                    let is_merge = scalar.is_plain() && scalar.value == "<<";
                    if !is_merge && !keys.insert(scalar.value.clone()) {
                        return Err(Error::new(
                            node.mark(),
                            format!("duplicate key `{}`", scalar.value),
                        ));
                    }
                    // A block map's start event is marked after its first key; the map
                    // really starts at that key.
                    if entries.is_empty() && merges.is_empty() && node.mark() < *mark {
                        *mark = node.mark();
                    }
                    *pending_key = Some(node);
                    Ok(())
                }
                Some(key) => {
                    let is_merge = key
                        .as_scalar()
                        .is_some_and(|s| s.is_plain() && s.value == "<<");
                    if is_merge {
                        merges.push((entries.len(), node));
                    } else {
                        entries.push((key, node));
                    }
                    Ok(())
                }
            },
        }
    }
}

/// Resolves merge keys: each `<<` value (a map, or a sequence of maps) contributes the keys
/// that the map does not set explicitly and that an earlier merged map did not contribute,
/// at the position of the `<<` key.
fn merge(
    entries: Vec<(Node, Node)>,
    merges: Vec<(usize, Node)>,
) -> Result<Vec<(Node, Node)>, Error> {
    if merges.is_empty() {
        return Ok(entries);
    }
    let mut seen: HashSet<String> = entries
        .iter()
        .filter_map(|(k, _)| k.as_str().map(str::to_owned))
        .collect();
    let mut merged: Vec<(usize, Vec<(Node, Node)>)> = Vec::with_capacity(merges.len());
    for (at, value) in merges {
        let sources: Vec<&Node> = match value.kind() {
            Kind::Map(_) => vec![&value],
            Kind::Seq(items) => items.iter().collect(),
            Kind::Scalar(_) => {
                return Err(Error::new(
                    value.mark(),
                    "the merge key `<<` needs a map or a list of maps (usually aliases: `<<: *name`)",
                ));
            }
        };
        let mut add = Vec::new();
        for source in sources {
            let Some(source_entries) = source.as_map() else {
                return Err(Error::new(
                    source.mark(),
                    "the merge key `<<` needs a map or a list of maps (usually aliases: `<<: *name`)",
                ));
            };
            for (k, v) in source_entries {
                if let Some(name) = k.as_str() {
                    if seen.insert(name.to_owned()) {
                        add.push((k.clone(), v.clone()));
                    }
                }
            }
        }
        merged.push((at, add));
    }
    let mut out =
        Vec::with_capacity(entries.len() + merged.iter().map(|m| m.1.len()).sum::<usize>());
    let mut merged = merged.into_iter().peekable();
    for (i, entry) in entries.into_iter().enumerate() {
        while let Some((_, add)) = merged.next_if(|(at, _)| *at <= i) {
            out.extend(add);
        }
        out.push(entry);
    }
    for (_, add) in merged {
        out.extend(add);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(src: &str) -> Node {
        match parse(src, &Limits::DEFAULT) {
            Ok(Some(node)) => node,
            other => panic!("unexpected parse result: {other:?}"),
        }
    }

    fn parse_err(src: &str) -> Error {
        match parse(src, &Limits::DEFAULT) {
            Err(e) => e,
            Ok(node) => panic!("expected an error, got {node:?}"),
        }
    }

    fn keys(node: &Node) -> Vec<String> {
        node.as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap().to_owned())
            .collect()
    }

    fn get<'a>(node: &'a Node, key: &str) -> &'a Node {
        &node
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .unwrap()
            .1
    }

    #[test]
    fn marks_are_one_based_and_block_maps_start_at_their_first_key() {
        let root = parse_ok("a: 1\nb:\n  c: [x, {d: e}]\n");
        assert_eq!(root.mark(), Mark { line: 1, column: 1 });
        let b = get(&root, "b");
        assert_eq!(b.mark(), Mark { line: 3, column: 3 });
        let c = get(b, "c");
        assert_eq!(c.mark(), Mark { line: 3, column: 6 });
        let flow_map = &c.as_seq().unwrap()[1];
        assert_eq!(
            flow_map.mark(),
            Mark {
                line: 3,
                column: 10
            }
        );
    }

    #[test]
    fn scalar_styles_and_tags() {
        let root = parse_ok("a: 1\nb: '1'\nc: !!str 1\nd: ~\ne:\nf: true\ng: |\n  x\n");
        let scalar = |k| get(&root, k).as_scalar().unwrap().clone();
        assert!(scalar("a").is_plain());
        assert_eq!(scalar("b").style, ScalarStyle::SingleQuoted);
        assert!(!scalar("c").is_plain());
        assert_eq!(scalar("c").tag.as_deref(), Some("tag:yaml.org,2002:str"));
        assert!(scalar("d").is_null());
        assert!(scalar("e").is_null());
        assert_eq!(scalar("f").as_bool(), Some(true));
        assert_eq!(scalar("g").style, ScalarStyle::Literal);
        assert_eq!(scalar("g").value, "x\n");
    }

    #[test]
    fn merge_keys_keep_explicit_keys_and_order() {
        let root = parse_ok(
            "base: &base {a: 1, b: 2}\nother: &other {b: 3, c: 4}\n\
             m:\n  x: 0\n  <<: [*base, *other]\n  a: 9\n",
        );
        let m = get(&root, "m");
        assert_eq!(keys(m), ["x", "b", "c", "a"]);
        assert_eq!(get(m, "a").as_str(), Some("9"));
        assert_eq!(get(m, "b").as_str(), Some("2"));
        assert_eq!(get(m, "c").as_str(), Some("4"));
    }

    #[test]
    fn several_merge_keys_merge_in_order() {
        let root = parse_ok(
            "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nm:\n  <<: *a\n  w: 0\n  <<: *b\n  x: 9\n",
        );
        let m = get(&root, "m");
        assert_eq!(keys(m), ["y", "w", "z", "x"]);
        assert_eq!(get(m, "x").as_str(), Some("9"));
        assert_eq!(get(m, "y").as_str(), Some("1"));
        assert_eq!(get(m, "z").as_str(), Some("2"));
    }

    #[test]
    fn quoted_merge_key_is_a_plain_key() {
        let root = parse_ok("m: {'<<': 1}\n");
        assert_eq!(keys(get(&root, "m")), ["<<"]);
    }

    #[test]
    fn merge_of_a_scalar_is_an_error() {
        let e = parse_err("a: &a 1\nm:\n  <<: *a\n");
        assert_eq!(e.mark, Mark { line: 1, column: 7 });
        assert!(e.message.contains("merge key"), "{e}");
    }

    #[test]
    fn descriptions() {
        let root = parse_ok("[1, -2.5e3, 0x1F, abc, '1', true, ~, [], {}]");
        let found: Vec<&str> = root.as_seq().unwrap().iter().map(Node::describe).collect();
        assert_eq!(
            found,
            [
                "a number",
                "a number",
                "a number",
                "a string",
                "a string",
                "a boolean",
                "null",
                "a sequence",
                "a map"
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_the_second_key() {
        let e = parse_err("a: 1\nb: 2\na: 3\n");
        assert_eq!(e.to_string(), "3:1: duplicate key `a`");
    }

    #[test]
    fn aliases_share_and_are_budgeted() {
        let limits = Limits {
            max_alias_nodes: 10,
            ..Limits::DEFAULT
        };
        let src = "a: &a [1, 2, 3]\nb: *a\nc: *a\n";
        let root = parse(src, &limits).unwrap().unwrap();
        assert_eq!(get(&root, "b"), get(&root, "a"));
        let e = parse(&format!("{src}d: *a\n"), &limits).unwrap_err();
        assert_eq!(e.mark, Mark { line: 4, column: 4 });
        assert!(e.message.contains("billion laughs"), "{e}");
    }

    #[test]
    fn alias_bytes_are_budgeted() {
        let limits = Limits {
            max_alias_bytes: 10,
            ..Limits::DEFAULT
        };
        let e = parse("a: &a xxxxxxxx\nb: *a\nc: *a\n", &limits).unwrap_err();
        assert_eq!(e.mark, Mark { line: 3, column: 4 });
        assert!(e.message.contains("bytes"), "{e}");
    }

    #[test]
    fn depth_counts_alias_contents() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::DEFAULT
        };
        assert!(parse("a: &a [[1]]\n", &limits).is_ok());
        let e = parse("a: &a [[1]]\nb: [*a]\n", &limits).unwrap_err();
        assert_eq!(e.to_string(), "2:5: the config nests deeper than 3 levels");
        let e = parse("[[[[1]]]]", &limits).unwrap_err();
        assert_eq!(e.to_string(), "1:4: the config nests deeper than 3 levels");
    }

    #[test]
    fn recursive_alias_is_refused() {
        let e = parse_err("a: &a [1, *a]\n");
        assert!(e.message.contains("recursive"), "{e}");
    }

    #[test]
    fn complex_keys_are_refused() {
        let e = parse_err("? [a]\n: 1\n");
        assert!(e.message.contains("keys must be scalars"), "{e}");
    }

    #[test]
    fn empty_streams_and_multiple_documents() {
        assert_eq!(parse("", &Limits::DEFAULT), Ok(None));
        assert_eq!(parse("# just a comment\n", &Limits::DEFAULT), Ok(None));
        assert!(parse_ok("---\n").is_null());
        let e = parse_err("a: 1\n---\nb: 2\n");
        assert_eq!(e.mark.line, 2);
    }

    #[test]
    fn syntax_errors_carry_positions() {
        let e = parse_err("a: b\n  c: d: e\n");
        assert_eq!(e.mark, Mark { line: 2, column: 4 });
    }
}
