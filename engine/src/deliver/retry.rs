//! When to try a failed delivery again: exponential backoff with full
//! jitter (the delay after the n-th failed attempt is drawn uniformly from
//! `[0, min(max, initial × 2^(n-1))]`), a `Retry-After` from the provider
//! as a lower bound, and after `max_attempts` tries or any permanent
//! failure, the dead-letter queue. The Project's `retry` (FORMAT.md §3:
//! `{ max_attempts: 8, initial: 1s, max: 10m }` by default) sets it.
//!
//! The "random" draw is a hash of the message key and the attempt number,
//! so a replay of the same failures waits the same times (`simulate` stays
//! deterministic, a restarted service keeps its schedule) while different
//! messages spread out. This is the one retry schedule: the engine's
//! outbox and the providers' tests both use it.

use std::time::Duration;

use journeys::compiled::RetryPolicy;

use super::Failure;

/// The retry schedule of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Tries in all, the first included (at least 1).
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again once `after` has passed.
    Retry { after: Duration },
    /// Give up: into the dead-letter queue with this reason.
    Dead { attempts: u32, reason: String },
}

impl Backoff {
    pub fn new(max_attempts: u32, initial: Duration, max: Duration) -> Backoff {
        Backoff {
            max_attempts: max_attempts.max(1),
            initial,
            max,
        }
    }

    /// The Project's compiled `retry`.
    pub fn from_policy(policy: &RetryPolicy) -> Backoff {
        let ms = |d: journeys::scalar::Duration| {
            Duration::from_millis(u64::try_from(d.millis()).unwrap_or(0))
        };
        Backoff::new(policy.max_attempts, ms(policy.initial), ms(policy.max))
    }

    /// The upper bound of the delay after the `attempt`-th failed try
    /// (1-based): `min(max, initial × 2^(attempt-1))`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let initial = u64::try_from(self.initial.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(initial.saturating_mul(factor).min(max))
    }

    /// The jittered delay after the `attempt`-th failed try of the message
    /// with `key`: uniform in `[0, cap(attempt)]`, the same for the same key
    /// and attempt.
    pub fn delay(&self, key: &str, attempt: u32) -> Duration {
        let cap = u64::try_from(self.cap(attempt).as_millis()).unwrap_or(u64::MAX);
        // FNV-1a over the key and the attempt: 53 bits make the fraction.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes().chain(attempt.to_be_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // FNV's last bytes barely reach the high bits: mix them (murmur3's
        // finaliser) so that each attempt of each key gets its own fraction
        // (without it, some keys retried every few ms).
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        let fraction = (h >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_millis((cap as f64 * fraction).round() as u64)
    }

    /// Decides after the `attempt`-th try (1-based) of the message with
    /// `key` failed with `failure`.
    pub fn decide(&self, key: &str, attempt: u32, failure: &Failure) -> Decision {
        if failure.is_permanent() {
            return Decision::Dead {
                attempts: attempt,
                reason: failure.reason.clone(),
            };
        }
        if attempt >= self.max_attempts {
            return Decision::Dead {
                attempts: attempt,
                reason: format!(
                    "gave up after {attempt} attempt{}: {}",
                    if attempt == 1 { "" } else { "s" },
                    failure.reason
                ),
            };
        }
        let jittered = self.delay(key, attempt);
        let after = match failure.retry_after {
            Some(at_least) => jittered.max(at_least),
            None => jittered,
        };
        Decision::Retry { after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn caps_double_up_to_max_and_the_last_attempt_is_dead() {
        let b = Backoff::new(8, secs(1), secs(600));
        let caps: Vec<u64> = (1..=12).map(|n| b.cap(n).as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(b.cap(u32::MAX), secs(600));
        let f = Failure::transient("HTTP 503");
        assert!(matches!(b.decide("k", 7, &f), Decision::Retry { .. }));
        assert_eq!(
            b.decide("k", 8, &f),
            Decision::Dead {
                attempts: 8,
                reason: "gave up after 8 attempts: HTTP 503".into()
            }
        );
        assert_eq!(
            b.decide("k", 1, &Failure::permanent("HTTP 400")),
            Decision::Dead {
                attempts: 1,
                reason: "HTTP 400".into()
            }
        );
    }

    #[test]
    fn the_same_key_gets_the_same_schedule_and_keys_spread() {
        let b = Backoff::new(10, secs(1), secs(60));
        let f = Failure::transient("down");
        let run = |key: &str| (1..10).map(|n| b.decide(key, n, &f)).collect::<Vec<_>>();
        assert_eq!(run("a"), run("a"));
        assert_ne!(run("a"), run("b"));
        let distinct: std::collections::BTreeSet<_> =
            (0..50).map(|k| b.delay(&format!("k{k}"), 5)).collect();
        assert!(distinct.len() > 40, "{distinct:?}");
    }

    #[test]
    fn from_the_compiled_policy() {
        let p = RetryPolicy {
            max_attempts: 0,
            initial: journeys::scalar::Duration(2),
            max: journeys::scalar::Duration(30),
        };
        let b = Backoff::from_policy(&p);
        assert_eq!(b, Backoff::new(1, secs(2), secs(30)));
        assert_eq!(b.max_attempts, 1);
    }

    proptest! {
        #[test]
        fn delays_stay_within_the_cap_and_respect_retry_after(
            key in "[a-z0-9]{1,12}",
            initial_ms in 0u64..5_000,
            max_ms in 0u64..3_600_000,
            attempt in 1u32..40,
            retry_after_ms in proptest::option::of(0u64..7_200_000),
        ) {
            let b = Backoff::new(64, Duration::from_millis(initial_ms), Duration::from_millis(max_ms));
            let f = Failure::transient("x")
                .with_retry_after(retry_after_ms.map(Duration::from_millis));
            let cap = b.cap(attempt);
            prop_assert!(cap <= Duration::from_millis(max_ms));
            prop_assert!(b.cap(attempt + 1) >= cap, "upper bound never decreases");
            match b.decide(&key, attempt, &f) {
                Decision::Retry { after } => match retry_after_ms {
                    None => prop_assert!(after <= cap),
                    Some(ra) => {
                        prop_assert!(after >= Duration::from_millis(ra));
                        prop_assert!(after <= cap.max(Duration::from_millis(ra)));
                    }
                },
                d => prop_assert!(false, "unexpected {:?}", d),
            }
        }
    }
}
