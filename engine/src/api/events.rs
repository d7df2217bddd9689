//! `POST /v1/events` bodies: a JSON array of FORMAT.md §4 events, or JSON
//! lines (empty lines skipped). Each bad element or line is reported with
//! its 1-based position and never stops the good ones. A leading UTF-8
//! byte order mark is skipped.

use serde::Serialize;
use serde_json::Value;

use journeys::event::Event;

use super::error::Error;

/// One refused line (or array element).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// At most this many refused lines are listed in an answer; the others
/// are only counted (`errors_omitted`). Without a cap a 10 MB body of
/// one-byte bad lines would be answered with hundreds of MB, built in
/// memory first.
pub const MAX_LISTED_ERRORS: usize = 1_000;

/// The events of a body, and the lines refused: the first
/// [`MAX_LISTED_ERRORS`] listed, the rest counted in `omitted`.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub errors: Vec<LineError>,
    pub omitted: usize,
}

impl Parsed {
    pub(crate) fn push(&mut self, line: usize, r: Result<Event, String>) {
        match r {
            Ok(e) => self.events.push(e),
            Err(_) if self.errors.len() >= MAX_LISTED_ERRORS => self.omitted += 1,
            Err(message) => self.errors.push(LineError { line, message }),
        }
    }

    /// How many lines were refused, listed or not.
    pub fn refused(&self) -> usize {
        self.errors.len() + self.omitted
    }
}

/// Parses a body of events. Only a body that claims to be a JSON array
/// and is not one is refused whole.
pub fn parse(body: &[u8]) -> Result<Parsed, Error> {
    let body = super::body::without_bom(body);
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let mut parsed = Parsed::default();
    match start.map(|i| body[i]) {
        None => Ok(parsed),
        Some(b'[') => {
            let items: Vec<Value> = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("invalid JSON array: {e}")))?;
            for (i, item) in items.into_iter().enumerate() {
                parsed.push(i + 1, Event::from_json(item).map_err(|e| e.to_string()));
            }
            Ok(parsed)
        }
        Some(b'{') if single_object(body) => {
            // One event, possibly spread over several lines.
            let item: Value = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("invalid JSON: {e}")))?;
            parsed.push(1, Event::from_json(item).map_err(|e| e.to_string()));
            Ok(parsed)
        }
        Some(_) => {
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let r = std::str::from_utf8(line)
                    .map_err(|_| "invalid UTF-8".to_owned())
                    .and_then(|s| Event::from_line(s).map_err(|e| e.to_string()));
                parsed.push(i + 1, r);
            }
            Ok(parsed)
        }
    }
}

/// Whether a body starting with `{` holds exactly one JSON value.
fn single_object(body: &[u8]) -> bool {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    matches!(values.next(), Some(Ok(Value::Object(_)))) && values.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"type":"track","user":"u1","event":"a","ts":"2026-03-02T09:00:00Z"}"#;

    #[test]
    fn jsonl_lines_are_numbered_from_one_and_empty_lines_skipped() {
        let body = format!("{GOOD}\n\n{{\"type\":\"track\"}}\r\n{GOOD}\nnot json\n");
        let p = parse(body.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 2);
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 5]);
    }

    #[test]
    fn array_positions() {
        let body = format!("[{GOOD}, 3, {GOOD}, {{\"type\":\"track\",\"user\":\"u\",\"ts\":\"2026-03-02T09:00:00Z\"}}]");
        let p = parse(body.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(
            p.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 4]
        );
        assert!(p.errors[1].message.contains("event"), "{:?}", p.errors);
    }

    #[test]
    fn a_broken_array_is_refused_whole() {
        assert!(matches!(parse(b"[{\"a\":1},"), Err(Error::BadRequest(_))));
    }

    #[test]
    fn one_pretty_printed_object() {
        let body = "{\n \"type\": \"identify\",\n \"user\": \"u1\",\n \"ts\": \"2026-03-02T09:00:00Z\"\n}\n";
        let p = parse(body.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 1);
        assert!(p.errors.is_empty());
    }

    #[test]
    fn refused_lines_past_the_cap_are_counted_not_listed() {
        let extra = 7;
        let mut body = "x\n".repeat(MAX_LISTED_ERRORS + extra);
        body.push_str(GOOD);
        let p = parse(body.as_bytes()).unwrap();
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.errors.len(), MAX_LISTED_ERRORS);
        assert_eq!(p.errors.last().map(|e| e.line), Some(MAX_LISTED_ERRORS));
        assert_eq!(p.omitted, extra);
        assert_eq!(p.refused(), MAX_LISTED_ERRORS + extra);
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let lines = format!("\u{feff}{GOOD}\r\n{GOOD}\r\n");
        let array = format!("\u{feff}[{GOOD}]");
        let one = format!("\u{feff}{GOOD}");
        for (body, n) in [(lines, 2), (array, 1), (one, 1)] {
            let p = parse(body.as_bytes()).unwrap();
            assert!(p.errors.is_empty(), "{body:?}: {:?}", p.errors);
            assert_eq!(p.events.len(), n, "{body:?}");
        }
        let p = parse("\u{feff}".as_bytes()).unwrap();
        assert!(p.events.is_empty() && p.errors.is_empty());
    }

    #[test]
    fn empty_body_has_no_events() {
        let p = parse(b"  \n").unwrap();
        assert!(p.events.is_empty() && p.errors.is_empty());
    }
}
