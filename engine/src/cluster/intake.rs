//! What the HTTP API talks to on a cluster worker ([`crate::api::Handle`]):
//! ingest on any worker appends the events to the event log
//! ([`super::log`], partition by user) and answers only once JetStream has
//! acknowledged every one of them; every other request goes to this
//! worker's partitions ([`super::node`]) through the command channel, and
//! is answered for the users of the partitions this worker owns.
//!
//! An event without an `id` is given one before it is appended: the
//! SHA-256 of its JSON (`h:` and 32 hex digits). It is the event's
//! `Nats-Msg-Id`, and what the partition's owner skips it by when it reads
//! the event again after a takeover.
//!
//! Knows nothing of the machine's rules or the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use journeys::event::Event;

use super::forward::{self, Local as _};
use super::{lease, log, node, Cluster};
use crate::api::{self, Appended, Unavailable, Unsubscribed};
use crate::deliver::sign::UnsubscribeSigner;
use crate::hash::partition_of;
use crate::metrics::Metrics;
use crate::service::{Command, ServiceHandle};

/// A cluster worker's [`api::Handle`].
#[derive(Clone)]
pub struct Intake {
    cluster: Cluster,
    /// This worker's name (its leases' holder).
    me: String,
    /// Checks one-click unsubscribe tokens, to find the user's partition.
    signer: Option<Arc<UnsubscribeSigner>>,
    partitions: u32,
    /// The node's command channel.
    node: ServiceHandle,
    /// Connected, joined, and every owned partition restored.
    ready: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    /// The cluster's streams found missing in NATS by the last check
    /// ([`watch_streams`]).
    missing: Arc<std::sync::Mutex<Vec<String>>>,
    metrics: Metrics,
}

impl Intake {
    pub fn new(
        cluster: Cluster,
        me: String,
        signer: Option<Arc<UnsubscribeSigner>>,
        partitions: u32,
        node: ServiceHandle,
        ready: Arc<AtomicBool>,
        metrics: Metrics,
    ) -> Self {
        Intake {
            cluster,
            me,
            signer,
            partitions,
            node,
            ready,
            draining: Arc::new(AtomicBool::new(false)),
            missing: Arc::default(),
            metrics,
        }
    }

    /// Why the worker cannot store or process events although NATS is
    /// reachable: streams of the cluster are gone.
    fn streams_gone(&self) -> Option<String> {
        let missing = self.missing.lock().ok()?;
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "the cluster's NATS stream{} {} {} gone (deleted in NATS?): this worker can neither \
             store nor process events; restart the workers to create {} again (what {} held is \
             lost)",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            if missing.len() == 1 { "it" } else { "them" },
            if missing.len() == 1 { "it" } else { "they" },
        ))
    }

    /// `ask` answered by the owner of partition `p`: this worker when it
    /// holds the lease, else the holder over NATS ([`forward::to_owner`]).
    /// "Not here" and "unavailable" answers become 503s.
    async fn on_owner(&self, p: u32, ask: forward::Ask) -> Result<forward::Answer, Unavailable> {
        let mine = lease::holder(&self.cluster, p)
            .await
            .map_err(|e| Unavailable(format!("cannot find the owner of partition {p}: {e}")))?
            .is_some_and(|owner| owner == self.me);
        let answer = if mine {
            self.answer(ask.clone()).await
        } else {
            forward::to_owner(&self.cluster, &self.me, p, &ask).await?
        };
        // The partition moved meanwhile: to this worker, or from it.
        let answer = match answer {
            forward::Answer::NotHere if mine => {
                forward::to_owner(&self.cluster, &self.me, p, &ask).await?
            }
            forward::Answer::NotHere => self.answer(ask).await,
            a => a,
        };
        match answer {
            forward::Answer::NotHere => Err(Unavailable(format!(
                "partition {p} moved while it was asked; try again"
            ))),
            forward::Answer::Unavailable(why) => Err(Unavailable(why)),
            a => Ok(a),
        }
    }

    /// Checks every `every` that the cluster's streams are still in NATS,
    /// keeping what is missing for `/readyz` and ingest, and saying so in
    /// the log when it changes. Runs until the process ends.
    pub async fn watch_streams(self, every: Duration) {
        let mut said: Vec<String> = Vec::new();
        loop {
            tokio::time::sleep(every).await;
            if !self.cluster.is_connected() {
                continue;
            }
            let missing = match self.cluster.missing_streams().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(target: "sluice::cluster", error = %e,
                        "cannot check the cluster's streams; trying again");
                    continue;
                }
            };
            if missing != said {
                if let Ok(mut m) = self.missing.lock() {
                    *m = missing.clone();
                }
                match self.streams_gone() {
                    Some(why) => tracing::error!(target: "sluice::cluster", "{why}"),
                    None => tracing::warn!(target: "sluice::cluster",
                        "the cluster's NATS streams are all there again"),
                }
                said = missing;
            }
        }
    }

    /// From now on ingest answers 503 (shutting down).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(crate::service::Reply<T>) -> Command,
    ) -> Result<T, Unavailable> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if !self.node.send(make(reply)) {
            return Err(Unavailable("the worker has stopped".into()));
        }
        rx.await
            .map_err(|_| Unavailable("the worker stopped before answering".into()))?
    }
}

impl forward::Local for Intake {
    /// A request about a user, answered by this worker's node as if it
    /// had come to it over HTTP.
    async fn answer(&self, ask: forward::Ask) -> forward::Answer {
        let answer = match ask {
            forward::Ask::Unsubscribe { token } => self
                .ask(|reply| Command::Unsubscribe { token, reply })
                .await
                .map(forward::Answer::unsubscribed),
            forward::Ask::User { id } => self
                .ask(|reply| Command::User { id, reply })
                .await
                .map(forward::Answer::User),
            forward::Ask::Erase { id } => self
                .ask(|reply| Command::Erase { id, reply })
                .await
                .map(forward::Answer::Erased),
        };
        match answer {
            Ok(a) => a,
            Err(Unavailable(why)) if why.contains(node::NOT_HERE) => forward::Answer::NotHere,
            Err(Unavailable(why)) => forward::Answer::Unavailable(why),
        }
    }
}

/// The id an event is appended under.
pub fn event_id(ev: &mut Event) -> Result<String, serde_json::Error> {
    if let Some(id) = &ev.id {
        return Ok(id.clone());
    }
    let json = serde_json::to_vec(&*ev)?;
    let id = format!("h:{}", &hex::encode(Sha256::digest(&json))[..32]);
    ev.id = Some(id.clone());
    Ok(id)
}

impl api::Handle for Intake {
    async fn ingest(
        &self,
        source: &'static str,
        events: Vec<Event>,
    ) -> Result<Appended, Unavailable> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Unavailable("draining: the worker is shutting down".into()));
        }
        if !self.cluster.is_connected() {
            return Err(Unavailable(
                "NATS is not reachable: nothing was stored; send the events again".into(),
            ));
        }
        if let Some(why) = self.streams_gone() {
            return Err(Unavailable(format!("nothing was stored: {why}")));
        }
        let mut prepared = Vec::with_capacity(events.len());
        for mut ev in events {
            let id = event_id(&mut ev)
                .map_err(|e| Unavailable(format!("cannot encode an event: {e}")))?;
            let payload = serde_json::to_vec(&ev)
                .map_err(|e| Unavailable(format!("cannot encode an event: {e}")))?;
            prepared.push((ev.user, id, bytes::Bytes::from(payload)));
        }
        let appends = log::Append::all(&prepared);
        let appended = log::append(&self.cluster, self.partitions, &appends)
            .await
            .map_err(|e| {
                tracing::warn!(target: "sluice::cluster", "ingest refused: {e}");
                Unavailable(format!("the event log did not store the events: {e}"))
            })?;
        let duplicates = appended.iter().filter(|a| a.duplicate).count();
        let a = Appended {
            accepted: appended.len() - duplicates,
            duplicates,
        };
        self.metrics
            .ingested(source, a.accepted as u64, a.duplicates as u64);
        Ok(a)
    }

    /// Answered by the owner of the user's partition, asked over NATS
    /// when it is another worker.
    async fn user(&self, id: String) -> Result<Option<Value>, Unavailable> {
        let p = partition_of(&id, self.partitions);
        match self.on_owner(p, forward::Ask::User { id }).await? {
            forward::Answer::User(v) => Ok(v),
            other => Err(forward::mismatch(&other)),
        }
    }

    /// Carried out by the owner of the user's partition, asked over NATS
    /// when it is another worker; answered once committed and published.
    async fn erase(&self, id: String) -> Result<bool, Unavailable> {
        let p = partition_of(&id, self.partitions);
        match self.on_owner(p, forward::Ask::Erase { id }).await? {
            forward::Answer::Erased(b) => Ok(b),
            other => Err(forward::mismatch(&other)),
        }
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Value>, Unavailable> {
        self.ask(|reply| Command::DeadLetters { limit, reply })
            .await
    }

    async fn replay(&self, which: api::Replay) -> Result<usize, Unavailable> {
        self.ask(|reply| Command::Replay { which, reply }).await
    }

    /// Applied by the owner of the user's partition: this worker when it
    /// owns it, else the owner, asked over NATS ([`forward`]).
    async fn unsubscribe(&self, token: String) -> Result<Option<Unsubscribed>, Unavailable> {
        let Some(u) = self.signer.as_ref().and_then(|s| s.verify(&token)) else {
            return Ok(None);
        };
        if u.category == "transactional" {
            return Ok(None);
        }
        let p = partition_of(&u.user, self.partitions);
        match self
            .on_owner(p, forward::Ask::Unsubscribe { token })
            .await?
        {
            forward::Answer::Unsubscribed(u) => {
                Ok(u.map(|(user, category)| Unsubscribed { user, category }))
            }
            other => Err(forward::mismatch(&other)),
        }
    }

    fn ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
            && self.cluster.is_connected()
            && self.ready.load(Ordering::SeqCst)
            && self.streams_gone().is_none()
    }

    fn unready_reason(&self) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining: the worker is shutting down".into());
        }
        if !self.cluster.is_connected() {
            return Some("NATS is not reachable".into());
        }
        self.streams_gone()
    }

    async fn timeline(&self, id: String) -> Result<Option<Value>, Unavailable> {
        self.ask(|reply| Command::Timeline { id, reply }).await
    }

    // Not in cluster mode yet (docs/cluster.md): the 503 says so and what
    // to do instead, rather than a bare "not available here".

    async fn report(
        &self,
        query: crate::report::Query,
    ) -> Result<Result<Value, String>, Unavailable> {
        drop(query);
        Err(Unavailable(
            "reports are not available in cluster mode yet: each worker holds only its \
             partitions' users (docs/cluster.md)"
                .into(),
        ))
    }

    async fn feedback(
        &self,
        notices: Vec<crate::feedback::Notice>,
    ) -> Result<Vec<bool>, Unavailable> {
        drop(notices);
        Err(Unavailable(
            "email feedback is not taken in cluster mode yet (docs/cluster.md)".into(),
        ))
    }

    async fn admin(
        &self,
        request: crate::engine::deploy::AdminRequest,
    ) -> Result<Result<Value, crate::engine::deploy::AdminFailure>, Unavailable> {
        drop(request);
        Err(Unavailable(
            "deployments are not available in cluster mode yet: to change the config, stop \
             the workers and start them on the new config with a new --cluster-name \
             (docs/cluster.md)"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_without_id_gets_the_hash_of_its_content_and_keeps_one_it_has() {
        let line = r#"{"type":"track","user":"u1","ts":"2026-01-01T00:00:00Z","event":"x"}"#;
        let mut a = Event::from_line(line).expect("event");
        let mut b = Event::from_line(line).expect("event");
        let id = event_id(&mut a).expect("id");
        assert!(id.starts_with("h:") && id.len() == 34, "{id}");
        assert_eq!(event_id(&mut b).expect("id"), id);
        assert_eq!(a.id.as_deref(), Some(id.as_str()));
        let mut c = Event::from_line(
            r#"{"type":"track","user":"u1","ts":"2026-01-01T00:00:00Z","event":"x","id":"e7"}"#,
        )
        .expect("event");
        assert_eq!(event_id(&mut c).expect("id"), "e7");
    }
}
