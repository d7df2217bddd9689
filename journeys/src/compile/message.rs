//! Message templates: required fields per channel, bodies from files,
//! Handlebars syntax, and variables against the Catalog.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::{Ctx, TypeEnv};
use crate::compiled::{Channel, JsonTemplate, MessageTemplate, TemplateBody};
use crate::diagnostic::{Code, Diagnostic, SourceFile};
use crate::limits::MAX_BODY_BYTES;
use crate::model;
use crate::span::{Node, Resolved, Span, Spanned};
use crate::template::Text;

/// Compiles one template text written inline, reporting syntax errors at
/// the line and column inside the YAML string where possible.
pub(crate) fn inline_text(
    name: String,
    value: &Spanned<String>,
    html: bool,
    ctx: &mut Ctx<'_>,
) -> Option<Text> {
    match Text::compile(name, &value.value, html) {
        Ok(t) => Some(t),
        Err(e) => {
            let mut span = value.span;
            // On a single-line plain or quoted scalar, point at the column.
            let raw = ctx.file.text.get(span.start..span.end).unwrap_or_default();
            if e.line == 1 && !raw.contains('\n') {
                let quote = usize::from(raw.starts_with('"') || raw.starts_with('\''));
                let offset: usize = value
                    .value
                    .chars()
                    .take(e.column.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                span.start += quote + offset;
                span.column += quote + value.value.chars().take(e.column.saturating_sub(1)).count();
                span.end = tag_end(&ctx.file.text, span.start);
            } else if e.line > 1 || raw.contains('\n') {
                // A block scalar (`text: |`): when the template's line is
                // the file's line with the block's indentation removed,
                // point at the column in the file.
                if let Some(at) = block_position(ctx, value, e.line, e.column) {
                    span = at;
                }
            }
            ctx.error(
                Code::TemplateSyntax,
                span,
                format!("template does not parse: {}", e.message),
            );
            None
        }
    }
}

/// The file position of line `line`, column `column` (1-based, in
/// characters) of the template written as the block scalar `value`, when
/// that line is in the file as is after the block's indentation (a literal
/// `|` block; a folded or quoted one is not, and gives `None`).
fn block_position(
    ctx: &Ctx<'_>,
    value: &Spanned<String>,
    line: usize,
    column: usize,
) -> Option<Span> {
    let text = &ctx.file.text;
    let want = value.value.split('\n').nth(line.checked_sub(1)?)?;
    let file_line = value.span.line + line - 1;
    let start = ctx.file.index.line_start(file_line.checked_sub(1)?);
    let written = text.get(start..)?.split(['\n', '\r']).next()?;
    let indent = value.span.column.checked_sub(1)?;
    let (pad, rest) = written.split_at(written.char_indices().nth(indent)?.0);
    if !pad.chars().all(|c| c == ' ') || rest != want {
        return None;
    }
    let offset: usize = rest
        .chars()
        .take(column.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    let at = start + pad.len() + offset;
    let (line, column) = ctx.file.index.line_col(text, at);
    Some(Span {
        start: at,
        end: tag_end(text, at),
        line,
        column,
    })
}

/// Where the Handlebars tag starting at `start` ends: after its `}}` on
/// the same line, or after the `{{` when it is not closed there (at
/// least one character, so the underline shows).
fn tag_end(text: &str, start: usize) -> usize {
    let Some(rest) = text.get(start..) else {
        return text.len();
    };
    let line = rest.split(['\n', '\r']).next().unwrap_or_default();
    if !line.starts_with("{{") {
        return (start + line.chars().next().map_or(0, char::len_utf8)).min(text.len());
    }
    // Up to the next `{{`: an unclosed tag does not borrow the next `}}`.
    let limit = line[2..].find("{{").map_or(line.len(), |i| i + 2);
    match line[..limit].find("}}") {
        Some(i) => start + i + 2,
        None => start + 2,
    }
}

/// Where a body file may be read from: a relative path, resolved from the
/// YAML file's directory, whose canonical path (symbolic links followed)
/// stays inside the repository. The error says why not.
fn confine(root: &Path, rel: &Path, written: &str) -> Result<PathBuf, (Code, String)> {
    let outside = |why: &str| {
        (
            Code::PathOutsideRepository,
            format!("template body `{written}` {why}: body files must lie inside the repository"),
        )
    };
    if Path::new(written).is_absolute() || written.starts_with('/') || written.starts_with('\\') {
        return Err(outside("is an absolute path"));
    }
    if Path::new(written)
        .components()
        .any(|c| matches!(c, Component::Prefix(_)))
    {
        return Err(outside("is an absolute path"));
    }
    // Lexically first, so that a missing file outside is reported as
    // outside, not as missing.
    let mut depth = 0usize;
    for c in rel.components() {
        match c {
            Component::ParentDir if depth == 0 => return Err(outside("leaves the repository")),
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    let root_real = root.canonicalize().map_err(|e| {
        (
            Code::FileNotFound,
            format!("cannot read the repository `{}`: {e}", root.display()),
        )
    })?;
    let real = root.join(rel).canonicalize().map_err(|e| {
        (
            Code::FileNotFound,
            format!(
                "cannot read template body `{}`: {}",
                rel.display(),
                crate::diagnostic::io_reason(&e)
            ),
        )
    })?;
    if !real.starts_with(&root_real) {
        return Err(outside("is a symbolic link that leaves the repository"));
    }
    Ok(real)
}

/// Compiles a template body read from a file next to the YAML.
fn file_text(
    root: &Path,
    name: String,
    reference: &Spanned<String>,
    html: bool,
    ctx: &mut Ctx<'_>,
) -> Option<Text> {
    let yaml_dir = Path::new(&ctx.file.name)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let rel = yaml_dir.join(&reference.value);
    let path = match confine(root, &rel, &reference.value) {
        Ok(p) => p,
        Err((code, message)) => {
            ctx.error(code, reference.span, message);
            return None;
        }
    };
    let bytes = match crate::load::read_bounded(&path, MAX_BODY_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => {
            ctx.error(
                Code::FileTooLarge,
                reference.span,
                format!(
                    "template body `{}` is larger than {} KiB, the limit for a body file",
                    rel.display(),
                    MAX_BODY_BYTES >> 10
                ),
            );
            return None;
        }
        Err(e) => {
            ctx.error(
                Code::FileNotFound,
                reference.span,
                format!(
                    "cannot read template body `{}`: {}",
                    rel.display(),
                    crate::diagnostic::io_reason(&e)
                ),
            );
            return None;
        }
    };
    let source = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            ctx.error(
                Code::TemplateSyntax,
                reference.span,
                format!(
                    "template body `{}` is not valid UTF-8: {}",
                    rel.display(),
                    e.utf8_error()
                ),
            );
            return None;
        }
    };
    match Text::compile(name, &source, html) {
        Ok(t) => Some(t),
        Err(e) => {
            let file = Arc::new(SourceFile::new(
                crate::load::relative_name(Path::new(""), &rel),
                source,
            ));
            let start = file
                .index
                .offset(&file.text, e.line, e.column.saturating_sub(1));
            let span = Span {
                start,
                end: tag_end(&file.text, start),
                line: e.line,
                column: e.column.max(1),
            };
            ctx.diags.push(
                Diagnostic::error(
                    Code::TemplateSyntax,
                    format!("template does not parse: {}", e.message),
                )
                .at(&file, span),
            );
            None
        }
    }
}

/// A JSON body whose strings are templates.
fn json_template(
    name: &str,
    node: &Spanned<Node>,
    texts: &mut Vec<(Text, Span)>,
    ctx: &mut Ctx<'_>,
    ok: &mut bool,
) -> JsonTemplate {
    match &node.value {
        Node::Scalar(s) => match s.resolve() {
            Resolved::Str(text) if text.contains("{{") => {
                let value = Spanned::new(text.to_owned(), node.span);
                match inline_text(format!("{name}#{}", texts.len()), &value, false, ctx) {
                    Some(t) => {
                        texts.push((t.clone(), node.span));
                        JsonTemplate::Text(t)
                    }
                    None => {
                        *ok = false;
                        JsonTemplate::Value(serde_json::Value::Null)
                    }
                }
            }
            _ => JsonTemplate::Value(node.value.to_json()),
        },
        Node::Seq(items) => JsonTemplate::Array(
            items
                .iter()
                .map(|i| json_template(name, i, texts, ctx, ok))
                .collect(),
        ),
        Node::Map(entries) => JsonTemplate::Object(
            entries
                .iter()
                .map(|(k, v)| (k.value.clone(), json_template(name, v, texts, ctx, ok)))
                .collect(),
        ),
    }
}

/// `key: template` pairs (push data, webhook headers).
fn pairs(
    name: &str,
    node: &Spanned<Node>,
    texts: &mut Vec<(Text, Span)>,
    ctx: &mut Ctx<'_>,
    ok: &mut bool,
) -> Vec<(String, Text)> {
    let Some(entries) = node.value.as_map() else {
        ctx.error(
            Code::InvalidValue,
            node.span,
            format!(
                "expected a mapping of names to strings, found {}",
                node.value.type_name()
            ),
        );
        *ok = false;
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(s) = v.value.as_scalar() else {
            ctx.error(
                Code::InvalidValue,
                v.span,
                format!("`{}` must be a string", k.value),
            );
            *ok = false;
            continue;
        };
        let value = Spanned::new(s.text.clone(), v.span);
        match inline_text(format!("{name}/{}", k.value), &value, false, ctx) {
            Some(t) => {
                texts.push((t.clone(), v.span));
                out.push((k.value.clone(), t));
            }
            None => *ok = false,
        }
    }
    out
}

pub(crate) fn compile(
    root: &Path,
    t: &model::Template,
    ctx: &mut Ctx<'_>,
    types: &TypeEnv<'_>,
) -> Option<(MessageTemplate, Vec<(Text, Span)>)> {
    let channel = ctx.channel(&t.channel)?;
    let base = format!("template/{}", t.id.value);
    let mut texts: Vec<(Text, Span)> = Vec::new();
    let mut ok = true;

    // Fields that belong to another channel.
    let foreign: Vec<(&str, Option<Span>)> = match channel {
        Channel::Email => vec![
            ("title", t.title.as_ref().map(|v| v.span)),
            ("data", t.data.as_ref().map(|v| v.span)),
            ("method", t.method.as_ref().map(|v| v.span)),
            ("url", t.url.as_ref().map(|v| v.span)),
            ("headers", t.headers.as_ref().map(|v| v.span)),
            ("body", t.body.as_ref().map(|v| v.span)),
        ],
        Channel::Push => vec![
            ("subject", t.subject.as_ref().map(|v| v.span)),
            ("text", t.text.as_ref().map(|v| v.span)),
            ("text_file", t.text_file.as_ref().map(|v| v.span)),
            ("html", t.html.as_ref().map(|v| v.span)),
            ("html_file", t.html_file.as_ref().map(|v| v.span)),
            ("from", t.from.as_ref().map(|v| v.span)),
            ("reply_to", t.reply_to.as_ref().map(|v| v.span)),
            ("method", t.method.as_ref().map(|v| v.span)),
            ("url", t.url.as_ref().map(|v| v.span)),
            ("headers", t.headers.as_ref().map(|v| v.span)),
        ],
        Channel::Webhook => vec![
            ("subject", t.subject.as_ref().map(|v| v.span)),
            ("text", t.text.as_ref().map(|v| v.span)),
            ("text_file", t.text_file.as_ref().map(|v| v.span)),
            ("html", t.html.as_ref().map(|v| v.span)),
            ("html_file", t.html_file.as_ref().map(|v| v.span)),
            ("from", t.from.as_ref().map(|v| v.span)),
            ("reply_to", t.reply_to.as_ref().map(|v| v.span)),
            ("title", t.title.as_ref().map(|v| v.span)),
            ("data", t.data.as_ref().map(|v| v.span)),
        ],
    };
    for (field, span) in foreign {
        if let Some(span) = span {
            // Point at the key: the line of the value, start of the key.
            ctx.error(
                Code::UnknownField,
                key_span(ctx, span, field),
                format!("`{field}` is not a field of {channel} templates"),
            );
            ok = false;
        }
    }

    let text = |field: &str,
                inline: &Option<Spanned<String>>,
                file: &Option<Spanned<String>>,
                html: bool,
                ctx: &mut Ctx<'_>,
                ok: &mut bool,
                texts: &mut Vec<(Text, Span)>|
     -> Option<Text> {
        let name = format!("{base}/{field}");
        let r = match (inline, file) {
            (Some(v), Some(f)) => {
                ctx.error(
                    Code::ConflictingFields,
                    key_span(ctx, f.span, &format!("{field}_file")),
                    format!("`{field}` and `{field}_file` are both given; keep one"),
                );
                let _ = v;
                *ok = false;
                return None;
            }
            (Some(v), None) => inline_text(name, v, html, ctx),
            (None, Some(f)) => file_text(root, name, f, html, ctx),
            (None, None) => return None,
        };
        match &r {
            Some(t) => {
                let span = inline
                    .as_ref()
                    .or(file.as_ref())
                    .map_or_else(Span::default, |v| v.span);
                texts.push((t.clone(), span));
            }
            None => *ok = false,
        }
        r
    };

    let body = match channel {
        Channel::Email => {
            let subject = match &t.subject {
                Some(s) => text(
                    "subject",
                    &Some(s.clone()),
                    &None,
                    false,
                    ctx,
                    &mut ok,
                    &mut texts,
                ),
                None => {
                    ctx.error(
                        Code::MissingField,
                        t.id.span,
                        format!("email template `{}` needs a `subject`", t.id.value),
                    );
                    ok = false;
                    None
                }
            };
            let text_body = text(
                "text",
                &t.text,
                &t.text_file,
                false,
                ctx,
                &mut ok,
                &mut texts,
            );
            let html_body = text(
                "html",
                &t.html,
                &t.html_file,
                true,
                ctx,
                &mut ok,
                &mut texts,
            );
            if t.text.is_none()
                && t.text_file.is_none()
                && t.html.is_none()
                && t.html_file.is_none()
            {
                ctx.error(
                    Code::MissingField,
                    t.id.span,
                    format!(
                        "email template `{}` needs one of `text`, `text_file`, `html`, `html_file`",
                        t.id.value
                    ),
                );
                ok = false;
            }
            let from = text("from", &t.from, &None, false, ctx, &mut ok, &mut texts);
            let reply_to = text(
                "reply_to",
                &t.reply_to,
                &None,
                false,
                ctx,
                &mut ok,
                &mut texts,
            );
            match subject {
                Some(subject) => TemplateBody::Email {
                    subject,
                    text: text_body,
                    html: html_body,
                    from,
                    reply_to,
                },
                None => return None,
            }
        }
        Channel::Push => {
            let title = text("title", &t.title, &None, false, ctx, &mut ok, &mut texts);
            let body = match &t.body {
                None => None,
                Some(b) => match b.value.as_scalar() {
                    Some(s) => text(
                        "body",
                        &Some(Spanned::new(s.text.clone(), b.span)),
                        &None,
                        false,
                        ctx,
                        &mut ok,
                        &mut texts,
                    ),
                    None => {
                        ctx.error(Code::InvalidValue, b.span, "a push `body` is a string");
                        ok = false;
                        None
                    }
                },
            };
            if t.title.is_none() && t.body.is_none() {
                ctx.error(
                    Code::MissingField,
                    t.id.span,
                    format!("push template `{}` needs a `title` or a `body`", t.id.value),
                );
                ok = false;
            }
            let data = match &t.data {
                Some(d) => pairs(&format!("{base}/data"), d, &mut texts, ctx, &mut ok),
                None => Vec::new(),
            };
            TemplateBody::Push { title, body, data }
        }
        Channel::Webhook => {
            let url = match &t.url {
                Some(u) => text(
                    "url",
                    &Some(u.clone()),
                    &None,
                    false,
                    ctx,
                    &mut ok,
                    &mut texts,
                ),
                None => {
                    ctx.error(
                        Code::MissingField,
                        t.id.span,
                        format!("webhook template `{}` needs a `url`", t.id.value),
                    );
                    ok = false;
                    None
                }
            };
            let method = t
                .method
                .as_ref()
                .map(|m| m.value.to_ascii_uppercase())
                .unwrap_or_else(|| "POST".into());
            if let Some(m) = &t.method {
                if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                    ctx.error(
                        Code::InvalidValue,
                        m.span,
                        format!(
                            "unsupported method `{}`: use GET, POST, PUT, PATCH or DELETE",
                            m.value
                        ),
                    );
                    ok = false;
                }
            }
            let headers = match &t.headers {
                Some(h) => pairs(&format!("{base}/headers"), h, &mut texts, ctx, &mut ok),
                None => Vec::new(),
            };
            let body = t
                .body
                .as_ref()
                .map(|b| json_template(&format!("{base}/body"), b, &mut texts, ctx, &mut ok));
            match url {
                Some(url) => TemplateBody::Webhook {
                    method,
                    url,
                    headers,
                    body,
                },
                None => return None,
            }
        }
    };

    // `texts` holds every text with the span of the value it came from.
    let template = MessageTemplate {
        id: t.id.value.clone(),
        channel,
        body,
    };
    let spans: std::collections::HashMap<&str, Span> =
        texts.iter().map(|(t, s)| (t.name.as_str(), *s)).collect();
    let texts: Vec<(Text, Span)> = template
        .texts()
        .into_iter()
        .map(|text| {
            let span = spans.get(text.name.as_str()).copied().unwrap_or(t.id.span);
            (text.clone(), span)
        })
        .collect();
    for (text, span) in &texts {
        // Only `user.*`, `journey.*`, `message.*` and unknown roots can be
        // judged without the journey that sends it.
        types.check_text(text, *span, None, None, ctx);
    }
    if !ok {
        return None;
    }
    Some((template, texts))
}

/// The span of `key:` on the line of a value (for fields reported by key).
fn key_span(ctx: &Ctx<'_>, value: Span, key: &str) -> Span {
    let text = &ctx.file.text;
    let line_start = text[..value.start.min(text.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    match text[line_start..value.start.min(text.len())].find(key) {
        Some(i) => {
            let start = line_start + i;
            Span {
                start,
                end: start + key.len(),
                line: value.line,
                column: text[line_start..start].chars().count() + 1,
            }
        }
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::tag_end;

    #[test]
    fn a_syntax_error_underlines_its_whole_tag() {
        let text = "Hi {{#if user.vip}}yes";
        assert_eq!(&text[3..tag_end(text, 3)], "{{#if user.vip}}");
        // Not closed: the `{{` only, not up to a later tag's `}}`.
        let text = "Hi {{user.name {{x}}";
        assert_eq!(&text[3..tag_end(text, 3)], "{{");
        let text = "Hi {{user\nname}}";
        assert_eq!(&text[3..tag_end(text, 3)], "{{");
        // Not at a tag: one character.
        let text = "héllo";
        assert_eq!(&text[1..tag_end(text, 1)], "é");
        assert_eq!(tag_end(text, text.len()), text.len());
    }
}
