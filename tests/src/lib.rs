//! Test harness: starts the real `lockserver` binary on a free loopback port and talks to it
//! over HTTP; for the etcd backend, starts a real etcd cluster on loopback ports too
//! ([`EtcdCluster`]).
//!
//! The binary is the one in the workspace's target directory (`LOCKSERVER_BIN` overrides it);
//! when it is missing it is built first. Each [`TestServer`] gets its own random secret and
//! is killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

mod certs;
mod etcd;

pub use certs::{Issued, TestCa};
pub use etcd::EtcdCluster;

/// The header that carries the shared secret.
pub use lockserver_protocol::SECRET_HEADER;

/// A directory removed when dropped.
pub struct TempDir {
    /// Its path.
    pub path: PathBuf,
}

impl TempDir {
    /// A fresh empty directory under the system's temp dir.
    pub fn new(label: &str) -> TempDir {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("lockserver-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir { path }
    }

    /// The path as a `&str`, for flags.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running `lockserver` process.
pub struct TestServer {
    child: Child,
    /// The data dir it was given by the harness (none when the test chose one).
    _data_dir: Option<TempDir>,
    /// Other files it reads (a keys file, certificates), removed with it.
    pub dirs: Vec<TempDir>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The secret it accepts.
    pub secret: String,
    /// What it printed on stdout before it was ready.
    pub stdout: Vec<String>,
}

/// The path of the server binary, built (with the etcd backend) on first use if it is not there.
pub fn server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(path) = std::env::var("LOCKSERVER_BIN") {
                return PathBuf::from(path);
            }
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target"));
            let binary = target.join("debug").join("lockserver");
            if !binary.exists() {
                let status = Command::new(env!("CARGO"))
                    .args(["build", "-p", "lockserver", "--features", "etcd"])
                    .current_dir(&workspace)
                    .status()
                    .expect("running cargo build");
                assert!(status.success(), "cargo build -p lockserver failed");
            }
            binary
        })
        .clone()
}

/// The backend the servers of a suite use; the same suite runs on each.
pub enum Backend {
    /// The embedded store, durable, each server with a fresh data dir of its own.
    Embedded,
    /// Gateways on this etcd cluster; each [`Backend::start`] gets a key prefix of its own,
    /// so that tests sharing the cluster do not see each other's locks.
    Etcd(&'static EtcdCluster),
    /// That backend, but [`Backend::start`] gives the server a keys file instead of a secret:
    /// the helpers send the secret of a `lock` key in a namespace of its own (the suite as one
    /// tenant sees it). `start_raw` and `start_with_env` are the backend's own.
    Keyed(&'static Backend),
}

impl Backend {
    /// Starts a server with a fresh random secret and these extra flags.
    pub fn start(&self, args: &[&str]) -> TestServer {
        if let Backend::Keyed(backend) = self {
            let secret = format!("tenant-secret-{}", std::process::id());
            let keys = TempDir::new("keys");
            let file = keys.path.join("keys.toml");
            let text = format!(
                "[[key]]\nname = \"suite\"\nsecret = \"{secret}\"\nnamespace = \"suite\"\nrole = \"lock\"\n"
            );
            std::fs::write(&file, text).expect("writing the keys file");
            let mut full = vec!["--keys-file", file.to_str().expect("a UTF-8 temp path")];
            full.extend_from_slice(args);
            let mut server = backend.start_raw(&full, Some(secret));
            server.dirs.push(keys);
            return server;
        }
        let secret = format!("test-secret-{}", std::process::id());
        let mut full = vec!["--secret", &secret];
        full.extend_from_slice(args);
        self.start_raw(&full, Some(secret.clone()))
    }

    /// Starts a server with exactly these flags (plus the loopback address, port 0 and the
    /// backend's own flags). `secret` is what the helpers will send.
    pub fn start_raw(&self, args: &[&str], secret: Option<String>) -> TestServer {
        self.start_with_env(args, secret, &[])
    }

    /// Like [`Backend::start_raw`], with extra environment variables.
    pub fn start_with_env(&self, args: &[&str], secret: Option<String>, env: &[(&str, &str)]) -> TestServer {
        match self {
            Backend::Embedded => TestServer::start_with_env(args, secret, env),
            Backend::Keyed(backend) => backend.start_with_env(args, secret, env),
            Backend::Etcd(cluster) => {
                let flags = cluster.gateway_flags(&cluster.fresh_prefix());
                let mut full: Vec<&str> = flags.iter().map(String::as_str).collect();
                full.extend_from_slice(args);
                TestServer::launch(&full, secret, env, None)
            }
        }
    }
}

impl TestServer {
    /// Starts a server with a fresh random secret and these extra flags.
    pub fn start(args: &[&str]) -> TestServer {
        Backend::Embedded.start(args)
    }

    /// Starts a server with exactly these flags (plus the loopback address and port 0).
    /// `secret` is what the helpers will send.
    pub fn start_raw(args: &[&str], secret: Option<String>) -> TestServer {
        Self::start_with_env(args, secret, &[])
    }

    /// Like [`TestServer::start_raw`], with extra environment variables.
    /// Unless `args` name a `--data-dir`, `--storage` or `--backend`, the server gets a fresh
    /// durable data dir of its own.
    pub fn start_with_env(args: &[&str], secret: Option<String>, env: &[(&str, &str)]) -> TestServer {
        let own_dir = !args.iter().any(|a| ["--data-dir", "--storage", "--backend"].contains(a));
        let data_dir = own_dir.then(|| TempDir::new("data"));
        let dir_arg = data_dir.as_ref().map(|dir| dir.arg().to_string());
        let mut full = args.to_vec();
        if let Some(dir) = &dir_arg {
            full.extend(["--data-dir", dir.as_str()]);
        }
        Self::launch(&full, secret, env, data_dir)
    }

    /// Starts the binary with these flags (plus the loopback address and port 0) and waits
    /// until it listens.
    fn launch(
        args: &[&str],
        secret: Option<String>,
        env: &[(&str, &str)],
        data_dir: Option<TempDir>,
    ) -> TestServer {
        let mut command = Command::new(server_binary());
        command.args(["--bind", "127.0.0.1", "--port", "0"]).args(args);
        command
            .env_remove("LOCKSERVER_SECRET")
            .env_remove("LOCKSERVER_PORT")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            // Keep a developer's .env out of the way: the server looks for it in its cwd.
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("starting the lockserver binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let base = loop {
            let line = match lines.next() {
                Some(Ok(line)) => line,
                _ => panic!("lockserver exited before listening; it printed {printed:?}"),
            };
            if let Some(address) = line.strip_prefix("lockserver listening on ") {
                break address.trim().to_string();
            }
            printed.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let secret = secret
            .or_else(|| printed.iter().find_map(|line| line.rsplit(": ").next().map(str::to_string)))
            .unwrap_or_default();
        TestServer { child, _data_dir: data_dir, dirs: Vec::new(), base, secret, stdout: printed }
    }

    /// Sends SIGHUP: the server re-reads its keys file and TLS certificate.
    pub fn hangup(&self) {
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|status| status.success()), "kill -HUP failed");
    }

    /// An API client for this server with its secret.
    pub fn api(&self) -> Api {
        Api::new(&self.base, &self.secret)
    }

    /// The server's process id (to pause it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills the process with SIGKILL (a crash) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(status.expect("running kill").success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("waiting for lockserver") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("lockserver did not exit within 10 s of SIGTERM");
    }
}

/// Runs the server binary with these flags (plus the loopback address and port 0), expecting
/// it to refuse to start; returns its exit status and what it printed on stderr.
pub fn start_expecting_failure(args: &[&str]) -> (std::process::ExitStatus, String) {
    run_expecting_failure(Command::new(server_binary()), args)
}

/// Like [`start_expecting_failure`], for a command that wraps the binary (`setpriv ...`).
pub fn run_expecting_failure(mut command: Command, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = command
        .args(["--bind", "127.0.0.1", "--port", "0", "--secret", "s"])
        .args(args)
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the lockserver binary");
    for _ in 0..200 {
        if let Some(status) = child.try_wait().expect("waiting for lockserver") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr).ok();
            return (status, stderr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("lockserver kept running; it was expected to refuse to start");
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: the status and the JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The parsed body.
    pub body: Value,
}

impl Reply {
    /// The `"error"` code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// Asserts an error reply with this status and code whose message is not empty.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code()), (status, code), "reply: {:?}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "reply: {:?}", self.body);
    }

    /// The fencing token of a grant.
    #[track_caller]
    pub fn token(&self) -> u64 {
        self.body["token"].as_u64().unwrap_or_else(|| panic!("no token in {:?}", self.body))
    }
}

/// A small HTTP client for the lock API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    secret: String,
}

impl Api {
    /// A client for the server at `base` sending `secret`.
    pub fn new(base: &str, secret: &str) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("building the HTTP client");
        Api { http, base: base.to_string(), secret: secret.to_string() }
    }

    /// The same client over another HTTP client (one trusting a test CA, say).
    pub fn with_http(&self, http: reqwest::Client) -> Api {
        Api { http, ..self.clone() }
    }

    /// The same client sending another secret (or none, when empty).
    pub fn with_secret(&self, secret: &str) -> Api {
        Api { secret: secret.to_string(), ..self.clone() }
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request builder with the secret set.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        if self.secret.is_empty() {
            builder
        } else {
            builder.header(SECRET_HEADER, &self.secret)
        }
    }

    /// Sends `request` and parses the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the request reaches the server");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("reading the body");
        Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    /// `POST path` with a raw body.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).body(body)).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// `POST /acquire`.
    pub async fn acquire(&self, body: Value) -> Reply {
        self.post("/acquire", body).await
    }

    /// `POST /release`.
    pub async fn release(&self, body: Value) -> Reply {
        self.post("/release", body).await
    }

    /// `GET /locks/{resource}` with the name percent-encoded.
    pub async fn inspect(&self, resource: &str) -> Reply {
        self.get(&format!("/locks/{}", encode(resource))).await
    }
}

/// Percent-encodes a resource name for a path segment.
pub fn encode(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One Server-Sent Event of `GET /watch`.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `id:`.
    pub id: u64,
    /// Its `event:` (`acquired`, ..., `reset`).
    pub event: String,
    /// Its `data:`, parsed.
    pub data: Value,
}

/// A `GET /watch` stream, read block by block.
pub struct Sse {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// The id of the last block read (an event's, or an id-only block's).
    pub last_id: Option<u64>,
}

impl Api {
    /// Opens `GET /watch?{query}`, sending `Last-Event-ID` when given; panics unless 200.
    pub async fn watch(&self, query: &str, last_id: Option<u64>) -> Sse {
        let mut request = self.request(reqwest::Method::GET, &format!("/watch?{query}"));
        if let Some(id) = last_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("the watch reaches the server");
        assert_eq!(response.status(), 200, "GET /watch?{query}");
        Sse { response, buffer: Vec::new(), last_id: None }
    }
}

impl Sse {
    /// The next event within `within` (comments and id-only blocks are skipped); `None` if
    /// none came in time or the stream ended.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in text.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = value.parse().ok();
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        event = Some(value.to_string());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if id.is_some() {
                    self.last_id = id;
                }
                if let (Some(id), Some(event)) = (id, event) {
                    let data = serde_json::from_str(&data).expect("watch data is JSON");
                    return Some(SseEvent { id, event, data });
                }
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }
}
