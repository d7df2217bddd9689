//! The providers built from a real Project (examples/shop): paths under
//! the repository, the signing secret from the named variable, and
//! unsubscribe links by the journeys' own categories.

use std::path::Path;
use std::sync::Arc;

use mail_parser::MessageParser;

use engine::deliver::{Attempt, Providers, UnsubscribeSigner};
use engine::dispatch::{Content, Message};
use journeys::compiled::Channel;

fn shop() -> journeys::compiled::Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    journeys::load(&dir).unwrap_or_else(|_| panic!("examples/shop is invalid"))
}

fn welcome(journey: &str, key: &str) -> Message {
    Message {
        key: key.into(),
        at: 1_772_442_000_000,
        user: "u1".into(),
        journey: journey.into(),
        version: 1,
        step: "send".into(),
        channel: Channel::Email,
        template: "welcome".into(),
        content: Content::Email {
            to: Some("ana@example.com".into()),
            from: None,
            reply_to: None,
            subject: "Willkommen, Ana".into(),
            text: Some("Hallo".into()),
            html: None,
        },
    }
}

#[tokio::test]
async fn the_shop_project_builds_its_providers_and_links() {
    let config = shop();
    let root = tempfile::tempdir().expect("tempdir");
    let links = Arc::new(UnsubscribeSigner::for_config(
        "https://hooks.shop.example",
        b"secret",
        &config,
    ));
    let env = |v: &str| (v == "SHOP_WEBHOOK_SECRET").then(|| "dev-secret".to_owned());
    let p = Providers::from_project(&config.project, root.path(), &env, links.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        Channel::ALL.map(|c| p.for_channel(c).name()),
        ["maildir", "file", "webhook"]
    );
    for c in Channel::ALL {
        assert_eq!(p.for_channel(c).channel(), c);
    }
    let now = Attempt {
        number: 1,
        now: 1_772_442_000_000,
    };
    p.email
        .deliver(&welcome("welcome-series", "welcome01"), now)
        .await
        .expect("delivered");
    p.email
        .deliver(&welcome("order-confirmation", "order01"), now)
        .await
        .expect("delivered");
    let new = root.path().join(".sluice/outbox/maildir/new");
    let read = |name: &str| std::fs::read(new.join(name)).expect("delivered file");
    let onboarding = read("welcome01.eml");
    let parsed = MessageParser::default().parse(&onboarding).expect("parses");
    assert_eq!(parsed.message_id(), Some("welcome01@shop.example"));
    let unsub = parsed
        .header_raw("List-Unsubscribe")
        .expect("a link")
        .trim();
    let token = unsub
        .trim_start_matches("<https://hooks.shop.example/v1/unsubscribe/")
        .trim_end_matches('>');
    assert_eq!(
        links.verify(token).map(|u| u.category),
        Some("onboarding".to_owned())
    );
    let order = read("order01.eml");
    let parsed = MessageParser::default().parse(&order).expect("parses");
    assert_eq!(parsed.header_raw("List-Unsubscribe"), None, "transactional");

    // The shop names a signing secret: without it, webhooks go unsigned.
    Providers::from_project(&config.project, root.path(), &|_| None, links)
        .expect("built without the secret");
}
