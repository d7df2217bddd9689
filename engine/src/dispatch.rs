//! Messages leave the engine here: a `send` that the policies let through
//! is rendered (strict Handlebars: a missing variable fails the message,
//! never a blank) and handed to a [`Dispatcher`]. `simulate` and `test` use
//! the [`Recording`] dispatcher; `run` plugs in the channel providers.

use serde::Serialize;
use serde_json::{Map, Value};

use journeys::compiled::{Channel, JsonTemplate, MessageTemplate, TemplateBody};
use journeys::template::{RenderError, Renderer, Text};

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

fn text(r: &Renderer, t: &Text, ctx: &Value) -> Result<String, RenderError> {
    r.render(t, ctx)
}

fn opt(r: &Renderer, t: &Option<Text>, ctx: &Value) -> Result<Option<String>, RenderError> {
    t.as_ref().map(|t| text(r, t, ctx)).transpose()
}

fn json(r: &Renderer, t: &JsonTemplate, ctx: &Value) -> Result<Value, RenderError> {
    Ok(match t {
        JsonTemplate::Value(v) => v.clone(),
        JsonTemplate::Text(t) => Value::String(text(r, t, ctx)?),
        JsonTemplate::Array(items) => Value::Array(items.iter().map(|i| json(r, i, ctx)).collect::<Result<_, _>>()?),
        JsonTemplate::Object(fields) => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.clone(), json(r, v, ctx)?);
            }
            Value::Object(m)
        }
    })
}

/// Renders every text of `template` against `ctx` (`user`, `entry`,
/// `event`, `journey`, `message`).
pub fn render(r: &Renderer, template: &MessageTemplate, ctx: &Value) -> Result<Content, RenderError> {
    let user = ctx.get("user");
    Ok(match &template.body {
        TemplateBody::Email {
            subject,
            text: body,
            html,
            from,
            reply_to,
        } => Content::Email {
            to: user.and_then(|u| u.get("email")).and_then(Value::as_str).map(str::to_owned),
            from: opt(r, from, ctx)?,
            reply_to: opt(r, reply_to, ctx)?,
            subject: text(r, subject, ctx)?,
            text: opt(r, body, ctx)?,
            html: opt(r, html, ctx)?,
        },
        TemplateBody::Push { title, body, data } => {
            let mut d = Map::new();
            for (k, t) in data {
                d.insert(k.clone(), Value::String(text(r, t, ctx)?));
            }
            Content::Push {
                tokens: user
                    .and_then(|u| u.get("push_tokens"))
                    .and_then(Value::as_array)
                    .map(|ts| ts.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
                title: opt(r, title, ctx)?,
                body: opt(r, body, ctx)?,
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
            url: text(r, url, ctx)?,
            headers: headers
                .iter()
                .map(|(k, t)| Ok((k.clone(), text(r, t, ctx)?)))
                .collect::<Result<_, RenderError>>()?,
            body: body.as_ref().map(|b| json(r, b, ctx)).transpose()?,
        },
    })
}
