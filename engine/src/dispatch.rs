//! Messages leave the engine here: a `send` that the policies let through
//! is rendered (strict Handlebars: a missing variable fails the message,
//! never a blank) and handed to a [`Dispatcher`]. `simulate` and `test` use
//! the [`Recording`] dispatcher; `run` plugs in the channel providers.

use serde::Serialize;
use serde_json::{Map, Value};

use handlebars::{Context, Handlebars};

use journeys::compiled::{Channel, Config, JsonTemplate, MessageTemplate, TemplateBody};
use journeys::template::{RenderError, Text};

use crate::clock::Millis;

/// A rendered message, ready for a provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// Why a provider did not take a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DispatchError {
    /// Whether trying again later may succeed.
    pub retriable: bool,
    pub message: String,
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
}

fn texts(t: &MessageTemplate) -> Vec<&Text> {
    fn json_texts<'t>(j: &'t JsonTemplate, out: &mut Vec<&'t Text>) {
        match j {
            JsonTemplate::Value(_) => {}
            JsonTemplate::Text(t) => out.push(t),
            JsonTemplate::Array(items) => items.iter().for_each(|i| json_texts(i, out)),
            JsonTemplate::Object(fields) => fields.iter().for_each(|(_, v)| json_texts(v, out)),
        }
    }
    let mut out = Vec::new();
    match &t.body {
        TemplateBody::Email {
            subject,
            text,
            html,
            from,
            reply_to,
        } => {
            out.push(subject);
            out.extend([text, html, from, reply_to].into_iter().flatten());
        }
        TemplateBody::Push { title, body, data } => {
            out.extend([title, body].into_iter().flatten());
            out.extend(data.iter().map(|(_, t)| t));
        }
        TemplateBody::Webhook {
            url, headers, body, ..
        } => {
            out.push(url);
            out.extend(headers.iter().map(|(_, t)| t));
            if let Some(b) = body {
                json_texts(b, &mut out);
            }
        }
    }
    out
}

impl MessageRenderer {
    pub fn new(config: &Config) -> MessageRenderer {
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        for t in config.templates.values() {
            for text in texts(t) {
                if text.is_literal() {
                    continue;
                }
                let registry = if text.html { &mut html } else { &mut plain };
                if let Err(e) = registry.register_template_string(&text.name, &text.source) {
                    tracing::warn!(template = %t.id, "template text does not compile: {e}");
                }
            }
        }
        MessageRenderer { html, plain }
    }

    fn text(&self, t: &Text, ctx: &Context) -> Result<String, RenderError> {
        if t.is_literal() {
            return Ok(t.source.clone());
        }
        let registry = if t.html { &self.html } else { &self.plain };
        registry.render_with_context(&t.name, ctx).map_err(|e| {
            use handlebars::RenderErrorReason as R;
            match e.reason() {
                R::MissingVariable(Some(v)) => RenderError::MissingVariable(v.clone()),
                other => {
                    let msg = other.to_string();
                    match msg.split('"').nth(1) {
                        Some(v) if msg.contains("not found in strict mode") => {
                            RenderError::MissingVariable(v.to_owned())
                        }
                        _ => RenderError::Failed {
                            name: t.name.clone(),
                            message: msg,
                        },
                    }
                }
            }
        })
    }

    fn opt(&self, t: &Option<Text>, ctx: &Context) -> Result<Option<String>, RenderError> {
        t.as_ref().map(|t| self.text(t, ctx)).transpose()
    }

    fn json(&self, t: &JsonTemplate, ctx: &Context) -> Result<Value, RenderError> {
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
        ctx: &Context,
    ) -> Result<Content, RenderError> {
        let data = ctx.data();
        let to = data
            .get("user")
            .and_then(|u| u.get("email"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let tokens: Vec<String> = data
            .get("user")
            .and_then(|u| u.get("push_tokens"))
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .filter_map(Value::as_str)
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
                url: self.text(url, ctx)?,
                headers: headers
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), self.text(t, ctx)?)))
                    .collect::<Result<_, RenderError>>()?,
                body: body.as_ref().map(|b| self.json(b, ctx)).transpose()?,
            },
        })
    }
}
