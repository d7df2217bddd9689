//! Delivery workers: one tokio task per channel reading a bounded queue of
//! committed outbox entries, each delivery on its own task under the
//! channel's concurrency limit, every result sent back to the writer as a
//! command. A slow or dead provider fills only its own channel's queue.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

use journeys::compiled::Channel;

use crate::clock::Clock;
use crate::deliver::{Attempt, Providers};
use crate::dispatch::DispatchError;
use crate::metrics::{redact_addresses, Metrics};
use crate::store::outbox::OutboxEntry;

use super::{Command, Outlet, ServiceHandle};

/// The writer's side: bounded queues, one per channel.
pub struct Workers {
    queues: BTreeMap<Channel, mpsc::Sender<OutboxEntry>>,
    busy: Arc<AtomicUsize>,
}

impl Outlet for Workers {
    fn offer(&mut self, entry: OutboxEntry) -> bool {
        let Some(q) = self.queues.get(&entry.message.channel) else {
            return false;
        };
        self.busy.fetch_add(1, Ordering::SeqCst);
        match q.try_send(entry) {
            Ok(()) => true,
            Err(_) => {
                self.busy.fetch_sub(1, Ordering::SeqCst);
                false
            }
        }
    }
}

/// Deliveries queued or in flight (for draining at shutdown).
#[derive(Clone)]
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// The counter itself (for `sluice_deliveries_in_flight`).
    pub fn cell(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.0)
    }
}

/// Starts the workers on `rt`: `concurrency` deliveries at once per
/// channel, `queue` entries waiting per channel.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    providers: Arc<Providers>,
    handle: ServiceHandle,
    clock: Arc<dyn Clock>,
    concurrency: usize,
    queue: usize,
) -> (Workers, Busy) {
    spawn_with(
        rt,
        providers,
        handle,
        clock,
        concurrency,
        queue,
        Metrics::new(),
    )
}

/// [`spawn`], timing every attempt into `metrics`
/// (`sluice_delivery_duration_seconds`).
pub fn spawn_with(
    rt: &tokio::runtime::Handle,
    providers: Arc<Providers>,
    handle: ServiceHandle,
    clock: Arc<dyn Clock>,
    concurrency: usize,
    queue: usize,
    metrics: Metrics,
) -> (Workers, Busy) {
    let busy = Arc::new(AtomicUsize::new(0));
    let mut queues = BTreeMap::new();
    for channel in [Channel::Email, Channel::Push, Channel::Webhook] {
        let (tx, mut rx) = mpsc::channel::<OutboxEntry>(queue.max(1));
        queues.insert(channel, tx);
        let providers = Arc::clone(&providers);
        let handle = handle.clone();
        let clock = Arc::clone(&clock);
        let busy = Arc::clone(&busy);
        let limit = Arc::new(Semaphore::new(concurrency.max(1)));
        let metrics = metrics.clone();
        rt.spawn(async move {
            while let Some(entry) = rx.recv().await {
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    break;
                };
                let provider = Arc::clone(providers.for_channel(channel));
                let handle = handle.clone();
                let clock = Arc::clone(&clock);
                let busy = Arc::clone(&busy);
                let metrics = metrics.clone();
                let attempt = Attempt {
                    number: entry.attempts.saturating_add(1),
                    now: clock.now_millis(),
                };
                // One span per delivery: the channel, the idempotency key
                // and the attempt; never the address or the content.
                let span = tracing::info_span!(
                    "deliver",
                    channel = %channel.as_str(),
                    journey = %entry.message.journey,
                    key = %entry.message.key,
                    attempt = attempt.number
                );
                tokio::spawn(
                    async move {
                        let started = std::time::Instant::now();
                        let outcome = provider.deliver(&entry.message, attempt).await;
                        let took = started.elapsed();
                        metrics.delivery_took(channel, took);
                        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                        let news;
                        let result = match outcome {
                            Ok(d) => {
                                news = d.news;
                                tracing::debug!(duration_ms = ms, "delivered");
                                Ok(())
                            }
                            Err(mut f) => {
                                news = std::mem::take(&mut f.news);
                                tracing::info!(
                                    reason = %redact_addresses(f.for_log()),
                                    permanent = f.is_permanent(),
                                    duration_ms = ms,
                                    "delivery failed"
                                );
                                Err(DispatchError {
                                    retriable: !f.is_permanent(),
                                    message: f.reason.clone(),
                                    summary: f.summary.clone(),
                                    retry_after: f
                                        .retry_after
                                        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                                })
                            }
                        };
                        handle.send(Command::Delivered {
                            id: entry.id,
                            channel,
                            result,
                            news,
                        });
                        busy.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        });
    }
    (
        Workers {
            queues,
            busy: Arc::clone(&busy),
        },
        Busy(busy),
    )
}
