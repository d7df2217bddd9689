//! What the cluster tests share: connecting to a NATS deployment that may
//! still be electing its leaders, and the workers' logs on request.

use std::time::Duration;

use engine::cluster::{Cluster, Settings};

/// Connects, retrying while a new JetStream cluster elects its leaders.
pub async fn connect(s: Settings) -> Cluster {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match Cluster::connect(s.clone()).await {
                Ok(c) => return c,
                Err(e) if e.is_unavailable() => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("connect: {e}"),
            }
        }
    })
    .await
    .expect("NATS answers within 30 s")
}

/// With `SLUICE_TEST_LOG` set (a tracing filter, e.g.
/// `engine::cluster=debug`), the workers' events go to the test's output.
pub fn log_to_stderr() {
    if let Ok(filter) = std::env::var("SLUICE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
