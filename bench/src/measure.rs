//! Measurement helpers shared by the scenarios: load loops over keep-alive connections (bounded
//! in count and time), request scripts, percentiles, and the contended hand-off measurement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{request, Conn, Target};

/// The shared secret of every server the bench starts.
pub const SECRET: &str = "bench-secret";

/// The `p` quantile (0 to 1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A small deterministic generator, so every run draws the same expiries.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Runs `conns` connections for `duration`, each repeating its own list of requests (all
/// expected to answer 200); returns rounds of the list completed per second.
pub async fn rounds_per_second(addr: &str, scripts: Vec<Vec<Vec<u8>>>, duration: Duration) -> f64 {
    rounds_per_second_on(&Target::plain(addr), scripts, duration).await
}

/// [`rounds_per_second`] against a [`Target`] (HTTPS, say).
pub async fn rounds_per_second_on(target: &Target, scripts: Vec<Vec<Vec<u8>>>, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for script in scripts {
        let (target, done) = (target.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&target).await.expect("connecting");
            while Instant::now() < deadline {
                for step in &script {
                    let (status, body) = conn.call(step).await.expect("a response");
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("a load task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// N connections, each acquiring and releasing its own resource.
pub fn cycle_scripts(n: usize, tag: &str) -> Vec<Vec<Vec<u8>>> {
    (0..n)
        .map(|i| {
            let body = format!(r#"{{"resource":"{tag}-{i}","owner":"{tag}-owner-{i}"}}"#);
            vec![request("POST", "/acquire", SECRET, &body), request("POST", "/release", SECRET, &body)]
        })
        .collect()
}

/// Like [`rounds_per_second`], with the scripts spread over several servers, each measured
/// for the same `duration` at once; returns the total.
pub async fn spread(addrs: &[String], scripts: Vec<Vec<Vec<u8>>>, duration: Duration) -> f64 {
    let mut shares: Vec<Vec<Vec<Vec<u8>>>> = vec![Vec::new(); addrs.len()];
    for (index, script) in scripts.into_iter().enumerate() {
        shares[index % addrs.len()].push(script);
    }
    let runs: Vec<_> = addrs
        .iter()
        .zip(shares)
        .filter(|(_, share)| !share.is_empty())
        .map(|(addr, share)| {
            let addr = addr.clone();
            tokio::spawn(async move { rounds_per_second(&addr, share, duration).await })
        })
        .collect();
    let mut total = 0.0;
    for run in runs {
        total += run.await.expect("a load share");
    }
    total
}

/// Acquires `count` distinct resources over 64 connections; returns the time it took.
pub async fn hold_many(addr: &str, count: usize, tag: &str) -> Duration {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (addr, next, tag) = (addr.to_string(), next.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&addr).await.expect("connecting");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    return;
                }
                let body = format!(r#"{{"resource":"{tag}-{i:07}","owner":"holder-{}"}}"#, i % 64);
                let (status, _) =
                    conn.call(&request("POST", "/acquire", SECRET, &body)).await.expect("acquire");
                assert_eq!(status, 200);
            }
        }));
    }
    for task in tasks {
        task.await.expect("a loading task");
    }
    started.elapsed()
}

/// What 16 clients taking turns on one resource saw.
pub struct Contention {
    pub grants: usize,
    pub wall: Duration,
    pub utilisation: f64,
    pub max: usize,
    pub min: usize,
    pub p50: Duration,
    pub p99: Duration,
}

/// 16 clients on one resource for `run`, each holding it 10 ms; client `i` talks to
/// `addrs[i % addrs.len()]`.
pub async fn contention(addrs: &[String], tag: &str, run: Duration) -> Contention {
    let events = Arc::new(Mutex::new(Vec::new())); // (grant, release sent, client)
    let deadline = Instant::now() + run;
    let mut tasks = Vec::new();
    for client in 0..16 {
        let (addr, events) = (addrs[client % addrs.len()].clone(), events.clone());
        let resource = format!("hot-{tag}");
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"resource":"{resource}","owner":"c{client}","wait":60}}"#);
            let (acquire, release) =
                (request("POST", "/acquire", SECRET, &body), request("POST", "/release", SECRET, &body));
            let mut conn = Conn::connect(&addr).await.expect("connecting");
            while Instant::now() < deadline {
                let (status, _) = conn.call(&acquire).await.expect("acquire");
                assert_eq!(status, 200);
                let granted = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                let released = Instant::now();
                events.lock().unwrap().push((granted, released, client));
                conn.call(&release).await.expect("release");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a contended client");
    }
    let events = events.lock().unwrap().clone();
    Contention::of(events)
}

impl Contention {
    /// The figures of critical sections `(granted, release sent, client)` of 16 clients.
    pub fn of(mut events: Vec<(Instant, Instant, usize)>) -> Contention {
        events.sort();
        let busy: Duration = events.iter().map(|(g, r, _)| *r - *g).sum();
        let wall = events.last().map(|e| e.1).unwrap() - events[0].0;
        let mut gaps: Vec<Duration> =
            events.windows(2).map(|w| w[1].0.saturating_duration_since(w[0].1)).collect();
        gaps.sort();
        let mut per_client = [0usize; 16];
        events.iter().for_each(|(_, _, c)| per_client[*c] += 1);
        Contention {
            grants: events.len(),
            wall,
            utilisation: busy.as_secs_f64() / wall.as_secs_f64(),
            max: *per_client.iter().max().unwrap(),
            min: *per_client.iter().min().unwrap(),
            p50: percentile(&gaps, 0.5),
            p99: percentile(&gaps, 0.99),
        }
    }
}

/// Runs `conns` Redis connections for `duration`, each taking and releasing its own lock the
/// way Redis users do (`SET key owner NX PX`, then a compare-and-delete script); returns cycles
/// per second.
pub async fn redis_cycles(addr: &str, conns: usize, duration: Duration) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let script =
        "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (addr, done) = (addr.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            let resp = |parts: &[&str]| {
                let mut cmd = format!("*{}\r\n", parts.len());
                for part in parts {
                    cmd.push_str(&format!("${}\r\n{part}\r\n", part.len()));
                }
                cmd.into_bytes()
            };
            let (key, owner) = (format!("lock-{i}"), format!("owner-{i}"));
            let set = resp(&["SET", &key, &owner, "NX", "PX", "30000"]);
            let del = resp(&["EVAL", script, "1", &key, &owner]);
            let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connecting to redis");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = [0u8; 512];
            while Instant::now() < deadline {
                for (cmd, expect) in [(&set, b'+'), (&del, b':')] {
                    stream.write_all(cmd).await.expect("write");
                    let n = stream.read(&mut buf).await.expect("read");
                    assert!(n > 0 && buf[0] == expect, "{}", String::from_utf8_lossy(&buf[..n]));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("a redis client");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
