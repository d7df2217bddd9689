//! The condition grammar of FORMAT.md §5, shared by entries, exits,
//! branches, `wait_for`, goals and segments: parsed from YAML with every
//! problem reported at its node, and evaluated against a [`Scope`] the
//! engine provides.

use serde_json::Value;

use crate::diagnostic::{with_suggestion, Code};
use crate::scalar::{parse_duration, Duration};
use crate::span::{Node, Resolved, Span, Spanned};
use crate::template::Text;

/// Where a path reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    User,
    Event,
    Entry,
}

impl Root {
    pub fn as_str(self) -> &'static str {
        match self {
            Root::User => "user",
            Root::Event => "event",
            Root::Entry => "entry",
        }
    }
}

/// `user.plan`, `event.shipping.country`, `entry.cart_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    pub root: Root,
    pub keys: Vec<String>,
}

impl Path {
    pub fn parse(text: &str) -> Option<Path> {
        let mut parts = text.split('.');
        let root = match parts.next()? {
            "user" => Root::User,
            "event" => Root::Event,
            "entry" => Root::Entry,
            _ => return None,
        };
        let keys: Vec<String> = parts.map(str::to_owned).collect();
        if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
            return None;
        }
        Some(Path { root, keys })
    }

    pub fn dotted(&self) -> String {
        format!("{}.{}", self.root.as_str(), self.keys.join("."))
    }

    /// Follows the keys into a JSON object.
    pub fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut v = root;
        for k in &self.keys {
            v = v.as_object()?.get(k)?;
        }
        Some(v)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Exists,
    Contains,
    StartsWith,
}

pub const OPERATORS: &[&str] = &[
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "exists",
    "contains",
    "starts_with",
];

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "in" => Op::In,
            "not_in" => Op::NotIn,
            "exists" => Op::Exists,
            "contains" => Op::Contains,
            "starts_with" => Op::StartsWith,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        OPERATORS[self as usize]
    }
}

/// The right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Value(Value),
    /// `"{{entry.cart_id}}"`: the referenced value, type kept.
    Path(Path),
    /// Any other template: rendered to a string.
    Template(Text),
    List(Vec<Operand>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub path: Path,
    pub path_span: Span,
    pub op: Op,
    pub operand: Operand,
    pub operand_span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub event: Spanned<String>,
    pub within: Option<Duration>,
    /// Default: at least one.
    pub count: (Op, f64),
    pub where_: Option<Box<Condition>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Compare(Box<Comparison>),
    Segment(Spanned<String>),
    History(Box<History>),
}

/// What a condition may read where it is written.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    pub event: bool,
    pub entry: bool,
}

/// A problem found while parsing a condition.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: Code,
    pub message: String,
    pub span: Span,
}

/// Parses a condition; templates inside are named `{name}#{n}`.
pub struct Parser<'a> {
    pub allowed: Allowed,
    pub name: &'a str,
    pub problems: Vec<Problem>,
    pub templates: Vec<Text>,
}

impl<'a> Parser<'a> {
    pub fn new(name: &'a str, allowed: Allowed) -> Self {
        Parser {
            allowed,
            name,
            problems: Vec::new(),
            templates: Vec::new(),
        }
    }

    fn problem(&mut self, code: Code, span: Span, message: impl Into<String>) {
        self.problems.push(Problem {
            code,
            message: message.into(),
            span,
        });
    }

    pub fn parse(&mut self, node: &Spanned<Node>) -> Option<Condition> {
        let Some(entries) = node.value.as_map() else {
            self.problem(
                Code::InvalidCondition,
                node.span,
                format!(
                    "a condition is a mapping such as `user.plan: pro` or `all: [...]`, found {}",
                    node.value.type_name()
                ),
            );
            return None;
        };
        let mut parts = Vec::new();
        for (key, value) in entries {
            if let Some(c) = self.parse_entry(key, value) {
                parts.push(c);
            }
        }
        match parts.len() {
            0 if entries.is_empty() => Some(Condition::All(Vec::new())),
            0 => None,
            1 => parts.pop(),
            _ => Some(Condition::All(parts)),
        }
    }

    fn parse_list(&mut self, key: &Spanned<String>, value: &Spanned<Node>) -> Vec<Condition> {
        match value.value.as_seq() {
            Some(items) => items.iter().filter_map(|i| self.parse(i)).collect(),
            None => {
                self.problem(
                    Code::InvalidCondition,
                    value.span,
                    format!("`{}` takes a list of conditions", key.value),
                );
                Vec::new()
            }
        }
    }

    fn parse_entry(&mut self, key: &Spanned<String>, value: &Spanned<Node>) -> Option<Condition> {
        match key.value.as_str() {
            "all" => Some(Condition::All(self.parse_list(key, value))),
            "any" => Some(Condition::Any(self.parse_list(key, value))),
            "not" => self.parse(value).map(|c| Condition::Not(Box::new(c))),
            "segment" => match &value.value {
                Node::Scalar(s) => {
                    Some(Condition::Segment(Spanned::new(s.text.clone(), value.span)))
                }
                _ => {
                    self.problem(
                        Code::InvalidCondition,
                        value.span,
                        "`segment` takes a segment id",
                    );
                    None
                }
            },
            "history" => self.parse_history(value),
            other => {
                let Some(path) = Path::parse(other) else {
                    let candidates = ["all", "any", "not", "segment", "history"];
                    let message = with_suggestion(
                        format!(
                            "unknown condition `{other}`: expected `all`, `any`, `not`, `segment`, `history` or a path starting with `user.`, `event.` or `entry.`"
                        ),
                        other,
                        candidates,
                    );
                    self.problem(Code::InvalidCondition, key.span, message);
                    return None;
                };
                if path.root == Root::Event && !self.allowed.event {
                    self.problem(
                        Code::UnknownVariable,
                        key.span,
                        format!("`{other}`: no event is in scope here"),
                    );
                    return None;
                }
                if path.root == Root::Entry && !self.allowed.entry {
                    self.problem(
                        Code::UnknownVariable,
                        key.span,
                        format!("`{other}`: `entry.*` is only available inside a journey"),
                    );
                    return None;
                }
                self.parse_comparisons(path, key.span, value)
            }
        }
    }

    fn parse_comparisons(
        &mut self,
        path: Path,
        path_span: Span,
        value: &Spanned<Node>,
    ) -> Option<Condition> {
        let Some(ops) = value.value.as_map() else {
            let operand = self.operand(value, Op::Eq)?;
            return Some(Condition::Compare(Box::new(Comparison {
                path,
                path_span,
                op: Op::Eq,
                operand,
                operand_span: value.span,
            })));
        };
        let mut parts = Vec::new();
        for (op_key, op_value) in ops {
            let Some(op) = Op::parse(&op_key.value) else {
                let message = with_suggestion(
                    format!("unknown operator `{}`", op_key.value),
                    &op_key.value,
                    OPERATORS.iter().copied(),
                );
                self.problem(Code::InvalidCondition, op_key.span, message);
                continue;
            };
            if let Some(operand) = self.operand(op_value, op) {
                parts.push(Condition::Compare(Box::new(Comparison {
                    path: path.clone(),
                    path_span,
                    op,
                    operand,
                    operand_span: op_value.span,
                })));
            }
        }
        match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(Condition::All(parts)),
        }
    }

    fn operand(&mut self, node: &Spanned<Node>, op: Op) -> Option<Operand> {
        match (&node.value, op) {
            (Node::Seq(items), Op::In | Op::NotIn) => {
                let mut list = Vec::new();
                for i in items {
                    list.push(self.operand(i, Op::Eq)?);
                }
                Some(Operand::List(list))
            }
            (_, Op::In | Op::NotIn) => {
                self.problem(
                    Code::InvalidCondition,
                    node.span,
                    format!(
                        "`{}` takes a list, found {}",
                        op.as_str(),
                        node.value.type_name()
                    ),
                );
                None
            }
            (Node::Scalar(s), Op::Exists) => match s.resolve() {
                Resolved::Bool(b) => Some(Operand::Value(Value::Bool(b))),
                _ => {
                    self.problem(
                        Code::InvalidCondition,
                        node.span,
                        "`exists` takes true or false",
                    );
                    None
                }
            },
            (Node::Scalar(s), _) => {
                if let Resolved::Str(text) = s.resolve() {
                    if text.contains("{{") {
                        let name = format!("{}#{}", self.name, self.templates.len());
                        return match Text::compile(name, text, false) {
                            Ok(t) => {
                                self.templates.push(t.clone());
                                match t.sole_path.as_deref().and_then(Path::parse) {
                                    Some(p) => {
                                        self.check_root(&p, node.span);
                                        Some(Operand::Path(p))
                                    }
                                    None => Some(Operand::Template(t)),
                                }
                            }
                            Err(e) => {
                                self.problem(
                                    Code::TemplateSyntax,
                                    node.span,
                                    format!("template does not parse: {}", e.message),
                                );
                                None
                            }
                        };
                    }
                }
                Some(Operand::Value(node.value.to_json()))
            }
            (_, _) => {
                self.problem(
                    Code::InvalidCondition,
                    node.span,
                    format!(
                        "`{}` takes a single value, found {}",
                        op.as_str(),
                        node.value.type_name()
                    ),
                );
                None
            }
        }
    }

    fn check_root(&mut self, p: &Path, span: Span) {
        if (p.root == Root::Event && !self.allowed.event)
            || (p.root == Root::Entry && !self.allowed.entry)
        {
            self.problem(
                Code::UnknownVariable,
                span,
                format!("`{}` is not in scope here", p.dotted()),
            );
        }
    }

    fn parse_history(&mut self, node: &Spanned<Node>) -> Option<Condition> {
        let Some(entries) = node.value.as_map() else {
            self.problem(
                Code::InvalidCondition,
                node.span,
                "`history` takes a mapping with `event`, `within`, `count`",
            );
            return None;
        };
        let mut event = None;
        let mut within = None;
        let mut count = (Op::Gte, 1.0);
        let mut where_ = None;
        let mut ok = true;
        for (k, v) in entries {
            match k.value.as_str() {
                "event" => match v.value.as_str() {
                    Some(e) => event = Some(Spanned::new(e.to_owned(), v.span)),
                    None => {
                        self.problem(
                            Code::InvalidCondition,
                            v.span,
                            "`event` takes an event name",
                        );
                        ok = false;
                    }
                },
                "within" => match v.value.as_str().map(parse_duration) {
                    Some(Ok(d)) => within = Some(d),
                    Some(Err(e)) => {
                        self.problem(Code::InvalidDuration, v.span, e);
                        ok = false;
                    }
                    None => {
                        self.problem(Code::InvalidDuration, v.span, "`within` takes a duration");
                        ok = false;
                    }
                },
                "count" => match self.count(v) {
                    Some(c) => count = c,
                    None => ok = false,
                },
                "where" => {
                    let saved = self.allowed;
                    self.allowed.event = true;
                    where_ = self.parse(v).map(Box::new);
                    self.allowed = saved;
                    if where_.is_none() {
                        ok = false;
                    }
                }
                other => {
                    let message = with_suggestion(
                        format!("unknown field `{other}` in `history`"),
                        other,
                        ["event", "within", "count", "where"],
                    );
                    self.problem(Code::UnknownField, k.span, message);
                    ok = false;
                }
            }
        }
        let Some(event) = event else {
            self.problem(Code::MissingField, node.span, "`history` needs an `event`");
            return None;
        };
        ok.then(|| {
            Condition::History(Box::new(History {
                event,
                within,
                count,
                where_,
            }))
        })
    }

    fn count(&mut self, v: &Spanned<Node>) -> Option<(Op, f64)> {
        let number = |n: &Spanned<Node>| match n.value.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Int(i)) => Some(i as f64),
            Some(Resolved::Float(f)) => Some(f),
            _ => None,
        };
        if let Some(n) = number(v) {
            return Some((Op::Eq, n));
        }
        let ops = v.value.as_map().filter(|m| m.len() == 1);
        let Some([(op, n)]) = ops else {
            self.problem(
                Code::InvalidCondition,
                v.span,
                "`count` takes a number or one comparison such as `{ gte: 3 }`",
            );
            return None;
        };
        match (Op::parse(&op.value), number(n)) {
            (Some(o @ (Op::Eq | Op::Ne | Op::Gt | Op::Gte | Op::Lt | Op::Lte)), Some(n)) => {
                Some((o, n))
            }
            (Some(_), Some(_)) | (None, _) => {
                self.problem(
                    Code::InvalidCondition,
                    op.span,
                    format!(
                        "`count` compares with eq, ne, gt, gte, lt or lte, not `{}`",
                        op.value
                    ),
                );
                None
            }
            (_, None) => {
                self.problem(
                    Code::InvalidCondition,
                    n.span,
                    "`count` compares with a number",
                );
                None
            }
        }
    }
}

/// What a condition is evaluated against. The engine implements it over a
/// user's profile, history and the clock.
pub trait Scope {
    /// The value at `path` (in the `user` profile, the `event` props, the
    /// `entry` props): borrowed when the scope holds JSON, owned when it
    /// converts from a form of its own.
    fn lookup(&self, path: &Path) -> Option<std::borrow::Cow<'_, Value>>;
    /// Segment membership, evaluated now.
    fn in_segment(&self, segment: &str) -> bool;
    /// How many of the user's events match the history clause.
    fn history_count(&self, history: &History) -> u64;
    /// Renders a template operand; `None` when it cannot be rendered.
    fn render(&self, text: &Text) -> Option<String>;
}

impl Condition {
    pub fn eval(&self, scope: &dyn Scope) -> bool {
        match self {
            Condition::All(cs) => cs.iter().all(|c| c.eval(scope)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(scope)),
            Condition::Not(c) => !c.eval(scope),
            Condition::Segment(s) => scope.in_segment(&s.value),
            Condition::History(h) => {
                let n = scope.history_count(h) as f64;
                compare_numbers(h.count.0, n, h.count.1)
            }
            Condition::Compare(c) => {
                let left = scope.lookup(&c.path);
                eval_comparison(left.as_deref(), c.op, &c.operand, scope)
            }
        }
    }

    /// Visits every condition node (pre-order).
    pub fn walk<'c>(&'c self, f: &mut dyn FnMut(&'c Condition)) {
        f(self);
        match self {
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.walk(f)),
            Condition::Not(c) => c.walk(f),
            Condition::History(h) => {
                if let Some(w) = &h.where_ {
                    w.walk(f)
                }
            }
            _ => {}
        }
    }
}

fn resolve_operand<'s>(
    o: &'s Operand,
    scope: &'s dyn Scope,
) -> Option<std::borrow::Cow<'s, Value>> {
    use std::borrow::Cow;
    match o {
        Operand::Value(v) => Some(Cow::Borrowed(v)),
        Operand::Path(p) => scope.lookup(p),
        Operand::Template(t) => scope.render(t).map(|s| Cow::Owned(Value::String(s))),
        Operand::List(_) => None,
    }
}

fn compare_numbers(op: Op, a: f64, b: f64) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Gt => a > b,
        Op::Gte => a >= b,
        Op::Lt => a < b,
        Op::Lte => a <= b,
        _ => false,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn eval_comparison(left: Option<&Value>, op: Op, operand: &Operand, scope: &dyn Scope) -> bool {
    let left = left.filter(|v| !v.is_null());
    match op {
        Op::Exists => {
            let want = matches!(operand, Operand::Value(Value::Bool(true)));
            left.is_some() == want
        }
        Op::In | Op::NotIn => {
            let Operand::List(items) = operand else {
                return false;
            };
            // FORMAT.md §5: a comparison with a missing value is false,
            // except `exists: false` and `ne`; `not_in` is no exception.
            let Some(l) = left else {
                return false;
            };
            let found = items
                .iter()
                .filter_map(|i| resolve_operand(i, scope))
                .any(|r| equal(l, &r));
            found == (op == Op::In)
        }
        _ => {
            let right = resolve_operand(operand, scope);
            let (Some(l), Some(r)) = (left, right.as_deref()) else {
                return op == Op::Ne;
            };
            match op {
                Op::Eq => equal(l, r),
                Op::Ne => !equal(l, r),
                Op::Gt | Op::Gte | Op::Lt | Op::Lte => match (l, r) {
                    (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
                        (Some(a), Some(b)) => compare_numbers(op, a, b),
                        _ => false,
                    },
                    (Value::String(a), Value::String(b)) => match op {
                        Op::Gt => a > b,
                        Op::Gte => a >= b,
                        Op::Lt => a < b,
                        _ => a <= b,
                    },
                    _ => false,
                },
                Op::Contains => match (l, r) {
                    (Value::String(a), Value::String(b)) => a.contains(b.as_str()),
                    (Value::Array(items), r) => items.iter().any(|i| equal(i, r)),
                    _ => false,
                },
                Op::StartsWith => match (l, r) {
                    (Value::String(a), Value::String(b)) => a.starts_with(b.as_str()),
                    _ => false,
                },
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{parse_documents, LineIndex};

    struct S(Value, Value);
    impl Scope for S {
        fn lookup(&self, path: &Path) -> Option<std::borrow::Cow<'_, Value>> {
            let root = match path.root {
                Root::User => &self.0,
                Root::Event => &self.1,
                Root::Entry => return None,
            };
            path.lookup(root).map(std::borrow::Cow::Borrowed)
        }
        fn in_segment(&self, s: &str) -> bool {
            s == "vip"
        }
        fn history_count(&self, _: &History) -> u64 {
            2
        }
        fn render(&self, _: &Text) -> Option<String> {
            None
        }
    }

    fn cond(yaml: &str) -> (Option<Condition>, Vec<Problem>) {
        let idx = LineIndex::new(yaml);
        let docs = parse_documents(yaml, &idx).expect("yaml");
        let mut p = Parser::new(
            "t",
            Allowed {
                event: true,
                entry: true,
            },
        );
        let c = p.parse(&docs[0]);
        (c, p.problems)
    }

    #[test]
    fn evaluates_the_grammar() {
        let scope = S(
            serde_json::json!({"country": "DE", "plan": "pro", "ltv": 600}),
            serde_json::json!({"cart_value": 25}),
        );
        let yaml = "all:\n  - user.country: { in: [DE, AT] }\n  - event.cart_value: { gte: 20 }\n  - user.plan: pro\n  - not: { user.churned: true }\n  - segment: vip\n  - history: { event: o, within: 30d, count: { gte: 2 } }\n  - user.email: { exists: false }\n";
        let (c, problems) = cond(yaml);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(c.expect("parsed").eval(&scope));
        let (c, _) = cond("user.ltv: { lt: 100 }");
        assert!(!c.expect("parsed").eval(&scope));
        let (c, _) = cond("user.missing: { ne: 3 }");
        assert!(c.expect("parsed").eval(&scope));
        // A missing value: every comparison but `ne` and `exists: false`
        // is false (FORMAT.md §5), `not_in` included.
        for (yaml, want) in [
            ("user.missing: { not_in: [DE] }", false),
            ("user.missing: { in: [DE] }", false),
            ("user.missing: { lt: 3 }", false),
            ("user.missing: { contains: x }", false),
            ("user.missing: { starts_with: x }", false),
            ("user.missing: { exists: true }", false),
            ("user.missing: { exists: false }", true),
            ("user.missing: { ne: 3 }", true),
            ("user.country: { not_in: [AT] }", true),
            ("user.country: { not_in: [DE] }", false),
        ] {
            let (c, _) = cond(yaml);
            assert_eq!(c.expect("parsed").eval(&scope), want, "{yaml}");
        }
        let (c, _) = cond("user.country: { gt: 3 }");
        assert!(
            !c.expect("parsed").eval(&scope),
            "cross-type comparison is false"
        );
    }

    #[test]
    fn reports_every_problem() {
        let (_, problems) = cond("all:\n  - usr.plan: pro\n  - user.x: { gtee: 3 }\n");
        assert_eq!(problems.len(), 2);
        assert!(
            problems[1].message.contains("did you mean `gte`"),
            "{:?}",
            problems[1]
        );
        assert_eq!(problems[0].span.line, 2);
    }
}
