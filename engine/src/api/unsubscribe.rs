//! The one-click unsubscribe pages: self-contained HTML (no external
//! resources), anything echoed escaped.

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\">\
<title>{title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}\
button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}</style>\
</head><body>{body}</body></html>\n"
    )
}

/// The page behind a `List-Unsubscribe` link: one button that POSTs the
/// same URL (the form has no `action`, so it posts where it was loaded
/// from), with the body RFC 8058 specifies. Loading it changes nothing,
/// so link scanners that fetch it do no harm.
pub fn confirm_page() -> String {
    page(
        "Unsubscribe",
        "<h1>Unsubscribe</h1><p>Stop receiving these emails?</p>\
<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
<button type=\"submit\">Unsubscribe</button></form>",
    )
}

/// The answer once unsubscribed.
pub fn done_page(category: &str) -> String {
    page(
        "Unsubscribed",
        &format!(
            "<h1>Unsubscribed</h1><p>You will no longer receive {} emails.</p>",
            escape(category)
        ),
    )
}

/// The answer for a forged, altered or unknown link.
pub fn unknown_page() -> String {
    page(
        "Unknown link",
        "<h1>Unknown link</h1><p>This unsubscribe link is not valid.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_it_echoes() {
        let p = done_page("<script>alert('x')</script>&");
        assert!(!p.contains("<script>"));
        assert!(p.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"));
    }

    #[test]
    fn pages_load_nothing_from_outside() {
        for p in [confirm_page(), done_page("news"), unknown_page()] {
            assert!(!p.contains("http"), "{p}");
            assert!(!p.contains("src="), "{p}");
        }
    }
}
