//! The email itself (RUN.md §3): one function turns a rendered
//! [`Message`] into a lettre [`lettre::Message`], the same for every email
//! provider (the maildir writes its bytes, SMTP sends them).
//!
//! Owns: the headers (`Message-ID: <{key}@{domain of from}>`, `From`,
//! `To`, `Reply-To`, `Subject`, `Date` = the message's decision time,
//! `List-Unsubscribe` and `List-Unsubscribe-Post` for every category but
//! `transactional`), the MIME structure (multipart/alternative when both
//! text and HTML exist; lettre's builder picks 7-bit, quoted-printable or
//! base64 per part and writes RFC 2047 encoded words for non-ASCII
//! subjects and display names, so the bytes stay 7-bit) and the DKIM
//! signature when the channel configures one ([`super::dkim`]).
//!
//! Knows nothing of: where the bytes go (a file, a socket), retries, the
//! store. Every refusal is a permanent [`Failure`] whose reason names the
//! field and never quotes an address (reasons are logged).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use super::dkim::Dkim;
use super::sign::UnsubscribeLinks;
use super::{safety, wrong_content, Error, Failure};
use crate::dispatch::{Content, Message};

const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");

/// Builds the emails of one channel: its default sender, its unsubscribe
/// links and its DKIM key.
#[derive(Clone)]
pub struct Composer {
    from: Mailbox,
    links: Arc<dyn UnsubscribeLinks>,
    dkim: Option<Dkim>,
}

impl std::fmt::Debug for Composer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composer")
            .field("from", &self.from.to_string())
            .field("dkim", &self.dkim)
            .finish()
    }
}

/// An address from a rendered field, or a permanent failure naming the
/// field.
fn mailbox(field: &str, value: &str) -> Result<Mailbox, Failure> {
    safety::single_line(field, value)?;
    // The address itself stays out of the reason: reasons are logged.
    Mailbox::from_str(value)
        .map_err(|e| Failure::permanent(format!("the {field} address is not valid: {e}")))
}

impl Composer {
    /// `from` is the channel's default sender (`"Shop <hello@shop.example>"`),
    /// checked here so that a bad one stops the start, not every send.
    pub fn new(
        from: &str,
        links: Arc<dyn UnsubscribeLinks>,
        dkim: Option<Dkim>,
    ) -> Result<Composer, Error> {
        let bad_from = |reason: String| Error::BadFrom {
            from: from.to_owned(),
            reason,
        };
        safety::single_line("from", from).map_err(|f| bad_from(f.reason))?;
        let from = Mailbox::from_str(from).map_err(|e| bad_from(e.to_string()))?;
        Ok(Composer { from, links, dkim })
    }

    /// The channel's default sender.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// The email for `message`, signed when DKIM is configured; its
    /// envelope (`email.envelope()`) is the `From` and `To` addresses.
    pub fn compose(&self, message: &Message) -> Result<lettre::Message, Failure> {
        let Content::Email {
            to,
            from,
            reply_to,
            subject,
            text,
            html,
        } = &message.content
        else {
            return Err(wrong_content(message, "email"));
        };
        safety::key(&message.key)?;
        let to = to
            .as_deref()
            .ok_or_else(|| Failure::permanent("the user has no email address"))?;
        let to = mailbox("to", to)?;
        let from = match from {
            Some(f) => mailbox("from", f)?,
            None => self.from.clone(),
        };
        safety::single_line("subject", subject)?;
        let message_id = format!("<{}@{}>", message.key, from.email.domain());
        let date = UNIX_EPOCH + Duration::from_millis(u64::try_from(message.at).unwrap_or(0));
        let mut builder = lettre::Message::builder()
            .message_id(Some(message_id))
            .date(date)
            .from(from)
            .to(to)
            .subject(subject.as_str());
        if let Some(r) = reply_to {
            builder = builder.reply_to(mailbox("reply_to", r)?);
        }
        if let Some(url) = self.links.url(message) {
            safety::url("the unsubscribe URL", &url)?;
            builder = builder
                .raw_header(HeaderValue::new(LIST_UNSUBSCRIBE, format!("<{url}>")))
                .raw_header(HeaderValue::new(
                    LIST_UNSUBSCRIBE_POST,
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let built = match (text, html) {
            (Some(t), Some(h)) => {
                builder.multipart(MultiPart::alternative_plain_html(t.clone(), h.clone()))
            }
            (None, Some(h)) => builder.singlepart(SinglePart::html(h.clone())),
            (Some(t), None) => builder.singlepart(SinglePart::plain(t.clone())),
            (None, None) => builder.singlepart(SinglePart::plain(String::new())),
        };
        let mut email =
            built.map_err(|e| Failure::permanent(format!("cannot build the email: {e}")))?;
        if let Some(dkim) = &self.dkim {
            dkim.sign(&mut email);
        }
        Ok(email)
    }
}
