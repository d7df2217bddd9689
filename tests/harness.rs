//! The shared harness (`tests/support`) keeps its promises: dropping a
//! `SluiceRun` kills and reaps `sluice run`, a start that fails panics
//! with the child's stderr, the HTTP client reads chunked and kept-alive
//! answers, the receiver answers several requests on one connection, and
//! fixture copies replace placeholders in text only.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use support::fixture::{copy_replacing, temp_copy};
use support::http::{request, try_request};
use support::receiver::{Receiver, Reply};
use support::server::SluiceRun;

#[test]
fn dropping_the_guard_kills_and_reaps_sluice_run() {
    let (_tmp, repo) = temp_copy("run/service", &[("__HOOK__", "9".into())]);
    let run = SluiceRun::new(&repo)
        .env("SLUICE_TEST_INGEST_TOKEN", "i")
        .env("SLUICE_TEST_ADMIN_TOKEN", "a")
        .env("SLUICE_TEST_WEBHOOK_SECRET", "s")
        .start();
    let pid = run.pid().expect("running");
    let port = run.port();
    assert_eq!(request(port, "GET", "/readyz", &[], b"").status, 200);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(run);
    // Reaped: not even a zombie is left.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sluice run (pid {pid}) outlived its guard"
    );
    assert!(try_request(port, "GET", "/readyz", &[], b"").is_err());
}

#[test]
fn a_failed_start_panics_with_the_childs_stderr() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("sluice.yaml"), "apiVersion: [unclosed\n").expect("write");
    let repo = tmp.path().to_path_buf();
    let failed = std::panic::catch_unwind(move || {
        SluiceRun::new(&repo)
            .ready_within(Duration::from_secs(15))
            .start()
    });
    let Err(panic) = failed else {
        panic!("sluice run started on a broken Project");
    };
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("sluice run exited at start"), "{message}");
    assert!(message.contains("sluice.yaml"), "no stderr in: {message}");
}

#[test]
fn the_client_reads_chunked_answers_and_stops_at_content_length() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let answers: [&[u8]; 2] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            // Kept open after the body, as a keep-alive server does.
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Thing: yes\r\n\r\nokEXTRA",
        ];
        let mut open = Vec::new();
        for answer in answers {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).expect("read the request");
            conn.write_all(answer).expect("answer");
            open.push(conn);
        }
        open
    });
    let r = request(port, "GET", "/chunked", &[], b"");
    assert_eq!((r.status, r.text.as_str()), (200, "hello world"));
    let r = request(port, "POST", "/kept", &[("X-A", "b")], b"body");
    assert_eq!((r.status, r.text.as_str()), (201, "ok"));
    assert_eq!(r.header("x-thing"), Some("yes"));
    drop(server.join().expect("server thread"));
}

#[test]
fn the_receiver_answers_by_its_handler_on_kept_alive_connections() {
    let receiver = Receiver::keep_alive(|request, earlier| {
        Reply::status(if earlier.is_empty() && request.path == "/a" {
            201
        } else {
            500
        })
    });
    let mut conn = TcpStream::connect(("127.0.0.1", receiver.port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answers = String::new();
    for (path, body) in [("/a", "{\"n\":1}"), ("/b", "xyz")] {
        write!(
            conn,
            "POST {path} HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-{path}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        // The whole answer (an empty body: it ends with the blank line).
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"\r\n\r\n") {
            let n = conn
                .read(&mut buf)
                .expect("an answer on the same connection");
            assert!(n > 0, "the receiver closed a kept-alive connection");
            answer.extend_from_slice(&buf[..n]);
        }
        answers.push_str(&String::from_utf8_lossy(&answer));
    }
    assert!(answers.starts_with("HTTP/1.1 201"), "{answers}");
    assert!(answers.contains("HTTP/1.1 500"), "{answers}");
    let got = receiver.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].json().expect("JSON")["n"], 1);
    assert_eq!(got[1].header("IDEMPOTENCY-KEY"), "k-/b");
    assert_eq!((got[0].status, got[1].status), (201, 500));
    assert_eq!(got[1].body, b"xyz");
}

#[test]
fn fixture_copies_replace_in_text_and_leave_state_and_bytes_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let from = tmp.path().join("from");
    std::fs::create_dir_all(from.join("templates")).expect("mkdir");
    std::fs::create_dir_all(from.join(".sluice")).expect("mkdir");
    std::fs::write(
        from.join("templates/t.yaml"),
        "url: http://127.0.0.1:__HOOK__/x\n",
    )
    .expect("write");
    std::fs::write(from.join("blob.bin"), [0xff, 0xfe, b'_', b'_']).expect("write");
    std::fs::write(from.join(".sluice/state"), "old").expect("write");
    let to = tmp.path().join("to");
    copy_replacing(&from, &to, &[("__HOOK__", "4242".into())]);
    assert_eq!(
        std::fs::read_to_string(to.join("templates/t.yaml")).expect("read"),
        "url: http://127.0.0.1:4242/x\n"
    );
    assert_eq!(
        std::fs::read(to.join("blob.bin")).expect("read"),
        [0xff, 0xfe, b'_', b'_']
    );
    assert!(!to.join(".sluice").exists());
}
