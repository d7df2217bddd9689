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
