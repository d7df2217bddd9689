//! Writes a synthetic event file for the example shop:
//!
//! ```sh
//! cargo run --release -p engine --example gen-shop-events -- 100000 1000000 > /tmp/shop-1m.jsonl
//! ```
//!
//! Arguments: users (default 100000), events (default 1000000), seed (42).

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mut spec = engine::generate::Spec::default();
    if let Some(u) = args.first() {
        spec.users = *u;
    }
    if let Some(e) = args.get(1) {
        spec.events = *e;
    }
    if let Some(s) = args.get(2) {
        spec.seed = *s;
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let n = engine::generate::generate(&spec, &mut out)?;
    out.flush()?;
    eprintln!("wrote {n} events for {} users", spec.users);
    Ok(())
}
