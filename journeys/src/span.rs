//! Spans that survive deserialisation.
//!
//! `serde_yaml` forgets where a value came from once it is deserialised, so
//! sluice loads YAML through `saphyr-parser`'s event stream into a small tree
//! of [`Node`]s that each carry a [`Span`], and deserialises the typed model
//! from that tree with its own serde [`Deserializer`]. Any field typed
//! [`Spanned<T>`] receives the position of its value; every deserialisation
//! error carries the position of the node that caused it.
//!
//! This is the only module that knows which YAML parser is used.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use saphyr_parser::{Event, Parser, ScalarStyle, SpannedEventReceiver};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::limits::{MAX_ALIAS_NODES, MAX_NESTING};

/// A position inside one source file: a byte range plus the 1-based line and
/// column (in characters) of its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: usize,
    pub column: usize,
}

impl Span {
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value and where it was written. Equality, ordering and hashing ignore
/// the span, so moving a line in a file is not a change.
#[derive(Clone, Default)]
pub struct Spanned<T> {
    pub span: Span,
    pub value: T,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { span, value }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            span: self.span,
            value: f(self.value),
        }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Spanned<T> {}

impl<T: PartialOrd> PartialOrd for Spanned<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.value.partial_cmp(&other.value)
    }
}

impl<T: Ord> Ord for Spanned<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

impl<T: Hash> Hash for Spanned<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state)
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Spanned<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

const SPANNED_NAME: &str = "$__sluice_spanned";
const SPANNED_SPAN: &str = "$__sluice_span";
const SPANNED_VALUE: &str = "$__sluice_value";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpannedVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for SpannedVisitor<T> {
            type Value = Spanned<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a spanned value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut span = None;
                let mut value = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        SPANNED_SPAN => {
                            let (start, end, line, column): (usize, usize, usize, usize) =
                                map.next_value()?;
                            span = Some(Span {
                                start,
                                end,
                                line,
                                column,
                            });
                        }
                        SPANNED_VALUE => value = Some(map.next_value()?),
                        _ => return Err(de::Error::custom("malformed spanned value")),
                    }
                }
                let value = value.ok_or_else(|| de::Error::custom("spanned value missing"))?;
                Ok(Spanned {
                    span: span.unwrap_or_default(),
                    value,
                })
            }
        }

        // Deserializers other than ours (e.g. serde_json in tests) do not
        // know the magic name; they see a plain struct request and fail, so
        // fall back to the bare value for them by trying ours first only
        // when it is supported. Our deserializer answers the magic name.
        deserializer.deserialize_struct(
            SPANNED_NAME,
            &[SPANNED_SPAN, SPANNED_VALUE],
            SpannedVisitor(std::marker::PhantomData),
        )
    }
}

/// A YAML scalar as written. Its type is resolved only when asked for, so
/// `id: 2024` can still be read as the string `"2024"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain (unquoted) scalars are resolved by the YAML 1.2 core schema;
    /// quoted and block scalars are always strings.
    pub plain: bool,
}

/// A node of a loaded YAML document.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar(Scalar),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

/// The value of a plain scalar under the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    pub fn resolve(&self) -> Resolved<'_> {
        if !self.plain {
            return Resolved::Str(&self.text);
        }
        let t = self.text.as_str();
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                return Resolved::Float(f64::INFINITY)
            }
            "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
            _ => {}
        }
        let first = t.as_bytes()[0];
        if first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.' {
            if let Ok(i) = t.parse::<i64>() {
                return Resolved::Int(i);
            }
            if let Some(hex) = t.strip_prefix("0x") {
                if let Ok(i) = i64::from_str_radix(hex, 16) {
                    return Resolved::Int(i);
                }
            }
            if let Some(oct) = t.strip_prefix("0o") {
                if let Ok(i) = i64::from_str_radix(oct, 8) {
                    return Resolved::Int(i);
                }
            }
            let looks_float = t
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
            if looks_float {
                if let Ok(f) = t.parse::<f64>() {
                    return Resolved::Float(f);
                }
            }
        }
        Resolved::Str(t)
    }
}

impl Node {
    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Scalar(s) => match s.resolve() {
                Resolved::Null => "null",
                Resolved::Bool(_) => "a boolean",
                Resolved::Int(_) | Resolved::Float(_) => "a number",
                Resolved::Str(_) => "a string",
            },
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }

    pub fn as_map(&self) -> Option<&[(Spanned<String>, Spanned<Node>)]> {
        match self {
            Node::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Spanned<Node>]> {
        match self {
            Node::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a scalar that resolves to a string (or any scalar's text).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar(s) if s.resolve() == Resolved::Null)
    }

    /// Looks up a key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Spanned<Node>> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v)
    }

    /// Converts to a JSON value (spans are dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Scalar(s) => match s.resolve() {
                Resolved::Null => Value::Null,
                Resolved::Bool(b) => Value::Bool(b),
                Resolved::Int(i) => Value::from(i),
                Resolved::Float(f) => serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                Resolved::Str(s) => Value::String(s.to_owned()),
            },
            Node::Seq(items) => Value::Array(items.iter().map(|n| n.value.to_json()).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node with exactly this span, anywhere below this one.
    pub(crate) fn node_at_mut(&mut self, span: Span) -> Option<&mut Spanned<Node>> {
        match self {
            Node::Scalar(_) => None,
            Node::Seq(items) => items.iter_mut().find_map(|n| {
                if n.span == span {
                    Some(n)
                } else {
                    n.value.node_at_mut(span)
                }
            }),
            Node::Map(entries) => entries.iter_mut().find_map(|(_, n)| {
                if n.span == span {
                    Some(n)
                } else {
                    n.value.node_at_mut(span)
                }
            }),
        }
    }

    /// Renames the map entry whose key starts at `key_start` anywhere in
    /// the tree to `to`, or removes it when its map already has `to`.
    /// Used to keep deserialising past a misspelt field as if it were
    /// spelt right, so the typo is not reported again as a missing field.
    pub(crate) fn rename_key_at(&mut self, key_start: usize, to: &str) -> bool {
        match self {
            Node::Scalar(_) => false,
            Node::Seq(items) => items
                .iter_mut()
                .any(|n| n.value.rename_key_at(key_start, to)),
            Node::Map(entries) => {
                if let Some(pos) = entries.iter().position(|(k, _)| k.span.start == key_start) {
                    if entries.iter().any(|(k, _)| k.value == to) {
                        entries.remove(pos);
                    } else {
                        entries[pos].0.value = to.to_owned();
                    }
                    return true;
                }
                entries
                    .iter_mut()
                    .any(|(_, v)| v.value.rename_key_at(key_start, to))
            }
        }
    }

    /// Removes the map entry whose key starts at `key_start` anywhere in the
    /// tree. Used to keep deserialising past an unknown field.
    pub(crate) fn remove_key_at(&mut self, key_start: usize) -> bool {
        match self {
            Node::Scalar(_) => false,
            Node::Seq(items) => items.iter_mut().any(|n| n.value.remove_key_at(key_start)),
            Node::Map(entries) => {
                if let Some(pos) = entries.iter().position(|(k, _)| k.span.start == key_start) {
                    entries.remove(pos);
                    return true;
                }
                entries
                    .iter_mut()
                    .any(|(_, v)| v.value.remove_key_at(key_start))
            }
        }
    }
}

impl Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl schemars::JsonSchema for Node {
    fn schema_name() -> Cow<'static, str> {
        "AnyValue".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!(true)
    }

    fn inline_schema() -> bool {
        true
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        fn scalar(text: String) -> Node {
            Node::Scalar(Scalar { text, plain: true })
        }

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(scalar(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Scalar(Scalar {
                    text: v.to_owned(),
                    plain: false,
                }))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(scalar("null".into()))
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(scalar("null".into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<Node>>()?;
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }
        }

        deserializer.deserialize_any(NodeVisitor)
    }
}

// ---------------------------------------------------------------------------
// Loading

/// A YAML syntax error at a position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub kind: SyntaxErrorKind,
    pub message: String,
    pub span: Span,
}

/// Why a YAML text could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxErrorKind {
    /// Not valid YAML, or a duplicate or non-scalar key.
    Syntax,
    /// Mappings and lists nest deeper than [`MAX_NESTING`].
    TooDeep,
    /// Aliases expand to more than [`MAX_ALIAS_NODES`] nodes.
    AliasLimit,
}

impl SyntaxError {
    fn syntax(message: impl Into<String>, span: Span) -> Self {
        SyntaxError {
            kind: SyntaxErrorKind::Syntax,
            message: message.into(),
            span,
        }
    }
}

/// The number of nodes in a tree and its height (a scalar is 1 high),
/// without recursion.
fn size_and_height(node: &Node) -> (usize, usize) {
    let mut size = 0;
    let mut height = 0;
    let mut todo = vec![(node, 1usize)];
    while let Some((n, depth)) = todo.pop() {
        size += 1;
        height = height.max(depth);
        match n {
            Node::Scalar(_) => {}
            Node::Seq(items) => todo.extend(items.iter().map(|i| (&i.value, depth + 1))),
            Node::Map(entries) => todo.extend(entries.iter().map(|(_, v)| (&v.value, depth + 1))),
        }
    }
    (size, height)
}

/// Lines and characters of a source text, for turning saphyr's
/// character-based markers into byte offsets and byte offsets into lines
/// and columns, each in (near) constant time however long a line is.
/// Lines end with `\n`, `\r\n` or a lone `\r`, as for saphyr and miette.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    line_starts: Vec<usize>,
    /// The byte offset of every [`CHECKPOINT`]th character; empty when the
    /// text is ASCII (a character index is then a byte offset).
    checkpoints: Vec<usize>,
    len: usize,
}

const CHECKPOINT: usize = 64;

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => line_starts.push(i + 1),
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    line_starts.push(i + 2);
                    i += 1;
                }
                b'\r' => line_starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        let checkpoints = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices()
                .step_by(CHECKPOINT)
                .map(|(i, _)| i)
                .collect()
        };
        LineIndex {
            line_starts,
            checkpoints,
            len: text.len(),
        }
    }

    /// The byte offset of the character at `index` (clamped to the end).
    pub fn char_to_byte(&self, text: &str, index: usize) -> usize {
        if self.checkpoints.is_empty() {
            return index.min(self.len);
        }
        let Some(&base) = self.checkpoints.get(index / CHECKPOINT) else {
            return self.len;
        };
        match text[base..].char_indices().nth(index % CHECKPOINT) {
            Some((i, _)) => base + i,
            None => self.len,
        }
    }

    /// How many characters come before byte `offset`.
    fn byte_to_char(&self, text: &str, offset: usize) -> usize {
        let offset = offset.min(self.len);
        if self.checkpoints.is_empty() {
            return offset;
        }
        let k = match self.checkpoints.binary_search(&offset) {
            Ok(k) => return k * CHECKPOINT,
            Err(k) => k.saturating_sub(1),
        };
        let base = self.checkpoints.get(k).copied().unwrap_or(0);
        k * CHECKPOINT
            + text
                .get(base..offset)
                .map(|s| s.chars().count())
                .unwrap_or(0)
    }

    /// The 0-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(l) => l,
            Err(l) => l.saturating_sub(1),
        }
    }

    /// The byte offset where a 0-based line starts.
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts.get(line).copied().unwrap_or(self.len)
    }

    /// The byte offset of a 1-based line and 0-based character column.
    pub fn offset(&self, text: &str, line: usize, col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return text.len();
        };
        let first = self.byte_to_char(text, start);
        self.char_to_byte(text, first + col)
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, text: &str, offset: usize) -> (usize, usize) {
        let line = self.line_of(offset);
        let start = self.line_start(line);
        let col = self
            .byte_to_char(text, offset)
            .saturating_sub(self.byte_to_char(text, start));
        (line + 1, col + 1)
    }

    pub fn span(&self, text: &str, s: saphyr_parser::Span) -> Span {
        let start = self.char_to_byte(text, s.start.index());
        let end = self.char_to_byte(text, s.end.index()).max(start);
        Span {
            start,
            end,
            line: s.start.line().max(1),
            column: s.start.col() + 1,
        }
    }
}

enum Frame {
    Seq(Span, Vec<Spanned<Node>>, usize),
    Map(
        Span,
        Vec<(Spanned<String>, Spanned<Node>)>,
        Option<Spanned<String>>,
        usize,
    ),
}

struct Builder<'t> {
    text: &'t str,
    index: &'t LineIndex,
    stack: Vec<Frame>,
    docs: Vec<Spanned<Node>>,
    /// Anchored nodes, with their size and height.
    anchors: HashMap<usize, (Spanned<Node>, usize, usize)>,
    /// Nodes copied by aliases so far.
    alias_nodes: usize,
    error: Option<SyntaxError>,
}

impl Builder<'_> {
    fn push_value(&mut self, node: Spanned<Node>) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(_, entries, key, _)) => match key.take() {
                None => {
                    let text = match &node.value {
                        Node::Scalar(s) => s.text.clone(),
                        _ => {
                            if self.error.is_none() {
                                self.error = Some(SyntaxError::syntax(
                                    "mapping keys must be plain strings",
                                    node.span,
                                ));
                            }
                            String::new()
                        }
                    };
                    if entries.iter().any(|(k, _)| k.value == text) && self.error.is_none() {
                        self.error = Some(SyntaxError::syntax(
                            format!("duplicate key `{text}` in mapping"),
                            node.span,
                        ));
                    }
                    *key = Some(Spanned::new(text, node.span));
                }
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl Builder<'_> {
    fn anchor(&mut self, anchor: usize, node: &Spanned<Node>) {
        if anchor > 0 {
            let (size, height) = size_and_height(&node.value);
            self.anchors.insert(anchor, (node.clone(), size, height));
        }
    }

    fn open(&mut self, frame: Frame, sp: Span) {
        if self.stack.len() >= MAX_NESTING {
            self.error = Some(SyntaxError {
                kind: SyntaxErrorKind::TooDeep,
                message: format!("mappings and lists nest more than {MAX_NESTING} levels deep"),
                span: sp,
            });
            return;
        }
        self.stack.push(frame);
    }
}

impl<'input> SpannedEventReceiver<'input> for Builder<'_> {
    fn on_event(&mut self, ev: Event<'input>, span: saphyr_parser::Span) {
        if self.error.is_some() {
            // The text is rejected: read on (the parser does) but build
            // nothing more.
            return;
        }
        let sp = self.index.span(self.text, span);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Spanned::new(
                    Node::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    }),
                    sp,
                );
                self.anchor(anchor, &node);
                self.push_value(node);
            }
            Event::SequenceStart(anchor, _) => self.open(Frame::Seq(sp, Vec::new(), anchor), sp),
            Event::MappingStart(anchor, _) => {
                self.open(Frame::Map(sp, Vec::new(), None, anchor), sp)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let (start, node, anchor) = match frame {
                    Frame::Seq(start, items, anchor) => (start, Node::Seq(items), anchor),
                    Frame::Map(start, entries, _, anchor) => (start, Node::Map(entries), anchor),
                };
                // A flow collection ends at its `]` or `}`; a block one at
                // its last entry (its end event is at the next token, maybe
                // lines and comments later), so an underline covers it only.
                let flow = matches!(self.text.as_bytes().get(sp.start), Some(b']' | b'}'));
                let last = match &node {
                    Node::Seq(items) => items.last().map(|n| n.span.end),
                    Node::Map(entries) => entries.last().map(|(k, v)| {
                        if v.span.is_empty() {
                            k.span.end
                        } else {
                            v.span.end
                        }
                    }),
                    Node::Scalar(_) => None,
                };
                let end = match last {
                    Some(last) if !flow => last,
                    _ => sp.end,
                };
                let span = Span {
                    end: end.max(start.start),
                    ..start
                };
                let node = Spanned::new(node, span);
                self.anchor(anchor, &node);
                self.push_value(node);
            }
            Event::Alias(id) => {
                let node = match self.anchors.get(&id) {
                    Some((n, size, height)) => {
                        self.alias_nodes = self.alias_nodes.saturating_add(*size);
                        if self.alias_nodes > MAX_ALIAS_NODES {
                            self.error = Some(SyntaxError {
                                kind: SyntaxErrorKind::AliasLimit,
                                message: format!(
                                    "aliases expand to more than {MAX_ALIAS_NODES} nodes in this file"
                                ),
                                span: sp,
                            });
                            return;
                        }
                        if self.stack.len() + height > MAX_NESTING + 1 {
                            self.error = Some(SyntaxError {
                                kind: SyntaxErrorKind::TooDeep,
                                message: format!(
                                    "this alias makes mappings and lists nest more than {MAX_NESTING} levels deep"
                                ),
                                span: sp,
                            });
                            return;
                        }
                        Spanned::new(n.value.clone(), sp)
                    }
                    None => Spanned::new(
                        Node::Scalar(Scalar {
                            text: String::new(),
                            plain: true,
                        }),
                        sp,
                    ),
                };
                self.push_value(node);
            }
            _ => {}
        }
    }
}

/// Parses every document of a YAML text into spanned node trees.
pub fn parse_documents(text: &str, index: &LineIndex) -> Result<Vec<Spanned<Node>>, SyntaxError> {
    let mut builder = Builder {
        text,
        index,
        stack: Vec::new(),
        docs: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    let loaded = parser.load(&mut builder, true);
    if let Some(e) = builder.error {
        return Err(e);
    }
    if let Err(e) = loaded {
        let m = e.marker();
        let mut start = index.char_to_byte(text, m.index());
        let (mut line, mut column) = (m.line().max(1), m.col() + 1);
        // At the end of the input, point at the last thing written instead.
        if text[start.min(text.len())..].trim().is_empty() {
            if let Some(last) = text.trim_end().char_indices().last().map(|(i, _)| i) {
                start = last;
                (line, column) = index.line_col(text, start);
            }
        }
        // A tab where YAML wants spaces: point at the tab itself, not at
        // what follows it.
        if e.info().contains("tab") {
            let line_start = index.line_start(index.line_of(start));
            let line_end = text[line_start..]
                .find(['\n', '\r'])
                .map_or(text.len(), |i| line_start + i);
            let before = text.get(line_start..start.min(line_end)).unwrap_or("");
            let tab = before.rfind('\t').map(|i| line_start + i).or_else(|| {
                text[start.min(line_end)..line_end]
                    .find('\t')
                    .map(|i| start + i)
            });
            if let Some(tab) = tab {
                start = tab;
                (line, column) = index.line_col(text, start);
            }
        }
        let kind = if e.info().contains("recursion limit") {
            SyntaxErrorKind::TooDeep
        } else {
            SyntaxErrorKind::Syntax
        };
        return Err(SyntaxError {
            kind,
            message: match kind {
                SyntaxErrorKind::TooDeep => {
                    format!("mappings and lists nest more than {MAX_NESTING} levels deep")
                }
                _ => e.info().to_owned(),
            },
            span: Span {
                start,
                end: (start + 1).min(text.len()).max(start),
                line,
                column,
            },
        });
    }
    Ok(builder.docs)
}

// ---------------------------------------------------------------------------
// Deserialising from nodes

/// What went wrong while deserialising a node tree.
#[derive(Debug, Clone, PartialEq)]
pub enum DeErrorKind {
    UnknownField {
        field: String,
        expected: Vec<&'static str>,
    },
    MissingField(&'static str),
    UnknownVariant {
        variant: String,
        expected: Vec<&'static str>,
    },
    InvalidType(String),
    Custom(String),
}

/// A deserialisation error at the node that caused it.
#[derive(Debug, Clone)]
pub struct DeError {
    pub kind: DeErrorKind,
    pub span: Option<Span>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DeErrorKind::UnknownField { field, .. } => write!(f, "unknown field `{field}`"),
            DeErrorKind::MissingField(field) => write!(f, "missing field `{field}`"),
            DeErrorKind::UnknownVariant { variant, expected } => write!(
                f,
                "unknown value `{variant}`, expected one of {}",
                expected
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            DeErrorKind::InvalidType(msg) | DeErrorKind::Custom(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            kind: DeErrorKind::Custom(msg.to_string()),
            span: None,
        }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let found = match unexp {
            de::Unexpected::Map => "a mapping".to_owned(),
            de::Unexpected::Seq => "a list".to_owned(),
            de::Unexpected::Str(s) => format!("the string `{s}`"),
            de::Unexpected::Unit => "null".to_owned(),
            other => other.to_string(),
        };
        let expected = exp.to_string();
        let expected = match expected.as_str() {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative whole number".to_owned(),
            "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
            "f32" | "f64" => "a number".to_owned(),
            "a sequence" => "a list".to_owned(),
            "a map" => "a mapping".to_owned(),
            e if e.starts_with("struct ") => "a mapping".to_owned(),
            e if e.starts_with("a borrowed string") => "a string".to_owned(),
            _ => expected,
        };
        DeError {
            kind: DeErrorKind::InvalidType(format!("expected {expected}, found {found}")),
            span: None,
        }
    }

    /// A value of the right type but out of range (`limit: -3`), in the
    /// YAML's words rather than Rust's (`u32`).
    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let found = match unexp {
            de::Unexpected::Signed(i) => format!("`{i}`"),
            de::Unexpected::Unsigned(u) => format!("`{u}`"),
            de::Unexpected::Float(f) => format!("`{f}`"),
            de::Unexpected::Str(s) => format!("`{s}`"),
            other => other.to_string(),
        };
        let expected = exp.to_string();
        let range = match expected.as_str() {
            "u8" => Some((0i128, u8::MAX as i128)),
            "u16" => Some((0, u16::MAX as i128)),
            "u32" => Some((0, u32::MAX as i128)),
            "u64" | "usize" => Some((0, u64::MAX as i128)),
            "i8" => Some((i8::MIN as i128, i8::MAX as i128)),
            "i16" => Some((i16::MIN as i128, i16::MAX as i128)),
            "i32" => Some((i32::MIN as i128, i32::MAX as i128)),
            "i64" | "isize" => Some((i64::MIN as i128, i64::MAX as i128)),
            _ => None,
        };
        let message = match range {
            Some((0, max)) => format!("expected a whole number from 0 to {max}, found {found}"),
            Some((min, max)) => {
                format!("expected a whole number from {min} to {max}, found {found}")
            }
            None => format!("invalid value {found}, expected {expected}"),
        };
        DeError {
            kind: DeErrorKind::InvalidType(message),
            span: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            kind: DeErrorKind::UnknownField {
                field: field.to_owned(),
                expected: expected.to_vec(),
            },
            span: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            kind: DeErrorKind::MissingField(field),
            span: None,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            kind: DeErrorKind::UnknownVariant {
                variant: variant.to_owned(),
                expected: expected.to_vec(),
            },
            span: None,
        }
    }
}

fn at(span: Span) -> impl Fn(DeError) -> DeError {
    move |mut e| {
        if e.span.is_none() {
            e.span = Some(span);
        }
        e
    }
}

/// Deserialises a typed value from a spanned node.
pub fn from_node<'a, T: Deserialize<'a>>(node: &'a Spanned<Node>) -> Result<T, DeError> {
    T::deserialize(NodeDeserializer { node }).map_err(at(node.span))
}

/// A serde deserializer over a [`Node`] tree.
#[derive(Clone, Copy)]
pub struct NodeDeserializer<'a> {
    node: &'a Spanned<Node>,
}

impl<'a> NodeDeserializer<'a> {
    pub fn new(node: &'a Spanned<Node>) -> Self {
        NodeDeserializer { node }
    }

    fn scalar(&self) -> Option<&'a Scalar> {
        self.node.value.as_scalar()
    }

    fn unexpected(&self) -> de::Unexpected<'a> {
        match &self.node.value {
            Node::Map(_) => de::Unexpected::Map,
            Node::Seq(_) => de::Unexpected::Seq,
            Node::Scalar(s) => match s.resolve() {
                Resolved::Null => de::Unexpected::Unit,
                Resolved::Bool(b) => de::Unexpected::Bool(b),
                Resolved::Int(i) => de::Unexpected::Signed(i),
                Resolved::Float(f) => de::Unexpected::Float(f),
                Resolved::Str(s) => de::Unexpected::Str(s),
            },
        }
    }

    fn err_type(&self, exp: &dyn de::Expected) -> DeError {
        let mut e = <DeError as de::Error>::invalid_type(self.unexpected(), exp);
        e.span = Some(self.node.span);
        e
    }
}

struct SeqDe<'a> {
    iter: std::slice::Iter<'a, Spanned<Node>>,
}

impl<'de> SeqAccess<'de> for SeqDe<'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some(node) => seed
                .deserialize(NodeDeserializer { node })
                .map(Some)
                .map_err(at(node.span)),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'a> {
    iter: std::slice::Iter<'a, (Spanned<String>, Spanned<Node>)>,
    value: Option<&'a Spanned<Node>>,
}

struct KeyDe<'a> {
    text: &'a str,
    span: Span,
}

impl<'de> MapAccess<'de> for MapDe<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            None => Ok(None),
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(KeyDe {
                    text: &key.value,
                    span: key.span,
                })
                .map(Some)
                .map_err(at(key.span))
            }
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value without key"))?;
        seed.deserialize(NodeDeserializer { node })
            .map_err(at(node.span))
    }
}

/// Feeds a [`Spanned`] visitor its span then its value.
struct SpannedDe<'a> {
    node: &'a Spanned<Node>,
    state: u8,
}

/// Feeds a [`Spanned`] visitor the span and text of a mapping key.
struct SpannedKeyDe<'a> {
    text: &'a str,
    span: Span,
    state: u8,
}

impl<'de> MapAccess<'de> for SpannedKeyDe<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let name = match self.state {
            0 => SPANNED_SPAN,
            1 => SPANNED_VALUE,
            _ => return Ok(None),
        };
        seed.deserialize(name.into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        self.state += 1;
        if self.state == 1 {
            let s = self.span;
            seed.deserialize(TupleDe((s.start, s.end, s.line, s.column)))
        } else {
            seed.deserialize(KeyDe {
                text: self.text,
                span: self.span,
            })
        }
    }
}

impl<'de> MapAccess<'de> for SpannedDe<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let name = match self.state {
            0 => SPANNED_SPAN,
            1 => SPANNED_VALUE,
            _ => return Ok(None),
        };
        seed.deserialize(name.into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        self.state += 1;
        if self.state == 1 {
            let tuple = (span.start, span.end, span.line, span.column);
            seed.deserialize(TupleDe(tuple))
        } else {
            seed.deserialize(NodeDeserializer { node: self.node })
        }
    }
}

struct TupleDe((usize, usize, usize, usize));

impl<'de> Deserializer<'de> for TupleDe {
    type Error = DeError;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let (a, b, c, d) = self.0;
        let items = [a as u64, b as u64, c as u64, d as u64];
        visitor.visit_seq(de::value::SeqDeserializer::new(items.into_iter()))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> Deserializer<'de> for KeyDe<'de> {
    type Error = DeError;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_str(self.text)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED_NAME {
            return visitor.visit_map(SpannedKeyDe {
                text: self.text,
                span: self.span,
                state: 0,
            });
        }
        let _ = fields;
        self.deserialize_any(visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_enum(self.text.into_deserializer())
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}

struct EnumDe<'a> {
    tag: &'a str,
    tag_span: Span,
    value: Option<&'a Spanned<Node>>,
}

impl<'de> de::EnumAccess<'de> for EnumDe<'de> {
    type Error = DeError;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let v = seed
            .deserialize(KeyDe {
                text: self.tag,
                span: self.tag_span,
            })
            .map_err(at(self.tag_span))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for EnumDe<'de> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            None => Ok(()),
            Some(node) if node.value.is_null() => Ok(()),
            Some(node) => Err(DeError {
                kind: DeErrorKind::InvalidType(format!("`{}` takes no value", self.tag)),
                span: Some(node.span),
            }),
        }
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some(node) => seed
                .deserialize(NodeDeserializer { node })
                .map_err(at(node.span)),
            None => Err(DeError {
                kind: DeErrorKind::InvalidType(format!("`{}` needs a value", self.tag)),
                span: Some(self.tag_span),
            }),
        }
    }
    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Some(node) => NodeDeserializer { node }.deserialize_seq(visitor),
            None => Err(<DeError as de::Error>::custom("expected a list")),
        }
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Some(node) => NodeDeserializer { node }.deserialize_map(visitor),
            None => Err(<DeError as de::Error>::custom("expected a mapping")),
        }
    }
}

impl<'de> Deserializer<'de> for NodeDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Node::Scalar(s) => match s.resolve() {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => visitor.visit_i64(i),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str(s) => visitor.visit_borrowed_str(s),
            },
            Node::Seq(items) => visitor.visit_seq(SeqDe { iter: items.iter() }),
            Node::Map(entries) => visitor.visit_map(MapDe {
                iter: entries.iter(),
                value: None,
            }),
        }
        .map_err(at(self.node.span))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().map(Scalar::resolve) {
            Some(Resolved::Bool(b)) => visitor.visit_bool(b),
            _ => Err(self.err_type(&"a boolean (true or false)")),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().map(Scalar::resolve) {
            Some(Resolved::Int(i)) => visitor.visit_i64(i).map_err(at(self.node.span)),
            _ => Err(self.err_type(&"an integer")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().map(Scalar::resolve) {
            Some(Resolved::Int(i)) if i >= 0 => {
                visitor.visit_u64(i as u64).map_err(at(self.node.span))
            }
            _ => Err(self.err_type(&"a non-negative integer")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar().map(Scalar::resolve) {
            Some(Resolved::Int(i)) => visitor.visit_f64(i as f64),
            Some(Resolved::Float(f)) => visitor.visit_f64(f),
            _ => Err(self.err_type(&"a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Node::Scalar(s) if s.resolve() != Resolved::Null => visitor
                .visit_borrowed_str(&s.text)
                .map_err(at(self.node.span)),
            _ => Err(self.err_type(&"a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.value.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Node::Seq(items) => visitor
                .visit_seq(SeqDe { iter: items.iter() })
                .map_err(at(self.node.span)),
            _ => Err(self.err_type(&"a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Node::Map(entries) => visitor
                .visit_map(MapDe {
                    iter: entries.iter(),
                    value: None,
                })
                .map_err(at(self.node.span)),
            _ => Err(self.err_type(&"a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SPANNED_NAME {
            return visitor.visit_map(SpannedDe {
                node: self.node,
                state: 0,
            });
        }
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Node::Scalar(s) => visitor.visit_enum(EnumDe {
                tag: &s.text,
                tag_span: self.node.span,
                value: None,
            }),
            Node::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                visitor.visit_enum(EnumDe {
                    tag: &k.value,
                    tag_span: k.span,
                    value: Some(v),
                })
            }
            _ => Err(self.err_type(&"a single-key mapping or a name")),
        }
        .map_err(at(self.node.span))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.value.is_null() {
            visitor.visit_unit()
        } else {
            Err(self.err_type(&"null"))
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 char
        bytes byte_buf unit_struct tuple
        tuple_struct identifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Spanned<Node>>, SyntaxError> {
        parse_documents(text, &LineIndex::new(text))
    }

    #[test]
    fn a_block_collection_ends_at_its_last_entry_not_at_the_next_token() {
        let text =
            "split:\n  - { a: 1 }\n  - { b: 2 }\n# a comment\n\nnext: x\nmap:\n  k: v\n  e:\n";
        let docs = parse(text).expect("yaml");
        let doc = &docs[0];
        let split = doc.value.get("split").expect("split");
        assert_eq!(
            &text[split.span.start..split.span.end],
            "- { a: 1 }\n  - { b: 2 }"
        );
        let map = doc.value.get("map").expect("map");
        // An entry without a value ends at its key.
        assert_eq!(&text[map.span.start..map.span.end], "k: v\n  e");
        // A flow collection keeps its closing bracket.
        let flow = parse("x: [1, 2 ]\n").expect("yaml");
        let x = flow[0].value.get("x").expect("x");
        assert_eq!(x.span.start..x.span.end, 3..10);
    }

    #[test]
    fn a_tab_error_points_at_the_tab() {
        let e = parse("when:\n\t user.plan: pro\n").expect_err("a tab");
        assert_eq!((e.span.line, e.span.column), (2, 1), "{}", e.message);
        assert_eq!(e.span.start, 6);
    }

    #[test]
    fn a_number_out_of_range_is_said_in_yaml_words() {
        let docs = parse("-3\n").expect("yaml");
        let e = from_node::<u32>(&docs[0]).expect_err("negative");
        assert_eq!(
            e.to_string(),
            "expected a whole number from 0 to 4294967295, found `-3`"
        );
        let docs = parse("300\n").expect("yaml");
        let e = from_node::<u8>(&docs[0]).expect_err("too large");
        assert_eq!(
            e.to_string(),
            "expected a whole number from 0 to 255, found `300`"
        );
    }

    #[test]
    fn a_misspelt_key_is_renamed_unless_its_map_has_the_right_one() {
        let docs = parse("a: { wiat: 1h }\nb: { tempalte: x, template: y }\n").expect("yaml");
        let mut doc = docs[0].clone();
        let text = "a: { wiat: 1h }\n";
        let wiat = text.find("wiat").expect("wiat");
        assert!(doc.value.rename_key_at(wiat, "wait"));
        assert!(doc
            .value
            .get("a")
            .and_then(|a| a.value.get("wait"))
            .is_some());
        let tempalte = 16 + "b: { ".len();
        assert!(doc.value.rename_key_at(tempalte, "template"));
        let b = doc
            .value
            .get("b")
            .and_then(|b| b.value.as_map())
            .expect("b");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].1.value.as_str(), Some("y"));
        assert!(!doc.value.rename_key_at(999, "x"));
    }
}
