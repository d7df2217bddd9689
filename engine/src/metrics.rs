//! The Prometheus metrics of `sluice run` (RUN.md §6, docs/metrics.md): one
//! registry ([`prometheus_client`]) behind a cheap [`Metrics`] handle that
//! the writer, the delivery workers and the HTTP API share, and its two text
//! encodings for `GET /metrics` (OpenMetrics 1.0, and Prometheus text 0.0.4
//! for clients that do not ask for OpenMetrics).
//!
//! What is counted where:
//!
//! - entries and sends are derived from the engine's decision lines
//!   ([`Decisions`], a [`Sink`]), the one place that sees every `entered`,
//!   `entry_skipped` and `send` line; they are published when the commit
//!   that holds them succeeds ([`Sink::committed`]), so the counters count
//!   what is durable;
//! - ingests and delivery results are counted by the writer after the
//!   round's commit; rejected lines and HTTP requests by the API;
//! - delivery durations by the workers, timer lag by the engine as timers
//!   fire;
//! - gauges (outbox depth, timers pending, dead letters) are set from
//!   counts the engine keeps up to date commit by commit, so a scrape reads
//!   a few atomics and never the store.
//!
//! No label carries a user id, an address or anything else per user:
//! journeys, channels, sources, outcomes, routes and status codes only.
//!
//! Must not know: the store's layout, the engine's rules, HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use journeys::compiled::{Action, Channel, Config};

use crate::output::{Kind, Line, Sink};

/// `Content-Type` of the OpenMetrics text answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text (0.0.4) answer.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Where events come in: the `source` label of `sluice_events_ingested_total`.
pub const SOURCES: [&str; 5] = ["events", "track", "identify", "batch", "segment"];
/// The `outcome` label of `sluice_entries_total`.
pub const ENTRY_OUTCOMES: [&str; 5] = ["entered", "dedupe", "reentry", "live", "holdout"];
/// The `outcome` label of `sluice_sends_total`.
pub const SEND_OUTCOMES: [&str; 4] = ["sent", "deferred", "suppressed", "failed"];
/// The `result` label of `sluice_deliveries_total`.
pub const DELIVERY_RESULTS: [&str; 3] = ["ok", "retry", "dead"];
/// The `state` label of `sluice_writer_state`, by the service's state number.
pub const WRITER_STATES: [&str; 4] = ["starting", "ready", "draining", "failed"];

const TIMER_LAG_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
    86400.0,
];
const DELIVERY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const COMMIT_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryLabels {
    journey: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SendLabels {
    journey: String,
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedbackLabels {
    provider: String,
    kind: String,
    matched: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

fn delivery_histogram() -> Histogram {
    Histogram::new(DELIVERY_BUCKETS)
}

/// The service's state and its deliveries in flight, read at scrape time
/// from the atomics the service keeps anyway.
#[derive(Debug, Default)]
struct Live {
    state: OnceLock<Arc<AtomicU8>>,
    busy: OnceLock<Arc<AtomicUsize>>,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self
            .state
            .get()
            .map_or(0, |s| usize::from(s.load(Ordering::SeqCst)));
        let mut m = encoder.encode_descriptor(
            "sluice_writer_state",
            "The single writer's state: 1 for the current one (starting, ready, draining, failed: the store failed and nothing more is acknowledged)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (n, name) in WRITER_STATES.iter().enumerate() {
            let labels = [("state", *name)];
            m.encode_family(&labels)?
                .encode_gauge(&i64::from(n == state))?;
        }
        let busy = self.busy.get().map_or(0, |b| b.load(Ordering::SeqCst));
        let gauge = ConstGauge::new(i64::try_from(busy).unwrap_or(i64::MAX));
        let m = encoder.encode_descriptor(
            "sluice_deliveries_in_flight",
            "Outbox entries handed to the delivery workers and not yet reported back (queued or being delivered)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(m)
    }
}

struct Inner {
    registry: Registry,
    events_ingested: Family<SourceLabels, Counter>,
    events_duplicate: Family<SourceLabels, Counter>,
    events_rejected: Counter,
    entries: Family<EntryLabels, Counter>,
    sends: Family<SendLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    outbox_depth: Family<ChannelLabels, Gauge>,
    timers_pending: Gauge,
    dead_letters: Gauge,
    timer_lag: Histogram,
    delivery_duration: Family<ChannelLabels, Histogram>,
    ingest_commit_duration: Histogram,
    feedback: Family<FeedbackLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    live: Arc<Live>,
    /// `run --cluster`'s metrics (docs/cluster.md), registered only there.
    cluster: Option<ClusterMetrics>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: u32,
}

/// The metrics of a cluster worker.
struct ClusterMetrics {
    partitions_owned: Gauge,
    lease_lost: Counter,
    republished: Counter,
    restore: Histogram,
    lag: Family<PartitionLabels, Gauge>,
}

/// Restore times: 10 ms to 2 minutes.
const RESTORE_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];

/// The metrics of one `sluice run`: clone it freely (one registry behind an
/// `Arc`); every update is a few atomic operations.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric of docs/metrics.md, registered; the label sets that do
    /// not depend on the config start at zero.
    pub fn new() -> Metrics {
        Metrics::build(false)
    }

    /// [`Metrics::new`] with a cluster worker's metrics added.
    pub fn for_cluster() -> Metrics {
        Metrics::build(true)
    }

    fn build(cluster: bool) -> Metrics {
        let mut registry = Registry::default();
        let events_ingested = Family::<SourceLabels, Counter>::default();
        registry.register(
            "sluice_events_ingested",
            "Events applied and durably stored, by the route they came in by (events whose id was seen before are not counted here)",
            events_ingested.clone(),
        );
        let events_duplicate = Family::<SourceLabels, Counter>::default();
        registry.register(
            "sluice_events_duplicate",
            "Events acknowledged as duplicates (their id was seen before: they changed nothing), by source",
            events_duplicate.clone(),
        );
        let events_rejected = Counter::default();
        registry.register(
            "sluice_events_rejected",
            "Event lines refused by the API (invalid JSON, missing fields, bad timestamps): each one is an entry of a 400 answer's errors",
            events_rejected.clone(),
        );
        let entries = Family::<EntryLabels, Counter>::default();
        registry.register(
            "sluice_entries",
            "Journey entry decisions committed: entered (treatment), holdout (entered the holdout group), or refused as dedupe, live or reentry",
            entries.clone(),
        );
        let sends = Family::<SendLabels, Counter>::default();
        registry.register(
            "sluice_sends",
            "Send decisions committed, by journey, channel and outcome (sent, deferred, suppressed, failed)",
            sends.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "sluice_deliveries",
            "Delivery attempts recorded, by channel and result: ok, retry (transient failure, retried later), dead (into the dead-letter queue)",
            deliveries.clone(),
        );
        let outbox_depth = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "sluice_outbox_depth",
            "Messages in the durable outbox awaiting delivery (including those waiting for a retry), by channel",
            outbox_depth.clone(),
        );
        let timers_pending = Gauge::default();
        registry.register(
            "sluice_timers_pending",
            "Timers in the store (waits, scheduled sends, retries, schedules) not yet fired",
            timers_pending.clone(),
        );
        let dead_letters = Gauge::default();
        registry.register(
            "sluice_dead_letters",
            "Messages in the dead-letter queue",
            dead_letters.clone(),
        );
        let timer_lag = Histogram::new(TIMER_LAG_BUCKETS);
        registry.register(
            "sluice_timer_lag_seconds",
            "How late timers fire: fire time minus due time (timers that fell due while the process was down count their whole delay)",
            timer_lag.clone(),
        );
        let delivery_duration = Family::<ChannelLabels, Histogram>::new_with_constructor(
            delivery_histogram as fn() -> Histogram,
        );
        registry.register(
            "sluice_delivery_duration_seconds",
            "How long one delivery attempt took at the provider, by channel",
            delivery_duration.clone(),
        );
        let ingest_commit_duration = Histogram::new(COMMIT_BUCKETS);
        registry.register(
            "sluice_ingest_commit_duration_seconds",
            "How long the group commit (fsynced) of a writer round that carried ingests took",
            ingest_commit_duration.clone(),
        );
        let feedback = Family::<FeedbackLabels, Counter>::default();
        registry.register(
            "sluice_feedback",
            "Provider feedback notifications (bounces, complaints) received, by provider, kind and whether they matched a message",
            feedback.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "sluice_http_requests",
            "HTTP requests answered, by method, route pattern and status",
            http_requests.clone(),
        );
        registry.register(
            "sluice_build",
            "The running sluice's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let live = Arc::new(Live::default());
        registry.register_collector(Box::new(Arc::clone(&live)));
        let cluster = cluster.then(|| {
            let c = ClusterMetrics {
                partitions_owned: Gauge::default(),
                lease_lost: Counter::default(),
                republished: Counter::default(),
                restore: Histogram::new(RESTORE_BUCKETS),
                lag: Family::default(),
            };
            registry.register(
                "sluice_partitions_owned",
                "Partitions this worker owns now (leases held, restored)",
                c.partitions_owned.clone(),
            );
            registry.register(
                "sluice_lease_lost",
                "Partitions this worker stopped processing because it could not renew their lease or another owner claimed them",
                c.lease_lost.clone(),
            );
            registry.register(
                "sluice_changelog_republished",
                "Changelog records the stream refused once because another writer's record had landed on the key (a stale owner's late write, or an expired tombstone), written again by this owner",
                c.republished.clone(),
            );
            registry.register(
                "sluice_partition_restore_seconds",
                "How long taking a partition took: its lease, its records read from the changelog, its engine opened",
                c.restore.clone(),
            );
            registry.register(
                "sluice_consumer_lag_events",
                "Events in an owned partition's log not yet applied (the log's last sequence minus the checkpoint's)",
                c.lag.clone(),
            );
            c
        });

        for source in SOURCES {
            drop(events_ingested.get_or_create(&SourceLabels { source }));
            drop(events_duplicate.get_or_create(&SourceLabels { source }));
        }
        for c in Channel::ALL {
            let channel = c.as_str();
            drop(outbox_depth.get_or_create(&ChannelLabels { channel }));
            drop(delivery_duration.get_or_create(&ChannelLabels { channel }));
            for result in DELIVERY_RESULTS {
                drop(deliveries.get_or_create(&DeliveryLabels { channel, result }));
            }
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                events_ingested,
                events_duplicate,
                events_rejected,
                entries,
                sends,
                deliveries,
                outbox_depth,
                timers_pending,
                dead_letters,
                timer_lag,
                delivery_duration,
                ingest_commit_duration,
                feedback,
                http_requests,
                live,
                cluster,
            }),
        }
    }

    /// A cluster worker's partitions, counted after each round.
    pub fn partitions_owned(&self, n: usize) {
        if let Some(c) = &self.inner.cluster {
            c.partitions_owned.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Leases lost since the last call.
    pub fn leases_lost(&self, n: u64) {
        if let Some(c) = &self.inner.cluster {
            c.lease_lost.inc_by(n);
        }
    }

    /// Changelog records written again since the last call.
    pub fn changelog_republished(&self, n: u64) {
        if let Some(c) = &self.inner.cluster {
            c.republished.inc_by(n);
        }
    }

    /// One partition restore's duration.
    pub fn partition_restored(&self, took: Duration) {
        if let Some(c) = &self.inner.cluster {
            c.restore.observe(took.as_secs_f64());
        }
    }

    /// An owned partition's lag; `None` removes the series (given up).
    pub fn consumer_lag(&self, partition: u32, lag: Option<u64>) {
        if let Some(c) = &self.inner.cluster {
            let labels = PartitionLabels { partition };
            match lag {
                Some(n) => {
                    c.lag
                        .get_or_create(&labels)
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                None => {
                    c.lag.remove(&labels);
                }
            }
        }
    }

    /// Makes every journey's entry and send series exist (at zero) so that
    /// dashboards and `rate()` see them before the first decision.
    pub fn declare(&self, config: &Config) {
        for j in &config.journeys {
            for outcome in ENTRY_OUTCOMES {
                drop(self.inner.entries.get_or_create(&EntryLabels {
                    journey: j.id.clone(),
                    outcome,
                }));
            }
            let mut channels: Vec<Channel> = j
                .states
                .iter()
                .filter_map(|s| match &s.action {
                    Action::Send { channel, .. } => Some(*channel),
                    _ => None,
                })
                .collect();
            channels.sort();
            channels.dedup();
            for c in channels {
                for outcome in SEND_OUTCOMES {
                    drop(self.inner.sends.get_or_create(&SendLabels {
                        journey: j.id.clone(),
                        channel: c.as_str(),
                        outcome,
                    }));
                }
            }
        }
    }

    /// Reads the service's state (`sluice_writer_state`) and its deliveries
    /// in flight (`sluice_deliveries_in_flight`) at each scrape.
    pub fn watch(&self, state: Arc<AtomicU8>, busy: Arc<AtomicUsize>) {
        let _ = self.inner.live.state.set(state);
        let _ = self.inner.live.busy.set(busy);
    }

    /// Events applied (`accepted`) and acknowledged as duplicates, once
    /// their commit succeeded.
    pub fn ingested(&self, source: &'static str, accepted: u64, duplicates: u64) {
        self.inner
            .events_ingested
            .get_or_create(&SourceLabels { source })
            .inc_by(accepted);
        self.inner
            .events_duplicate
            .get_or_create(&SourceLabels { source })
            .inc_by(duplicates);
    }

    /// Event lines the API refused.
    pub fn rejected(&self, lines: u64) {
        self.inner.events_rejected.inc_by(lines);
    }

    /// Delivery results recorded by a commit.
    pub fn delivered(&self, channel: Channel, result: &'static str, n: u64) {
        self.inner
            .deliveries
            .get_or_create(&DeliveryLabels {
                channel: channel.as_str(),
                result,
            })
            .inc_by(n);
    }

    /// One delivery attempt's duration at the provider.
    pub fn delivery_took(&self, channel: Channel, took: Duration) {
        self.inner
            .delivery_duration
            .get_or_create(&ChannelLabels {
                channel: channel.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// A timer fired `lag_ms` after it was due.
    pub fn timer_fired(&self, lag_ms: i64) {
        self.inner.timer_lag.observe(lag_ms.max(0) as f64 / 1000.0);
    }

    /// A writer round's commit that carried ingests.
    pub fn ingest_committed(&self, took: Duration) {
        self.inner
            .ingest_commit_duration
            .observe(took.as_secs_f64());
    }

    /// The store's committed depths.
    pub fn set_depths(&self, d: &Depths) {
        for c in Channel::ALL {
            self.inner
                .outbox_depth
                .get_or_create(&ChannelLabels {
                    channel: c.as_str(),
                })
                .set(d.outbox(c));
        }
        self.inner.timers_pending.set(d.timers);
        self.inner.dead_letters.set(d.dead_letters);
    }

    /// A provider's feedback notification (RUN.md §3:
    /// `sluice_feedback_total{provider,kind,matched}`). `provider`: `ses`,
    /// `sendgrid`, `postmark`; `kind`: a small fixed set the caller owns
    /// (`bounce`, `complaint`, …), never free text from the request.
    pub fn feedback(&self, provider: &str, kind: &str, matched: bool) {
        self.inner
            .feedback
            .get_or_create(&FeedbackLabels {
                provider: provider.to_owned(),
                kind: kind.to_owned(),
                matched: if matched { "true" } else { "false" },
            })
            .inc();
    }

    /// An HTTP request answered. `route` is the matched pattern (never the
    /// path, which may hold a user id or a token).
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        let method = ["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH"]
            .into_iter()
            .find(|m| *m == method)
            .unwrap_or("other");
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The registry in OpenMetrics text (with `# EOF`).
    pub fn openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }

    /// The registry in Prometheus text format 0.0.4.
    pub fn prometheus_text(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)?;
        Ok(out)
    }

    /// The answer to a scrape: OpenMetrics when the `Accept` header asks
    /// for it (Prometheus does), else Prometheus text 0.0.4. Returns the
    /// content type and the body.
    pub fn scrape(&self, accept: &str) -> Result<(&'static str, String), std::fmt::Error> {
        if accept
            .to_ascii_lowercase()
            .contains("application/openmetrics-text")
        {
            Ok((OPENMETRICS, self.openmetrics()?))
        } else {
            Ok((PROMETHEUS_TEXT, self.prometheus_text()?))
        }
    }
}

/// What the store holds, as counts the engine keeps commit by commit
/// (never a scan per scrape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depths {
    /// Outbox entries by channel, in [`Channel::ALL`] order.
    pub outbox: [i64; 3],
    pub timers: i64,
    pub dead_letters: i64,
}

impl Depths {
    pub fn outbox(&self, c: Channel) -> i64 {
        self.outbox[channel_index(c)]
    }

    pub fn add_outbox(&mut self, c: Channel, n: i64) {
        self.outbox[channel_index(c)] += n;
    }

    /// Adds another set of counts (a commit's changes).
    pub fn add(&mut self, other: &Depths) {
        for (a, b) in self.outbox.iter_mut().zip(other.outbox) {
            *a += b;
        }
        self.timers += other.timers;
        self.dead_letters += other.dead_letters;
    }
}

fn channel_index(c: Channel) -> usize {
    match c {
        Channel::Email => 0,
        Channel::Push => 1,
        Channel::Webhook => 2,
    }
}

/// Counts the engine's decision lines into `sluice_entries_total` and
/// `sluice_sends_total` once they are committed, and hands every line on
/// to the sink it wraps (the log).
///
/// A line is emitted inside a unit of work; it is counted when the commit
/// holding that unit succeeds. When a commit fails the writer stops
/// acknowledging (FAILED) and the lines of the failed commit are never
/// counted: the counters say what is durable, as a restart would find it.
pub struct Decisions {
    metrics: Metrics,
    next: Box<dyn Sink + Send>,
    entries: HashMap<(String, &'static str), u64>,
    sends: HashMap<(String, &'static str, &'static str), u64>,
}

impl Decisions {
    pub fn new(metrics: Metrics, next: Box<dyn Sink + Send>) -> Decisions {
        Decisions {
            metrics,
            next,
            entries: HashMap::new(),
            sends: HashMap::new(),
        }
    }
}

/// The `outcome` of `sluice_entries_total` for a line, if it is an entry
/// decision.
pub fn entry_outcome(line: &Line) -> Option<&'static str> {
    match line.kind {
        Kind::Entered if line.holdout == Some(true) => Some("holdout"),
        Kind::Entered => Some("entered"),
        Kind::EntrySkipped => match line.reason.as_deref() {
            Some("dedupe") => Some("dedupe"),
            Some("live") => Some("live"),
            Some("reentry") => Some("reentry"),
            _ => None,
        },
        _ => None,
    }
}

impl Sink for Decisions {
    fn line(&mut self, line: Line) {
        if let Some(outcome) = entry_outcome(&line) {
            *self
                .entries
                .entry((line.journey.clone(), outcome))
                .or_default() += 1;
        } else if line.kind == Kind::Send {
            if let (Some(channel), Some(outcome)) = (line.channel, line.outcome) {
                *self
                    .sends
                    .entry((line.journey.clone(), channel, outcome.as_str()))
                    .or_default() += 1;
            }
        }
        self.next.line(line);
    }

    fn flush(&mut self) {
        self.next.flush();
    }

    fn committed(&mut self) {
        for ((journey, outcome), n) in self.entries.drain() {
            self.metrics
                .inner
                .entries
                .get_or_create(&EntryLabels { journey, outcome })
                .inc_by(n);
        }
        for ((journey, channel, outcome), n) in self.sends.drain() {
            self.metrics
                .inner
                .sends
                .get_or_create(&SendLabels {
                    journey,
                    channel,
                    outcome,
                })
                .inc_by(n);
        }
        self.next.committed();
    }
}

/// Replaces every e-mail address in `text` with `<address>`, for log lines
/// that carry a provider's words (an SMTP answer names the recipient).
pub fn redact_addresses(text: &str) -> String {
    if !text.contains('@') {
        return text.to_owned();
    }
    let part = |c: char| {
        !c.is_whitespace()
            && !matches!(
                c,
                '<' | '>' | '"' | '\'' | ',' | ';' | '(' | ')' | '[' | ']' | ':'
            )
    };
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < chars.len() {
        if chars[i].1 == '@' {
            let mut start = i;
            while start > 0 && part(chars[start - 1].1) {
                start -= 1;
            }
            let mut end = i + 1;
            while end < chars.len() && part(chars[end].1) {
                end += 1;
            }
            let domain: String = chars[i + 1..end].iter().map(|(_, c)| *c).collect();
            if start < i && domain.trim_end_matches('.').contains('.') {
                let from = chars[start].0;
                let to = chars.get(end).map_or(text.len(), |(b, _)| *b);
                out.push_str(&text[copied..from]);
                out.push_str("<address>");
                copied = to;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Outcome;

    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counters_come_out_with_their_total_names_in_both_formats() {
        let m = Metrics::new();
        m.ingested("events", 3, 1);
        m.rejected(2);
        for text in [
            m.openmetrics().expect("encode"),
            m.prometheus_text().expect("encode"),
        ] {
            assert_eq!(
                sample(&text, "sluice_events_ingested_total{source=\"events\"}"),
                Some(3.0),
                "{text}"
            );
            assert_eq!(sample(&text, "sluice_events_rejected_total"), Some(2.0));
            assert_eq!(
                sample(&text, "sluice_events_duplicate_total{source=\"events\"}"),
                Some(1.0)
            );
            assert_eq!(
                sample(&text, "sluice_build_info{version=\"0.1.0\"}"),
                Some(1.0)
            );
            assert_eq!(
                sample(&text, "sluice_writer_state{state=\"starting\"}"),
                Some(1.0)
            );
        }
        assert!(m.openmetrics().expect("encode").ends_with("# EOF\n"));
        assert!(m
            .prometheus_text()
            .expect("encode")
            .contains("# TYPE sluice_events_ingested_total counter\n"));
    }

    #[test]
    fn a_cluster_worker_counts_lost_leases_and_republished_records() {
        let m = Metrics::for_cluster();
        let text = m.prometheus_text().expect("encode");
        assert_eq!(
            sample(&text, "sluice_changelog_republished_total"),
            Some(0.0)
        );
        m.leases_lost(1);
        m.changelog_republished(2);
        m.changelog_republished(1);
        let text = m.prometheus_text().expect("encode");
        assert_eq!(
            sample(&text, "sluice_lease_lost_total"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "sluice_changelog_republished_total"),
            Some(3.0)
        );
        // A single node has none of them.
        let one = Metrics::new().prometheus_text().expect("encode");
        assert!(!one.contains("sluice_changelog_republished"), "{one}");
    }

    #[test]
    fn the_accept_header_picks_the_format() {
        let m = Metrics::new();
        let prom = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(m.scrape(prom).expect("encode").0, OPENMETRICS);
        assert_eq!(m.scrape("*/*").expect("encode").0, PROMETHEUS_TEXT);
        assert_eq!(m.scrape("").expect("encode").0, PROMETHEUS_TEXT);
    }

    #[test]
    fn decisions_count_only_once_committed() {
        let m = Metrics::new();
        let mut d = Decisions::new(m.clone(), Box::new(crate::output::Discard));
        let mut entered = Line::new(0, Kind::Entered, "u1", "welcome");
        entered.holdout = Some(false);
        let mut held = entered.clone();
        held.holdout = Some(true);
        let mut skipped = Line::new(0, Kind::EntrySkipped, "u1", "welcome");
        skipped.reason = Some("dedupe".into());
        let mut send = Line::new(0, Kind::Send, "u1", "welcome");
        send.channel = Some("email");
        send.outcome = Some(Outcome::Suppressed);
        for l in [entered.clone(), entered, held, skipped, send] {
            d.line(l);
        }
        let before = m.openmetrics().expect("encode");
        assert!(
            !before.contains("sluice_entries_total{journey=\"welcome\""),
            "{before}"
        );
        d.committed();
        let after = m.openmetrics().expect("encode");
        let get = |s: &str| sample(&after, s);
        assert_eq!(
            get("sluice_entries_total{journey=\"welcome\",outcome=\"entered\"}"),
            Some(2.0)
        );
        assert_eq!(
            get("sluice_entries_total{journey=\"welcome\",outcome=\"holdout\"}"),
            Some(1.0)
        );
        assert_eq!(
            get("sluice_entries_total{journey=\"welcome\",outcome=\"dedupe\"}"),
            Some(1.0)
        );
        assert_eq!(
            get("sluice_sends_total{journey=\"welcome\",channel=\"email\",outcome=\"suppressed\"}"),
            Some(1.0)
        );
        // Published once: a second commit adds nothing.
        d.committed();
        let sorted = |t: &str| {
            let mut l: Vec<String> = t.lines().map(str::to_owned).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&m.openmetrics().expect("encode")), sorted(&after));
    }

    #[test]
    fn gauges_follow_the_depths() {
        let m = Metrics::new();
        let mut d = Depths::default();
        d.add_outbox(Channel::Webhook, 4);
        d.timers = 7;
        d.dead_letters = 2;
        m.set_depths(&d);
        let text = m.prometheus_text().expect("encode");
        assert_eq!(
            sample(&text, "sluice_outbox_depth{channel=\"webhook\"}"),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "sluice_outbox_depth{channel=\"email\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&text, "sluice_timers_pending"), Some(7.0));
        assert_eq!(sample(&text, "sluice_dead_letters"), Some(2.0));
    }

    #[test]
    fn addresses_are_redacted() {
        assert_eq!(
            redact_addresses("550 5.1.1 <bob@example.com>: user unknown"),
            "550 5.1.1 <<address>>: user unknown"
        );
        assert_eq!(
            redact_addresses("to ana.b+x@mail.example.org, and bo@x.io"),
            "to <address>, and <address>"
        );
        assert_eq!(redact_addresses("no address @ here"), "no address @ here");
        assert_eq!(redact_addresses("é@é.é ok"), "<address> ok");
    }
}
