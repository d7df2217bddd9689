//! Who may call a route: bearer tokens (and Segment's write key as the
//! Basic-auth username), compared in constant time. Nothing here logs.

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::Tokens;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The ingest token or the admin token.
    Ingest,
    /// Only the admin token.
    Admin,
}

/// Constant-time equality (for equal lengths; lengths are not secret). An
/// empty expected token never matches: there is no open port.
pub(crate) fn same(given: &[u8], expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.ct_eq(expected.as_bytes()))
}

fn credential(headers: &HeaderMap, basic: bool) -> Option<Vec<u8>> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = split_scheme(value)?;
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(rest.to_vec());
    }
    if basic && scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        // Segment sends `write_key:` (the key as username, no password).
        let user = match decoded.iter().position(|&b| b == b':') {
            Some(i) => decoded[..i].to_vec(),
            None => decoded,
        };
        return Some(user);
    }
    None
}

fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|&b| b == b' ')?;
    let rest = value[space..].trim_ascii();
    Some((&value[..space], rest))
}

/// Whether the request carries a token good for `access`. With `basic`,
/// the token may also be the Basic-auth username (Segment's write key).
pub(crate) fn allowed(tokens: &Tokens, headers: &HeaderMap, access: Access, basic: bool) -> bool {
    let Some(given) = credential(headers, basic) else {
        return false;
    };
    let admin = same(&given, &tokens.admin);
    match access {
        Access::Admin => admin,
        // Both comparisons run whatever the first one answered.
        Access::Ingest => same(&given, &tokens.ingest) | admin,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            ingest: "in-tok".into(),
            admin: "ad-tok".into(),
            segment_secret: None,
        }
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_tokens_by_access() {
        let t = tokens();
        assert!(allowed(&t, &with("Bearer in-tok"), Access::Ingest, false));
        assert!(allowed(&t, &with("bearer ad-tok"), Access::Ingest, false));
        assert!(allowed(&t, &with("Bearer ad-tok"), Access::Admin, false));
        assert!(!allowed(&t, &with("Bearer in-tok"), Access::Admin, false));
        assert!(!allowed(&t, &with("Bearer in-to"), Access::Ingest, false));
        assert!(!allowed(&t, &with("Bearer"), Access::Ingest, false));
        assert!(!allowed(&t, &HeaderMap::new(), Access::Ingest, false));
    }

    #[test]
    fn basic_username_only_where_allowed() {
        let t = tokens();
        let b = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("in-tok:")
        );
        assert!(allowed(&t, &with(&b), Access::Ingest, true));
        assert!(!allowed(&t, &with(&b), Access::Ingest, false));
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("x:in-tok")
        );
        assert!(!allowed(&t, &with(&wrong), Access::Ingest, true));
        assert!(!allowed(&t, &with("Basic !!!"), Access::Ingest, true));
    }

    #[test]
    fn an_empty_token_never_matches() {
        let t = Tokens {
            ingest: String::new(),
            admin: "ad".into(),
            segment_secret: None,
        };
        assert!(!allowed(&t, &with("Bearer "), Access::Ingest, false));
    }
}
