//! Escaping for the console's HTML and SVG: every text that did not come
//! from this module's own literals goes through [`Esc`], in element content
//! and in quoted attribute values alike. Also the page shell (head, nav)
//! every console page shares. Knows nothing of the engine.

use std::fmt::{self, Display, Write as _};

/// Text escaped for HTML/XML content and double- or single-quoted
/// attribute values.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

/// A component of a URL path or query, percent-encoded (then still to be
/// escaped with [`Esc`] inside an attribute).
pub struct Url<'a>(pub &'a str);

impl Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// Which section of the console a page belongs to (highlighted in the nav).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Journeys,
    Users,
    DeadLetters,
    /// The login page: no navigation.
    Login,
}

/// A whole page: the shell around `body` (already escaped HTML).
pub fn page(title: &str, section: Section, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · sluice console</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head><body>",
        Esc(title)
    );
    if section != Section::Login {
        let cls = |s: Section| if s == section { " class=\"here\"" } else { "" };
        let _ = write!(
            out,
            "<header><nav><span class=\"brand\">sluice</span>\
             <a href=\"/\"{}>Journeys</a>\
             <a href=\"/users\"{}>User lookup</a>\
             <a href=\"/dlq\"{}>Dead letters</a>\
             <form method=\"post\" action=\"/logout\" class=\"logout\">\
             <button type=\"submit\">Log out</button></form></nav>\
             <p class=\"readonly\">Read-only: every change goes through the CLI and Git.</p></header>",
            cls(Section::Journeys),
            cls(Section::Users),
            cls(Section::DeadLetters),
        );
    }
    out.push_str("<main>");
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            Esc("<script>alert(1)</script>").to_string(),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(Esc("a\"b'c&d").to_string(), "a&quot;b&#39;c&amp;d");
        assert_eq!(Esc("héllo").to_string(), "héllo");
    }

    #[test]
    fn url_components_are_percent_encoded() {
        assert_eq!(Url("a b/<c>").to_string(), "a%20b%2F%3Cc%3E");
        assert_eq!(Url("é").to_string(), "%C3%A9");
    }

    #[test]
    fn the_title_is_escaped_in_the_shell() {
        let p = page("<b>", Section::Login, "");
        assert!(p.contains("&lt;b&gt; · sluice console"));
        assert!(!p.contains("Log out"));
        assert!(page("x", Section::Users, "").contains("Log out"));
    }
}
