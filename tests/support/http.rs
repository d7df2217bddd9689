//! A small HTTP/1.1 client over a plain `TcpStream` on 127.0.0.1.
//!
//! Owns: writing a request exactly as given (so tests can send malformed
//! or oversized ones), reading one answer (its head, then `Content-Length`
//! bytes or everything to the close, chunked bodies decoded). Every
//! request is one connection; nothing is left open when a call returns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// How long a request may take to write, and an answer to arrive.
const TIMEOUT: Duration = Duration::from_secs(15);

/// `Bearer {token}`, for an `Authorization` header.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body's bytes (chunked encoding removed).
    pub body: Vec<u8>,
    /// The body as text (invalid UTF-8 replaced).
    pub text: String,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics naming the status and body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }
}

/// `method path` with `Host`, `Connection: close`, `Content-Length` and
/// `headers`, then `body`; the answer.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    send_raw(port, &head, body)
}

/// [`try_request`], panicking (naming the request) when it fails.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on 127.0.0.1:{port}: {e}"))
}

/// Sends `head` (which must end with the blank line) and `body` as they
/// are, and reads the answer: the head, then as many bytes as
/// `Content-Length` says (a server may keep the connection open) or
/// everything until it closes.
pub fn send_raw(port: u16, head: &str, body: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(invalid(
                "the connection closed before the end of the headers",
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let value = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let chunked = value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = value("content-length").and_then(|v| v.parse::<usize>().ok());
    let body = if chunked {
        // To the last chunk (the server may keep the connection open).
        loop {
            if let Some(body) = dechunk(&raw[end + 4..])? {
                break body;
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(invalid("the connection closed inside a chunked body"));
            }
            raw.extend_from_slice(&buf[..n]);
        }
    } else if let Some(len) = length {
        while raw.len() < end + 4 + len {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        raw.truncate(end + 4 + len);
        raw[end + 4..].to_vec()
    } else {
        s.read_to_end(&mut raw)?;
        raw[end + 4..].to_vec()
    };
    Ok(Response {
        status,
        headers,
        text: String::from_utf8_lossy(&body).into_owned(),
        body,
    })
}

/// The data of a chunked body, `None` while its last chunk has not
/// arrived yet.
fn dechunk(mut rest: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)
            .map_err(|_| invalid("bad chunk size"))?;
        rest = &rest[nl + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        let Some(chunk) = rest.get(..size) else {
            return Ok(None);
        };
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}
