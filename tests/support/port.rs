//! Free ports on 127.0.0.1 for the servers a test starts.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A port nothing listens on right now (the OS's pick on 127.0.0.1; a
/// process may still take it before the test binds it), and never one this
/// test process handed out before: the OS may pick a port it just released
/// again, and two workers of one test given the same port collide.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    // Hold every pick until a new one comes, so the OS cannot offer the
    // same one again.
    let mut held = Vec::new();
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
        let port = listener.local_addr().expect("its address").port();
        if given.insert(port) {
            return port;
        }
        held.push(listener);
        assert!(held.len() < 1000, "no new free port on 127.0.0.1");
    }
}
