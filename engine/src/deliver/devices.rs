//! One push message to a user's devices: one request per token (FCM and
//! APNs address a single device per request), the tokens' answers folded
//! into the message's one outcome, and the tokens already settled
//! remembered so that a retry goes only to the others.
//!
//! Folding (docs/delivery.md, "Push: one message, several tokens"):
//! - a token the provider calls unregistered is *gone*: it is reported as
//!   [`AddressNews::PushTokenGone`] (the writer removes it from the user's
//!   `push_tokens`) on whatever the outcome is;
//! - every token settled (sent or gone) and at least one sent: delivered;
//! - every token gone: a permanent failure;
//! - some token failed transiently: a transient failure (retried); the
//!   tokens that took the message or are gone are remembered under the
//!   message's key, and the retry sends only to the rest;
//! - the others failed for good: delivered if some token took it (the
//!   reason is logged), else a permanent failure naming each token's
//!   reason.
//!
//! The memory is per process and bounded ([`MAX_PENDING`] keys, oldest
//! forgotten first); after a restart, or once a key is forgotten, a retry
//! goes to every token again, with the same key (APNs `apns-collapse-id`,
//! FCM `data.sluice_key`), so devices can drop the repeat.
//!
//! Knows nothing of HTTP: the provider hands it a function sending to one
//! token.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::{Delivered, Failure, FailureKind};
use crate::dispatch::AddressNews;

/// Keys with a retry pending remembered at once.
pub const MAX_PENDING: usize = 1 << 16;
/// Requests in flight at once for one message's tokens.
pub const PER_MESSAGE: usize = 8;

/// What one token's request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOutcome {
    /// The provider took it.
    Sent,
    /// The provider says the token is unregistered (the reason says how).
    Gone(String),
    /// Not sent: transient or permanent.
    Failed(Failure),
}

/// Tokens settled under keys whose message is still being retried.
#[derive(Default)]
pub struct Progress {
    inner: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    settled: HashMap<String, Settled>,
    order: VecDeque<String>,
}

#[derive(Default, Clone)]
struct Settled {
    sent: HashSet<String>,
    gone: HashSet<String>,
    /// Refused for good (not gone): not tried again either.
    refused: HashSet<String>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &str) -> Settled {
        self.lock().settled.get(key).cloned().unwrap_or_default()
    }

    fn keep(&self, key: &str, settled: Settled) {
        let mut l = self.lock();
        if l.settled.insert(key.to_owned(), settled).is_none() {
            l.order.push_back(key.to_owned());
            while l.order.len() > MAX_PENDING {
                if let Some(old) = l.order.pop_front() {
                    l.settled.remove(&old);
                }
            }
        }
    }

    fn forget(&self, key: &str) {
        let mut l = self.lock();
        if l.settled.remove(key).is_some() {
            l.order.retain(|k| k != key);
        }
    }

    /// Keys with a retry pending.
    pub fn pending(&self) -> usize {
        self.lock().settled.len()
    }
}

/// A token as it may appear in a reason or a log: its first 8 characters.
pub fn short(token: &str) -> String {
    let head: String = token.chars().take(8).collect();
    if head.len() < token.len() {
        format!("{head}…")
    } else {
        head
    }
}

/// Sends the message under `key` to each of `tokens` not yet settled
/// (duplicates sent once) with `send`, and folds the answers. `provider`
/// names the service in details and reasons.
pub async fn fan_out<'a, F, Fut>(
    provider: &str,
    key: &str,
    tokens: &'a [String],
    progress: &Progress,
    send: F,
) -> Result<Delivered, Failure>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = TokenOutcome>,
{
    if tokens.is_empty() {
        return Err(Failure::permanent("the user has no push tokens"));
    }
    let mut settled = progress.get(key);
    let mut seen = HashSet::new();
    let todo: Vec<&'a str> = tokens
        .iter()
        .map(String::as_str)
        .filter(|t| seen.insert(*t))
        .filter(|t| {
            !settled.sent.contains(*t)
                && !settled.gone.contains(*t)
                && !settled.refused.contains(*t)
        })
        .collect();
    let total = seen.len();
    if todo.is_empty() {
        progress.forget(key);
        return Ok(Delivered {
            detail: format!("{provider}: already sent to every token"),
            duplicate: true,
            news: Vec::new(),
        });
    }
    // The futures are made here, outside the stream, so that no closure
    // is part of the stream's type (a closure over `&str` there makes the
    // whole future fail to be `Send` for every lifetime).
    let pending: Vec<_> = todo.into_iter().map(|t| tagged(t, send(t))).collect();
    let outcomes: Vec<(&str, TokenOutcome)> = stream::iter(pending)
        .buffer_unordered(PER_MESSAGE)
        .collect()
        .await;
    let mut news = Vec::new();
    let mut transient: Vec<(&str, Failure)> = Vec::new();
    let mut permanent: Vec<(&str, Failure)> = Vec::new();
    for (token, outcome) in outcomes {
        match outcome {
            TokenOutcome::Sent => {
                settled.sent.insert(token.to_owned());
            }
            TokenOutcome::Gone(reason) => {
                tracing::info!(token = %short(token), %reason, "push token gone");
                settled.gone.insert(token.to_owned());
                news.push(AddressNews::PushTokenGone {
                    token: token.to_owned(),
                });
            }
            TokenOutcome::Failed(f) => match f.kind {
                FailureKind::Transient => transient.push((token, f)),
                FailureKind::Permanent => permanent.push((token, f)),
            },
        }
    }
    // Reasons in the order of the user's tokens, whatever order the
    // answers came in.
    let rank = |t: &str| tokens.iter().position(|x| x == t).unwrap_or(usize::MAX);
    transient.sort_by_key(|(t, _)| rank(t));
    permanent.sort_by_key(|(t, _)| rank(t));
    for (t, _) in &permanent {
        settled.refused.insert((*t).to_owned());
    }
    let sent = settled.sent.len();
    let tally = {
        let mut s = format!(
            "{provider}: sent to {sent} of {total} token{}",
            plural(total)
        );
        if !settled.gone.is_empty() {
            s.push_str(&format!(", {} gone", settled.gone.len()));
        }
        if !settled.refused.is_empty() {
            s.push_str(&format!(", {} refused", settled.refused.len()));
        }
        s
    };
    // `said` for the dead letter (each token's reason); `logged` for log
    // lines (each token's reason without the provider's free text).
    let reasons = |failures: &[(&str, Failure)], log: bool| {
        failures
            .iter()
            .map(|(t, f)| {
                let r = if log { f.for_log() } else { &f.reason };
                format!("{}: {r}", short(t))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut said = tally.clone();
    let mut logged = tally.clone();
    if !permanent.is_empty() {
        said.push_str(&format!("; {}", reasons(&permanent, false)));
        logged.push_str(&format!("; {}", reasons(&permanent, true)));
    }
    if !transient.is_empty() {
        let retry_after = transient.iter().filter_map(|(_, f)| f.retry_after).max();
        said.push_str(&format!("; will retry {}", reasons(&transient, false)));
        logged.push_str(&format!("; will retry {}", reasons(&transient, true)));
        progress.keep(key, settled);
        let mut f = Failure::transient(said)
            .with_retry_after(retry_after.map(cap_wait))
            .quoting(logged);
        f.news = news;
        return Err(f);
    }
    progress.forget(key);
    if sent > 0 {
        if !settled.refused.is_empty() {
            tracing::warn!(key, "{logged}");
        }
        return Ok(Delivered {
            detail: tally,
            duplicate: false,
            news,
        });
    }
    let mut f = if settled.refused.is_empty() {
        Failure::permanent(format!("{provider}: every push token is gone"))
    } else {
        Failure::permanent(said).quoting(logged)
    };
    f.news = news;
    Err(f)
}

async fn tagged<T, F: Future<Output = TokenOutcome>>(token: T, f: F) -> (T, TokenOutcome) {
    (token, f.await)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn cap_wait(d: Duration) -> Duration {
    d.min(Duration::from_secs(u64::from(u32::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ts: &[&str]) -> Vec<String> {
        ts.iter().map(|t| (*t).to_owned()).collect()
    }

    /// Runs `fan_out` with answers by token; returns the outcome and the
    /// tokens asked.
    fn run(
        progress: &Progress,
        ts: &[String],
        answer: impl Fn(&str) -> TokenOutcome,
    ) -> (Result<Delivered, Failure>, Vec<String>) {
        let asked = Mutex::new(Vec::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let out = rt.block_on(fan_out("test", "k1", ts, progress, |t| {
            asked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(t.to_owned());
            let o = answer(t);
            async move { o }
        }));
        let mut asked = asked.into_inner().unwrap_or_else(PoisonError::into_inner);
        asked.sort();
        (out, asked)
    }

    fn gone(t: &str) -> AddressNews {
        AddressNews::PushTokenGone {
            token: t.to_owned(),
        }
    }

    #[test]
    fn a_gone_token_is_news_while_the_others_take_the_message() {
        let p = Progress::default();
        let ts = tokens(&["aaaa", "bbbb", "aaaa"]);
        let (out, asked) = run(&p, &ts, |t| {
            if t == "bbbb" {
                TokenOutcome::Gone("Unregistered".into())
            } else {
                TokenOutcome::Sent
            }
        });
        assert_eq!(asked, ["aaaa", "bbbb"], "a repeated token is sent once");
        let d = out.expect("delivered");
        assert_eq!(d.detail, "test: sent to 1 of 2 tokens, 1 gone");
        assert_eq!(d.news, [gone("bbbb")]);
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn every_token_gone_is_a_permanent_failure_with_news() {
        let p = Progress::default();
        let (out, _) = run(&p, &tokens(&["a", "b"]), |_| {
            TokenOutcome::Gone("BadDeviceToken".into())
        });
        let f = out.expect_err("fails");
        assert!(f.is_permanent());
        assert_eq!(f.reason, "test: every push token is gone");
        assert_eq!(f.news.len(), 2);
    }

    #[test]
    fn no_tokens_is_permanent() {
        let p = Progress::default();
        let (out, asked) = run(&p, &[], |_| TokenOutcome::Sent);
        assert!(out.expect_err("fails").is_permanent());
        assert!(asked.is_empty());
    }

    #[test]
    fn a_retry_goes_only_to_the_tokens_that_failed_transiently() {
        let p = Progress::default();
        let ts = tokens(&["sent-token", "later-token", "gone-token"]);
        let (out, _) = run(&p, &ts, |t| match t {
            "sent-token" => TokenOutcome::Sent,
            "gone-token" => TokenOutcome::Gone("Unregistered".into()),
            _ => TokenOutcome::Failed(
                Failure::transient("HTTP 429").with_retry_after(Some(Duration::from_secs(7))),
            ),
        });
        let f = out.expect_err("retry");
        assert!(!f.is_permanent());
        assert_eq!(f.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(f.news, [gone("gone-token")]);
        assert_eq!(
            f.reason,
            "test: sent to 1 of 3 tokens, 1 gone; will retry later-to…: HTTP 429"
        );
        assert_eq!(p.pending(), 1);
        let (out, asked) = run(&p, &ts, |_| TokenOutcome::Sent);
        assert_eq!(asked, ["later-token"], "only the token still owed");
        let d = out.expect("delivered");
        assert_eq!(d.detail, "test: sent to 2 of 3 tokens, 1 gone");
        assert!(d.news.is_empty(), "the gone token was reported once");
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn permanent_refusals_fail_only_when_no_token_took_it() {
        let p = Progress::default();
        let refuse = |t: &str| {
            if t == "ok" {
                TokenOutcome::Sent
            } else {
                TokenOutcome::Failed(Failure::permanent("INVALID_ARGUMENT"))
            }
        };
        let d = run(&p, &tokens(&["ok", "bad"]), refuse)
            .0
            .expect("delivered");
        assert_eq!(d.detail, "test: sent to 1 of 2 tokens, 1 refused");
        let f = run(&p, &tokens(&["bad"]), refuse).0.expect_err("fails");
        assert!(f.is_permanent());
        assert_eq!(
            f.reason,
            "test: sent to 0 of 1 token, 1 refused; bad: INVALID_ARGUMENT"
        );
    }

    #[test]
    fn the_memory_is_bounded() {
        let p = Progress::default();
        for i in 0..(MAX_PENDING + 10) {
            p.keep(&format!("k{i}"), Settled::default());
        }
        assert_eq!(p.pending(), MAX_PENDING);
        assert!(p
            .lock()
            .settled
            .contains_key(&format!("k{}", MAX_PENDING + 9)));
        assert!(!p.lock().settled.contains_key("k0"));
    }
}
