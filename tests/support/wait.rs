//! Waiting with a deadline: polling a condition until it holds, and
//! failing the test (naming what it waited for) when time runs out.

use std::time::{Duration, Instant};

/// Polls `f` every 20 ms until it returns `Some`, and returns that;
/// panics with "timed out waiting for {what}" after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_for(limit, Duration::from_millis(20), what, f)
}

/// [`wait_for`], polling every `every` (for conditions that are costly to
/// check, such as running a command).
pub fn poll_for<T>(
    limit: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// Polls `f` every `every` until it holds; panics after `limit` like
/// [`wait_for`].
pub fn until(limit: Duration, every: Duration, what: &str, mut f: impl FnMut() -> bool) {
    poll_for(limit, every, what, || f().then_some(()));
}
