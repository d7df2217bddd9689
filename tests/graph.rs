//! `sluice graph` through the binary: every journey of the example shop
//! drawn in Mermaid and dot (snapshotted), and an unknown journey.

#[path = "support/mod.rs"]
mod support;

use std::process::Command;

use support::cli::sluice_out as sluice;

fn shop() -> String {
    support::fixture::utf8(&support::fixture::shop()).to_owned()
}

const JOURNEYS: &[&str] = &[
    "back-in-stock",
    "cart-abandonment",
    "order-confirmation",
    "weekly-digest",
    "welcome-series",
    "win-back",
];

#[test]
fn every_shop_journey_in_mermaid_and_dot() {
    let shop = shop();
    for id in JOURNEYS {
        for format in ["mermaid", "dot"] {
            let (code, stdout, stderr) = sluice(&["graph", &shop, id, "--format", format]);
            assert_eq!(code, 0, "{id} {format}: {stderr}");
            insta::assert_snapshot!(format!("graph_{id}_{format}"), stdout);
        }
    }
}

#[test]
fn mermaid_is_the_default_and_dir_defaults_to_the_current_one() {
    let shop = shop();
    let (code, stdout, stderr) = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["graph", "cart-abandonment"])
        .current_dir(&shop)
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .expect("run sluice");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("flowchart TD\n"), "{stdout}");
    let (_, explicit, _) = sluice(&["graph", &shop, "cart-abandonment"]);
    assert_eq!(stdout, explicit);
}

#[test]
fn an_unknown_journey_is_a_clear_error() {
    let (code, stdout, stderr) = sluice(&["graph", &shop(), "cart-abandonmen"]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    // miette wraps at the terminal's width: compare the words.
    let words: Vec<&str> = stderr.split_whitespace().filter(|w| *w != "│").collect();
    let flat = words.join(" ");
    assert!(flat.contains("no journey `cart-abandonmen`"), "{stderr}");
    assert!(
        flat.contains("did you mean `cart-abandonment`?"),
        "{stderr}"
    );
}
