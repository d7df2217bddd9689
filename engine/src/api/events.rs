//! `POST /v1/events` bodies: a JSON array of FORMAT.md §4 events, or JSON
//! lines (empty lines skipped). Each bad element or line is reported with
//! its 1-based position and never stops the good ones; a line that is not
//! an event's shape says where, as `at line L column C` with L the body's
//! line (serde alone would say line 1 of every line). A leading UTF-8 byte
//! order mark is skipped.

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
            // One event, possibly spread over several lines: positions are
            // the body's.
            let r = std::str::from_utf8(body)
                .map_err(|_| "invalid UTF-8".to_owned())
                .and_then(|s| event_at(s, 1));
            parsed.push(1, r);
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
                    .and_then(|s| event_at(s, i + 1));
                parsed.push(i + 1, r);
            }
            Ok(parsed)
        }
    }
}

/// Parses and checks the event in `text`, whose first line is the body's
/// line `first_line` (1-based): a shape error says the body's line and the
/// column within that line.
fn event_at(text: &str, first_line: usize) -> Result<Event, String> {
    let event: Event = serde_json::from_str(text).map_err(|e| {
        let said = e.to_string();
        let shape = match e.line() {
            0 => said,
            line => {
                let serde_at = format!(" at line {line} column {}", e.column());
                let what = said.strip_suffix(&serde_at).unwrap_or(&said);
                format!(
                    "{what} at line {} column {}",
                    first_line + line - 1,
                    e.column()
                )
            }
        };
        journeys::event::EventError::Shape(shape).to_string()
    })?;
    event.check().map_err(|e| e.to_string())?;
    Ok(event)
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

    /// RUN.md §2: per-line errors with line numbers. serde says `line 1`
    /// of every line; the message says the body's line, and the column
    /// within it, whether the line came alone (a single object: what
    /// `send-events --batch 1` posts) or among others.
    #[test]
    fn a_shape_error_says_the_body_line_and_the_column_within_it() {
        let bad = r#"{"type":"track","user":"u1","event":"a"}"#;
        let missing = "invalid event: missing field `ts` at line";
        let column = bad.chars().count();
        let body = format!("{GOOD}\n\n{bad}\n");
        let p = parse(body.as_bytes()).unwrap();
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        assert_eq!(p.errors[0].line, 3);
        assert_eq!(
            p.errors[0].message,
            format!("{missing} 3 column {column}"),
            "{:?}",
            p.errors
        );
        let alone = parse(bad.as_bytes()).unwrap();
        assert_eq!(alone.errors.len(), 1, "{:?}", alone.errors);
        assert_eq!(alone.errors[0].line, 1);
        assert_eq!(
            alone.errors[0].message,
            format!("{missing} 1 column {column}")
        );
        // A pretty-printed object: the body's line and column.
        let pretty = "{\n \"type\": \"track\",\n \"user\": 7\n}\n";
        let p = parse(pretty.as_bytes()).unwrap();
        assert!(
            p.errors[0].message.ends_with("at line 3 column 10"),
            "{:?}",
            p.errors
        );
        // Not JSON at all: still the body's line.
        let p = parse(format!("{GOOD}\nnot json\n").as_bytes()).unwrap();
        assert!(
            p.errors[0].message.ends_with("at line 2 column 2"),
            "{:?}",
            p.errors
        );
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
