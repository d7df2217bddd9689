//! Email into a Maildir (RUN.md §3, the default email provider): one
//! RFC 5322 file per message in `<dir>/new/`, formatted by lettre's
//! message builder (MIME, RFC 2047 encoded words for non-ASCII subjects
//! and display names, multipart/alternative when there is both text and
//! HTML).
//!
//! A message is written to `tmp/`, fsynced, then linked into `new/` under
//! the name `{key}.eml` and removed from `tmp/` (the classic Maildir
//! delivery: `link` refuses to replace a file, so two deliveries of the
//! same key, even concurrent ones, leave one file). `new/` is fsynced
//! before the delivery counts (one fsync shared by concurrent
//! deliveries). The file's bytes depend only on the message (its `Date`
//! is the message's `at`), so a repeated delivery would have written the
//! same file anyway.
//!
//! Limit: once a mail client has moved the file to `cur/` (renaming it
//! `{key}.eml:2,S`), a repeated delivery of that key writes a second copy
//! to `new/`, with the same `Message-ID`. Repeats happen only when a
//! delivery was not recorded (a crash right after it).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use journeys::compiled::Channel;

use super::sign::UnsubscribeLinks;
use super::{safety, wrong_content, Attempt, BoxFuture, Delivered, Error, Failure, Provider};
use crate::dispatch::{Content, Message};

/// Where and as whom.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Maildir (`tmp/`, `new/` and `cur/` are created in it).
    pub dir: PathBuf,
    /// The default `From` (`"Shop <hello@shop.example>"`); a template's
    /// own `from` wins.
    pub from: String,
    /// Fsync each file and `new/` before a delivery counts (default). Off
    /// only for benchmarks of everything else.
    pub sync: bool,
}

impl Config {
    pub fn new(dir: impl Into<PathBuf>, from: &str) -> Config {
        Config {
            dir: dir.into(),
            from: from.to_owned(),
            sync: true,
        }
    }
}

/// The Maildir provider.
pub struct Maildir {
    inner: Arc<Inner>,
}

struct Inner {
    tmp: PathBuf,
    new: PathBuf,
    from: Mailbox,
    sync: bool,
    links: Arc<dyn UnsubscribeLinks>,
    seq: AtomicU64,
    /// Links into `new/` made so far, and how many of them an fsync of
    /// `new/` is known to cover.
    linked: AtomicU64,
    dir_synced: Mutex<u64>,
}

const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

impl Maildir {
    /// Creates `tmp/`, `new/` and `cur/` under `config.dir` and checks the
    /// default sender.
    pub fn open(config: Config, links: Arc<dyn UnsubscribeLinks>) -> Result<Maildir, Error> {
        let bad_from = |reason: String| Error::BadFrom {
            from: config.from.clone(),
            reason,
        };
        safety::single_line("from", &config.from).map_err(|f| bad_from(f.reason))?;
        let from = Mailbox::from_str(&config.from).map_err(|e| bad_from(e.to_string()))?;
        for sub in ["tmp", "new", "cur"] {
            let p = config.dir.join(sub);
            fs::create_dir_all(&p).map_err(io_error(&p))?;
        }
        Ok(Maildir {
            inner: Arc::new(Inner {
                tmp: config.dir.join("tmp"),
                new: config.dir.join("new"),
                from,
                sync: config.sync,
                links,
                seq: AtomicU64::new(0),
                linked: AtomicU64::new(0),
                dir_synced: Mutex::new(0),
            }),
        })
    }

    /// The path a message with this key is delivered to.
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.inner.new.join(format!("{key}.eml"))
    }

    /// The message as RFC 5322 bytes, or why it cannot be sent.
    pub fn format(&self, message: &Message) -> Result<Vec<u8>, Failure> {
        self.inner.format(message)
    }
}

fn mailbox(field: &str, value: &str) -> Result<Mailbox, Failure> {
    safety::single_line(field, value)?;
    // The address itself stays out of the reason: reasons are logged.
    Mailbox::from_str(value)
        .map_err(|e| Failure::permanent(format!("the {field} address is not valid: {e}")))
}

impl Inner {
    fn format(&self, message: &Message) -> Result<Vec<u8>, Failure> {
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
        let email =
            built.map_err(|e| Failure::permanent(format!("cannot build the email: {e}")))?;
        Ok(email.formatted())
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<Delivered, Failure> {
        let name = format!("{key}.eml");
        let target = self.new.join(&name);
        if target.exists() {
            return Ok(Delivered {
                detail: name,
                duplicate: true,
                news: Vec::new(),
            });
        }
        let tmp = self.tmp.join(format!(
            "{key}.{}.{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let transient = |what: &str, path: &Path, e: std::io::Error| {
            Failure::transient(format!("{what} {}: {e}", path.display()))
        };
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            if self.sync {
                f.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(transient("cannot write", &tmp, e));
        }
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Ok(Delivered {
                    detail: name,
                    duplicate: true,
                    news: Vec::new(),
                })
            }
            Err(e) => return Err(transient("cannot link into", &target, e)),
        }
        if self.sync {
            // Group commit: one fsync of `new/` covers every link made
            // before it, so concurrent deliveries share it.
            let mine = self.linked.fetch_add(1, Ordering::SeqCst) + 1;
            let mut synced = self
                .dir_synced
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *synced < mine {
                let upto = self.linked.load(Ordering::SeqCst);
                File::open(&self.new)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| transient("cannot sync", &self.new, e))?;
                *synced = upto;
            }
        }
        Ok(Delivered {
            detail: name,
            duplicate: false,
            news: Vec::new(),
        })
    }
}

impl Provider for Maildir {
    fn name(&self) -> &'static str {
        "maildir"
    }

    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        _attempt: Attempt,
    ) -> BoxFuture<'a, Result<Delivered, Failure>> {
        Box::pin(async move {
            let bytes = self.inner.format(message)?;
            let inner = Arc::clone(&self.inner);
            let key = message.key.clone();
            tokio::task::spawn_blocking(move || inner.write(&key, &bytes))
                .await
                .map_err(|e| Failure::transient(format!("the maildir writer stopped: {e}")))?
        })
    }
}
