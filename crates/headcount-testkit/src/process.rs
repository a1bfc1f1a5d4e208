//! The real `headcount` binary as a child process, for tests that must kill a server and start
//! it again on the same port (an in-process server cannot crash like a process does).
//!
//! The binary is `$HEADCOUNT_BIN` if set (the test script builds it and sets it), else
//! `debug/headcount` in `$CARGO_TARGET_DIR` or the workspace's `target/`.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use crate::{SECRET, WAIT};

/// A `headcount serve` child process listening on `127.0.0.1:port`, with [`SECRET`]. Killed
/// when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    args: Vec<String>,
    /// The last lines of its stderr, for failure messages.
    stderr: Arc<Mutex<String>>,
}

/// The path of the `headcount` binary (see the module docs). Panics with what to do when it is
/// missing.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HEADCOUNT_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let bin = target.join("debug").join("headcount");
    assert!(
        bin.exists(),
        "the headcount binary is missing at {}: run `cargo build -p headcount` first, or set HEADCOUNT_BIN",
        bin.display()
    );
    bin
}

/// Runs `headcount ARGS` (without `HEADCOUNT_JWT_SECRET` or `RUST_LOG` from the test's
/// environment) to its end and returns what it printed; `None` when it was still running after
/// `within` (a server that started when it should have refused), in which case it is killed.
pub fn run_to_exit(args: &[&str], within: std::time::Duration) -> Option<std::process::Output> {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("HEADCOUNT_JWT_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run headcount");
    // Read both pipes meanwhile, so a chatty child never blocks on a full pipe.
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped")));
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(std::time::Duration::from_millis(20)); // polling the exit, not settling
    }
    Some(std::process::Output {
        status: child.wait().expect("wait"),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    })
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

impl ServerProcess {
    /// Starts `headcount serve` on a free port; returns once it listens.
    pub fn start() -> ServerProcess {
        ServerProcess::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra `serve` arguments.
    pub fn start_with(args: &[&str]) -> ServerProcess {
        let mut server = ServerProcess {
            child: None,
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stderr: Arc::new(Mutex::new(String::new())),
        };
        server.spawn();
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process at once (SIGKILL on Unix: no goodbye to its clients) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and secret.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Spawns and waits until the server prints its URL (it does once it listens). A server
    /// that exits first (the port still taken, say) is tried again until [`WAIT`] is up.
    fn spawn(&mut self) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let mut child = Command::new(binary())
                .arg("serve")
                .arg("--bind")
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("--jwt-secret")
                .arg(SECRET)
                .args(&self.args)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));
            let stdout = child.stdout.take().expect("piped stdout");
            let stderr = child.stderr.take().expect("piped stderr");
            let (ready_tx, ready_rx) = mpsc::channel::<bool>();
            thread::spawn(move || {
                let mut ready = Some(ready_tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("API URL")
                        && let Some(tx) = ready.take()
                    {
                        let _ = tx.send(true);
                    }
                }
                if let Some(tx) = ready {
                    let _ = tx.send(false);
                }
            });
            let log = self.stderr.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if log.len() > 16_384 {
                        let cut = log.len() - 8_192;
                        let cut = (cut..log.len())
                            .find(|&i| log.is_char_boundary(i))
                            .unwrap_or(0);
                        log.drain(..cut);
                    }
                }
            });
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(true) => {
                    self.child = Some(child);
                    return;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if std::time::Instant::now() >= deadline {
                        let log = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
                        panic!(
                            "headcount did not start on port {} within {WAIT:?}; its stderr:\n{log}",
                            self.port
                        );
                    }
                }
            }
        }
    }

    /// The last lines the process wrote to stderr.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
