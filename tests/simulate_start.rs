//! `simulate --start`: events before the start only build profiles and
//! history, and nothing is decided before the start — not even what the
//! imported history sets in motion (a segment's `history … within` window
//! that closes before the start enters the user *at* the start).

use std::path::Path;
use std::process::Command;

#[test]
fn nothing_is_decided_before_the_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let events = dir.path().join("events.jsonl");
    // 5% of the generated users bring an order from months before the
    // start: they lapse into win-back while the history is imported.
    let spec = shopgen::Spec {
        users: 2_000,
        events: 16_000,
        ..shopgen::Spec::default()
    };
    shopgen::generate_file(&spec, &events).expect("generate");
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let start = "2026-03-02T00:00:00Z";
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("simulate")
        .arg(&shop)
        .arg("--events")
        .arg(&events)
        .args(["--start", start, "--until", "2026-03-09T00:00:00Z"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    let mut win_back_at_start = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let at = v["at"].as_str().expect("at");
        assert!(at >= start, "decided before the start: {line}");
        if at == start && v["journey"] == "win-back" {
            win_back_at_start += 1;
        }
        n += 1;
    }
    assert!(n > 1_000, "a meaningful run: {n}");
    assert!(
        win_back_at_start > 0,
        "users who lapsed during the imported history enter at the start"
    );
}
