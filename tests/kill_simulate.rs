//! `sluice simulate --store` killed with SIGKILL at random moments, then
//! the same command again on the same store: together the two runs print
//! every decision of an uninterrupted run and none it would not make
//! (decisions after the last commit may be printed twice: at-least-once).
//! The moments come from a fixed seed, so a failure can be replayed.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use support::fixture::shop;

fn command(events: &Path, store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("simulate")
        .arg(shop())
        .arg("--events")
        .arg(events)
        .arg("--store")
        .arg(store)
        .args([
            "--start",
            "2026-03-02T00:00:00Z",
            "--until",
            "2026-03-14T00:00:00Z",
            "--cache-users",
            "500",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Whole lines of an output (a line cut by the kill is dropped).
fn lines(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    let mut v: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    if v.last().is_some_and(|l| !l.ends_with('\n')) {
        v.pop();
    }
    v.into_iter().map(|l| l.trim_end().to_owned()).collect()
}

#[test]
fn sigkill_at_any_moment_then_the_same_command_loses_and_invents_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let events = dir.path().join("events.jsonl");
    let spec = shopgen::Spec {
        users: 2_000,
        events: 16_000,
        days: 12,
        seed: 5,
        ..shopgen::Spec::default()
    };
    shopgen::generate_file(&spec, &events).expect("generate");

    let began = Instant::now();
    let out = command(&events, &dir.path().join("whole"))
        .output()
        .expect("run");
    let full = began.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = lines(&out.stdout);
    let whole_set: BTreeSet<&String> = whole.iter().collect();
    assert!(whole.len() > 3_000, "a meaningful run: {}", whole.len());

    let mut seed: u64 = 0x5eed;
    let mut killed_mid_run = 0;
    for trial in 0..6 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = full.mul_f64(((seed >> 33) as f64 / (1u64 << 31) as f64) * 0.9 + 0.05);
        let store = dir.path().join(format!("store-{trial}"));
        let child = command(&events, &store).spawn().expect("spawn");
        std::thread::sleep(at);
        let pid = child.id();
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let first = child.wait_with_output().expect("wait");
        if !first.status.success() {
            killed_mid_run += 1;
        }
        let second = command(&events, &store).output().expect("rerun");
        assert!(
            second.status.success(),
            "trial {trial} (kill after {at:?}): the rerun failed: {}",
            String::from_utf8_lossy(&second.stderr)
        );
        let before = lines(&first.stdout);
        let after = lines(&second.stdout);
        for l in before.iter().chain(&after) {
            assert!(
                whole_set.contains(l),
                "trial {trial} (kill after {at:?}): a decision the uninterrupted run never made: {l}"
            );
        }
        let got: BTreeSet<&String> = before.iter().chain(&after).collect();
        let missing: Vec<&&String> = whole_set.difference(&got).take(3).collect();
        assert!(
            missing.is_empty(),
            "trial {trial} (kill after {at:?}): {} decisions missing, e.g. {missing:?}",
            whole_set.len() - got.len()
        );
        std::fs::remove_dir_all(&store).expect("cleanup");
    }
    assert!(
        killed_mid_run >= 3,
        "most kills landed mid-run: {killed_mid_run}"
    );
}
