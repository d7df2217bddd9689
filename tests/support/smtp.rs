//! An SMTP server for `sluice run` to deliver to: aiosmtpd
//! (`tests/fixtures/smtp/server.py`) on 127.0.0.1, started by the test.
//!
//! Owns: starting it (after checking that python3 has aiosmtpd, installed
//! by `.ci/install/smtp.sh`), reading what it received (one `.eml` and one
//! `.json` envelope per message in its own temporary directory), and
//! stopping it: SIGKILL and reap on `stop` and on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mail_parser::MessageParser;
use serde_json::Value;

use super::fixture::workspace;
use super::port::free_port;
use super::wait::poll_for;

/// aiosmtpd on 127.0.0.1; stopped when dropped.
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl SmtpServer {
    /// Starts `server.py` with `args` (e.g. `--reject` rules) on a free
    /// port and waits (at most 20 s) for its `ready` line.
    pub fn start(args: &[&str]) -> SmtpServer {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 with aiosmtpd is needed: run .ci/install/smtp.sh"
        );
        let mut s = SmtpServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    /// Starts it again on the same port and directory (after `stop`).
    pub fn spawn(&mut self) {
        let mut child = Command::new("python3")
            .arg(workspace().join("tests/fixtures/smtp/server.py"))
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start server.py");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // Kept before the wait, so that a failed wait still kills it.
        self.child = Some(child);
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server.py ready within 20 s");
        assert_eq!(line.trim(), "ready");
    }

    /// SIGKILL, and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message received: (envelope, parsed Message-ID, bytes).
    pub fn received(&self) -> Vec<(Value, String, Vec<u8>)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|eml| {
                let meta = std::fs::read_to_string(eml.with_extension("json")).expect("json");
                let raw = std::fs::read(&eml).expect("eml");
                let id = MessageParser::default()
                    .parse(&raw)
                    .and_then(|m| m.message_id().map(str::to_owned))
                    .expect("a Message-ID");
                (serde_json::from_str(&meta).expect("meta"), id, raw)
            })
            .collect()
    }

    /// Waits (at most 30 s) until `n` messages have arrived; all of them.
    pub fn wait_received(&self, n: usize) -> Vec<(Value, String, Vec<u8>)> {
        poll_for(
            Duration::from_secs(30),
            Duration::from_millis(50),
            &format!("{n} mails"),
            || {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
