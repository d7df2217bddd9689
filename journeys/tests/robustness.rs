//! No input makes the loader or the checks panic: random bytes, random
//! YAML-ish text, and mutations of the example shop's valid files.

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
        "[a-z:{}\\[\\], \\n\"'#&*!|>-]{0,12}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

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
