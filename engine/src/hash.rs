//! Deterministic assignment: holdouts, split arms and idempotency keys are
//! pure functions of stable names, so the same user lands in the same group
//! in every run, on every machine and in every version of a journey.

use sha2::{Digest, Sha256};

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

fn first_u64(parts: &[&str]) -> u64 {
    let d = digest(parts);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

fn basis_points(parts: &[&str]) -> u32 {
    (first_u64(parts) % 10_000) as u32
}

/// Whether `user` is held out of `journey` at `holdout` basis points
/// (1000 = 10%). Independent of the journey's version.
pub fn is_held_out(journey: &str, user: &str, holdout_bp: u32) -> bool {
    holdout_bp > 0 && basis_points(&["holdout", journey, user]) < holdout_bp
}

/// Whether `user`'s new entry into `journey` goes to its canary at
/// `canary_bp` basis points. Salted apart from holdouts (independent of
/// them) and of the version (the same users stay in as the share grows).
pub fn in_canary(journey: &str, user: &str, canary_bp: u32) -> bool {
    canary_bp > 0 && basis_points(&["canary", journey, user]) < canary_bp
}

/// A number in 0..10 000 for a split step, stable per (journey, step, user).
pub fn split_point(journey: &str, step: &str, user: &str) -> u32 {
    basis_points(&["split", journey, step, user])
}

/// The idempotency key of a message: stable over retries and deferrals.
/// `instance` is the instance's store-wide id, which is never reused (not
/// even for a user erased and created again under the same id).
pub fn message_key(journey: &str, version: u32, user: &str, instance: u64, step: &str) -> String {
    let mut v = itoa::Buffer::new();
    let mut i = itoa::Buffer::new();
    let d = digest(&[journey, v.format(version), user, i.format(instance), step]);
    hex::encode(&d[..16])
}

/// The cluster partition (0..`partitions`) that owns `user`'s state
/// (`sluice run --cluster`): the same on every worker and in every release,
/// so it must never change. `partitions` must be at least 1.
pub fn partition_of(user: &str, partitions: u32) -> u32 {
    (first_u64(&["partition", user]) % u64::from(partitions.max(1))) as u32
}

/// Rendezvous (highest random weight) score of `member` for `partition`:
/// the live member with the highest score owns the partition, so a member
/// joining or leaving moves only the partitions it wins or held.
pub fn rendezvous_score(member: &str, partition: u32) -> u64 {
    let p = partition.to_string();
    first_u64(&["rendezvous", member, &p])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_rate_and_stability() {
        let held = (0..10_000)
            .filter(|i| is_held_out("cart-abandonment", &format!("user-{i}"), 1000))
            .count();
        assert!((900..=1100).contains(&held), "{held}");
        assert_eq!(is_held_out("j", "u1", 5000), is_held_out("j", "u1", 5000));
        assert!(!is_held_out("j", "u1", 0));
        assert!(is_held_out("j", "u1", 10_000));
        assert_eq!(
            message_key("j", 1, "u", 7, "s"),
            message_key("j", 1, "u", 7, "s")
        );
        assert_ne!(
            message_key("j", 1, "u", 7, "s"),
            message_key("j", 2, "u", 7, "s")
        );
        assert_eq!(message_key("j", 1, "u", 7, "s").len(), 32);
        // Pinned: keys are stored and sent, so they never change.
        assert_eq!(
            message_key("cart-abandonment", 12, "u0001", 1_234_567, "reminder"),
            expected_key("cart-abandonment", "12", "u0001", "1234567", "reminder")
        );
    }

    /// The key as first defined: the hex of the first 16 bytes of the
    /// digest of the decimal texts.
    fn expected_key(j: &str, v: &str, u: &str, i: &str, s: &str) -> String {
        digest(&[j, v, u, i, s])[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn canary_buckets_take_their_share_grow_stably_and_ignore_holdouts() {
        let users: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let at = |bp| users.iter().filter(|u| in_canary("cart", u, bp)).count();
        let ten = at(1000);
        assert!((1_800..=2_200).contains(&ten), "{ten}");
        // Growing the share keeps everyone already in.
        assert!(users
            .iter()
            .filter(|u| in_canary("cart", u, 1000))
            .all(|u| in_canary("cart", u, 2500)));
        // Independent of holdouts: about 10% of the held-out 10% are in.
        let held: Vec<&String> = users
            .iter()
            .filter(|u| is_held_out("cart", u, 1000))
            .collect();
        let both = held.iter().filter(|u| in_canary("cart", u, 1000)).count();
        let share = both as f64 / held.len() as f64;
        assert!((0.06..=0.14).contains(&share), "{share}");
        assert!(!in_canary("cart", "u1", 0));
    }
}
