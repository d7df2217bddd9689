//! The state machines as pure transitions, Restate-style: a user record
//! and an input in, the changed record and the effects out — no store, no
//! clock, no network. (The send step's decision is an input here: what the
//! policies and the renderer would have said.)

use std::path::Path;

use chrono::DateTime;
use journeys::event::Event;

use engine::dispatch::{Content, Message};
use engine::index::Index;
use engine::machine::event::{on_event, Ingested};
use engine::machine::send::{self, decided};
use engine::machine::{instance, Ctx, Effect};
use engine::output::{Kind, Outcome};
use engine::store::timers::TimerKind;
use engine::store::users::UserRecord;

fn config() -> journeys::Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transitions");
    journeys::load(&dir).unwrap_or_else(|_| panic!("the fixture is invalid"))
}

/// A transition's context at `now`, holdouts on.
fn context<'a>(
    config: &'a journeys::Config,
    index: &'a Index,
    versions: &'a engine::deploy::Versions,
    now: i64,
    seq: &'a mut u64,
) -> Ctx<'a> {
    Ctx::new(config, index, versions, now, true, seq)
}

fn ms(ts: &str) -> i64 {
    DateTime::parse_from_rfc3339(ts)
        .expect("ts")
        .timestamp_millis()
}

fn event(line: &str) -> Event {
    Event::from_line(line).expect("event")
}

#[test]
fn a_signup_enters_and_sets_the_send_timer_at_once() {
    let config = config();
    let index = Index::new(&config);
    let versions = engine::deploy::Versions::of(&config);
    let mut seq = 0;
    let mut user = UserRecord::new("ana");
    let mut ctx = context(
        &config,
        &index,
        &versions,
        ms("2026-03-02T09:00:00Z"),
        &mut seq,
    );
    let ev = event(
        r#"{"type":"track","user":"ana","ts":"2026-03-02T09:00:00Z","id":"e1","event":"signed_up"}"#,
    );
    assert_eq!(
        on_event(&mut ctx, &mut user, &ev, false, None),
        Ingested::Applied
    );
    let effects = std::mem::take(&mut ctx.effects);
    let lines: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Line(l) => Some((l.kind, l.journey.clone(), l.version)),
            _ => None,
        })
        .collect();
    assert_eq!(lines, vec![(Kind::Entered, "welcome".to_owned(), Some(2))]);
    let timers: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::SetTimer(k, TimerKind::Send { .. }) => Some(k.due),
            _ => None,
        })
        .collect();
    assert_eq!(
        timers,
        vec![ms("2026-03-02T09:00:00Z")],
        "the email is due at once"
    );
    assert_eq!(user.instances.len(), 1);
    assert_eq!(user.instances[0].step, "hello");

    // The same event again: nothing happens.
    let mut ctx = context(
        &config,
        &index,
        &versions,
        ms("2026-03-02T09:00:00Z"),
        &mut seq,
    );
    assert_ne!(
        on_event(&mut ctx, &mut user, &ev, false, None),
        Ingested::Applied
    );
    assert!(ctx.effects.is_empty(), "{:?}", ctx.effects);
}

#[test]
fn a_sent_message_becomes_an_outbox_effect_then_the_wait_starts() {
    let config = config();
    let index = Index::new(&config);
    let versions = engine::deploy::Versions::of(&config);
    let mut seq = 0;
    let mut user = UserRecord::new("ana");
    let now = ms("2026-03-02T09:00:00Z");
    let mut ctx = Ctx::new(&config, &index, &versions, now, true, &mut seq);
    let ev =
        event(r#"{"type":"track","user":"ana","ts":"2026-03-02T09:00:00Z","event":"signed_up"}"#);
    on_event(&mut ctx, &mut user, &ev, false, None);
    let (key, due) = ctx
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::SetTimer(k, TimerKind::Send { instance, due, .. }) => {
                Some((*k, (*instance, *due)))
            }
            _ => None,
        })
        .expect("a send timer");
    let mut ctx = Ctx::new(&config, &index, &versions, now, true, &mut seq);
    let d = send::due(&mut ctx, &mut user, key, due.0, due.1).expect("the message is due");
    let message = Message {
        key: "k1".into(),
        at: now,
        user: "ana".into(),
        journey: "welcome".into(),
        version: 2,
        step: "hello".into(),
        channel: d.channel,
        template: d.template.clone(),
        content: Content::Email {
            to: Some("ana@example.com".into()),
            from: None,
            reply_to: None,
            subject: "Hello Ana".into(),
            text: Some("Welcome!".into()),
            html: None,
        },
    };
    decided(
        &mut ctx,
        &mut user,
        &d,
        send::Result::Sent {
            key: "k1".into(),
            message: Box::new(message.clone()),
        },
    );
    let effects = std::mem::take(&mut ctx.effects);
    match &effects[..] {
        [Effect::Outbox(m, category), Effect::Line(line), Effect::SetTimer(wait, TimerKind::Instance { .. })] =>
        {
            assert_eq!(**m, message);
            assert_eq!(category, "onboarding");
            assert_eq!(line.outcome, Some(Outcome::Sent));
            assert_eq!(line.key.as_deref(), Some("k1"));
            assert_eq!(wait.due, now + 3_600_000, "then an hour's wait");
        }
        other => panic!("unexpected effects: {other:#?}"),
    }
    assert_eq!(user.instances[0].step, "pause");
    assert!(instance::pos(&user, due.0).is_some());
}

#[test]
fn an_exit_event_ends_the_instance_and_cancels_its_timer() {
    let config = config();
    let index = Index::new(&config);
    let versions = engine::deploy::Versions::of(&config);
    let mut seq = 0;
    let mut user = UserRecord::new("ana");
    let mut ctx = context(
        &config,
        &index,
        &versions,
        ms("2026-03-02T09:00:00Z"),
        &mut seq,
    );
    on_event(
        &mut ctx,
        &mut user,
        &event(r#"{"type":"track","user":"ana","ts":"2026-03-02T09:00:00Z","event":"signed_up"}"#),
        false,
        None,
    );
    let timer = user.instances[0].timer.expect("a pending timer");
    let mut ctx = context(
        &config,
        &index,
        &versions,
        ms("2026-03-02T09:01:00Z"),
        &mut seq,
    );
    on_event(
        &mut ctx,
        &mut user,
        &event(
            r#"{"type":"track","user":"ana","ts":"2026-03-02T09:01:00Z","event":"order_completed"}"#,
        ),
        false,
        None,
    );
    assert!(
        ctx.effects.contains(&Effect::CancelTimer(timer)),
        "{:?}",
        ctx.effects
    );
    assert!(ctx
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Line(l) if l.kind == Kind::Exited)));
    assert!(user.instances.is_empty());
}

/// Properties converted ahead (on the simulation's reader thread) are
/// taken as the engine would have converted them itself: the same record
/// and the same effects.
#[test]
fn properties_converted_ahead_change_nothing() {
    let config = config();
    let index = Index::new(&config);
    let versions = engine::deploy::Versions::of(&config);
    let ev = event(
        r#"{"type":"track","user":"ana","ts":"2026-03-02T09:00:00Z","id":"e1","event":"signed_up","props":{"plan":"pro","n":3,"tags":["a",{"b":null}]}}"#,
    );
    let run = |props: Option<engine::store::attrs::Obj>| {
        let mut seq = 0;
        let mut user = UserRecord::new("ana");
        let mut ctx = context(
            &config,
            &index,
            &versions,
            ms("2026-03-02T09:00:00Z"),
            &mut seq,
        );
        assert_eq!(
            on_event(&mut ctx, &mut user, &ev, false, props),
            Ingested::Applied
        );
        let effects = std::mem::take(&mut ctx.effects);
        (user.encode().expect("encodes"), effects)
    };
    let inline = run(None);
    assert!(!inline.1.is_empty(), "the signup entered a journey");
    assert_eq!(
        run(Some(engine::store::attrs::Obj::from_json(&ev.props))),
        inline
    );
}
