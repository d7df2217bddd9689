//! Messages leave the engine here: a `send` that the policies let through
//! is rendered (strict Handlebars: a missing variable fails the message,
//! never a blank) and handed to a [`Dispatcher`]. `simulate` and `test` use
//! the [`Recording`] dispatcher; `run` plugs in the channel providers.

use std::cell::OnceCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use handlebars::{Context, Handlebars};

use journeys::compiled::{Channel, Config, JsonTemplate, MessageTemplate, TemplateBody};
use journeys::template::{RenderError, Text};

use crate::clock::Millis;
use crate::store::attrs::Val;

/// A rendered message, ready for a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The idempotency key: stable across retries and deferrals.
    pub key: String,
    pub at: Millis,
    pub user: String,
    pub journey: String,
    pub version: u32,
    pub step: String,
    pub channel: Channel,
    pub template: String,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Content {
    Email {
        to: Option<String>,
        from: Option<String>,
        reply_to: Option<String>,
        subject: String,
        text: Option<String>,
        html: Option<String>,
    },
    Push {
        tokens: Vec<String>,
        title: Option<String>,
        body: Option<String>,
        data: Map<String, Value>,
    },
    Webhook {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Value>,
    },
}

/// Why a provider did not take a message: data, turned by the engine
/// into a retry (with backoff) or a dead letter.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DispatchError {
    /// Whether trying again later may succeed.
    pub retriable: bool,
    pub message: String,
    /// The provider asked to wait at least this long (`Retry-After`).
    pub retry_after: Option<Millis>,
    /// For log lines, when `message` quotes what the provider answered:
    /// the message without the quote (`deliver::Failure::summary`).
    pub summary: Option<String>,
}

/// What a provider learned about the recipient's addresses while
/// delivering (RUN.md §3): applied to the user's profile by the writer in
/// the commit that records the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "news", rename_all = "snake_case")]
pub enum AddressNews {
    /// The address refused the message for good (an SMTP 5xx for the
    /// recipient, a hard bounce): `email_status: bounced` while the
    /// profile's `email` is still this address.
    EmailBounced { address: String },
    /// The push provider says this token is no longer registered
    /// (FCM `UNREGISTERED`, APNs `BadDeviceToken`/410): it leaves the
    /// user's `push_tokens`.
    PushTokenGone { token: String },
}

/// Hands messages to their channel.
pub trait Dispatcher: Send {
    fn dispatch(&mut self, message: &Message) -> Result<(), DispatchError>;
}

/// Records what would be sent; keeps the messages only when asked to.
#[derive(Debug, Default)]
pub struct Recording {
    pub keep: bool,
    pub count: u64,
    pub messages: Vec<Message>,
}

impl Recording {
    pub fn keeping() -> Self {
        Recording {
            keep: true,
            ..Recording::default()
        }
    }
}

impl Dispatcher for Recording {
    fn dispatch(&mut self, message: &Message) -> Result<(), DispatchError> {
        self.count += 1;
        if self.keep {
            self.messages.push(message.clone());
        }
        Ok(())
    }
}

/// Renders message templates. Holds its own Handlebars registries, built
/// from the texts of the configuration's templates (same names, same
/// strict mode and escaping as [`journeys::template::Renderer`]), so a
/// message's context is converted once and shared by all of its texts.
pub struct MessageRenderer {
    html: Handlebars<'static>,
    plain: Handlebars<'static>,
    /// Texts made only of raw text and `{{a.b}}` paths, by name (plain
    /// texts first, then HTML ones): rendered without Handlebars when
    /// every path leads through objects to a string, number or boolean
    /// (anything else, a missing value included, falls back to Handlebars,
    /// so errors and edge cases stay Handlebars' own).
    simple: [HashMap<String, Vec<Piece>>; 2],
}

enum Piece {
    Raw(String),
    Path(Vec<String>),
}

/// Splits `source` into raw text and plain dotted paths, or `None` when it
/// uses anything else (helpers, blocks, comments, partials, triple braces,
/// escapes, whitespace control, spaces inside braces, `this`, `@` data,
/// literals, single-segment names that could be helpers).
fn simple_pieces(source: &str) -> Option<Vec<Piece>> {
    fn ident(s: &str) -> bool {
        let mut cs = s.chars();
        cs.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !matches!(s, "this" | "true" | "false" | "null" | "undefined" | "else")
    }
    if source.contains('\\') {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let raw = &rest[..open];
        if raw.contains(['{', '}']) {
            return None;
        }
        if !raw.is_empty() {
            out.push(Piece::Raw(raw.to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}")?;
        let expr = &after[..close];
        let segments: Vec<&str> = expr.split('.').collect();
        if segments.len() < 2 || !segments.iter().all(|s| ident(s)) {
            return None;
        }
        out.push(Piece::Path(
            segments.into_iter().map(str::to_owned).collect(),
        ));
        rest = &after[close + 2..];
    }
    if rest.contains(['{', '}']) {
        return None;
    }
    if !rest.is_empty() {
        out.push(Piece::Raw(rest.to_owned()));
    }
    Some(out)
}

/// Renders `pieces` against `data` as Handlebars does, or `None` when a
/// path does not lead through objects to a string, number or boolean.
fn render_simple(pieces: &[Piece], scope: &RenderScope<'_>, html: bool) -> Option<String> {
    // Sized once: the raw text, and a guess for each value.
    let size = pieces
        .iter()
        .map(|p| match p {
            Piece::Raw(s) => s.len(),
            Piece::Path(_) => 16,
        })
        .sum();
    let mut out = String::with_capacity(size);
    for p in pieces {
        match p {
            Piece::Raw(s) => out.push_str(s),
            Piece::Path(path) => {
                let rendered;
                let s: &str = match scope.leaf(path)? {
                    Leaf::Str(s) => s,
                    Leaf::Num(n) => {
                        rendered = n;
                        &rendered
                    }
                    Leaf::Bool(true) => "true",
                    Leaf::Bool(false) => "false",
                };
                if html {
                    escape_html_into(&mut out, s);
                } else {
                    out.push_str(s);
                }
            }
        }
    }
    Some(out)
}

/// Appends `s` escaped exactly as `handlebars::html_escape` escapes it,
/// without a string of its own per value.
fn escape_html_into(out: &mut String, s: &str) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'&' => "&amp;",
            b'\'' => "&#x27;",
            b'`' => "&#x60;",
            b'=' => "&#x3D;",
            _ => continue,
        };
        // The escaped characters are ASCII: `i` is a char boundary.
        out.push_str(&s[plain..i]);
        out.push_str(entity);
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
}

/// What a message's templates see — `user`, `entry`, `event` (when the
/// instance has one), `journey` and `message` — read from the user
/// record's compact values and the message's own fields. Handlebars' JSON
/// context is built from it only when a text needs Handlebars (or a dead
/// letter keeps it), once per message: most texts are raw text and
/// `{{a.b}}` paths, looked up here.
pub struct RenderScope<'a> {
    user: &'a Val,
    entry: &'a Val,
    event: Option<&'a Val>,
    meta: Meta<'a>,
    json: OnceCell<Context>,
}

/// The message's own fields templates see: `journey.{id,version,step}`
/// and `message.{key,unsubscribe_url}`.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub journey: &'a str,
    pub version: u32,
    pub step: &'a str,
    pub key: &'a str,
    pub unsubscribe_url: &'a str,
}

impl Meta<'_> {
    fn journey_json(&self) -> Value {
        serde_json::json!({"id": self.journey, "version": self.version, "step": self.step})
    }

    fn message_json(&self) -> Value {
        serde_json::json!({"key": self.key, "unsubscribe_url": self.unsubscribe_url})
    }

    /// The field at `root.rest` (`None` for the objects themselves and
    /// anything missing: Handlebars decides those).
    fn leaf(&self, root: &str, rest: &[String]) -> Option<Leaf<'_>> {
        let [field] = rest else {
            return None;
        };
        match (root, field.as_str()) {
            ("journey", "id") => Some(Leaf::Str(self.journey)),
            ("journey", "version") => Some(Leaf::Num(self.version.to_string())),
            ("journey", "step") => Some(Leaf::Str(self.step)),
            ("message", "key") => Some(Leaf::Str(self.key)),
            ("message", "unsubscribe_url") => Some(Leaf::Str(self.unsubscribe_url)),
            _ => None,
        }
    }
}

/// A simple path's value, when it renders as text.
enum Leaf<'a> {
    Str(&'a str),
    Num(String),
    Bool(bool),
}

impl<'a> RenderScope<'a> {
    pub fn new(
        user: &'a Val,
        entry: &'a Val,
        event: Option<&'a Val>,
        meta: Meta<'a>,
    ) -> RenderScope<'a> {
        RenderScope {
            user,
            entry,
            event,
            meta,
            json: OnceCell::new(),
        }
    }

    /// The context in JSON, as Handlebars sees it (built on first use).
    pub fn context(&self) -> &Context {
        self.json.get_or_init(|| {
            let mut m = Map::new();
            m.insert("user".into(), self.user.to_json());
            m.insert("entry".into(), self.entry.to_json());
            if let Some(e) = self.event {
                m.insert("event".into(), e.to_json());
            }
            m.insert("journey".into(), self.meta.journey_json());
            m.insert("message".into(), self.meta.message_json());
            Context::from(Value::Object(m))
        })
    }

    /// The string, number or boolean at `path` (objects all the way), or
    /// `None` for anything Handlebars should decide (missing, null, an
    /// array or object).
    fn leaf(&self, path: &[String]) -> Option<Leaf<'_>> {
        let (root, rest) = path.split_first()?;
        let compact = match root.as_str() {
            "user" => self.user,
            "entry" => self.entry,
            "event" => self.event?,
            "journey" | "message" => return self.meta.leaf(root, rest),
            _ => return None,
        };
        let mut v = compact;
        for seg in rest {
            v = v.as_object()?.get(seg)?;
        }
        match v {
            Val::Str(s) => Some(Leaf::Str(s)),
            Val::Num(n) => Some(Leaf::Num(n.to_string())),
            Val::Bool(b) => Some(Leaf::Bool(*b)),
            _ => None,
        }
    }
}

impl MessageRenderer {
    pub fn new(config: &Config) -> MessageRenderer {
        let mut html = journeys::template::registry(true);
        let mut plain = journeys::template::registry(false);
        let mut simple = [HashMap::new(), HashMap::new()];
        for t in config.templates.values() {
            for text in t.texts() {
                if text.is_literal() {
                    continue;
                }
                let registry = if text.html { &mut html } else { &mut plain };
                match registry.register_template_string(&text.name, &text.source) {
                    Err(e) => {
                        tracing::warn!(template = %t.id, "template text does not compile: {e}");
                    }
                    Ok(()) => {
                        if let Some(pieces) = simple_pieces(&text.source) {
                            simple[usize::from(text.html)].insert(text.name.clone(), pieces);
                        }
                    }
                }
            }
        }
        MessageRenderer {
            html,
            plain,
            simple,
        }
    }

    fn text(&self, t: &Text, ctx: &RenderScope<'_>) -> Result<String, RenderError> {
        if t.is_literal() {
            return Ok(t.source.clone());
        }
        if let Some(pieces) = self.simple[usize::from(t.html)].get(&t.name) {
            if let Some(out) = render_simple(pieces, ctx, t.html) {
                return Ok(out);
            }
        }
        let registry = if t.html { &self.html } else { &self.plain };
        journeys::template::render_bounded(registry, &t.name, ctx.context())
    }

    /// A URL or header value: no CR or LF may reach the request.
    fn header(&self, t: &Text, ctx: &RenderScope<'_>, what: &str) -> Result<String, RenderError> {
        let value = self.text(t, ctx)?;
        journeys::template::check_header_value(what, &value)?;
        Ok(value)
    }

    fn opt(&self, t: &Option<Text>, ctx: &RenderScope<'_>) -> Result<Option<String>, RenderError> {
        t.as_ref().map(|t| self.text(t, ctx)).transpose()
    }

    fn json(&self, t: &JsonTemplate, ctx: &RenderScope<'_>) -> Result<Value, RenderError> {
        Ok(match t {
            JsonTemplate::Value(v) => v.clone(),
            JsonTemplate::Text(t) => Value::String(self.text(t, ctx)?),
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.json(i, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => {
                let mut m = Map::new();
                for (k, v) in fields {
                    m.insert(k.clone(), self.json(v, ctx)?);
                }
                Value::Object(m)
            }
        })
    }

    /// Renders every text of `template` against `ctx` (`user`, `entry`,
    /// `event`, `journey`, `message`).
    pub fn render(
        &self,
        template: &MessageTemplate,
        ctx: &RenderScope<'_>,
    ) -> Result<Content, RenderError> {
        let to = ctx
            .user
            .get("email")
            .and_then(Val::as_str)
            .map(str::to_owned);
        let tokens: Vec<String> = ctx
            .user
            .get("push_tokens")
            .and_then(Val::as_array)
            .map(|ts| {
                ts.iter()
                    .filter_map(Val::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(match &template.body {
            TemplateBody::Email {
                subject,
                text,
                html,
                from,
                reply_to,
            } => Content::Email {
                to,
                from: self.opt(from, ctx)?,
                reply_to: self.opt(reply_to, ctx)?,
                subject: self.text(subject, ctx)?,
                text: self.opt(text, ctx)?,
                html: self.opt(html, ctx)?,
            },
            TemplateBody::Push { title, body, data } => {
                let mut d = Map::new();
                for (k, t) in data {
                    d.insert(k.clone(), Value::String(self.text(t, ctx)?));
                }
                Content::Push {
                    tokens,
                    title: self.opt(title, ctx)?,
                    body: self.opt(body, ctx)?,
                    data: d,
                }
            }
            TemplateBody::Webhook {
                method,
                url,
                headers,
                body,
            } => Content::Webhook {
                method: method.clone(),
                url: self.header(url, ctx, "url")?,
                headers: headers
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), self.header(t, ctx, k)?)))
                    .collect::<Result<_, RenderError>>()?,
                body: body.as_ref().map(|b| self.json(b, ctx)).transpose()?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_escaped_as_handlebars_escapes_them() {
        for s in ["", "plain", "Zoë <&\"'`=>", "==", "<<a>>", "é&é", "tail&"] {
            let mut out = String::from("x");
            escape_html_into(&mut out, s);
            assert_eq!(out, format!("x{}", handlebars::html_escape(s)), "{s}");
        }
    }

    /// The Handlebars-free path renders exactly what Handlebars renders,
    /// and declines whatever it does not handle.
    #[test]
    fn simple_texts_render_as_handlebars_does() {
        let data = json!({
            "user": {"first_name": "Zoë <&\"'`=>", "n": 12.5, "i": -3, "b": true, "z": null,
                     "a": [1, 2], "o": {"x": 1}},
            "entry": {"cart_id": "c/1?x=1&y=2"},
            "journey": {"id": "welcome", "version": 3, "step": "hello"},
            "message": {"key": "k<1>", "unsubscribe_url": "https://u/k?a=1&b=2"},
        });
        let user = Val::from_json(&data["user"]);
        let entry = Val::from_json(&data["entry"]);
        let meta = Meta {
            journey: "welcome",
            version: 3,
            step: "hello",
            key: "k<1>",
            unsubscribe_url: "https://u/k?a=1&b=2",
        };
        let scope = RenderScope::new(&user, &entry, None, meta);
        // The JSON context is exactly the data Handlebars would be given.
        assert_eq!(scope.context().data(), &data);
        let sources = [
            "Hi {{user.first_name}}, {{user.n}} {{user.i}} {{user.b}}!\n{{entry.cart_id}}",
            "{{user.first_name}}",
            "<a href=\"https://x/{{entry.cart_id}}\">{{user.first_name}}</a>",
            "{{journey.id}} v{{journey.version}} {{journey.step}}: {{message.key}} {{message.unsubscribe_url}}",
        ];
        for html in [false, true] {
            let mut hb = Handlebars::new();
            hb.set_strict_mode(true);
            if !html {
                hb.register_escape_fn(handlebars::no_escape);
            }
            for (i, src) in sources.iter().enumerate() {
                hb.register_template_string(&i.to_string(), src).unwrap();
                let pieces = simple_pieces(src).expect("simple");
                let fast = render_simple(&pieces, &scope, html).expect("rendered");
                assert_eq!(fast, hb.render(&i.to_string(), &data).unwrap());
            }
        }
        for declined in [
            "{{user.z}}",
            "{{user.a}}",
            "{{user.o}}",
            "{{user.missing}}",
            "{{nope.x}}",
            "{{event.x}}",
            "{{journey.missing}}",
            "{{journey.id.x}}",
            "{{message.nope}}",
        ] {
            let pieces = simple_pieces(declined).expect("simple");
            assert!(render_simple(&pieces, &scope, false).is_none());
        }
        for complex in [
            "{{#if user.b}}x{{/if}}",
            "{{ user.first_name }}",
            "{{{user.first_name}}}",
            "{{~user.first_name}}",
            "{{user}}",
            "{{this.user}}",
            "{{! note }}",
            "{{> partial}}",
            "\\{{user.first_name}}",
            "{{lookup user 'x'}}",
            "a {{user.first_name",
            "{{@root.user}}",
        ] {
            assert!(simple_pieces(complex).is_none(), "{complex}");
        }
    }
}
