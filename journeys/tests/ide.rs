//! `ide::Workspace::change` re-validates one file at a time; after every
//! edit its diagnostics must equal what `journeys::check` (what `sluice
//! validate` prints) finds in the same files.

use std::path::Path;

use journeys::ide::{Recheck, Workspace};

fn copy(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).expect("inside");
        let target = to.join(rel);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&entry, &target).expect("copy");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn lines(d: &journeys::Diagnostic) -> String {
    format!(
        "{}:{}:{} {} {}",
        d.file_name(),
        d.span.line,
        d.span.column,
        d.code,
        d.message
    )
}

fn assert_same(ws: &Workspace, dir: &Path) {
    let full: Vec<String> = journeys::check(dir).1.iter().map(lines).collect();
    let mine: Vec<String> = ws.results().values().flatten().map(lines).collect();
    assert_eq!(mine, full);
}

#[test]
fn every_edit_gives_validates_diagnostics() {
    let tmp = tempfile_dir();
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    copy(&shop, &tmp);
    let mut ws = Workspace::load(&tmp);
    ws.recheck_all();
    assert_same(&ws, &tmp);

    let name = "journeys/cart-abandonment.yaml";
    let original = std::fs::read_to_string(tmp.join(name)).expect("journey");
    assert!(original.contains("template: cart-reminder"));
    let edits = [
        // Only this file: same ids and steps, still valid.
        (original.replace("priority: 50", "priority: 51"), None),
        // An error: the shop has JourneyTests, so everything is re-checked.
        (
            original.replace("template: cart-reminder", "template: cart-remindr"),
            Some(Recheck::All),
        ),
        (original.clone(), Some(Recheck::All)),
    ];
    for (text, expected) in edits {
        let how = ws.change(name, text.clone());
        if let Some(e) = expected {
            assert_eq!(how, e);
        }
        std::fs::write(tmp.join(name), &text).expect("write");
        assert_same(&ws, &tmp);
    }

    // Half-typed YAML: only its syntax error; the other files keep seeing
    // its last documents (unlike `validate`, which has no last ones).
    let before = ws.results().clone();
    ws.change(name, format!("{original}\n  - id: [oops\n"));
    let codes: Vec<&str> = ws.results()[name].iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, vec!["yaml_syntax"]);
    for (file, diags) in ws.results() {
        if file != name {
            let had = before.get(file).map_or(0, Vec::len);
            assert_eq!(diags.len(), had, "{file}: {diags:?}");
        }
    }
    ws.change(name, original.clone());
    assert_same(&ws, &tmp);

    // A template's text: the file and the journeys that send it.
    let name = "templates/cart.yaml";
    let original = std::fs::read_to_string(tmp.join(name)).expect("template");
    let text = original.replacen("your cart is waiting", "your cart misses you", 1);
    assert_ne!(text, original);
    assert_eq!(ws.change(name, text.clone()), Recheck::File);
    std::fs::write(tmp.join(name), &text).expect("write");
    assert_same(&ws, &tmp);
    // A variable the Catalog does not know: an error, and the shop has
    // JourneyTests, so everything.
    let text = original.replacen("{{user.first_name}}", "{{user.frist_name}}", 1);
    ws.change(name, text.clone());
    std::fs::write(tmp.join(name), &text).expect("write");
    assert_same(&ws, &tmp);
    // A template's channel: everything.
    let text = original.replacen("channel: email", "channel: push", 1);
    assert_eq!(ws.change(name, text.clone()), Recheck::All);
    std::fs::write(tmp.join(name), &text).expect("write");
    assert_same(&ws, &tmp);
    ws.change(name, original.clone());
    std::fs::write(tmp.join(name), &original).expect("write");
    assert_same(&ws, &tmp);

    // Segments: every file of segments, none of the journeys.
    let name = "segments/customers.yaml";
    let original = std::fs::read_to_string(tmp.join(name)).expect("segments");
    let edits = [
        original.replace("gte: 500", "gte: 400"),
        // A segment naming one that does not exist.
        original.replace("- segment: customers", "- segment: custmers"),
        // A cycle: customers names vip, which names customers.
        original.replace(
            "when: { user.lifetime_value: { gt: 0 } }",
            "when: { segment: vip }",
        ),
        original.clone(),
    ];
    for text in edits {
        assert_ne!(ws.change(name, text.clone()), Recheck::All, "{text}");
        std::fs::write(tmp.join(name), &text).expect("write");
        assert_same(&ws, &tmp);
    }

    // Policies: every file of policies, none of the journeys.
    for name in [
        "policies/throttles.yaml",
        "policies/quiet-hours.yaml",
        "policies/frequency-caps.yaml",
    ] {
        let original = std::fs::read_to_string(tmp.join(name)).expect("policies");
        let edits = [
            format!("{original}\n# a comment\n"),
            // An unknown journey in a throttle, a bad time, a bad duration.
            original
                .replacen("[order-confirmation]", "[order-confirmaton]", 1)
                .replacen("\"21:00\"", "\"25:00\"", 1)
                .replacen("per: 7d", "per: 7 days", 1),
            original.clone(),
        ];
        for text in edits {
            assert_ne!(ws.change(name, text.clone()), Recheck::All, "{name}");
            std::fs::write(tmp.join(name), &text).expect("write");
            assert_same(&ws, &tmp);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn without_tests_an_error_in_a_journey_is_checked_alone() {
    let tmp = tempfile_dir();
    std::fs::create_dir_all(tmp.join("journeys")).expect("mkdir");
    let t = "apiVersion: sluice/v1\nkind: Template\nid: hello\nchannel: email\nsubject: Hi\ntext: Hello\n";
    std::fs::write(tmp.join("t.yaml"), t).expect("write");
    let j = "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: e }\nsteps:\n  - id: a\n    send: { channel: email, template: hello }\n";
    std::fs::write(tmp.join("journeys/j.yaml"), j).expect("write");
    let mut ws = Workspace::load(&tmp);
    ws.recheck_all();
    assert_same(&ws, &tmp);
    let broken = j.replace("hello", "helo");
    assert_eq!(ws.change("journeys/j.yaml", broken.clone()), Recheck::File);
    std::fs::write(tmp.join("journeys/j.yaml"), &broken).expect("write");
    assert_same(&ws, &tmp);
    let d = &ws.results()["journeys/j.yaml"][0];
    assert_eq!(journeys::ide::suggestion(d), Some("hello"));
    std::fs::write(tmp.join("journeys/j.yaml"), j).expect("write");
    assert_eq!(ws.change("journeys/j.yaml", j.to_owned()), Recheck::File);

    // The template's text, checked with the journey that sends it: a
    // variable of an event the journey is not entered by.
    let bad = t.replace("text: Hello", "text: \"Hello {{entry.nothing}} {{user.}}\"");
    assert_eq!(ws.change("t.yaml", bad.clone()), Recheck::File);
    std::fs::write(tmp.join("t.yaml"), &bad).expect("write");
    assert_same(&ws, &tmp);
    assert!(!ws.results()["t.yaml"].is_empty() || !ws.results()["journeys/j.yaml"].is_empty());
    assert_eq!(ws.change("t.yaml", t.to_owned()), Recheck::File);
    std::fs::write(tmp.join("t.yaml"), t).expect("write");
    assert_same(&ws, &tmp);

    // With a partial anywhere, a template's change re-checks everything.
    let p = "apiVersion: sluice/v1\nkind: Template\nid: footer\nchannel: email\nsubject: F\ntext: \"{{> hello}}\"\n";
    std::fs::write(tmp.join("p.yaml"), p).expect("write");
    let mut ws = Workspace::load(&tmp);
    ws.recheck_all();
    assert_eq!(ws.change("t.yaml", t.replace("Hello", "Hi")), Recheck::All);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-ide-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

/// Every file of the shop typed character by character: completion,
/// hover and definition at the cursor never panic, whatever the state.
#[test]
fn half_typed_files_never_panic() {
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let mut ws = Workspace::load(&shop);
    let schema = journeys::ide::SchemaView::default();
    let names: Vec<String> = ws.names().map(str::to_owned).collect();
    for name in names {
        let full = ws.text(&name).expect("text").to_owned();
        let cuts: Vec<usize> = (0..=full.len())
            .step_by(23)
            .filter(|&i| full.is_char_boundary(i))
            .collect();
        for cut in cuts {
            ws.set_text(&name, full[..cut].to_owned());
            let index = journeys::ide::Index::build(&ws);
            let _ = journeys::ide::completions(&ws, &schema, &name, cut);
            let _ = journeys::ide::hover(&ws, &index, &schema, &name, cut);
            let _ = index.target_at(&name, cut.saturating_sub(1));
        }
        ws.set_text(&name, full);
    }
}

/// The diagnostics of a full check of the workspace's texts, one a line.
fn full(ws: &Workspace) -> Vec<String> {
    full_as(ws, lines)
}

fn incremental(ws: &Workspace) -> Vec<String> {
    incremental_as(ws, lines)
}

fn full_as(ws: &Workspace, line: fn(&journeys::Diagnostic) -> String) -> Vec<String> {
    ws.check().iter().map(line).collect()
}

fn incremental_as(ws: &Workspace, line: fn(&journeys::Diagnostic) -> String) -> Vec<String> {
    ws.results().values().flatten().map(line).collect()
}

/// Catalog and Project edits on the shop: after each, the diagnostics
/// equal `validate`'s of the same files.
#[test]
fn catalog_and_project_edits_give_validates_diagnostics() {
    let tmp = tempfile_dir();
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    copy(&shop, &tmp);
    let mut ws = Workspace::load(&tmp);
    ws.recheck_all();
    assert_same(&ws, &tmp);

    let name = "catalog/shop.yaml";
    let original = std::fs::read_to_string(tmp.join(name)).expect("catalog");
    let edits = [
        // Nothing the others see: this file alone.
        (
            original.replace("# The shop's data dictionary.", "# The data dictionary."),
            Some(Recheck::File),
        ),
        // An attribute nobody reads: this file alone.
        (
            original.replace(
                "  signup_source: string\n",
                "  signup_source: string\n  shoe_size: number\n",
            ),
            Some(Recheck::File),
        ),
        // A type changed: conditions compare it with a number.
        (
            original.replace("lifetime_value: number", "lifetime_value: string"),
            None,
        ),
        // An attribute removed that templates and conditions read.
        (original.replace("  first_name: string\n", ""), None),
        // An event's property removed that a template reads (`entry.source`).
        (
            original.replace("signed_up: { source: string }", "signed_up: {}"),
            None,
        ),
        // An event removed that journeys are entered by.
        (
            original.replace("  cart_cleared: { cart_id: string }\n", ""),
            None,
        ),
        // An invalid type: the entry is left out.
        (original.replace("country: string", "country: strng"), None),
        // A syntax error, then fixed.
        (format!("{original}\nuser: [oops\n"), Some(Recheck::File)),
        (original.clone(), None),
        // Another id: everything.
        (
            original.replace("id: shop", "id: store"),
            Some(Recheck::All),
        ),
        (original.clone(), Some(Recheck::All)),
    ];
    for (i, (text, expected)) in edits.into_iter().enumerate() {
        let how = ws.change(name, text.clone());
        if let Some(e) = expected {
            assert_eq!(how, e, "catalog edit {i}");
        }
        std::fs::write(tmp.join(name), &text).expect("write");
        if text.contains("[oops") {
            // `validate` has no last documents: compare with the texts held.
            assert_eq!(incremental(&ws), full(&ws), "catalog edit {i}");
        } else {
            assert_same(&ws, &tmp);
        }
    }

    let name = "sluice.yaml";
    let original = std::fs::read_to_string(tmp.join(name)).expect("project");
    let edits = [
        original.replace(
            "default_timezone: Europe/Berlin",
            "default_timezone: Asia/Tokyo",
        ),
        original.replace(
            "default_timezone: Europe/Berlin",
            "default_timezone: Mars/Olympus",
        ),
        original.replace("timeout: 5s", "timeout: 5 seconds"),
        original.replace("provider: maildir", "provider: smtp"),
        original.replace("max_attempts: 8", "max_attempts: 3"),
        format!("{original}\nretry: [oops\n"),
        original.clone(),
    ];
    for (i, text) in edits.into_iter().enumerate() {
        assert_eq!(
            ws.change(name, text.clone()),
            Recheck::File,
            "project edit {i}"
        );
        std::fs::write(tmp.join(name), &text).expect("write");
        if text.contains("[oops") {
            assert_eq!(incremental(&ws), full(&ws), "project edit {i}");
        } else {
            assert_same(&ws, &tmp);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A small repository without JourneyTests: a Catalog type change
/// re-checks the files that mention it, not everything.
const CATALOG: &str = "apiVersion: sluice/v1
kind: Catalog
id: types
user:
  plan: { enum: [free, plus] }
  score: number
  first_name: string
events:
  signed_up: { source: string }
  ordered: { total: number, cart_id: string }
";

const PROJECT: &str = "apiVersion: sluice/v1
kind: Project
id: small
default_timezone: Europe/Berlin
";

const TEMPLATES: &str = "apiVersion: sluice/v1
kind: Template
id: hello
channel: email
subject: \"Hi {{user.first_name}}\"
text: \"Welcome, from {{entry.source}}\"
---
apiVersion: sluice/v1
kind: Template
id: promo
channel: push
title: \"{{user.plan}} offer\"
body: Offer
";

const SEGMENTS: &str = "apiVersion: sluice/v1
kind: Segment
id: high
when: { user.score: { gte: 10 } }
---
apiVersion: sluice/v1
kind: Segment
id: plus
when:
  any:
    - user.plan: plus
    - segment: high
";

const WELCOME: &str = "apiVersion: sluice/v1
kind: Journey
id: welcome
version: 1
entry:
  event: signed_up
  when: { event.source: { eq: ads } }
steps:
  - id: hi
    send: { channel: email, template: hello }
  - id: wait
    wait_for:
      event: ordered
      where: { event.total: { gt: 5 } }
      timeout: 1d
      on_event: end
";

const DIGEST: &str = "apiVersion: sluice/v1
kind: Journey
id: digest
version: 1
entry:
  schedule: \"0 0 9 * * * *\"
  segment: plus
steps:
  - id: promo
    send: { channel: push, template: promo }
";

const ORDERS: &str = "apiVersion: sluice/v1
kind: Journey
id: orders
version: 1
entry:
  event: ordered
steps:
  - id: score
    update: { user.score: \"{{entry.total}}\" }
";

/// A segment in a file of its own that names `high`: when `high` names
/// it back, the cycle is reported in `segments/s.yaml`.
const LOOP: &str = "apiVersion: sluice/v1
kind: Segment
id: aloop
when: { segment: high }
";

fn small_repo() -> (std::path::PathBuf, Vec<(&'static str, &'static str)>) {
    let files = vec![
        ("catalog.yaml", CATALOG),
        ("sluice.yaml", PROJECT),
        ("templates/t.yaml", TEMPLATES),
        ("segments/s.yaml", SEGMENTS),
        ("segments/u.yaml", LOOP),
        ("journeys/welcome.yaml", WELCOME),
        ("journeys/digest.yaml", DIGEST),
        ("journeys/orders.yaml", ORDERS),
    ];
    (write_repo(&files), files)
}

/// A new repository holding these files.
fn write_repo(files: &[(&str, &str)]) -> std::path::PathBuf {
    let tmp = tempfile_dir();
    for (name, text) in files {
        let path = tmp.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    tmp
}

#[test]
fn a_catalog_type_change_rechecks_its_readers_only() {
    let (tmp, _) = small_repo();
    let mut ws = Workspace::load(&tmp);
    ws.recheck_all();
    assert_same(&ws, &tmp);
    assert!(
        ws.results().values().all(Vec::is_empty),
        "{:?}",
        ws.results()
    );
    let edits = [
        CATALOG.replace("score: number", "score: string"),
        CATALOG.replace("  plan: { enum: [free, plus] }\n", ""),
        CATALOG.replace(
            "plan: { enum: [free, plus] }",
            "plan: { enum: [free, gold] }",
        ),
        CATALOG.replace("signed_up: { source: string }", "signed_up: {}"),
        CATALOG.replace(
            "ordered: { total: number, cart_id: string }",
            "ordred: { total: number }",
        ),
        CATALOG.replace("first_name: string", "first_name: strng"),
        CATALOG.replace(
            "first_name: string",
            "first_name: string\n  last_name: string",
        ),
        CATALOG.to_owned(),
    ];
    for (i, text) in edits.into_iter().enumerate() {
        assert_eq!(
            ws.change("catalog.yaml", text.clone()),
            Recheck::File,
            "edit {i}"
        );
        std::fs::write(tmp.join("catalog.yaml"), &text).expect("write");
        assert_same(&ws, &tmp);
    }
    // A removed attribute is reported where it is read.
    ws.change("catalog.yaml", CATALOG.replace("  score: number\n", ""));
    let segments: Vec<String> = ws.results()["segments/s.yaml"]
        .iter()
        .map(|d| d.message.clone())
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert!(segments[0].contains("user.score"), "{segments:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `high` naming `aloop`, which names it back.
const CYCLE: &str = "when: { any: [ { user.score: { gte: 10 } }, { segment: aloop } ] }";

/// Catalog changes that reach files not mentioning the changed entries:
/// each sequence ends equal to a full check.
#[test]
fn a_catalog_change_reaches_what_depends_on_its_readers() {
    let sequences: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            // An unknown attribute's suggestion: `user.frist_name`, did
            // you mean `user.fist_name`?
            "suggestion",
            vec![
                (
                    "templates/t.yaml",
                    TEMPLATES.replace("{{user.first_name}}", "{{user.frist_name}}"),
                ),
                ("catalog.yaml", CATALOG.replace("first_name", "fist_name")),
            ],
        ),
        (
            // A send of the wrong channel, in a journey that does not
            // mention the attribute its template reads: the template stops
            // being valid, the send stays reported (a template's variables
            // do not keep it from compiling).
            "sender",
            vec![
                (
                    "journeys/welcome.yaml",
                    WELCOME.replace("channel: email", "channel: push"),
                ),
                (
                    "catalog.yaml",
                    CATALOG.replace("  first_name: string\n", ""),
                ),
                ("catalog.yaml", CATALOG.to_owned()),
            ],
        ),
        (
            // A cycle across two files of segments, one of them reading
            // the changed attribute.
            "segments",
            vec![
                (
                    "segments/s.yaml",
                    SEGMENTS.replace("when: { user.score: { gte: 10 } }", CYCLE),
                ),
                (
                    "catalog.yaml",
                    CATALOG.replace("score: number", "score: string"),
                ),
                ("catalog.yaml", CATALOG.to_owned()),
            ],
        ),
    ];
    for (label, edits) in sequences {
        let (tmp, _) = small_repo();
        let mut ws = Workspace::load(&tmp);
        ws.recheck_all();
        for (name, text) in edits {
            assert_eq!(
                ws.change(name, text.clone()),
                Recheck::File,
                "{label}: {name}"
            );
            std::fs::write(tmp.join(name), &text).expect("write");
            assert_same(&ws, &tmp);
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

/// One file's possible texts, for random edit sequences.
fn variants() -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "catalog.yaml",
            vec![
                CATALOG.to_owned(),
                CATALOG.replace("score: number", "score: string"),
                CATALOG.replace("  plan: { enum: [free, plus] }\n", ""),
                CATALOG.replace(
                    "plan: { enum: [free, plus] }",
                    "plan: { enum: [free, gold] }",
                ),
                CATALOG.replace("  first_name: string\n", "  frist_name: string\n"),
                CATALOG.replace("  first_name: string\n", "  fist_name: string\n"),
                CATALOG.replace("first_name: string", "first_name: strng"),
                CATALOG.replace("signed_up: { source: string }", "signed_up: {}"),
                CATALOG.replace("  signed_up: { source: string }\n", ""),
                CATALOG.replace("total: number", "total: string"),
                CATALOG.replace("  ordered: { total: number, cart_id: string }\n", ""),
                CATALOG.replace("id: types", "id: kinds"),
                CATALOG.replace("user:\n", "user: [oops\n"),
                String::new(),
            ],
        ),
        (
            "sluice.yaml",
            vec![
                PROJECT.to_owned(),
                PROJECT.replace("Europe/Berlin", "UTC"),
                PROJECT.replace("Europe/Berlin", "Mars/Olympus"),
                PROJECT.replace("default_timezone: Europe/Berlin\n", ""),
                format!("{PROJECT}channels:\n  email: {{ provider: smtp }}\n"),
                format!("{PROJECT}retry: [oops\n"),
                format!("{PROJECT}---\n{PROJECT}"),
            ],
        ),
        (
            "templates/t.yaml",
            vec![
                TEMPLATES.to_owned(),
                TEMPLATES.replace("{{user.first_name}}", "{{user.frist_name}}"),
                TEMPLATES.replace("{{entry.source}}", "{{entry.total}}"),
                TEMPLATES.replace("{{user.plan}} offer", "{{user.score}} offer"),
            ],
        ),
        (
            "segments/s.yaml",
            vec![
                SEGMENTS.to_owned(),
                SEGMENTS.replace("user.plan: plus", "user.plan: gold"),
                SEGMENTS.replace("gte: 10", "gte: ten"),
                SEGMENTS.replace("when: { user.score: { gte: 10 } }", CYCLE),
            ],
        ),
        (
            "journeys/welcome.yaml",
            vec![
                WELCOME.to_owned(),
                WELCOME.replace("event: signed_up", "event: signed_upp"),
                WELCOME.replace("event.total", "event.totl"),
                WELCOME.replace("channel: email", "channel: push"),
            ],
        ),
        (
            "journeys/orders.yaml",
            vec![
                ORDERS.to_owned(),
                ORDERS.replace("{{entry.total}}", "{{entry.cart_id}} {{entry.nope}}"),
            ],
        ),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Random sequences of edits to the Catalog, the Project and the files
    /// reading them: after each, the incremental diagnostics equal a full
    /// check of the same texts.
    #[test]
    fn random_edits_give_a_full_checks_diagnostics(
        edits in proptest::collection::vec((0usize..6, 0usize..14), 1..12)
    ) {
        let (tmp, _) = small_repo();
        edits_equal_a_full_check(&tmp, &variants(), &edits, lines)?;
    }
}

/// Makes `edits` (a file of `variants`, one of its texts) in a workspace
/// of `tmp`, then removes it: after each, the incremental diagnostics, one
/// a `line`, equal a full check's of the same texts.
fn edits_equal_a_full_check(
    tmp: &Path,
    variants: &[(&str, Vec<String>)],
    edits: &[(usize, usize)],
    line: fn(&journeys::Diagnostic) -> String,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let mut ws = Workspace::load(tmp);
    ws.recheck_all();
    for &(file, variant) in edits {
        let (name, texts) = &variants[file];
        let text = &texts[variant % texts.len()];
        ws.change(name, text.clone());
        proptest::prop_assert_eq!(
            incremental_as(&ws, line),
            full_as(&ws, line),
            "after {} became {}",
            name,
            text
        );
    }
    let _ = std::fs::remove_dir_all(tmp);
    Ok(())
}

// ---------------------------------------------------------------------------
// A Catalog edit re-runs the checks against the Catalog that the last checks
// recorded, and keeps the rest of each file's diagnostics: the result must be
// what a check from scratch finds, to the severity, help and byte range.

/// Everything a diagnostic says, one a line.
fn strict(d: &journeys::Diagnostic) -> String {
    format!(
        "{}:{}:{} [{}..{}] {:?} {} {} | {:?}",
        d.file_name(),
        d.span.line,
        d.span.column,
        d.span.start,
        d.span.end,
        d.severity,
        d.code,
        d.message,
        d.help
    )
}

/// A repository whose files read the Catalog in every way a check can: event
/// names (entry, exit, goal, `wait_for`, `history`), comparisons with values,
/// lists and paths, `history … where`, texts of templates, of dedupe keys and
/// of updates, a sent template's `entry.*` variables, reserved attributes.
const TYPED_CATALOG: &str = "apiVersion: sluice/v1
kind: Catalog
id: types
user:
  plan: { enum: [free, plus] }
  score: number
  first_name: string
  tags: list
  prefs: map
events:
  signed_up: { source: string }
  ordered: { total: number, cart_id: string, items: list }
  viewed: { page: string, cart_id: string }
";

const TYPED_TEMPLATES: &str = "apiVersion: sluice/v1
kind: Template
id: hello
channel: email
subject: \"Hi {{user.first_name}}\"
text: \"From {{entry.source}}, {{user.email}}\"
---
apiVersion: sluice/v1
kind: Template
id: receipt
channel: email
subject: Your order
text: \"{{entry.total}} for {{entry.cart_id}} in {{user.prefs.lang}}\"
";

const TYPED_SEGMENTS: &str = "apiVersion: sluice/v1
kind: Segment
id: buyers
when:
  all:
    - user.plan: { in: [free, plus] }
    - history: { event: ordered, within: 30d, count: { gte: 1 }, where: { event.total: { gt: 10 } } }
---
apiVersion: sluice/v1
kind: Segment
id: tagged
when: { user.tags: { contains: vip } }
";

const TYPED_WELCOME: &str = "apiVersion: sluice/v1
kind: Journey
id: welcome
version: 1
entry:
  event: signed_up
  when: { event.source: { in: [ads, search] } }
  dedupe_key: \"{{event.source}}-{{user.id}}\"
exit:
  - event: ordered
    when: { event.total: { gte: \"{{user.score}}\" } }
goal: { event: viewed, within: 7d, when: { event.page: { eq: pricing } } }
steps:
  - id: hi
    send: { channel: email, template: hello }
  - id: look
    wait_for:
      event: viewed
      where: { event.cart_id: { exists: true } }
      timeout: 1d
      on_event: end
      on_timeout: tag
  - id: tag
    update: { user.score: \"{{entry.source}}\" }
";

const TYPED_ORDERS: &str = "apiVersion: sluice/v1
kind: Journey
id: orders
version: 1
entry:
  event: ordered
  when: { all: [ { event.total: { gt: 5 } }, { user.plan: plus }, { segment: buyers } ] }
steps:
  - id: thanks
    send: { channel: email, template: receipt }
  - id: branch
    branch:
      - when: { user.score: { gte: \"{{entry.total}}\" } }
        next: end
      - next: end
";

/// Expects `orders` to compile: when a Catalog edit makes the template it
/// sends read an undeclared `entry.*` variable, it stops compiling and this
/// test names an undefined journey.
const TYPED_TEST: &str = "apiVersion: sluice/v1
kind: JourneyTest
id: orders-thank
start: \"2026-03-02T09:00:00Z\"
events:
  - { type: identify, user: u1, ts: \"+0s\", traits: { email: u@example.com, plan: plus } }
  - { type: track, user: u1, ts: \"+5m\", event: ordered, props: { total: 20, cart_id: c1 } }
run_until: \"+1h\"
expect:
  - { user: u1, journey: orders, step: thanks, outcome: sent }
";

fn typed_repo(with_test: bool) -> std::path::PathBuf {
    let mut files = vec![
        ("catalog.yaml", TYPED_CATALOG),
        ("templates/t.yaml", TYPED_TEMPLATES),
        ("segments/s.yaml", TYPED_SEGMENTS),
        ("journeys/welcome.yaml", TYPED_WELCOME),
        ("journeys/orders.yaml", TYPED_ORDERS),
    ];
    if with_test {
        files.push(("tests/orders.yaml", TYPED_TEST));
    }
    write_repo(&files)
}

/// Catalog edits of every kind: a type changed, an attribute or property
/// added, removed or misspelt (suggestions change), an enum's values, an
/// event removed or renamed, a reserved attribute declared, an invalid type.
fn typed_catalogs() -> Vec<String> {
    with_replacements(
        TYPED_CATALOG,
        &[
            ("score: number", "score: string"),
            ("  first_name: string\n", ""),
            ("first_name: string", "frist_name: string"),
            ("first_name: string", "first_name: strng"),
            (
                "plan: { enum: [free, plus] }",
                "plan: { enum: [free, gold] }",
            ),
            ("plan: { enum: [free, plus] }", "plan: string"),
            ("tags: list", "tags: string"),
            ("prefs: map", "prefs: string"),
            ("user:\n", "user:\n  email: number\n"),
            ("user:\n", "user:\n  first_nam: string\n"),
            (
                "signed_up: { source: string }",
                "signed_up: { source: number }",
            ),
            ("signed_up: { source: string }", "signed_up: {}"),
            ("  signed_up: { source: string }\n", ""),
            ("total: number", "total: string"),
            ("total: number, ", ""),
            ("cart_id: string, items: list", "items: list"),
            ("ordered:", "orderd:"),
            ("  viewed: { page: string, cart_id: string }\n", ""),
            (
                "viewed: { page: string, cart_id: string }",
                "viewed: { page: number }",
            ),
            ("events:\n", "events:\n  viewd: {}\n"),
        ],
    )
}

/// Every Catalog edit, one after another, then each from the original: the
/// diagnostics equal a full check's, with and without a JourneyTest (which
/// sees only the journeys that compile), and only a JourneyTest whose
/// journey's verdict changes makes the edit re-check everything.
#[test]
fn catalog_edits_equal_a_check_from_scratch() {
    for with_test in [false, true] {
        let tmp = typed_repo(with_test);
        let mut ws = Workspace::load(&tmp);
        ws.recheck_all();
        assert_eq!(incremental_as(&ws, strict), full_as(&ws, strict));
        assert!(
            ws.results().values().all(Vec::is_empty),
            "the typed repository is valid: {:?}",
            ws.results()
        );
        let catalogs = typed_catalogs();
        let from_original = catalogs
            .iter()
            .flat_map(|c| [c.clone(), TYPED_CATALOG.to_owned()]);
        let mut any_diagnostics = 0;
        for (i, text) in catalogs.iter().cloned().chain(from_original).enumerate() {
            let how = ws.change("catalog.yaml", text.clone());
            if !with_test {
                assert_eq!(how, Recheck::File, "edit {i} without tests:\n{text}");
            }
            let incremental = incremental_as(&ws, strict);
            assert_eq!(
                incremental,
                full_as(&ws, strict),
                "edit {i} (tests: {with_test}):\n{text}"
            );
            any_diagnostics += usize::from(!incremental.is_empty());
        }
        assert!(any_diagnostics > 20, "the edits are reported somewhere");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

/// `original`, then `original` with each replacement made.
fn with_replacements(original: &str, replacements: &[(&str, &str)]) -> Vec<String> {
    std::iter::once(original.to_owned())
        .chain(
            replacements
                .iter()
                .map(|(from, to)| original.replace(from, to)),
        )
        .collect()
}

/// One file's possible texts in the typed repository.
fn typed_variants() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("catalog.yaml", typed_catalogs()),
        (
            "templates/t.yaml",
            with_replacements(
                TYPED_TEMPLATES,
                &[
                    ("{{entry.source}}", "{{entry.sorce}}"),
                    ("{{entry.cart_id}}", "{{entry.items}} {{user.nope}}"),
                    ("Your order", "{{> footer}}"),
                ],
            ),
        ),
        (
            "segments/s.yaml",
            with_replacements(
                TYPED_SEGMENTS,
                &[("gt: 10", "gt: ten"), ("contains: vip", "eq: vip")],
            ),
        ),
        (
            "journeys/welcome.yaml",
            with_replacements(
                TYPED_WELCOME,
                &[
                    ("eq: pricing", "eq: 3"),
                    ("event: viewed\n      where", "event: viewd\n      where"),
                    ("{{entry.source}}", "{{entry.total}}"),
                ],
            ),
        ),
        (
            "journeys/orders.yaml",
            with_replacements(
                TYPED_ORDERS,
                &[
                    ("user.plan: plus", "user.plan: gold"),
                    ("template: receipt", "template: hello"),
                ],
            ),
        ),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Random sequences of Catalog edits among edits to the files that read
    /// it (some of them adding a partial, some making a journey send a
    /// template whose `entry.*` variables its entry event lacks), with and
    /// without a JourneyTest: after each, the incremental diagnostics equal
    /// a check from scratch of the same texts, to the byte range and help.
    #[test]
    fn random_catalog_edits_equal_a_check_from_scratch(
        with_test in proptest::bool::ANY,
        edits in proptest::collection::vec((0usize..6, 0usize..21), 1..16)
    ) {
        let tmp = typed_repo(with_test);
        // Mostly the Catalog.
        let edits: Vec<(usize, usize)> =
            edits.into_iter().map(|(f, v)| (f.saturating_sub(1), v)).collect();
        edits_equal_a_full_check(&tmp, &typed_variants(), &edits, strict)?;
    }
}
