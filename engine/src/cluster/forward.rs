//! Requests about one user, forwarded to the worker that owns the user's
//! partition. Only the owner holds the user's record, so a one-click
//! unsubscribe (which a mailbox provider posts to whichever worker the
//! load balancer picks, once), a user's record or an erasure asked of
//! any worker is carried to the owner over NATS instead of being refused
//! with a 503 that names another worker.
//!
//! Each worker answers on `<prefix>.ask.<worker>` ([`serve`]); a worker
//! that does not own the partition looks up its lease holder in the
//! `leases` bucket and asks it ([`to_owner`]). Ownership can move between
//! the look-up and the answer: the old owner then answers "not here", and
//! the asker looks again, a few times, before answering 503.
//!
//! Knows nothing of what the requests do: the owner answers them with its
//! own [`Intake`](super::intake::Intake), as if they had come to it.

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{lease, Cluster};
use crate::api::{Unavailable, Unsubscribed};

/// A request the owner of a user's partition answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ask {
    /// RFC 8058 one-click unsubscribe with a verified token.
    Unsubscribe { token: String },
    /// `GET /v1/users/{id}`.
    User { id: String },
    /// `DELETE /v1/users/{id}`: answered once committed and published.
    Erase { id: String },
}

/// The owner's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    /// The unsubscribe was applied (`Some`), or there was nothing to apply
    /// (an unknown user): 404.
    Unsubscribed(Option<(String, String)>),
    /// The user's record as `GET /v1/users/{id}` shows it (`None`: 404).
    User(Option<serde_json::Value>),
    /// Whether there was a user to erase.
    Erased(bool),
    /// The asked worker does not own the partition (any more).
    NotHere,
    /// The owner could not answer (its own 503's message).
    Unavailable(String),
}

impl Answer {
    pub fn unsubscribed(u: Option<Unsubscribed>) -> Answer {
        Answer::Unsubscribed(u.map(|u| (u.user, u.category)))
    }
}

/// What a worker does with a forwarded request: its intake's local answer.
pub trait Local: Clone + Send + Sync + 'static {
    fn answer(&self, ask: Ask) -> impl std::future::Future<Output = Answer> + Send;
}

/// An answer of the wrong kind for what was asked (a worker of another
/// version).
pub fn mismatch(answer: &Answer) -> Unavailable {
    Unavailable(format!("the owner answered something else: {answer:?}"))
}

/// The subject a worker answers on.
pub fn subject(cluster: &Cluster, worker: &str) -> String {
    // Worker names are HOSTNAME-pid-random: no dots or wildcards, but a
    // host name may hold dots, which NATS reads as token separators.
    let safe: String = worker
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.ask.{safe}", cluster.prefix())
}

/// Answers forwarded requests on this worker's subject until the
/// connection ends.
pub async fn serve<L: Local>(cluster: Cluster, me: String, local: L) {
    let subject = subject(&cluster, &me);
    let mut sub = match cluster.client().subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "sluice::cluster", error = %e, subject,
                "cannot answer requests forwarded by other workers (requests about this \
                 worker's users sent to them will get 503)");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let local = local.clone();
        let client = cluster.client().clone();
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<Ask>(&msg.payload) {
                Ok(ask) => local.answer(ask).await,
                Err(e) => Answer::Unavailable(format!("an unreadable forwarded request: {e}")),
            };
            match serde_json::to_vec(&answer) {
                Ok(body) => {
                    if let Err(e) = client.publish(reply, body.into()).await {
                        tracing::warn!(target: "sluice::cluster", error = %e,
                            "cannot answer a forwarded request");
                    }
                }
                Err(e) => tracing::error!(target: "sluice::cluster", error = %e,
                    "cannot encode the answer to a forwarded request"),
            }
        });
    }
}

/// Times the owner is looked up again when it moved.
const TRIES: u32 = 4;

/// Asks the owner of `partition` (never `me`: the caller answers those
/// itself). 503 when nobody owns it now or the owner does not answer.
pub async fn to_owner(
    cluster: &Cluster,
    me: &str,
    partition: u32,
    ask: &Ask,
) -> Result<Answer, Unavailable> {
    let body = serde_json::to_vec(ask)
        .map_err(|e| Unavailable(format!("cannot encode a forwarded request: {e}")))?;
    let timeout = cluster.settings().request_timeout;
    let mut why = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        let owner = lease::holder(cluster, partition).await.map_err(|e| {
            Unavailable(format!(
                "cannot find the owner of partition {partition}: {e}"
            ))
        })?;
        let Some(owner) = owner else {
            why = format!("partition {partition} has no owner right now (it is being taken over)");
            continue;
        };
        if owner == me {
            // Taken by this worker since: the caller answers it.
            return Ok(Answer::NotHere);
        }
        let request = cluster
            .client()
            .request(subject(cluster, &owner), body.clone().into());
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(msg)) => match serde_json::from_slice::<Answer>(&msg.payload) {
                Ok(Answer::NotHere) => {
                    why = format!("partition {partition} moved while it was asked");
                }
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    return Err(Unavailable(format!(
                        "worker {owner} answered unreadably: {e}"
                    )))
                }
            },
            Ok(Err(e)) => {
                why = format!(
                    "worker {owner}, the owner of partition {partition}, did not answer: {e}"
                )
            }
            Err(_) => {
                why = format!(
                    "worker {owner}, the owner of partition {partition}, did not answer within \
                     {timeout:?}"
                )
            }
        }
    }
    Err(Unavailable(format!("{why}; try again")))
}
