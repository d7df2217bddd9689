//! The maildir provider's files, read back with a real mail parser
//! (mail-parser): headers, encoded UTF-8, multipart, Message-ID from the
//! key, List-Unsubscribe, idempotency, header injection.

use std::path::Path;
use std::sync::Arc;

use engine::deliver::maildir::{self, Maildir};
use engine::deliver::sign::{NoLinks, UnsubscribeLinks, UnsubscribeSigner};
use engine::deliver::{Attempt, Provider};
use engine::dispatch::{Content, Message};
use journeys::compiled::Channel;
use mail_parser::{MessageParser, MimeHeaders};

const AT: i64 = 1_772_442_000_000; // 2026-03-02T09:00:00Z

fn email(key: &str, journey: &str, content: Content) -> Message {
    Message {
        key: key.into(),
        at: AT,
        user: "u1".into(),
        journey: journey.into(),
        version: 1,
        step: "send_email".into(),
        channel: Channel::Email,
        template: "t".into(),
        content,
    }
}

fn content(subject: &str, text: Option<&str>, html: Option<&str>) -> Content {
    Content::Email {
        to: Some("Zoë Müller <zoe@example.com>".into()),
        from: None,
        reply_to: None,
        subject: subject.into(),
        text: text.map(Into::into),
        html: html.map(Into::into),
    }
}

fn signer() -> UnsubscribeSigner {
    UnsubscribeSigner::new(
        "https://hooks.shop.example/",
        b"unsub-secret",
        [
            ("cart".to_owned(), "marketing".to_owned()),
            ("receipt".to_owned(), "transactional".to_owned()),
        ],
    )
}

fn open(dir: &Path, links: Arc<dyn UnsubscribeLinks>) -> Maildir {
    Maildir::open(
        maildir::Config::new(dir, "Shöp Team <hello@shop.example>"),
        links,
    )
    .expect("open maildir")
}

fn attempt() -> Attempt {
    Attempt { number: 1, now: AT }
}

/// A body as the template wrote it: mail lines end in CRLF, and the
/// last one is terminated.
fn crlf(body: Option<std::borrow::Cow<'_, str>>) -> String {
    let body = body.expect("body").replace("\r\n", "\n");
    body.strip_suffix('\n').unwrap_or(&body).to_owned()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_multipart_email_parses_back_with_every_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = open(dir.path(), Arc::new(signer()));
    for sub in ["tmp", "new", "cur"] {
        assert!(dir.path().join(sub).is_dir(), "{sub}/ exists");
    }
    let subject = "Zoë, ton panier 🛒 t'attend — 42,50 €";
    let text = "Hi Zoë,\nyour cart is waiting: 42,50 €.";
    let html = "<p>Hi Zoë, your cart is <b>waiting</b>: 42,50 €.</p>";
    let m = email(
        "0123456789abcdef0123456789abcdef",
        "cart",
        content(subject, Some(text), Some(html)),
    );
    let d = md.deliver(&m, attempt()).await.expect("delivered");
    assert!(!d.duplicate);
    assert_eq!(
        files(&dir.path().join("new")),
        ["0123456789abcdef0123456789abcdef.eml"]
    );
    assert!(files(&dir.path().join("tmp")).is_empty());
    let raw = std::fs::read(md.path_for(&m.key)).expect("file");

    // Headers travel as 7-bit ASCII: non-ASCII only in encoded words.
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header/body separator");
    let head = std::str::from_utf8(&raw[..head_end]).expect("utf-8 head");
    assert!(head.is_ascii(), "headers are ASCII:\n{head}");
    assert!(
        head.to_ascii_lowercase().contains("subject: =?utf-8?"),
        "RFC 2047 subject:\n{head}"
    );

    let parsed = MessageParser::default().parse(&raw).expect("parses");
    assert_eq!(parsed.subject(), Some(subject));
    assert_eq!(
        parsed.message_id(),
        Some("0123456789abcdef0123456789abcdef@shop.example")
    );
    let from = parsed.from().and_then(|a| a.first()).expect("from");
    assert_eq!(from.name(), Some("Shöp Team"));
    assert_eq!(from.address(), Some("hello@shop.example"));
    let to = parsed.to().and_then(|a| a.first()).expect("to");
    assert_eq!(to.name(), Some("Zoë Müller"));
    assert_eq!(to.address(), Some("zoe@example.com"));
    assert_eq!(
        parsed.date().expect("date").to_timestamp(),
        AT / 1000,
        "Date is the message's at"
    );
    let ct = parsed.root_part().content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("alternative"));
    assert_eq!(crlf(parsed.body_text(0)), text);
    assert_eq!(crlf(parsed.body_html(0)), html);

    let unsub = parsed
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe")
        .trim();
    let url = unsub
        .strip_prefix("<https://hooks.shop.example/v1/unsubscribe/")
        .and_then(|u| u.strip_suffix('>'))
        .unwrap_or_else(|| panic!("List-Unsubscribe: {unsub}"));
    let said = signer().verify(url).expect("token verifies");
    assert_eq!(
        (
            said.user.as_str(),
            said.category.as_str(),
            said.key.as_str()
        ),
        ("u1", "marketing", "0123456789abcdef0123456789abcdef")
    );
    assert_eq!(
        parsed.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
}

#[tokio::test]
async fn transactional_mail_has_no_unsubscribe_and_single_parts_stay_single() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = open(dir.path(), Arc::new(signer()));
    let m = email(
        "receipt0001",
        "receipt",
        content("Your receipt", None, Some("<p>Thanks</p>")),
    );
    md.deliver(&m, attempt()).await.expect("delivered");
    let raw = std::fs::read(md.path_for("receipt0001")).expect("file");
    let parsed = MessageParser::default().parse(&raw).expect("parses");
    assert_eq!(parsed.header_raw("List-Unsubscribe"), None);
    assert_eq!(parsed.header_raw("List-Unsubscribe-Post"), None);
    let ct = parsed.root_part().content_type().expect("content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("html")));
    assert_eq!(crlf(parsed.body_html(0)), "<p>Thanks</p>");

    // A template's own sender wins, and decides the Message-ID's domain.
    let mut own = email("own0001", "cart", content("Hi", Some("plain"), None));
    if let Content::Email { from, reply_to, .. } = &mut own.content {
        *from = Some("Offers <offers@deals.example>".into());
        *reply_to = Some("help@shop.example".into());
    }
    md.deliver(&own, attempt()).await.expect("delivered");
    let raw = std::fs::read(md.path_for("own0001")).expect("file");
    let parsed = MessageParser::default().parse(&raw).expect("parses");
    assert_eq!(parsed.message_id(), Some("own0001@deals.example"));
    assert_eq!(
        parsed
            .reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address()),
        Some("help@shop.example")
    );
    assert_eq!(crlf(parsed.body_text(0)), "plain");
    // No links configured: no header, whatever the category.
    let bare = tempfile::tempdir().expect("tempdir");
    let md = open(bare.path(), Arc::new(NoLinks));
    md.deliver(&own, attempt()).await.expect("delivered");
    let raw = std::fs::read(md.path_for("own0001")).expect("file");
    let parsed = MessageParser::default().parse(&raw).expect("parses");
    assert_eq!(parsed.header_raw("List-Unsubscribe"), None);
}

#[tokio::test]
async fn the_same_key_twice_leaves_one_file_even_concurrently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = Arc::new(open(dir.path(), Arc::new(signer())));
    let m = email("dup0001", "cart", content("Once", Some("x"), None));
    let first = md.deliver(&m, attempt()).await.expect("delivered");
    let again = md
        .deliver(
            &m,
            Attempt {
                number: 2,
                now: AT + 5_000,
            },
        )
        .await
        .expect("delivered");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(files(&dir.path().join("new")), ["dup0001.eml"]);

    let m = email("race0001", "cart", content("Race", Some("x"), None));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let md = Arc::clone(&md);
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            md.deliver(&m, attempt())
                .await
                .expect("delivered")
                .duplicate
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        if !t.await.expect("task") {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one delivery wrote the file");
    assert_eq!(
        files(&dir.path().join("new")),
        ["dup0001.eml", "race0001.eml"]
    );
    assert!(files(&dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn injected_headers_fail_permanently_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = open(dir.path(), Arc::new(signer()));
    let with = |f: &dyn Fn(&mut Content)| {
        let mut m = email("inj0001", "cart", content("Hello", Some("body"), None));
        f(&mut m.content);
        m
    };
    let cases: Vec<(&str, Message, &str)> = vec![
        (
            "subject CRLF",
            with(&|c| {
                if let Content::Email { subject, .. } = c {
                    *subject = "Hello\r\nBcc: all@example.com".into();
                }
            }),
            "subject contains a carriage return",
        ),
        (
            "subject LF",
            with(&|c| {
                if let Content::Email { subject, .. } = c {
                    *subject = "Hello\nX-Evil: 1".into();
                }
            }),
            "subject contains a line feed",
        ),
        (
            "to display name",
            with(&|c| {
                if let Content::Email { to, .. } = c {
                    *to = Some("Eve\r\nBcc: x@example.com <eve@example.com>".into());
                }
            }),
            "to contains a carriage return",
        ),
        (
            "from",
            with(&|c| {
                if let Content::Email { from, .. } = c {
                    *from = Some("a@example.com\n".into());
                }
            }),
            "from contains a line feed",
        ),
        (
            "reply_to NUL",
            with(&|c| {
                if let Content::Email { reply_to, .. } = c {
                    *reply_to = Some("a\0@example.com".into());
                }
            }),
            "reply_to contains a NUL byte",
        ),
        (
            "no address",
            with(&|c| {
                if let Content::Email { to, .. } = c {
                    *to = None;
                }
            }),
            "the user has no email address",
        ),
        (
            "bad address",
            with(&|c| {
                if let Content::Email { to, .. } = c {
                    *to = Some("not an address".into());
                }
            }),
            "the to address is not valid",
        ),
    ];
    for (what, m, reason) in cases {
        let f = md.deliver(&m, attempt()).await.expect_err(what);
        assert!(f.is_permanent(), "{what}");
        assert!(f.reason.starts_with(reason), "{what}: {}", f.reason);
        assert!(!f.reason.contains("example.com"), "no address in reasons");
    }
    let mut bad_key = email("../escape", "cart", content("Hi", Some("x"), None));
    let f = md.deliver(&bad_key, attempt()).await.expect_err("bad key");
    assert!(f.is_permanent() && f.reason.contains("message key"));
    bad_key.key = "ok0001".into();
    bad_key.content = Content::Push {
        tokens: vec!["t".into()],
        title: None,
        body: None,
        data: Default::default(),
    };
    let f = md.deliver(&bad_key, attempt()).await.expect_err("push");
    assert!(f.is_permanent() && f.reason == "a push message reached the email provider");
    assert!(files(&dir.path().join("new")).is_empty());
    assert!(files(&dir.path().join("tmp")).is_empty());
}

#[test]
fn a_bad_default_sender_is_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    for from in ["nobody", "Shop\r\n <a@b.example>"] {
        let e = Maildir::open(maildir::Config::new(dir.path(), from), Arc::new(NoLinks))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("is not an address"), "{e}");
    }
}
