//! The `sluice` binary run as a command: a clean `Command`, its output as
//! text, and `sluice simulate`'s JSON lines.
//!
//! Owns: which environment a command starts with (nothing from the
//! developer's shell decides where a client goes), and reading outputs.
//! Every command here runs to its end before the call returns.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// `sluice` (the binary under test), with no `SLUICE_SERVER`,
/// `SLUICE_TOKEN`, `SLUICE_INGEST_TOKEN` or `SLUICE_ADMIN_TOKEN` from the
/// test's environment and stdin closed.
pub fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.env_remove("SLUICE_SERVER")
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_INGEST_TOKEN")
        .env_remove("SLUICE_ADMIN_TOKEN")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` to its end; its output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run sluice")
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `sluice ARGS…`: (exit code, stdout, stderr). The code is -1 when a
/// signal ended it (a stack overflow); a panic exits with 101.
pub fn sluice_out(args: &[&str]) -> (i32, String, String) {
    let out = output(sluice().args(args));
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

/// `sluice simulate DIR --events EVENTS ARGS…`: requires exit 0 and
/// returns every stdout line as JSON, checked to be in time order.
pub fn simulate_lines(dir: &Path, events: &Path, args: &[&str]) -> Vec<Value> {
    let out = output(
        sluice()
            .arg("simulate")
            .arg(dir)
            .arg("--events")
            .arg(events)
            .args(args),
    );
    let (stdout, stderr) = (stdout(&out), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {stdout}{stderr}",
        dir.display()
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    for pair in lines.windows(2) {
        assert!(
            pair[0]["at"].as_str() <= pair[1]["at"].as_str(),
            "lines out of time order: {} then {}",
            pair[0],
            pair[1]
        );
    }
    lines
}
