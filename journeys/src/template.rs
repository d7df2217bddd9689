//! Handlebars templates: compiled once at validation, rendered in strict
//! mode by the engine. A missing variable at render time is an error that
//! names the variable, never a blank.

use std::collections::BTreeSet;
use std::sync::Arc;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Handlebars, Path, Template};

use crate::limits::{MAX_RENDER_BYTES, MAX_RENDER_ITERATIONS, MAX_TEMPLATE_NESTING};

/// A template text that parsed, with the variables it reads.
#[derive(Clone)]
pub struct Text {
    /// The name it is registered under in a [`Renderer`].
    pub name: String,
    pub source: String,
    /// Render with HTML escaping (email `html` bodies only).
    pub html: bool,
    /// Dotted paths read by the template outside `each`/`with` blocks,
    /// e.g. `user.first_name`.
    pub variables: BTreeSet<String>,
    /// When the whole text is one `{{path}}`, the path: conditions compare
    /// the referenced value itself, keeping its type.
    pub sole_path: Option<String>,
    /// `sole_path` as a `user.`/`event.`/`entry.` path, parsed once.
    pub sole: Option<crate::condition::Path>,
    /// The partials it includes (`{{> name}}`, `{{#> name}}`), each with
    /// the inline partial whose body includes it (`None`: the text itself).
    pub partials: Vec<PartialRef>,
    /// The inline partials it defines (`{{#*inline "name"}}`).
    pub inline: BTreeSet<String>,
    compiled: Arc<Template>,
}

/// A `{{> name}}` inside a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialRef {
    pub name: String,
    /// The inline partial whose body includes it, if any.
    pub inside: Option<String>,
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Text")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.html == other.html
    }
}

/// A template that does not parse: the message and the 1-based line and
/// column inside the template text.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl Text {
    pub fn compile(name: impl Into<String>, source: &str, html: bool) -> Result<Text, SyntaxError> {
        check_nesting(source)?;
        let compiled = Template::compile(source).map_err(|e| {
            explain(source).unwrap_or_else(|| {
                let (line, column) = e.pos().unwrap_or((1, 1));
                SyntaxError {
                    message: e.reason().to_string(),
                    line,
                    column,
                }
            })
        })?;
        let mut variables = BTreeSet::new();
        collect(&compiled.elements, &mut variables);
        let mut partials = Vec::new();
        let mut inline = BTreeSet::new();
        partial_refs(&compiled.elements, None, &mut partials, &mut inline)?;
        let sole_path = match compiled.elements.as_slice() {
            [TemplateElement::Expression(h)] | [TemplateElement::HtmlExpression(h)]
                if h.params.is_empty() && h.hash.is_empty() =>
            {
                match &h.name {
                    Parameter::Path(Path::Relative((_, raw))) => Some(raw.clone()),
                    Parameter::Name(n) => Some(n.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let sole = sole_path.as_deref().and_then(crate::condition::Path::parse);
        Ok(Text {
            name: name.into(),
            source: source.to_owned(),
            html,
            variables,
            sole_path,
            sole,
            partials,
            inline,
            compiled: Arc::new(compiled),
        })
    }

    /// True when the text has no `{{…}}` at all.
    pub fn is_literal(&self) -> bool {
        self.compiled.elements.iter().all(|e| {
            matches!(
                e,
                TemplateElement::RawString(_) | TemplateElement::Comment(_)
            )
        })
    }
}

/// Rejects blocks nested deeper than [`MAX_TEMPLATE_NESTING`]: compiling,
/// checking and rendering a template all walk it recursively.
fn check_nesting(source: &str) -> Result<(), SyntaxError> {
    let mut depth = 0usize;
    let mut rest = 0;
    while let Some(i) = source[rest..].find("{{") {
        let open = rest + i;
        let inner = source[open + 2..].trim_start_matches(['{', '~', ' ']);
        if inner.starts_with('#') {
            depth += 1;
            if depth > MAX_TEMPLATE_NESTING {
                let line = source[..open].matches('\n').count() + 1;
                let column = source[..open]
                    .rsplit('\n')
                    .next()
                    .map_or(0, |l| l.chars().count())
                    + 1;
                return Err(SyntaxError {
                    message: format!("blocks nest more than {MAX_TEMPLATE_NESTING} levels deep"),
                    line,
                    column,
                });
            }
        } else if inner.starts_with('/') {
            depth = depth.saturating_sub(1);
        }
        rest = open + 2;
    }
    Ok(())
}

/// The name of a partial as written, or an error for a computed one.
fn partial_name(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Name(n) => Some(n.clone()),
        Parameter::Path(Path::Relative((_, raw))) => Some(raw.clone()),
        Parameter::Literal(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn partial_refs(
    elements: &[TemplateElement],
    inside: Option<&str>,
    out: &mut Vec<PartialRef>,
    inline: &mut BTreeSet<String>,
) -> Result<(), SyntaxError> {
    let dynamic = || SyntaxError {
        message: "a partial's name must be written out: computed partial names are not supported"
            .into(),
        line: 1,
        column: 1,
    };
    for e in elements {
        match e {
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                let name = partial_name(&d.name).ok_or_else(dynamic)?;
                if name != "@partial-block" {
                    out.push(PartialRef {
                        name,
                        inside: inside.map(str::to_owned),
                    });
                }
                if let Some(t) = &d.template {
                    partial_refs(&t.elements, inside, out, inline)?;
                }
            }
            TemplateElement::DecoratorBlock(d) | TemplateElement::DecoratorExpression(d) => {
                let is_inline = matches!(&d.name, Parameter::Name(n) if n == "inline");
                let defined = if is_inline {
                    let name = d
                        .params
                        .first()
                        .and_then(partial_name)
                        .ok_or_else(dynamic)?;
                    inline.insert(name.clone());
                    Some(name)
                } else {
                    None
                };
                if let Some(t) = &d.template {
                    partial_refs(&t.elements, defined.as_deref().or(inside), out, inline)?;
                }
            }
            TemplateElement::HelperBlock(h) => {
                for t in h.template.iter().chain(h.inverse.iter()) {
                    partial_refs(&t.elements, inside, out, inline)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A plain-words explanation of the two commonest mistakes, unclosed
/// `{{` and unbalanced blocks, at the place they start.
fn explain(source: &str) -> Option<SyntaxError> {
    let pos = |offset: usize| {
        let before = &source[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        (line, column)
    };
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut rest = 0;
    while let Some(i) = source[rest..].find("{{") {
        let open = rest + i;
        let Some(j) = source[open..].find("}}") else {
            let (line, column) = pos(open);
            return Some(SyntaxError {
                message: "`{{` is never closed with `}}`".into(),
                line,
                column,
            });
        };
        let inner = source[open + 2..open + j]
            .trim_start_matches('{')
            .trim_start_matches('~')
            .trim();
        if let Some(name) = inner.strip_prefix('#') {
            let name = name
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            stack.push((name, open));
        } else if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim();
            match stack.pop() {
                Some((open_name, _)) if open_name == name => {}
                Some((open_name, at)) => {
                    let (line, column) = pos(at);
                    return Some(SyntaxError {
                        message: format!(
                            "block `{{{{#{open_name}}}}}` is closed by `{{{{/{name}}}}}`"
                        ),
                        line,
                        column,
                    });
                }
                None => {
                    let (line, column) = pos(open);
                    return Some(SyntaxError {
                        message: format!("`{{{{/{name}}}}}` closes a block that was never opened"),
                        line,
                        column,
                    });
                }
            }
        }
        rest = open + j + 2;
    }
    stack.pop().map(|(name, at)| {
        let (line, column) = pos(at);
        SyntaxError {
            message: format!("block `{{{{#{name}}}}}` is never closed with `{{{{/{name}}}}}`"),
            line,
            column,
        }
    })
}

fn param_var(p: &Parameter, out: &mut BTreeSet<String>) {
    match p {
        Parameter::Path(Path::Relative((_, raw)))
            if raw != "this" && !raw.starts_with("this.") && !raw.starts_with("../") =>
        {
            out.insert(raw.clone());
        }
        Parameter::Name(n) if n.contains('.') => {
            out.insert(n.clone());
        }
        Parameter::Subexpression(sub) => collect(std::slice::from_ref(sub.as_element()), out),
        _ => {}
    }
}

fn collect(elements: &[TemplateElement], out: &mut BTreeSet<String>) {
    for e in elements {
        match e {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                if h.params.is_empty() && h.hash.is_empty() {
                    param_var(&h.name, out);
                }
                for p in h.params.iter().chain(h.hash.values()) {
                    param_var(p, out);
                }
            }
            TemplateElement::HelperBlock(h) => {
                for p in h.params.iter().chain(h.hash.values()) {
                    param_var(p, out);
                }
                let scoped = matches!(&h.name, Parameter::Name(n) if n == "each" || n == "with");
                if !scoped {
                    if let Some(t) = &h.template {
                        collect(&t.elements, out);
                    }
                }
                if let Some(t) = &h.inverse {
                    collect(&t.elements, out);
                }
            }
            _ => {}
        }
    }
}

/// Why a render failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    #[error("variable `{0}` is missing")]
    MissingVariable(String),
    /// Any other failure, the bounds of [`crate::limits`] included (each
    /// with its own message, see [`RenderError::too_large`] and the like).
    #[error("template `{name}` failed: {message}")]
    Failed { name: String, message: String },
}

impl RenderError {
    /// The output went over [`MAX_RENDER_BYTES`].
    pub fn too_large(name: &str) -> RenderError {
        RenderError::Failed {
            name: name.to_owned(),
            message: format!("output larger than {MAX_RENDER_BYTES} bytes"),
        }
    }

    /// `each` went over [`MAX_RENDER_ITERATIONS`].
    pub fn too_many_iterations(name: &str) -> RenderError {
        RenderError::Failed {
            name: name.to_owned(),
            message: format!("more than {MAX_RENDER_ITERATIONS} iterations of `each`"),
        }
    }

    /// A rendered URL or header value with a CR or LF.
    pub fn line_break(what: &str) -> RenderError {
        RenderError::Failed {
            name: what.to_owned(),
            message: format!("`{what}` contains a line break (CR or LF)"),
        }
    }
}

/// A Handlebars registry as sluice renders with: strict (a missing
/// variable is an error), HTML escaping or none, and an `each` that counts
/// its iterations against [`MAX_RENDER_ITERATIONS`] per render.
pub fn registry(html: bool) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    r.set_strict_mode(true);
    if !html {
        r.register_escape_fn(handlebars::no_escape);
    }
    r.register_helper("each", Box::new(BoundedEach));
    r
}

thread_local! {
    /// `each` iterations of the render running on this thread.
    static ITERATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

const ITERATION_LIMIT: &str = "each iteration limit";

/// Renders a registered template with the bounds of [`crate::limits`]:
/// output size and `each` iterations.
pub fn render_bounded(
    registry: &Handlebars<'static>,
    name: &str,
    ctx: &handlebars::Context,
) -> Result<String, RenderError> {
    /// The output so far, and whether it went over the limit.
    struct Capped(Vec<u8>, bool);
    impl std::io::Write for Capped {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + buf.len() > MAX_RENDER_BYTES {
                self.1 = true;
                return Err(std::io::Error::other("output limit"));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    ITERATIONS.with(|c| c.set(0));
    let mut out = Capped(Vec::new(), false);
    let result = registry.render_with_context_to_write(name, ctx, &mut out);
    let iterations = ITERATIONS.with(|c| c.replace(0));
    match result {
        Ok(()) => String::from_utf8(out.0).map_err(|e| RenderError::Failed {
            name: name.to_owned(),
            message: e.to_string(),
        }),
        Err(_) if iterations > MAX_RENDER_ITERATIONS => Err(RenderError::too_many_iterations(name)),
        Err(_) if out.1 => Err(RenderError::too_large(name)),
        Err(e) => Err(RenderError::from_handlebars(name, &e)),
    }
}

/// Checks a rendered URL or header value: a CR or LF in it would let a
/// value from a profile or an event inject headers.
pub fn check_header_value(what: &str, value: &str) -> Result<(), RenderError> {
    if value.contains(['\r', '\n']) {
        return Err(RenderError::line_break(what));
    }
    Ok(())
}

/// Handlebars' `each` (arrays and objects; `this`, `@index`, `@key`,
/// `@first`, `@last`, block parameters, `{{else}}`), counting iterations.
struct BoundedEach;

impl handlebars::HelperDef for BoundedEach {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &handlebars::Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc handlebars::Context,
        rc: &mut handlebars::RenderContext<'reg, 'rc>,
        out: &mut dyn handlebars::Output,
    ) -> handlebars::HelperResult {
        use handlebars::{BlockContext, BlockParams, Renderable};
        use serde_json::Value;
        let value = h
            .param(0)
            .ok_or(handlebars::RenderErrorReason::ParamNotFoundForIndex(
                "each", 0,
            ))?;
        let Some(template) = h.template() else {
            return Ok(());
        };
        let items: Vec<(Value, &Value)> = match value.value() {
            Value::Array(list) if !list.is_empty() || h.inverse().is_none() => list
                .iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i), v))
                .collect(),
            Value::Object(map) if !map.is_empty() || h.inverse().is_none() => map
                .iter()
                .map(|(k, v)| (Value::String(k.clone()), v))
                .collect(),
            _ => {
                return match h.inverse() {
                    Some(inverse) => inverse.render(r, ctx, rc, out),
                    None if r.strict_mode() => {
                        Err(handlebars::RenderError::strict_error(value.relative_path()))
                    }
                    None => Ok(()),
                };
            }
        };
        let total = ITERATIONS.with(|c| {
            let n = c.get().saturating_add(items.len() as u64);
            c.set(n);
            n
        });
        if total > MAX_RENDER_ITERATIONS {
            return Err(handlebars::RenderErrorReason::Other(ITERATION_LIMIT.into()).into());
        }
        let is_object = value.value().is_object();
        let base = value.context_path().cloned();
        let mut block = BlockContext::new();
        match &base {
            Some(p) => block.base_path_mut().clone_from(p),
            None => block.set_base_value(value.value().clone()),
        }
        rc.push_block(block);
        let len = items.len();
        for (i, (key, v)) in items.into_iter().enumerate() {
            if let Some(block) = rc.block_mut() {
                block.set_local_var("first", Value::Bool(i == 0));
                block.set_local_var("last", Value::Bool(i + 1 == len));
                block.set_local_var("index", Value::from(i));
                if is_object {
                    block.set_local_var("key", key.clone());
                }
                let segment = match &key {
                    Value::String(k) => k.clone(),
                    other => other.to_string(),
                };
                match &base {
                    Some(p) => {
                        let mut path = p.clone();
                        path.push(segment);
                        *block.base_path_mut() = path;
                    }
                    None => block.set_base_value(v.clone()),
                }
                let mut params = BlockParams::new();
                if let Some(name) = h.block_param() {
                    match &base {
                        Some(_) => params.add_path(name, Vec::new())?,
                        None => params.add_value(name, v.clone())?,
                    }
                    block.set_block_params(params);
                } else if let Some((name, key_name)) = h.block_param_pair() {
                    match &base {
                        Some(_) => params.add_path(name, Vec::new())?,
                        None => params.add_value(name, v.clone())?,
                    }
                    params.add_value(key_name, key.clone())?;
                    block.set_block_params(params);
                }
            }
            template.render(r, ctx, rc, out)?;
        }
        rc.pop_block();
        Ok(())
    }
}

impl RenderError {
    /// What a Handlebars render error means for a message: a missing
    /// variable (named) or another failure of template `name`.
    pub fn from_handlebars(name: &str, e: &handlebars::RenderError) -> RenderError {
        use handlebars::RenderErrorReason as R;
        match e.reason() {
            R::MissingVariable(Some(v)) => RenderError::MissingVariable(v.clone()),
            other => {
                let msg = other.to_string();
                // Strict mode reports a missing path in helpers this way.
                match msg.split('"').nth(1) {
                    Some(v) if msg.contains("not found in strict mode") => {
                        RenderError::MissingVariable(v.to_owned())
                    }
                    _ => RenderError::Failed {
                        name: name.to_owned(),
                        message: msg,
                    },
                }
            }
        }
    }
}

/// Every compiled template text of a repository, ready to render.
#[derive(Clone)]
pub struct Renderer {
    html: Handlebars<'static>,
    plain: Handlebars<'static>,
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer {
            html: registry(true),
            plain: registry(false),
        }
    }
}

impl Renderer {
    pub fn register(&mut self, text: &Text) {
        let registry = if text.html {
            &mut self.html
        } else {
            &mut self.plain
        };
        registry.register_template(&text.name, (*text.compiled).clone());
    }

    /// Renders a registered text against a JSON context such as
    /// `{"user": {...}, "entry": {...}, "journey": {...}}`.
    pub fn render(&self, text: &Text, data: &serde_json::Value) -> Result<String, RenderError> {
        if text.is_literal() {
            return Ok(text.source.clone());
        }
        let registry = if text.html { &self.html } else { &self.plain };
        let ctx = handlebars::Context::from(data.clone());
        render_bounded(registry, &text.name, &ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_strict_render() {
        let t = Text::compile(
            "t",
            "Hi {{user.first_name}}, {{#if entry.x}}{{entry.x}}{{/if}}",
            false,
        )
        .expect("compiles");
        assert_eq!(
            t.variables.iter().cloned().collect::<Vec<_>>(),
            vec!["entry.x".to_owned(), "user.first_name".to_owned()]
        );
        let mut r = Renderer::default();
        r.register(&t);
        let ok = r.render(
            &t,
            &serde_json::json!({"user": {"first_name": "Ana & Bo"}, "entry": {}}),
        );
        assert_eq!(ok.expect("renders"), "Hi Ana & Bo, ");
        let err = r.render(&t, &serde_json::json!({"user": {}}));
        assert!(matches!(err, Err(RenderError::MissingVariable(v)) if v == "user.first_name"));
        let sole = Text::compile("s", "{{entry.cart_id}}", false).expect("compiles");
        assert_eq!(sole.sole_path.as_deref(), Some("entry.cart_id"));
        assert_eq!(sole.sole, crate::condition::Path::parse("entry.cart_id"));
        assert!(Text::compile("bad", "{{#if x}}", false).is_err());
    }

    fn render(source: &str, data: serde_json::Value) -> Result<String, RenderError> {
        let t = Text::compile("t", source, false).expect("compiles");
        let mut r = Renderer::default();
        r.register(&t);
        r.render(&t, &data)
    }

    #[test]
    fn each_renders_as_handlebars_does() {
        let data =
            serde_json::json!({"user": {"items": ["a", "b"], "map": {"x": 1, "y": 2}, "none": []}});
        assert_eq!(
            render("{{#each user.items}}{{@index}}{{this}}{{#if @first}}F{{/if}}{{#if @last}}L{{/if}};{{/each}}", data.clone()).expect("renders"),
            "0aF;1bL;"
        );
        assert_eq!(
            render(
                "{{#each user.map}}{{@key}}={{this}},{{/each}}",
                data.clone()
            )
            .expect("renders"),
            "x=1,y=2,"
        );
        assert_eq!(
            render(
                "{{#each user.items as |it i|}}{{i}}:{{it}} {{/each}}",
                data.clone()
            )
            .expect("renders"),
            "0:a 1:b "
        );
        assert_eq!(
            render("{{#each user.none}}x{{else}}empty{{/each}}", data.clone()).expect("renders"),
            "empty"
        );
        assert!(matches!(
            render("{{#each user.nope}}x{{/each}}", data),
            Err(RenderError::MissingVariable(_))
        ));
    }

    #[test]
    fn renders_are_bounded_in_iterations_and_size() {
        // 20,000 × 20,000 iterations: stopped after the limit, not run.
        let items: Vec<u32> = (0..20_000).collect();
        let data = serde_json::json!({"user": {"items": items}});
        let nested = "{{#each user.items}}{{#each ../user.items}}{{/each}}{{/each}}";
        assert!(matches!(
            render(nested, data.clone()),
            Err(RenderError::Failed { message, .. }) if message.contains("iterations")
        ));
        let big = serde_json::json!({"user": {"s": "x".repeat(MAX_RENDER_BYTES / 4)}});
        assert!(matches!(
            render("{{user.s}}{{user.s}}{{user.s}}{{user.s}}{{user.s}}", big),
            Err(RenderError::Failed { message, .. }) if message.contains("larger than")
        ));
        assert!(check_header_value("url", "https://x/?a=1").is_ok());
        assert!(check_header_value("header `X`", "a\r\nSet-Cookie: x").is_err());
    }

    #[test]
    fn partials_and_nesting_are_collected() {
        let t = Text::compile(
            "t",
            "{{#*inline \"p\"}}x{{> p}}{{/inline}}{{> p}}{{> other}}",
            false,
        )
        .expect("compiles");
        assert!(t.inline.contains("p"));
        assert_eq!(
            t.partials,
            vec![
                PartialRef {
                    name: "p".into(),
                    inside: Some("p".into())
                },
                PartialRef {
                    name: "p".into(),
                    inside: None
                },
                PartialRef {
                    name: "other".into(),
                    inside: None
                },
            ]
        );
        let deep = "{{#if a}}".repeat(MAX_TEMPLATE_NESTING + 1);
        assert!(Text::compile("d", &deep, false).is_err());
        let deep = "{{#if a}}".repeat(10_000) + &"{{/if}}".repeat(10_000);
        assert!(Text::compile("d", &deep, false).is_err());
    }
}
