//! No input makes the loader or the checks panic, overflow the stack or
//! run away: random bytes, random YAML-ish text with hostile pieces
//! (aliases, deep nesting, CR endings, BOMs, partials, wrong types), and
//! mutations of the example shop's valid files. This is the loader's fuzz
//! target: `SLUICE_FUZZ_CASES` raises the number of cases (default 2048
//! per property, a few seconds in CI). Below it, the bounds of
//! `journeys::limits` on generated hostile repositories.

use std::path::Path;
use std::sync::Arc;

use journeys::diagnostic::{Diagnostics, SourceFile};
use proptest::prelude::*;

fn check_text(name: &str, text: String) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let mut docs = Vec::new();
    let file = Arc::new(SourceFile::new(name, text));
    journeys::load::load_text(&file, &mut diags, &mut docs);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let _ = journeys::compile::compile(&root, docs, &mut diags);
    // Every diagnostic's span lies inside its file.
    for d in diags.iter() {
        if let Some(f) = &d.file {
            assert!(
                d.span.start <= f.text.len() && d.span.end <= f.text.len(),
                "{d:?}"
            );
            assert!(f.text.is_char_boundary(d.span.start), "{d:?}");
            assert!(d.span.line >= 1 && d.span.column >= 1, "{d:?}");
        }
    }
    diags
}

fn shop_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    journeys::load::discover(&root)
        .expect("shop")
        .into_iter()
        .map(|p| {
            let name = journeys::load::relative_name(&root, &p);
            (name, std::fs::read_to_string(&p).expect("read"))
        })
        .collect()
}

fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("apiVersion: sluice/v1\n".to_owned()),
        Just("kind: Journey\n".to_owned()),
        Just("kind: Segment\n".to_owned()),
        Just("id: x\n".to_owned()),
        Just("steps:\n".to_owned()),
        Just("  - id: a\n".to_owned()),
        Just("    wait: 1h\n".to_owned()),
        Just("    send: { channel: email, template: t }\n".to_owned()),
        Just("when: { all: [ { user.x: 1 } ] }\n".to_owned()),
        Just("entry: { event: e }\n".to_owned()),
        Just("---\n".to_owned()),
        Just("  ".to_owned()),
        Just("- ".to_owned()),
        Just(": ".to_owned()),
        Just("{{".to_owned()),
        Just("&a ".to_owned()),
        Just("*a\n".to_owned()),
        Just("é\n".to_owned()),
        Just("&b [*a, *a, *a, *a]\n".to_owned()),
        Just("[[[[[[[[[[[[[[[[".to_owned()),
        Just("]]]]]]]]".to_owned()),
        Just("\r".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("kind: Template\nid: t\nchannel: email\nsubject: s\n".to_owned()),
        Just("text: '{{#*inline \"p\"}}{{> p}}{{/inline}}{{> p}}'\n".to_owned()),
        Just("text: '{{> template/t/text}}{{#each user.x}}{{/each}}'\n".to_owned()),
        Just("html_file: ../../../etc/passwd\n".to_owned()),
        Just("version: three\n".to_owned()),
        Just("    wait_until: { time: 9am }\n".to_owned()),
        Just(
            "kind: JourneyTest\nstart: 9999-12-31T00:00:00Z\nrun_until: +1000000000w\n".to_owned()
        ),
        "[a-z:{}\\[\\], \\n\"'#&*!|>-]{0,12}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

fn cases() -> u32 {
    std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2048)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_text("random.yaml", String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn random_yaml_never_panics(text in yamlish()) {
        check_text("random.yaml", text);
    }

    #[test]
    fn mutated_shop_files_never_panic(
        file in 0usize..64,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<char>()), 1..6),
    ) {
        let files = shop_files();
        let (name, text) = &files[file % files.len()];
        let mut chars: Vec<char> = text.chars().collect();
        for (at, op, c) in edits {
            if chars.is_empty() { break; }
            let i = at.index(chars.len());
            match op {
                0 => { chars.remove(i); }
                1 => chars.insert(i, c),
                2 => chars[i] = c,
                _ => {
                    // Swap two lines' worth: drop a run of characters.
                    let end = (i + 20).min(chars.len());
                    chars.drain(i..end);
                }
            }
        }
        check_text(name, chars.into_iter().collect());
    }
}

fn codes(diags: &Diagnostics) -> Vec<String> {
    diags.errors().map(|d| d.code.to_string()).collect()
}

#[test]
fn an_alias_bomb_stops_at_its_node_budget() {
    // Nine levels of nine aliases: 9^9 nodes if copied.
    let mut text = String::from(
        "apiVersion: sluice/v1\nkind: Segment\nid: bomb\na0: &a0 [x,x,x,x,x,x,x,x,x]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(",");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("when: { user.x: 1 }\n");
    let diags = check_text("bomb.yaml", text);
    assert_eq!(codes(&diags), ["alias_limit"]);
    // Within the budget, aliases work as before.
    let ok = "apiVersion: sluice/v1\nkind: Segment\nid: ok\nwhen: { all: [ &w { user.x: 1 }, *w, *w ] }\n";
    assert!(codes(&check_text("ok.yaml", ok.to_owned())).is_empty());
}

#[test]
fn nesting_is_bounded_in_every_form() {
    for (what, text) in [
        (
            "flow",
            format!("when: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        ),
        ("block", {
            let mut t = String::from("when:\n");
            for i in 0..200 {
                t.push_str(&format!("{}k{i}:\n", "  ".repeat(i + 1)));
            }
            t
        }),
        (
            "conditions",
            format!(
                "when: {}{{ user.x: 1 }}{}\n",
                "{ not: ".repeat(200),
                " }".repeat(200)
            ),
        ),
    ] {
        let text = format!("apiVersion: sluice/v1\nkind: Segment\nid: deep\n{text}");
        let diags = check_text("deep.yaml", text);
        assert_eq!(codes(&diags), ["nesting_too_deep"], "{what}");
    }
}

#[test]
fn a_wrong_type_does_not_stop_the_reading_of_its_document() {
    let text = "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: three\npriority: high\nentry: { event: e }\ncolour: red\nsteps:\n  - id: a\n    wait: 1h\n";
    let diags = check_text("j.yaml", text.to_owned());
    let found: Vec<(String, usize)> = diags
        .errors()
        .map(|d| (d.code.to_string(), d.span.line))
        .collect();
    assert_eq!(
        found,
        [
            ("invalid_value".to_owned(), 4),
            ("invalid_value".to_owned(), 5),
            ("unknown_field".to_owned(), 7)
        ]
    );
}

#[test]
fn positions_are_right_on_long_lines_and_with_any_line_ending() {
    // The unknown reference sits at the end of a long line of accented
    // names: its column counts characters, its span bytes.
    let names: Vec<String> = (0..5_000).map(|i| format!("\"é{i}\"")).collect();
    let line = format!("journeys: [{}, nope]", names.join(", "));
    for ending in ["\n", "\r\n", "\r"] {
        let text = [
            "apiVersion: sluice/v1",
            "kind: Throttle",
            "id: t",
            "channel: email",
            "rate: 1 per second",
            &line,
            "",
        ]
        .join(ending);
        let diags = check_text("t.yaml", text.clone());
        let last = diags.errors().last().expect("errors");
        assert_eq!(last.span.line, 6, "{ending:?}");
        assert_eq!(&text[last.span.start..last.span.end], "nope", "{ending:?}");
        assert_eq!(last.span.column, line.chars().count() - 4, "{ending:?}");
    }
}
