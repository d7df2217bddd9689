//! A webhook receiver on 127.0.0.1: an HTTP/1.1 server in threads of the
//! test, answering each request as the test's handler says and keeping
//! every request it got.
//!
//! Owns: accepting connections, reading requests (head and
//! `Content-Length` body), writing the handler's reply, the record of
//! requests. Stops accepting when dropped (connections being answered
//! finish on their own; each read waits at most 10 s, 30 s with
//! keep-alive). Knows nothing of signatures or of sluice's payloads: the
//! tests decide what a request means.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A request as the receiver read it, with the status it was answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it was read.
    pub at: Instant,
    /// When it was read, in milliseconds since the Unix epoch.
    pub unix_ms: i64,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    /// The first header called `name` (any case), or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: String::new(),
        }
    }
}

/// Decides the answer to a request, given every request answered before
/// it (in the order they were read).
pub type Handler = Box<dyn FnMut(&Request, &[Request]) -> Reply + Send>;

type Shared = Arc<(Mutex<Vec<Request>>, Mutex<Handler>)>;

/// A running receiver; stops accepting when dropped.
pub struct Receiver {
    pub port: u16,
    shared: Shared,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Answers every request with 200.
    pub fn ok() -> Receiver {
        Receiver::start(|_, _| Reply::status(200))
    }

    /// One request per connection, answered with `Connection: close`.
    pub fn start(handler: impl FnMut(&Request, &[Request]) -> Reply + Send + 'static) -> Receiver {
        Receiver::listen(Box::new(handler), false)
    }

    /// Any number of requests per connection (HTTP/1.1 keep-alive), as a
    /// pooling client sends them.
    pub fn keep_alive(
        handler: impl FnMut(&Request, &[Request]) -> Reply + Send + 'static,
    ) -> Receiver {
        Receiver::listen(Box::new(handler), true)
    }

    fn listen(handler: Handler, keep_alive: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener
            .local_addr()
            .expect("the receiver's address")
            .port();
        let shared: Shared = Arc::new((Mutex::new(Vec::new()), Mutex::new(handler)));
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = Arc::clone(&sh);
                std::thread::spawn(move || {
                    let _ = serve(conn, &sh, keep_alive);
                });
            }
        });
        Receiver { port, shared, stop }
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.0.lock().expect("the receiver's record").clone()
    }

    /// How many requests were answered so far.
    pub fn count(&self) -> usize {
        self.shared.0.lock().expect("the receiver's record").len()
    }

    /// (user, step) → every key it arrived with, from the JSON bodies'
    /// `user`, `step` and `key` (the crash tests' "never two keys").
    pub fn keys_by_user_step(&self) -> BTreeMap<(String, String), Vec<String>> {
        let mut m: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for r in self.requests() {
            if let Some(v) = r.json() {
                let get = |k: &str| v[k].as_str().unwrap_or("").to_owned();
                m.entry((get("user"), get("step")))
                    .or_default()
                    .push(get("key"));
            }
        }
        m
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads requests on `conn` and answers them, one or (keep-alive) until
/// the client closes.
fn serve(mut conn: TcpStream, shared: &Shared, keep_alive: bool) -> std::io::Result<()> {
    let wait = if keep_alive { 30 } else { 10 };
    conn.set_read_timeout(Some(Duration::from_secs(wait)))?;
    let mut raw: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // A client may send blank lines between requests.
        while raw.starts_with(b"\r\n") {
            raw.drain(..2);
        }
        let end = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if raw.len() > 1 << 20 {
                return Ok(());
            }
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_owned();
        let path = first.next().unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
            .min(1 << 24);
        raw.drain(..end + 4);
        while raw.len() < len {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            raw.extend_from_slice(&buf[..n]);
        }
        let body: Vec<u8> = raw.drain(..len).collect();
        let mut request = Request {
            at: Instant::now(),
            unix_ms: unix_millis(),
            method,
            path,
            headers,
            body,
            status: 0,
        };
        let reply = {
            let (record, handler) = &**shared;
            let mut record = record.lock().expect("the receiver's record");
            let reply = (handler.lock().expect("the receiver's handler"))(&request, &record);
            request.status = reply.status;
            record.push(request);
            reply
        };
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        if !keep_alive {
            out.push_str("Connection: close\r\n");
        }
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        conn.write_all(out.as_bytes())?;
        conn.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Milliseconds since the Unix epoch (webhook signatures are stamped with
/// the wall clock).
#[allow(clippy::disallowed_methods)]
pub fn unix_millis() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    i64::try_from(d.as_millis()).expect("milliseconds fit in i64")
}
