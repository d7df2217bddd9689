//! `sluice report` over a large report journal: writes RECORDS journal
//! records (entries, sends, conversions of 20 journey versions, as the
//! engine would) into a `SledStore`, reopens it, and reads the whole
//! report, then the report of its last tenth (`--since`). Prints records/s
//! and the process's peak memory, which must not grow with the journal
//! (the report streams a page at a time).
//!
//! ```sh
//! cargo bench -p engine --bench report_journal            # -- RECORDS
//! ```

use std::path::Path;
use std::time::Instant;

use engine::report::{report, Query};
use engine::store::journal::{Fact, Record, SendOutcome};
use engine::store::sled_store::{SledOptions, SledStore};
use engine::store::{Batch, Kv};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let records: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let config = journeys::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop"))
        .expect("the example shop is valid");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store");
    let start: i64 = 1_772_442_000_000;
    {
        let store = SledStore::open(&path, &SledOptions::default()).expect("open");
        let began = Instant::now();
        let mut b = Batch::default();
        for n in 0..records {
            let journey = format!("journey-{}", n % 10);
            let version = 1 + (n % 20 >= 10) as u32;
            let holdout = n % 7 == 0;
            let fact = match n % 4 {
                0 | 1 => Fact::Entered {
                    holdout,
                    goal: true,
                },
                2 => Fact::Send {
                    outcome: SendOutcome::Sent,
                },
                _ => Fact::Converted {
                    holdout,
                    entered_at: start + n as i64 * 10 - 5,
                },
            };
            let record = Record {
                journey,
                version,
                fact,
            };
            b.journal(start + n as i64 * 10, n + 1, &record)
                .expect("encode");
            if b.len() >= 10_000 {
                store.apply(std::mem::take(&mut b)).expect("apply");
            }
        }
        store.apply(b).expect("apply");
        store.flush().expect("flush");
        let secs = began.elapsed().as_secs_f64();
        println!(
            "wrote {records} journal records in {secs:.2}s ({:.0} records/s)",
            records as f64 / secs
        );
    }
    println!(
        "store on disk: {:.0} MiB ({:.0} bytes per record)",
        dir_bytes(&path) as f64 / (1 << 20) as f64,
        dir_bytes(&path) as f64 / records as f64
    );
    let store = SledStore::open(&path, &SledOptions::default()).expect("reopen");
    let rss_before = peak_rss_mib();
    for (what, since) in [
        ("whole journal", None),
        ("--since (last tenth)", Some(start + records as i64 * 9)),
    ] {
        let began = Instant::now();
        let mut read = 0;
        let r = report(
            &config,
            &store,
            Query {
                journey: None,
                since,
            },
            &mut |t| read = t.records,
        )
        .expect("report");
        let secs = began.elapsed().as_secs_f64();
        println!(
            "report, {what}: {read} records in {secs:.2}s ({:.0} records/s), {} rows",
            read as f64 / secs,
            r.rows.len()
        );
    }
    println!(
        "peak RSS {:.0} MiB (after writing and reopening: {rss_before:.0} MiB)",
        peak_rss_mib()
    );
}
