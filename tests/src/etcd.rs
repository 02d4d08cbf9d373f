//! A real etcd cluster on loopback ports, for the etcd backend's tests.
//!
//! Each member runs under a small `sh` watchdog that kills it when the test process exits (its
//! stdin pipe closes), so no etcd outlives the tests, even in a static.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::TempDir;

/// A running etcd cluster; members are killed when it is dropped (or the process exits).
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    prefixes: AtomicU64,
    /// Flags every member gets besides the cluster's own.
    extra: Vec<String>,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
    process: Mutex<Option<Running>>,
}

struct Running {
    watchdog: Child,
    /// A line or its end makes the watchdog kill etcd.
    stdin: Option<ChildStdin>,
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

impl EtcdCluster {
    /// The cluster shared by every test of this process that asks for it, started on first use.
    pub fn shared() -> &'static EtcdCluster {
        static SHARED: OnceLock<EtcdCluster> = OnceLock::new();
        SHARED.get_or_init(|| EtcdCluster::start(3))
    }

    /// Starts a cluster of `size` members and waits until it is healthy.
    pub fn start(size: usize) -> EtcdCluster {
        EtcdCluster::start_with(size, &[])
    }

    /// [`Self::start`], each member also given `extra` flags (`--quota-backend-bytes`, ...).
    pub fn start_with(size: usize, extra: &[&str]) -> EtcdCluster {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let token =
            format!("lockserver-test-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                dir: TempDir::new("etcd"),
                process: Mutex::new(None),
            })
            .collect();
        let extra = extra.iter().map(|flag| flag.to_string()).collect();
        let cluster = EtcdCluster { members, token, prefixes: AtomicU64::new(0), extra };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// `http://127.0.0.1:PORT,...` of every member.
    pub fn endpoints(&self) -> String {
        let urls: Vec<_> =
            self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect();
        urls.join(",")
    }

    /// A key prefix no other server of this process used.
    pub fn fresh_prefix(&self) -> String {
        format!("t{}/", self.prefixes.fetch_add(1, Ordering::Relaxed))
    }

    /// The flags of a gateway on this cluster under `prefix`.
    pub fn gateway_flags(&self, prefix: &str) -> Vec<String> {
        ["--backend", "etcd", "--etcd-endpoints", &self.endpoints(), "--etcd-prefix", prefix]
            .map(String::from)
            .to_vec()
    }

    fn spawn(&self, index: usize) {
        let member = &self.members[index];
        let cluster: Vec<_> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect();
        let client_url = format!("http://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let args = [
            "--name",
            &member.name,
            "--data-dir",
            member.dir.arg(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &cluster.join(","),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &self.token,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--log-level",
            "error",
        ];
        // The watchdog prints etcd's pid, then kills etcd when its stdin closes.
        // Unless told `keep` (a crash the test will restart from), the watchdog removes the data
        // dir too: a static cluster's dirs are never dropped. Not ETCD_*: etcd reads those.
        let script = r#"etcd "$@" >/dev/null 2>&1 & pid=$!; echo $pid; read what;
            { kill -9 $pid; wait $pid; } 2>/dev/null; [ "$what" = keep ] || rm -rf "$WATCHED_DATA_DIR""#;
        let mut watchdog = Command::new("sh")
            .args(["-c", script, "etcd-watchdog"])
            .args(args)
            .args(&self.extra)
            .env("WATCHED_DATA_DIR", member.dir.arg())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting etcd (install it: apt-get install etcd-server)");
        let stdout = watchdog.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reading etcd's pid");
        assert!(line.trim().parse::<u32>().is_ok(), "the watchdog prints etcd's pid, not {line:?}");
        let stdin = watchdog.stdin.take();
        *member.process.lock().unwrap() = Some(Running { watchdog, stdin });
    }

    /// Kills member `index` with SIGKILL (a crash).
    pub fn kill(&self, index: usize) {
        if let Some(mut running) = self.members[index].process.lock().unwrap().take() {
            if let Some(mut stdin) = running.stdin.take() {
                let _ = stdin.write_all(b"keep\n");
            }
            let _ = running.watchdog.wait();
        }
    }

    /// Restarts member `index` on its data dir and waits until the cluster is healthy again.
    pub fn restart(&self, index: usize) {
        self.spawn(index);
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Waits until every running member answers `/health` with `true`.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for member in &self.members {
            if member.process.lock().unwrap().is_none() {
                continue;
            }
            while !health(member.client_port) {
                assert!(Instant::now() < deadline, "etcd member {} did not become healthy", member.name);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Whether the member on `port` reports itself healthy (a plain HTTP/1.0 GET /health).
fn health(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    answer.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}
