//! Reading request bodies: the content type, a size limit on the body as
//! received and on the body once inflated (gzip is inflated as a stream
//! and stopped at the limit, never inflated whole), and a deadline for
//! clients that send slowly.

use std::io::Read;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::HeaderMap;
use http_body_util::BodyExt;

use super::error::Error;

/// The content types ingest routes take (or none at all).
const TEXT_TYPES: [&str; 4] = [
    "application/json",
    "application/x-ndjson",
    "application/jsonl",
    "text/plain",
];

/// A body without its UTF-8 byte order mark, if it starts with one: some
/// Windows tools write one, and JSON parsers refuse it.
pub(crate) fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body)
}

/// Refuses a content type other than JSON, JSON lines or text.
pub(crate) fn check_text(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    let essence = value.split(';').next().unwrap_or_default().trim();
    if TEXT_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
        Ok(())
    } else {
        Err(Error::ContentType(printable(essence)))
    }
}

/// A header value safe to echo in a message: short, printable ASCII.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(100)
        .collect()
}

/// Reads the body as received, at most `max` bytes, within `timeout`.
pub(crate) async fn read_raw(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, Error> {
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        let len = std::str::from_utf8(len.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| Error::BadRequest("invalid Content-Length".into()))?;
        if len > max as u64 {
            return Err(Error::TooLarge { limit: max });
        }
    }
    match tokio::time::timeout(timeout, collect(body, max)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(timeout.as_millis())),
    }
}

async fn collect(mut body: Body, max: usize) -> Result<Bytes, Error> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(Error::TooLarge { limit: max });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Whether the body comes gzip-compressed; refuses other encodings.
pub(crate) fn gzipped(headers: &HeaderMap) -> Result<bool, Error> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(false);
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
        Ok(true)
    } else {
        Err(Error::Encoding(printable(value)))
    }
}

/// Inflates a gzip body, refusing it as soon as it passes `max` bytes.
pub(crate) fn gunzip(raw: &[u8], max: usize) -> Result<Bytes, Error> {
    let decoder = flate2::read::MultiGzDecoder::new(raw);
    let mut out = Vec::new();
    // One byte past the limit is enough to know it is too large.
    decoder
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Gzip(e.to_string()))?;
    if out.len() > max {
        return Err(Error::TooLarge { limit: max });
    }
    Ok(Bytes::from(out))
}

/// Reads, and inflates when gzipped, a request body: both the body as
/// received and the inflated body are limited to `max` bytes.
pub(crate) async fn read(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    timeout: Duration,
) -> Result<(Bytes, Bytes), Error> {
    let gzip = gzipped(headers)?;
    let raw = read_raw(body, headers, max, timeout).await?;
    if !gzip {
        return Ok((raw.clone(), raw));
    }
    let wire = raw.clone();
    // Inflating up to 10 MB is CPU work: off the async workers.
    let inflated = tokio::task::spawn_blocking(move || gunzip(&raw, max))
        .await
        .map_err(|e| Error::Body(e.to_string()))??;
    Ok((wire, inflated))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_within_and_past_the_limit() {
        let body = gz(b"hello");
        assert_eq!(&gunzip(&body, 5).unwrap()[..], b"hello");
        assert!(matches!(
            gunzip(&body, 4),
            Err(Error::TooLarge { limit: 4 })
        ));
        assert!(matches!(gunzip(b"not gzip", 100), Err(Error::Gzip(_))));
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(check_text(&h).is_ok());
        h.insert(
            CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(check_text(&h).is_ok());
        h.insert(CONTENT_TYPE, "Application/X-NDJSON".parse().unwrap());
        assert!(check_text(&h).is_ok());
        h.insert(CONTENT_TYPE, "application/xml".parse().unwrap());
        assert!(matches!(check_text(&h), Err(Error::ContentType(t)) if t == "application/xml"));
    }
}
