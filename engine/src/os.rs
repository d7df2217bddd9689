//! The operating system's reasons for a failed file or socket operation,
//! in words: users read "no such file or directory", not `os error 2`.

/// The OS's text for `e` without its ` (os error N)` suffix.
pub fn reason(e: &std::io::Error) -> String {
    without_code(&e.to_string()).to_owned()
}

/// `text` (an I/O error's message, or one that ends with one) without the
/// ` (os error N)` the standard library appends.
pub fn without_code(text: &str) -> &str {
    match text.rfind(" (os error ") {
        Some(at)
            if text.ends_with(')')
                && text[at + 11..text.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
        {
            &text[..at]
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_number_is_dropped_and_nothing_else() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(reason(&e), "No such file or directory");
        assert_eq!(
            without_code("cannot open x: Permission denied (os error 13)"),
            "cannot open x: Permission denied"
        );
        assert_eq!(without_code("no code here"), "no code here");
        assert_eq!(without_code("odd (os error x)"), "odd (os error x)");
        assert_eq!(without_code(""), "");
    }
}
