//! Writes a synthetic event file for the example shop:
//!
//! ```sh
//! cargo run --release -p shopgen -- 100000 1000000 > /tmp/shop-1m.jsonl
//! ```
//!
//! Arguments: users (default 100000), events (default 1000000), seed (42).

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let spec = shopgen::Spec::from_args(std::env::args().skip(1));
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let n = shopgen::generate(&spec, &mut out)?;
    out.flush()?;
    eprintln!("wrote {n} events for {} users", spec.users);
    Ok(())
}
