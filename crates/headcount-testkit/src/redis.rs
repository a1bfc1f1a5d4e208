//! A real `redis-server` for tests: on a free `127.0.0.1` port, without persistence, in a
//! directory of its own; killed when dropped. It can be killed (SIGKILL), frozen (SIGSTOP),
//! thawed (SIGCONT) and restarted empty on the same port, which is what failure tests need.
//!
//! `redis-server` must be on the `PATH` (Debian: `apt-get install redis-server`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::WAIT;
use crate::process::free_port;

/// A `redis-server` child process. Killed (and its directory removed) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
    frozen: bool,
}

/// A key prefix no other test uses: `<name>-<pid>-<counter>`.
pub fn unique_prefix(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl RedisServer {
    /// Starts `redis-server` on a free port; returns once it answers `PING`.
    pub fn start() -> RedisServer {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let dir = std::env::temp_dir().join(format!(
            "headcount-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the redis directory");
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
            log: Arc::new(Mutex::new(String::new())),
            frozen: false,
        };
        server.spawn(false);
        server
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process; with `same_port`, only on `self.port` (a restart), else on another
    /// free port if that one turns out to be taken.
    fn spawn(&mut self, same_port: bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let spawned = Command::new("redis-server")
                .arg("--port")
                .arg(self.port.to_string())
                .args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .arg("--dir")
                .arg(&self.dir)
                .args(["--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not installed: the Redis tests need it on the PATH \
                     (Debian: apt-get install redis-server)"
                ),
                Err(e) => panic!("cannot run redis-server: {e}"),
            };
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let log = self.log.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(pipe).lines() {
                        let Ok(line) = line else { break };
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        log.push_str(&line);
                        log.push('\n');
                        if log.len() > 16_384 {
                            let cut = log.len() - 8_192;
                            let cut = (cut..log.len())
                                .find(|&i| log.is_char_boundary(i))
                                .unwrap_or(0);
                            log.drain(..cut);
                        }
                    }
                });
            }
            // Wait until this very process answers (not another server on a port that was
            // taken meanwhile), or exits (then try again).
            loop {
                if self.served_by(child.id()) {
                    self.child = Some(child);
                    self.frozen = false;
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server did not start on port {} within {WAIT:?}; its output:\n{}",
                        self.port,
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server could not start on port {}; its output:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
            if !same_port {
                self.port = free_port();
            }
        }
    }

    fn served_by(&self, pid: u32) -> bool {
        matches!(self.command(&["INFO", "server"]), Ok(info)
            if info.lines().any(|l| l.trim() == format!("process_id:{pid}")))
    }

    /// Whether the server answers `PING` within a short time.
    pub fn ping(&self) -> bool {
        matches!(self.command(&["PING"]), Ok(reply) if reply == "+PONG")
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:1`, `-ERR ...`, or
    /// the bulk string's text). For a few administrative commands in tests.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(out.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_owned();
        if let Some(len) = line.strip_prefix('$') {
            let Ok(len) = len.parse::<usize>() else {
                return Ok(line); // $-1: nil
            };
            let mut body = vec![0u8; len + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len);
            return Ok(String::from_utf8_lossy(&body).into_owned());
        }
        Ok(line)
    }

    /// Kills the server at once (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if self.frozen {
            self.thaw();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("create the redis directory");
        self.spawn(true);
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&mut self) {
        self.signal("-STOP");
        self.frozen = true;
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&mut self) {
        self.signal("-CONT");
        self.frozen = false;
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("redis-server is running");
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// What the server printed last.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
