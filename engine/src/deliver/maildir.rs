//! Email into a Maildir (RUN.md §3, the default email provider): one
//! RFC 5322 file per message in `<dir>/new/`, built by [`super::email`]
//! (the same message SMTP sends, DKIM-signed when configured).
//!
//! A message is written to `tmp/`, fsynced, then linked into `new/` under
//! the name `{key}.eml` and removed from `tmp/` (the classic Maildir
//! delivery: `link` refuses to replace a file, so two deliveries of the
//! same key, even concurrent ones, leave one file). `new/` is fsynced
//! before the delivery counts (one fsync shared by concurrent
//! deliveries). The file's bytes depend only on the message (its `Date`
//! is the message's `at`; only a DKIM signature's `t=` differs), so a
//! repeated delivery would have written the same file anyway.
//!
//! Limit: once a mail client has moved the file to `cur/` (renaming it
//! `{key}.eml:2,S`), a repeated delivery of that key writes a second copy
//! to `new/`, with the same `Message-ID`. Repeats happen only when a
//! delivery was not recorded (a crash right after it).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use journeys::compiled::Channel;

use super::dkim::Dkim;
use super::email::Composer;
use super::sign::UnsubscribeLinks;
use super::{Attempt, BoxFuture, Delivered, Error, Failure, Provider};
use crate::dispatch::Message;

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
    /// Sign every message (the channel's `dkim`).
    pub dkim: Option<Dkim>,
}

impl Config {
    pub fn new(dir: impl Into<PathBuf>, from: &str) -> Config {
        Config {
            dir: dir.into(),
            from: from.to_owned(),
            sync: true,
            dkim: None,
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
    composer: Composer,
    sync: bool,
    seq: AtomicU64,
    /// Links into `new/` made so far, and how many of them an fsync of
    /// `new/` is known to cover.
    linked: AtomicU64,
    dir_synced: Mutex<u64>,
}

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
        let composer = Composer::new(&config.from, links, config.dkim.clone())?;
        for sub in ["tmp", "new", "cur"] {
            let p = config.dir.join(sub);
            fs::create_dir_all(&p).map_err(io_error(&p))?;
        }
        Ok(Maildir {
            inner: Arc::new(Inner {
                tmp: config.dir.join("tmp"),
                new: config.dir.join("new"),
                composer,
                sync: config.sync,
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

impl Inner {
    fn format(&self, message: &Message) -> Result<Vec<u8>, Failure> {
        Ok(self.composer.compose(message)?.formatted())
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
