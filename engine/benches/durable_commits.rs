//! Durable commits per second on their own: a `SledStore` with
//! `sync_commits` (what `sluice run` acknowledges on: every commit's frame
//! fsynced before it is applied), each commit carrying `USERS` user records
//! of about 1 KiB and a few timers, as a group commit of that many events
//! would. Prints commits/s and records/s.
//!
//! ```sh
//! cargo bench -p engine --bench durable_commits            # -- SECONDS USERS
//! ```

use std::time::{Duration, Instant};

use engine::store::sled_store::{SledOptions, SledStore};
use engine::store::{Batch, Kv};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    for users in [1usize, 10, 100, 1_000] {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SledStore::open(
            &dir.path().join("store"),
            &SledOptions {
                sync_commits: true,
                ..SledOptions::default()
            },
        )
        .expect("open");
        let began = Instant::now();
        let mut commits = 0u64;
        let mut n = 0u64;
        while began.elapsed() < Duration::from_secs(seconds) {
            let mut b = Batch::default();
            for _ in 0..users {
                n += 1;
                let mut k = vec![b'u'];
                k.extend_from_slice(format!("user-{}", n % 100_000).as_bytes());
                b.put_blob(k, vec![(n % 251) as u8; 1_024]);
                let mut t = vec![b't'];
                t.extend_from_slice(&n.to_be_bytes());
                b.put(t, vec![1; 40]);
            }
            store.apply(b).expect("commit");
            commits += 1;
        }
        let secs = began.elapsed().as_secs_f64();
        println!(
            "{users:>5} records/commit: {:>8.0} durable commits/s, {:>9.0} records/s",
            commits as f64 / secs,
            (commits * users as u64) as f64 / secs
        );
    }
}
