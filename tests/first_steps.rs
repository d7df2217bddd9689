//! The mistakes a newcomer makes first, through the binary: a wrong path
//! for the events file, an empty events file, a server that is not
//! running, a port already taken, a flag a command does not have. Each
//! gets one sentence naming what is wrong and where, exit 1 (0 for the
//! empty file, which is not an error), and never an `os error N`.

#[path = "support/mod.rs"]
mod support;

use std::net::TcpListener;

use support::cli::stderr as stderr_of;
use support::cli::{output, sluice, sluice_out, stderr};
use support::fixture::{copy_dir, shop, utf8};

/// A miette report on one line: its wrapped lines joined, without the
/// `×`/`│` gutter.
fn flat(report: &str) -> String {
    report
        .lines()
        .map(|l| l.trim_start_matches([' ', '×', '│']).trim_end())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn no_os_error(stderr: &str) {
    assert!(!stderr.contains("os error"), "a raw OS error: {stderr}");
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
}

#[test]
fn simulate_names_a_missing_events_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("evnets.jsonl");
    let (code, stdout, stderr) =
        sluice_out(&["simulate", utf8(&shop()), "--events", utf8(&missing)]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot read the events file `{}`: no such file or directory",
            missing.display()
        )),
        "{stderr}"
    );
    no_os_error(&stderr);
}

#[test]
fn simulate_refuses_a_directory_as_events_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = sluice_out(&["simulate", utf8(&shop()), "--events", utf8(tmp.path())]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("it is a directory"), "{stderr}");
    no_os_error(&stderr);
}

#[test]
fn simulate_says_an_empty_events_file_holds_no_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").expect("write");
    let (code, stdout, stderr) = sluice_out(&["simulate", utf8(&shop()), "--events", utf8(&empty)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "", "no decisions");
    assert!(
        stderr.contains(&format!(
            "warning: the events file `{}` holds no events",
            empty.display()
        )),
        "{stderr}"
    );
    no_os_error(&stderr);
}

#[test]
fn simulate_until_names_both_accepted_forms() {
    let events = shop().join("events/sample.jsonl");
    let (code, _, stderr) = sluice_out(&[
        "simulate",
        utf8(&shop()),
        "--events",
        utf8(&events),
        "--until",
        "tomorrow",
    ]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("`tomorrow`"), "{stderr}");
    assert!(stderr.contains("RFC 3339"), "{stderr}");
    assert!(stderr.contains("+DURATION"), "{stderr}");
}

#[test]
fn send_events_names_a_missing_file_before_sending_anything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("events.jsonl");
    let (code, stdout, stderr) = sluice_out(&[
        "send-events",
        utf8(&missing),
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
    ]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot read the events file")
            && stderr.contains("no such file or directory"),
        "{stderr}"
    );
    assert!(!stdout.contains("accepted"), "no totals: {stdout}");
    no_os_error(&stderr);

    let (code, stdout, stderr) = sluice_out(&[
        "send-events",
        utf8(tmp.path()),
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
    ]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("it is a directory"), "{stderr}");
    no_os_error(&stderr);
}

#[test]
fn send_events_to_a_server_that_is_not_running_says_connection_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"type\":\"track\",\"user\":\"u1\",\"ts\":\"2026-03-02T09:00:00Z\",\"event\":\"signed_up\"}\n",
    )
    .expect("write");
    // A port that was free a moment ago: nothing listens on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let (code, _, stderr) = sluice_out(&[
        "send-events",
        utf8(&file),
        "--server",
        &server,
        "--token",
        "t",
    ]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the server at {server}: connection refused"
        )),
        "{stderr}"
    );
    no_os_error(&stderr);
}

#[test]
fn run_on_a_port_in_use_says_so_and_exits_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("shop");
    copy_dir(&shop(), &repo);
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let out = output(
        sluice()
            .args(["run", utf8(&repo), "--listen", &addr, "--store"])
            .arg(tmp.path().join("store"))
            .env("SLUICE_INGEST_TOKEN", "ingest")
            .env("SLUICE_ADMIN_TOKEN", "admin"),
    );
    let stderr = flat(&stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )),
        "{stderr}"
    );
    no_os_error(&stderr);
    drop(taken);
}

#[test]
fn force_belongs_to_promote_not_to_rollback() {
    let (code, stdout, _) = sluice_out(&["promote", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("--force"), "{stdout}");
    let (code, stdout, _) = sluice_out(&["rollback", "--help"]);
    assert_eq!(code, 0);
    assert!(!stdout.contains("--force"), "{stdout}");
    // A flag the command does not have is a usage error (exit 1), before
    // any store or server is looked for.
    let (code, _, stderr) = sluice_out(&["rollback", "cart-abandonment", "--force"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unexpected argument '--force'"), "{stderr}");
}

#[test]
fn a_store_without_its_config_asks_for_the_config_not_for_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let nowhere = tmp.path().join("no-such-repo");
    let store = tmp.path().join("store");
    let (code, _, stderr) =
        sluice_out(&["history", "--store", utf8(&store), "--dir", utf8(&nowhere)]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("name the config repository"), "{stderr}");
    assert!(
        !stderr.contains("pass --store"),
        "--store was given: {stderr}"
    );
    no_os_error(&stderr);
}

#[test]
fn graph_without_a_journey_asks_for_one_and_lists_them() {
    let shop = shop();
    let (code, stdout, stderr) = sluice_out(&["graph", utf8(&shop)]);
    // miette wraps long lines at hyphens too (`wt-` / `name`).
    let stderr = flat(&stderr).replace("- ", "-");
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "name the journey to draw: `sluice graph {} JOURNEY`",
            shop.display()
        )),
        "{stderr}"
    );
    // miette wraps the help at hyphens: `cart-` / `abandonment`.
    assert!(
        stderr.replace("- ", "-").contains("cart-abandonment"),
        "{stderr}"
    );
    assert!(!stderr.contains("no journey `"), "{stderr}");
    // No argument at all, in the repository: the same question.
    let out = output(sluice().arg("graph").current_dir(&shop));
    let stderr = flat(&stderr_of(&out));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("name the journey to draw"), "{stderr}");
    assert!(
        stderr.replace("- ", "-").contains("welcome-series"),
        "{stderr}"
    );
}

#[test]
fn validate_says_whether_the_repository_is_missing_or_a_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("exmaples");
    let (code, _, stderr) = sluice_out(&["validate", utf8(&missing)]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("file_not_found"), "{stderr}");
    assert!(stderr.contains("no such directory"), "{stderr}");
    let file = shop().join("sluice.yaml");
    let (code, _, stderr) = sluice_out(&["validate", utf8(&file)]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is a file, not a directory"), "{stderr}");
}

#[test]
fn schemas_into_a_place_that_cannot_be_created_names_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    // A directory below a regular file cannot be created.
    let target = file.join("schemas");
    let (code, _, stderr) = sluice_out(&["schemas", utf8(&target)]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot write schemas to"), "{stderr}");
    no_os_error(&stderr);
}

#[test]
fn a_store_path_that_is_a_file_is_refused_in_words() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("store");
    std::fs::write(&file, "not a store").expect("write");
    let events = shop().join("events/sample.jsonl");
    let (code, _, stderr) = sluice_out(&[
        "simulate",
        utf8(&shop()),
        "--events",
        utf8(&events),
        "--store",
        utf8(&file),
    ]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("it is a file, and a store is a directory"),
        "{stderr}"
    );
    no_os_error(&stderr);
}

#[test]
fn inspect_on_a_store_that_does_not_exist_creates_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("stroe");
    let (code, _, stderr) = sluice_out(&[
        "inspect",
        "user",
        "ana",
        utf8(&shop()),
        "--store",
        utf8(&store),
    ]);
    let stderr = flat(&stderr);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no store at"), "{stderr}");
    assert!(stderr.contains("check the path"), "{stderr}");
    assert!(!store.exists(), "inspect created {}", store.display());
}

/// `sluice graph … | head` with the reader already gone: the command
/// stops quietly (exit 0), as Unix tools do, never a panic ("failed
/// printing to stdout", exit 101).
#[test]
fn a_closed_pipe_stops_a_command_quietly() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = sluice()
        .args(["graph", utf8(&shop()), "welcome-series"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    no_os_error(&stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
