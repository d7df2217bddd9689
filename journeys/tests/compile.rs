//! The compiled form: state machines with resolved references and a content
//! hash that ignores layout and version but sees every change of meaning.

use std::path::{Path, PathBuf};

use journeys::compiled::{Action, Next, Trigger};

fn repo(name: &str, journey: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-compile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("j.yaml"), journey).expect("write");
    std::fs::write(
        dir.join("t.yaml"),
        "apiVersion: sluice/v1\nkind: Template\nid: hello\nchannel: email\nsubject: Hi\ntext: Hello\n",
    )
    .expect("write");
    dir
}

fn hash(name: &str, journey: &str) -> String {
    let dir = repo(name, journey);
    let config = journeys::load(&dir).unwrap_or_else(|d| {
        panic!(
            "{name}: {:?}",
            d.iter().map(|d| &d.message).collect::<Vec<_>>()
        )
    });
    std::fs::remove_dir_all(&dir).ok();
    config.journeys[0].hash.clone()
}

const BASE: &str = "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: signed_up }\nsteps:\n  - id: pause\n    wait: 1h\n  - id: hi\n    send: { channel: email, template: hello }\n";

#[test]
fn hash_ignores_layout_and_version_but_not_content() {
    let base = hash("base", BASE);
    let relaid = "# a comment\napiVersion: sluice/v1\nkind: Journey\nversion: 2\nid: j\nentry:\n  event: signed_up\nsteps:\n- id: pause\n  wait: 1h\n\n- send:\n    template: hello\n    channel: email\n  id: hi\n";
    assert_eq!(
        base,
        hash("relaid", relaid),
        "layout, key order and version are not changes"
    );
    let changed = BASE.replace("wait: 1h", "wait: 2h");
    assert_ne!(base, hash("changed", &changed), "a new wait is a change");
}

#[test]
fn the_shop_compiles_to_state_machines() {
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let config = journeys::load(&shop).expect("the shop is valid");
    let cart = config.journey("cart-abandonment").expect("cart journey");
    assert!(matches!(&cart.entry.trigger, Trigger::Event(e) if e == "cart_updated"));
    assert_eq!(cart.holdout.0, 1000, "10% in basis points");
    assert!(cart.entry.dedupe_key.is_some());
    let first = &cart.states[0];
    assert!(
        matches!(
            first.action,
            Action::Wait {
                next: Next::State(1),
                ..
            }
        ),
        "{first:?}"
    );
    let wait_for = cart.state_index("wait-purchase").expect("wait-purchase");
    match &cart.states[wait_for].action {
        Action::WaitFor {
            on_event,
            on_timeout,
            ..
        } => {
            assert_eq!(*on_event, Next::End);
            assert_eq!(
                *on_timeout,
                Next::State(cart.state_index("nudge").expect("nudge"))
            );
        }
        other => panic!("{other:?}"),
    }
    let digest = config.journey("weekly-digest").expect("digest");
    assert!(matches!(
        &digest.entry.trigger,
        Trigger::Schedule {
            zone: journeys::scalar::Zone::User,
            ..
        }
    ));
    assert!(!config.tests.is_empty());
    assert!(
        !config.frequency_caps.is_empty()
            && !config.quiet_hours.is_empty()
            && !config.throttles.is_empty()
    );
}

/// A repository with only `sluice.yaml`: the diagnostics' messages, or the
/// compiled push settings.
fn push_project(name: &str, push: &str) -> Result<journeys::compiled::PushSettings, Vec<String>> {
    let dir = std::env::temp_dir().join(format!("sluice-push-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("sluice.yaml"),
        format!("apiVersion: sluice/v1\nkind: Project\nid: p\nchannels:\n  push:\n{push}"),
    )
    .expect("write");
    let out = journeys::load(&dir)
        .map(|c| c.project.push.clone())
        .map_err(|d| d.iter().map(|d| d.message.clone()).collect());
    std::fs::remove_dir_all(&dir).ok();
    out
}

#[test]
fn push_providers_name_what_they_miss() {
    let fcm = push_project("fcm", "    provider: fcm\n").expect_err("fcm needs settings");
    assert_eq!(
        fcm,
        [
            "the fcm push provider needs `project_id`: the Firebase project id",
            "the fcm push provider needs `credentials_env`: the env var holding the service account JSON",
        ]
    );
    let apns = push_project("apns", "    provider: apns\n    topic: com.shop.app\n")
        .expect_err("apns needs settings");
    assert_eq!(
        apns,
        [
            "the apns push provider needs `credentials_env`: the env var holding the .p8 signing key (PEM)",
            "the apns push provider needs `key_id`: the signing key's Key ID",
            "the apns push provider needs `team_id`: the Apple developer team id",
        ]
    );
    let ok = push_project(
        "apns-ok",
        "    provider: apns\n    credentials_env: APNS_KEY\n    key_id: ABC123DEFG\n    team_id: DEF123GHIJ\n    topic: com.shop.app\n    endpoint: http://127.0.0.1:9\n",
    )
    .expect("complete apns settings");
    assert_eq!(ok.key_id.as_deref(), Some("ABC123DEFG"));
    assert_eq!(ok.team_id.as_deref(), Some("DEF123GHIJ"));
    assert_eq!(ok.topic.as_deref(), Some("com.shop.app"));
    assert_eq!(ok.endpoint.as_deref(), Some("http://127.0.0.1:9"));
}

/// docs/format-extensions.md: an `exit` step is written `exit: true`,
/// `exit: {}` or `exit:` with no value; a null is a step type like the
/// others, not an absent one.
#[test]
fn an_exit_step_may_be_written_without_a_value() {
    for (name, exit) in [
        ("null", "exit:"),
        ("true", "exit: true"),
        ("empty", "exit: {}"),
    ] {
        let journey = format!(
            "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: {{ event: signed_up }}\nsteps:\n  - id: hi\n    send: {{ channel: email, template: hello }}\n  - id: done\n    {exit}\n"
        );
        let dir = repo(&format!("exit-{name}"), &journey);
        let loaded = journeys::load(&dir);
        std::fs::remove_dir_all(&dir).ok();
        let config = loaded.unwrap_or_else(|d| {
            panic!(
                "`{exit}`: {:?}",
                d.iter().map(|d| &d.message).collect::<Vec<_>>()
            )
        });
        let j = config.journey("j").expect("journey");
        assert!(
            matches!(j.states[1].action, Action::Exit),
            "`{exit}` is an exit step"
        );
    }
    let dir = repo(
        "exit-false",
        "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: signed_up }\nsteps:\n  - id: done\n    exit: false\n",
    );
    let loaded = journeys::load(&dir);
    std::fs::remove_dir_all(&dir).ok();
    let Err(diags) = loaded else {
        panic!("`exit: false` is refused");
    };
    let codes: Vec<_> = diags.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["invalid_value"]);
}
