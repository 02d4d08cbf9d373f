//! Starting the servers under test as processes, and reading their RSS and CPU time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process.
pub struct Server {
    child: Child,
    /// `host:port`.
    pub addr: String,
    /// How long it took from spawn to listening.
    pub startup: Duration,
}

impl Server {
    /// Runs `program` with `args` and waits for its `listening on http://ADDR` (or `https://`)
    /// line.
    pub fn start(program: &Path, args: &[&str]) -> Server {
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let url = line.strip_prefix("lockserver listening on ");
                    if let Some(addr) = url.and_then(|url| url.split_once("://")).map(|(_, addr)| addr) {
                        break addr.trim().to_string();
                    }
                }
                _ => panic!("{} exited before listening", program.display()),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr, startup: started.elapsed() }
    }

    /// The lockserver binary with the bench's flags.
    pub fn lockserver(binary: &Path, secret: &str, storage: &Storage) -> Server {
        let mut args = vec!["--bind", "127.0.0.1", "--port", "0", "--secret", secret, "--max-wait", "120"];
        match storage {
            Storage::Memory => args.extend(["--storage", "memory"]),
            Storage::Durable(dir) => args.extend(["--data-dir", dir.to_str().expect("UTF-8 path")]),
        }
        Server::start(binary, &args)
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: u64 =
            fields.get(11..13).map(|f| f.iter().filter_map(|t| t.parse::<u64>().ok()).sum()).unwrap_or(0);
        Duration::from_millis(ticks * 1000 / clock_ticks())
    }

    /// Kills it (SIGKILL) and waits.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Which storage a lockserver runs with.
pub enum Storage {
    /// `--storage memory`.
    Memory,
    /// `--data-dir DIR`.
    Durable(PathBuf),
}

/// The bytes of every file in `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// A `redis-server` process on a free loopback port, killed when dropped.
pub struct RedisServer {
    child: Child,
    /// `host:port`.
    pub addr: String,
}

impl RedisServer {
    /// Starts redis-server with `args` (and `dir` as its working dir, for persistence);
    /// `None` when it is not installed.
    pub async fn start(args: &[&str], dir: Option<&Path>) -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).ok()?.port();
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]).args(args).stdout(Stdio::null());
        if let Some(dir) = dir {
            command.args(["--dir", dir.to_str().expect("a UTF-8 path")]);
        }
        let child = command.spawn().ok()?;
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..250 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Some(RedisServer { child, addr });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not listen on {addr}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
