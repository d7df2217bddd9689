//! How many notifications of each provider and kind came in, matched to a
//! message or not: the numbers behind `sluice_feedback_total{provider,kind,
//! matched}` (RUN.md §3). Plain atomics, one per label combination, so
//! counting never waits; the metrics registry reads them through
//! [`FeedbackCounts::rows`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Kind, Provider};

const PROVIDERS: usize = Provider::ALL.len();
const KINDS: usize = Kind::ALL.len();

/// Counters by (provider, kind, matched).
#[derive(Debug, Default)]
pub struct FeedbackCounts {
    cells: [[[AtomicU64; 2]; KINDS]; PROVIDERS],
    /// Where `sluice_feedback_total` is exported (`GET /metrics`), once
    /// the API is built.
    metrics: std::sync::OnceLock<crate::metrics::Metrics>,
}

/// One counter: `(provider, kind, matched, count)`.
pub type Row = (&'static str, &'static str, bool, u64);

fn provider_index(p: Provider) -> usize {
    Provider::ALL.iter().position(|x| *x == p).unwrap_or(0)
}

fn kind_index(k: Kind) -> usize {
    Kind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

impl FeedbackCounts {
    pub fn new() -> FeedbackCounts {
        FeedbackCounts::default()
    }

    /// Counts one notification.
    pub fn add(&self, provider: Provider, kind: Kind, matched: bool) {
        self.cells[provider_index(provider)][kind_index(kind)][usize::from(matched)]
            .fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.feedback(provider.as_str(), kind.as_str(), matched);
        }
    }

    /// Exports every later count as `sluice_feedback_total` through
    /// `metrics` (the first registry given wins).
    pub fn export_to(&self, metrics: &crate::metrics::Metrics) {
        let _ = self.metrics.set(metrics.clone());
    }

    /// One counter's value.
    pub fn get(&self, provider: Provider, kind: Kind, matched: bool) -> u64 {
        self.cells[provider_index(provider)][kind_index(kind)][usize::from(matched)]
            .load(Ordering::Relaxed)
    }

    /// Every counter that is not zero, in a stable order (provider, kind,
    /// unmatched before matched).
    pub fn rows(&self) -> Vec<Row> {
        let mut out = Vec::new();
        for p in Provider::ALL {
            for k in Kind::ALL {
                for matched in [false, true] {
                    let n = self.get(p, k, matched);
                    if n > 0 {
                        out.push((p.as_str(), k.as_str(), matched, n));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_labels() {
        let c = FeedbackCounts::new();
        assert!(c.rows().is_empty());
        c.add(Provider::Ses, Kind::HardBounce, true);
        c.add(Provider::Ses, Kind::HardBounce, true);
        c.add(Provider::Ses, Kind::HardBounce, false);
        c.add(Provider::Postmark, Kind::Other, false);
        assert_eq!(
            c.rows(),
            vec![
                ("ses", "hard_bounce", false, 1),
                ("ses", "hard_bounce", true, 2),
                ("postmark", "other", false, 1),
            ]
        );
        assert_eq!(c.get(Provider::Sendgrid, Kind::Complaint, true), 0);
    }
}
