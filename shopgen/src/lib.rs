//! A deterministic generator of realistic event streams for the example
//! shop (`examples/shop`): users identify, sign up, browse in sessions,
//! fill and clear carts, order, get restock alerts; a few retried events
//! repeat their `id`; some users bring an order from months ago so they
//! lapse during the run. Used by the benchmarks and the e2e tests; a
//! development tool, not part of the engine (`publish = false`).

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::json;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

fn to_millis(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

fn format_ts(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A small, fast, seedable PRNG (xorshift64*), so the same seed gives the
/// same file on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    pub users: u64,
    /// Roughly how many events (the result is within a few percent).
    pub events: u64,
    pub start: DateTime<Utc>,
    pub days: u64,
    pub seed: u64,
}

impl Spec {
    /// `USERS EVENTS [SEED]` as given on a command line (the generator
    /// example and the benches); what is missing or not a number keeps its
    /// default.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Spec {
        let numbers: Vec<u64> = args.into_iter().filter_map(|a| a.parse().ok()).collect();
        let mut spec = Spec::default();
        if let Some(u) = numbers.first() {
            spec.users = *u;
        }
        if let Some(e) = numbers.get(1) {
            spec.events = *e;
        }
        if let Some(s) = numbers.get(2) {
            spec.seed = *s;
        }
        spec
    }
}

/// Generates into a file at `path`; returns how many events were written.
pub fn generate_file(spec: &Spec, path: &std::path::Path) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let n = generate(spec, &mut out)?;
    out.flush()?;
    Ok(n)
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            users: 100_000,
            events: 1_000_000,
            start: DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            days: 14,
            seed: 42,
        }
    }
}

const ZONES: &[(&str, u64)] = &[
    ("Europe/Berlin", 45),
    ("Europe/Vienna", 8),
    ("Europe/Zurich", 7),
    ("Europe/London", 8),
    ("America/New_York", 14),
    ("America/Los_Angeles", 5),
    ("Asia/Tokyo", 8),
    ("Australia/Sydney", 3),
    ("invalid/zone", 2),
];
const NAMES: &[&str] = &[
    "Ana", "Ben", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas",
];
const PRODUCTS: &[(&str, &str, f64)] = &[
    ("p-101", "Trail Runner 2", 119.0),
    ("p-102", "Merino Tee", 49.0),
    ("p-103", "Rain Shell", 159.0),
    ("p-104", "Wool Socks", 15.0),
    ("p-105", "Canvas Tote", 29.0),
    ("p-106", "Linen Shirt", 69.0),
];

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

fn zone(rng: &mut Rng) -> &'static str {
    let total: u64 = ZONES.iter().map(|(_, w)| w).sum();
    let mut x = rng.below(total);
    for (z, w) in ZONES {
        if x < *w {
            return z;
        }
        x -= w;
    }
    "UTC"
}

/// Generates the events of `spec`, sorted by `ts`, one JSON line each.
pub fn generate(spec: &Spec, out: &mut dyn Write) -> std::io::Result<u64> {
    let mut rng = Rng::new(spec.seed);
    let start = to_millis(spec.start);
    let span = (spec.days.max(1) * 86_400_000) as i64;
    // Sessions overshoot their budget by about a fifth.
    let per_user = (spec.events as f64 / spec.users.max(1) as f64 * 0.82).max(2.0);
    let mut lines: Vec<(Millis, String)> =
        Vec::with_capacity(spec.events as usize + spec.users as usize);
    let mut evt = 0u64;
    for u in 0..spec.users {
        let user = format!("u{u:07}");
        let plus = rng.chance(0.2);
        let ltv = if rng.chance(0.35) {
            (rng.below(90_000) as f64) / 100.0
        } else {
            0.0
        };
        let mut traits = json!({
            "first_name": pick(&mut rng, NAMES),
            "timezone": zone(&mut rng),
            "plan": if plus { "plus" } else { "free" },
            "lifetime_value": ltv,
            "newsletter_opt_in": rng.chance(0.4),
        });
        if rng.chance(0.95) {
            traits["email"] = json!(format!("{user}@example.com"));
        }
        if rng.chance(0.6) {
            traits["push_tokens"] = json!([format!("tok-{user}")]);
        }
        if rng.chance(0.03) {
            traits["subscriptions"] = json!({"marketing": false});
        }
        let mut t = start + rng.below(span as u64 / 2) as i64;
        // Some customers ordered months ago: they lapse during the run.
        if ltv > 0.0 && rng.chance(0.15) {
            let ago = (80 + rng.below(20)) as i64 * 86_400_000;
            let at = t - ago;
            lines.push((
                at - 60_000,
                json!({"type":"identify","user":user,"ts":format_ts(at - 60_000),"traits":traits})
                    .to_string(),
            ));
            evt += 1;
            lines.push((
                at,
                json!({"type":"track","user":user,"ts":format_ts(at),"id":format!("e{evt}"),"event":"order_completed",
                       "props":{"order_id":format!("o{evt}"),"cart_id":format!("c{evt}"),"total":ltv,"currency":"EUR"}})
                .to_string(),
            ));
        } else {
            lines.push((
                t,
                json!({"type":"identify","user":user,"ts":format_ts(t),"traits":traits})
                    .to_string(),
            ));
        }
        let mut budget = per_user - 1.0 + (rng.below(100) as f64 / 100.0 - 0.5);
        let mut track = |rng: &mut Rng,
                         t: Millis,
                         name: &str,
                         props: serde_json::Value,
                         lines: &mut Vec<(Millis, String)>| {
            evt += 1;
            let line = json!({"type":"track","user":user,"ts":format_ts(t),"id":format!("e{evt}"),"event":name,"props":props}).to_string();
            // A client retry: the same event id again, a little later.
            if rng.chance(0.01) {
                lines.push((t + 2_000, line.clone()));
            }
            lines.push((t, line));
        };
        if rng.chance(0.3) {
            t += 60_000;
            let source = *pick(&mut rng, &["organic", "instagram", "newsletter-footer"]);
            track(
                &mut rng,
                t,
                "signed_up",
                json!({ "source": source }),
                &mut lines,
            );
            budget -= 1.0;
        }
        let mut cart = 0u64;
        while budget > 0.0 {
            // A session: a few views, maybe a cart, maybe an order.
            t += (rng.below(36 * 3_600) as i64 + 600) * 1_000;
            if t >= start + span {
                break;
            }
            let views = 1 + rng.below(4);
            for _ in 0..views {
                let (pid, _, _) = pick(&mut rng, PRODUCTS);
                t += (20 + rng.below(200) as i64) * 1_000;
                track(
                    &mut rng,
                    t,
                    "product_viewed",
                    json!({"product_id": pid}),
                    &mut lines,
                );
                budget -= 1.0;
            }
            if rng.chance(0.6) {
                cart += 1;
                let cart_id = format!("c-{user}-{cart}");
                let mut value = 10.0 + rng.below(20_000) as f64 / 100.0;
                for _ in 0..(1 + rng.below(2)) {
                    t += (30 + rng.below(600) as i64) * 1_000;
                    value += rng.below(3_000) as f64 / 100.0;
                    track(
                        &mut rng,
                        t,
                        "cart_updated",
                        json!({"cart_id": cart_id, "cart_value": value}),
                        &mut lines,
                    );
                    budget -= 1.0;
                }
                if rng.chance(0.35) {
                    t += (60 + rng.below(7_200) as i64) * 1_000;
                    track(
                        &mut rng,
                        t,
                        "order_completed",
                        json!({"order_id": format!("o-{user}-{cart}"), "cart_id": cart_id, "total": value, "currency": "EUR"}),
                        &mut lines,
                    );
                    budget -= 1.0;
                } else if rng.chance(0.1) {
                    t += (60 + rng.below(3_600) as i64) * 1_000;
                    track(
                        &mut rng,
                        t,
                        "cart_cleared",
                        json!({"cart_id": cart_id}),
                        &mut lines,
                    );
                    budget -= 1.0;
                }
            }
            if rng.chance(0.08) {
                let (pid, name, price) = pick(&mut rng, PRODUCTS);
                t += (rng.below(86_400) as i64) * 1_000;
                track(
                    &mut rng,
                    t,
                    "back_in_stock",
                    json!({"alert_id": format!("a-{user}-{pid}"), "product_id": pid, "product_name": name, "price": price}),
                    &mut lines,
                );
                budget -= 1.0;
            }
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    let n = lines.len() as u64;
    for (_, l) in lines {
        out.write_all(l.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(n)
}
