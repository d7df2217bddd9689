//! What the `sluice run` load generators share (`ingest`, `cluster_run`):
//! a keep-alive HTTP/1.1 client connection, a webhook receiver, a copy of a
//! config repository pointed at the receiver, `shopgen` events, and a
//! process's CPU time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    pub fn open(port: u16) -> Option<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_nodelay(true).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        Some(Conn {
            w: s.try_clone().ok()?,
            r: BufReader::new(s),
        })
    }

    /// One keep-alive request; the status.
    pub fn post(&mut self, path: &str, token: &str, body: &[u8]) -> Option<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\
             content-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.w.write_all(head.as_bytes()).ok()?;
        self.w.write_all(body).ok()?;
        let mut status = String::new();
        self.r.read_line(&mut status).ok()?;
        let code = status.split(' ').nth(1)?.parse().ok()?;
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).ok()?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().ok()?;
                }
            }
        }
        let mut b = vec![0u8; len];
        self.r.read_exact(&mut b).ok()?;
        Some(code)
    }
}

/// What the receiver does with each request body it has read whole.
pub type OnRequest = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// An HTTP/1.1 keep-alive receiver on 127.0.0.1 (a thread per connection)
/// answering every request 200 after handing its body to `on_request`.
pub fn receiver(on_request: OnRequest) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
    let port = l.local_addr().expect("receiver address").port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let on_request = Arc::clone(&on_request);
            std::thread::spawn(move || {
                let _ = c.set_nodelay(true);
                let Ok(w) = c.try_clone() else { return };
                let mut conn = Conn {
                    r: BufReader::new(c),
                    w,
                };
                loop {
                    let mut len = 0usize;
                    let mut any = false;
                    loop {
                        let mut line = String::new();
                        match conn.r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" && any {
                            break;
                        }
                        any = true;
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                let Ok(n) = v.trim().parse() else { return };
                                len = n;
                            }
                        }
                    }
                    let mut b = vec![0u8; len];
                    if conn.r.read_exact(&mut b).is_err() {
                        return;
                    }
                    on_request(&b);
                    if conn
                        .w
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Copies a config repository, pointing its `https://crm.example.com`
/// webhooks at the local receiver.
pub fn copy(from: &Path, to: &Path, hook: u16) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read").flatten() {
        let name = e.file_name();
        if name == ".sluice" {
            continue;
        }
        let target = to.join(&name);
        if e.path().is_dir() {
            copy(&e.path(), &target, hook);
        } else {
            let text = std::fs::read(e.path()).expect("read");
            let text = String::from_utf8_lossy(&text).replace(
                "https://crm.example.com",
                &format!("http://127.0.0.1:{hook}"),
            );
            std::fs::write(target, text).expect("write");
        }
    }
}

/// The CPU seconds (user + system) a process has used, from
/// `/proc/{pid}/stat` (fields 14 and 15, in clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name may hold spaces: count fields after its `)`.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// `shopgen` events, one JSON line (with its newline) each.
pub fn shop_events(users: u64, events: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    shopgen::generate(
        &shopgen::Spec {
            users,
            events,
            ..shopgen::Spec::default()
        },
        &mut out,
    )
    .expect("generate events");
    out.split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}
