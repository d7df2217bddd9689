//! `SluiceRun`: the real `sluice run` as a child process of the test.
//!
//! Owns: the command line (repository, `--store`, `--listen` on
//! 127.0.0.1, extra flags and environment), its stderr (one log file per
//! start in a temporary directory of the guard), the wait for `/readyz`
//! (with a deadline; on failure the panic carries the child's stderr),
//! SIGTERM with a bounded wait, restarts on the same repository and
//! store, and cleanup: dropping the guard SIGKILLs and reaps the child,
//! and prints its logs when the test is failing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cli::sluice;
use super::http::{bearer, try_request, Response};
use super::port::free_port;

/// A `sluice run` process (or, before [`SluiceRun::start`], its settings).
pub struct SluiceRun {
    repo: PathBuf,
    store: Option<PathBuf>,
    fixed_port: Option<u16>,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    ready_within: Duration,
    logs: tempfile::TempDir,
    starts: usize,
    port: u16,
    child: Option<Child>,
}

impl SluiceRun {
    /// `sluice run <repo>` on a free port of 127.0.0.1, its store where
    /// the Project says, `SLUICE_LOG` as in the test's environment or
    /// `warn`, ready within 15 s. Not started yet: set more, then
    /// [`start`](SluiceRun::start).
    pub fn new(repo: &Path) -> SluiceRun {
        let level = std::env::var("SLUICE_LOG").unwrap_or_else(|_| "warn".into());
        SluiceRun {
            repo: repo.to_path_buf(),
            store: None,
            fixed_port: None,
            args: Vec::new(),
            env: vec![("SLUICE_LOG".into(), Some(level))],
            ready_within: Duration::from_secs(15),
            logs: tempfile::tempdir().expect("a temporary directory for the logs"),
            starts: 0,
            port: 0,
            child: None,
        }
    }

    /// `--store <path>`.
    pub fn store(mut self, path: &Path) -> SluiceRun {
        self.store = Some(path.to_path_buf());
        self
    }

    /// Listens on this port (every start) instead of a free one; a start
    /// that cannot bind it fails instead of trying another.
    pub fn listen_on(mut self, port: u16) -> SluiceRun {
        self.fixed_port = Some(port);
        self
    }

    /// More command-line flags after the listen address.
    pub fn args(mut self, args: &[&str]) -> SluiceRun {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Sets a variable in the child's environment.
    pub fn env(mut self, key: &str, value: &str) -> SluiceRun {
        self.env.push((key.to_owned(), Some(value.to_owned())));
        self
    }

    /// Removes a variable from the child's environment.
    pub fn env_remove(mut self, key: &str) -> SluiceRun {
        self.env.push((key.to_owned(), None));
        self
    }

    /// How long a start may take to answer `/readyz` with 200.
    pub fn ready_within(mut self, limit: Duration) -> SluiceRun {
        self.ready_within = limit;
        self
    }

    /// Starts it and waits until `/readyz` answers 200.
    pub fn start(mut self) -> SluiceRun {
        self.restart();
        self
    }

    /// Starts it again on the same repository and store (after
    /// [`terminate`](SluiceRun::terminate) or [`kill`](SluiceRun::kill)),
    /// on a new free port unless the port is fixed, and waits until
    /// `/readyz` answers 200. When another process takes the free port
    /// between the probe and the bind, another port is tried (three in
    /// all); any other exit fails the test with the child's stderr.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "sluice run is already running");
        let tries = if self.fixed_port.is_some() { 1 } else { 3 };
        for _ in 0..tries {
            self.spawn();
            if self.wait_ready() {
                return;
            }
        }
        panic!(
            "could not start sluice run on a free port:\n{}",
            self.logs()
        );
    }

    /// Whether the start became ready (`false`: the port was taken, try
    /// another); panics when it exited otherwise or missed the deadline.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + self.ready_within;
        loop {
            if let Some(status) = self.exited() {
                let log = self.log(self.starts);
                assert!(
                    self.fixed_port.is_none() && log.contains("cannot listen"),
                    "sluice run exited at start ({status}):\n{}",
                    self.logs()
                );
                return false;
            }
            let ready =
                try_request(self.port, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200);
            if ready {
                return true;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "sluice run not ready within {:?}:\n{}",
                    self.ready_within,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it once, expecting it to stop by itself within `limit` (a
    /// start-up error): its exit status and stderr. Panics (after killing
    /// it) if it is still running then.
    pub fn run_to_exit(mut self, limit: Duration) -> (ExitStatus, String) {
        self.spawn();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return (status, self.logs());
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "sluice run was expected to stop, but still ran after {limit:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns the process (the next start, its own log file), on the
    /// fixed port or a free one.
    fn spawn(&mut self) {
        self.starts += 1;
        self.port = self.fixed_port.unwrap_or_else(free_port);
        let log = std::fs::File::create(self.log_path(self.starts)).expect("a log file");
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice run");
        self.child = Some(child);
    }

    /// Its exit status if it has exited (then it is reaped and no longer
    /// running).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    fn command(&self) -> Command {
        let mut c = sluice();
        c.arg("run").arg(&self.repo);
        if let Some(store) = &self.store {
            c.arg("--store").arg(store);
        }
        c.args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.logs.path().join(format!("sluice-{start}.log"))
    }

    fn log(&self, start: usize) -> String {
        std::fs::read_to_string(self.log_path(start)).unwrap_or_else(|e| format!("({e})"))
    }

    /// Everything every start wrote to stderr, in order.
    pub fn logs(&self) -> String {
        (1..=self.starts).map(|n| self.log(n)).collect()
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The port it listens on (the last start's).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The repository it runs.
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// Sends SIGTERM and waits at most `limit` for the exit; its status.
    /// Past the limit: SIGKILL, and the test fails.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("sluice run is running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "cannot send SIGTERM");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("wait for sluice run") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sluice run did not stop within {limit:?} of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`terminate`](SluiceRun::terminate), requiring a clean exit (0); does
    /// nothing when it is not running.
    pub fn stop(&mut self, limit: Duration) {
        if self.child.is_none() {
            return;
        }
        let status = self.terminate(limit);
        assert!(
            status.success(),
            "sluice run exited {status}:\n{}",
            self.logs()
        );
    }

    /// SIGKILL, and reaps the process (nothing when it is not running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A request to it with an optional bearer `token`; panics (with the
    /// logs) when no answer comes.
    /// The partitions a cluster worker owns now
    /// (`sluice_partitions_owned`); 0 when it does not answer.
    pub fn partitions_owned(&self) -> u64 {
        let r = self.request("GET", "/metrics", None, b"");
        r.text
            .lines()
            .find(|l| l.starts_with("sluice_partitions_owned "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// `GET /metrics`, which must answer 200, as text.
    pub fn metrics(&self) -> String {
        let r = self.request("GET", "/metrics", None, b"");
        assert_eq!(r.status, 200, "{}", r.text);
        r.text
    }

    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Response {
        self.request_with(method, path, token, &[], body)
    }

    /// [`request`](SluiceRun::request) with more headers.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let auth = token.map(bearer);
        let mut all: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        all.extend_from_slice(headers);
        try_request(self.port, method, path, &all, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs()))
    }

    /// `POST /v1/events` with `token`: the events as JSON lines.
    pub fn post_events(&self, token: &str, events: &[Value]) -> Response {
        let body = super::events::jsonl(events);
        self.request("POST", "/v1/events", Some(token), body.as_bytes())
    }
}

impl Drop for SluiceRun {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && self.starts > 0 {
            eprintln!("----- sluice run's log -----\n{}", self.logs());
        }
    }
}

/// The value of the sample `series` (name and labels as printed) in a
/// `/metrics` text, if any.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}
