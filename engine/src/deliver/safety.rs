//! What a rendered value must not carry before it becomes a header, an
//! address, a URL or a file name. Templates render user data, so a
//! subject like `"Hi\r\nBcc: everyone@example.com"` is an injection, not
//! a typo: it fails the message permanently with a reason that names the
//! field, and nothing reaches the wire or the disk.

use super::Failure;

/// The first character that may not appear in a single-line value:
/// every Unicode control character (CR, LF, TAB, NUL, DEL, C1 controls…)
/// and the Unicode line and paragraph separators.
fn forbidden(value: &str) -> Option<(usize, char)> {
    value
        .char_indices()
        .find(|&(_, c)| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

fn describe(c: char) -> String {
    match c {
        '\r' => "a carriage return (CR)".into(),
        '\n' => "a line feed (LF)".into(),
        '\t' => "a tab".into(),
        '\0' => "a NUL byte".into(),
        c => format!("the control character U+{:04X}", u32::from(c)),
    }
}

/// A single-line value (subject, display name, header value): no control
/// characters at all.
pub fn single_line(field: &str, value: &str) -> Result<(), Failure> {
    match forbidden(value) {
        None => Ok(()),
        Some((at, c)) => Err(Failure::permanent(format!(
            "{field} contains {} at byte {at}; refused so it cannot inject headers",
            describe(c)
        ))),
    }
}

/// An HTTP header name: RFC 9110 token characters only.
pub fn header_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        });
    if ok {
        Ok(())
    } else {
        Err(Failure::permanent(format!(
            "header name {:?} is not a valid HTTP token (letters, digits and !#$%&'*+-.^_`|~ only)",
            name.escape_debug().to_string()
        )))
    }
}

/// A URL as rendered, checked before any parser sees it: URL parsers
/// silently drop tabs and newlines, which would hide an injection. Also
/// refuses spaces, which a rendered URL never needs (encode them).
pub fn url(field: &str, value: &str) -> Result<(), Failure> {
    single_line(field, value)?;
    if let Some(at) = value.find(' ') {
        return Err(Failure::permanent(format!(
            "{field} contains a space at byte {at}; encode it as %20"
        )));
    }
    Ok(())
}

/// A message key, used as a file name and in headers: ASCII letters,
/// digits, `-` and `_`, at most 128 bytes.
pub fn key(key: &str) -> Result<(), Failure> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Failure::permanent(format!(
            "message key {:?} is not 1-128 ASCII letters, digits, '-' or '_'",
            key.escape_debug().to_string()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_with_their_position() {
        for (value, what) in [
            ("Hi\r\nBcc: x@y", "carriage return"),
            ("Hi\nthere", "line feed"),
            ("a\tb", "tab"),
            ("nul\0", "NUL"),
            ("del\u{7f}", "U+007F"),
            ("c1\u{85}", "U+0085"),
            ("ls\u{2028}", "U+2028"),
        ] {
            let e = single_line("subject", value).expect_err(value);
            assert!(e.is_permanent());
            assert!(e.reason.starts_with("subject contains"), "{}", e.reason);
            assert!(e.reason.contains(what), "{} / {what}", e.reason);
        }
        single_line("subject", "Zoë, ton panier 🛒 t'attend").expect("plain UTF-8 is fine");
    }

    #[test]
    fn header_names_urls_and_keys() {
        header_name("X-Source").expect("token");
        for bad in ["", "X Source", "X-A:b", "X-\r\nB", "Ü"] {
            assert!(header_name(bad).is_err(), "{bad:?}");
        }
        url("url", "https://x.example/a?b=%20").expect("url");
        assert!(url("url", "https://x.example/\r\nHost: evil").is_err());
        assert!(url("url", "https://x.example/a b").is_err());
        assert!(url("url", "https://x.\texample/").is_err());
        key("0123abcdef").expect("hex key");
        for bad in ["", "../etc", "a/b", "a.b", &"k".repeat(129)] {
            assert!(key(bad).is_err(), "{bad:?}");
        }
    }
}
