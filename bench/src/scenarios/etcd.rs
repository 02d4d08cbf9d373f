//! The etcd backend against the embedded one and against etcd's own lock service (`v3lock`,
//! through etcd's JSON gateway, on the same cluster), in one run, with etcd's raft proposals
//! per cycle read from its `/metrics`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{request, Conn};
use crate::measure::{contention, cycle_scripts, rounds_per_second, spread, Contention, SECRET};
use crate::report::{ms, section, Table};
use crate::server::{Server, Storage};

/// The etcd backend against the embedded one, in one run: uncontended cycles and the contended
/// hand-off gap through one gateway and through two, on a 3-member etcd cluster on loopback.
pub async fn etcd(binary: &Path, data: &Path, out: &mut String) {
    let cluster = lockserver_tests::EtcdCluster::start(3);
    let embedded = Server::lockserver(binary, SECRET, &Storage::Durable(data.join("etcd-baseline")));
    let flags = cluster.gateway_flags("bench/");
    let gateway = || {
        let mut args = vec!["--bind", "127.0.0.1", "--port", "0", "--secret", SECRET, "--max-wait", "120"];
        args.extend(flags.iter().map(String::as_str));
        Server::start(binary, &args)
    };
    let (first, second) = (gateway(), gateway());
    let one = [first.addr.clone()];
    let two = [first.addr.clone(), second.addr.clone()];
    let seconds = Duration::from_secs(3);
    let mut rows = Vec::new();
    let members: Vec<String> =
        cluster.endpoints().split(',').map(|url| url.trim_start_matches("http://").to_string()).collect();
    // etcd's own lock service and the gRPC ceiling talk to the leader: their best case.
    let etcd_addr = leader(&members).await;
    let mut proposals = Vec::new();
    for n in [1usize, 16] {
        let scripts = |tag: &str| cycle_scripts(n, &format!("{tag}-{n}"));
        let base = rounds_per_second(&embedded.addr, scripts("embedded"), seconds).await;
        let before = committed(&members).await;
        let through_one = rounds_per_second(&first.addr, scripts("one"), seconds).await;
        let ours = (committed(&members).await - before) / (through_one * seconds.as_secs_f64());
        let through_two = spread(&two, scripts("two"), seconds).await;
        let before = committed(&members).await;
        let v3 = v3lock_cycles(&etcd_addr, n, seconds).await;
        let theirs = (committed(&members).await - before) / (v3 * seconds.as_secs_f64());
        let ceiling = raw_cycles(&format!("http://{etcd_addr}"), n, seconds).await;
        proposals.push((n, ours, theirs));
        rows.push((n, base, through_one, through_two, v3, ceiling));
    }
    let base = contention(std::slice::from_ref(&embedded.addr), "embedded", seconds).await;
    let before = committed(&members).await;
    let through_one = contention(&one, "one", seconds).await;
    let one_proposals = (committed(&members).await - before) / through_one.grants as f64;
    let before = committed(&members).await;
    let through_two = contention(&two, "two", seconds).await;
    let two_proposals = (committed(&members).await - before) / through_two.grants as f64;
    let before = committed(&members).await;
    let v3 = v3lock_contention(&etcd_addr, seconds).await;
    let v3_proposals = (committed(&members).await - before) / v3.grants as f64;

    section(
        out,
        "etcd backend: gateways on a 3-member etcd cluster (loopback)",
        "Against the embedded backend (durable) in the same run; 3 s per figure. Clients of \"two gateways\" alternate between them.",
    );
    let mut table = Table::new(&[
        "N clients",
        "embedded cycles/s",
        "one gateway",
        "/ embedded",
        "two gateways",
        "/ embedded",
        "etcd v3lock",
        "one gateway / v3lock",
        "gRPC ceiling",
        "ceiling / v3lock",
        "one gateway / ceiling",
    ]);
    for (n, base, one, two, v3, ceiling) in rows {
        table.row([
            n.to_string(),
            format!("{base:.0}"),
            format!("{one:.0}"),
            format!("{:.2}", one / base),
            format!("{two:.0}"),
            format!("{:.2}", two / base),
            format!("{v3:.0}"),
            format!("{:.2}", one / v3),
            format!("{ceiling:.0}"),
            format!("{:.2}", ceiling / v3),
            format!("{:.2}", one / ceiling),
        ]);
    }
    table.write(out);
    out.push_str("etcd v3lock: `/v3/lock/lock` + `/v3/lock/unlock` through etcd's JSON gateway on the leader, each client with a lease granted once and a lock name of its own. gRPC ceiling: what a gateway that sends each request as a transaction of its own could reach at best, two transactions per cycle (`put if absent`, `delete if unchanged`) sent straight from a gRPC client to the leader, with no HTTP hop, no values, no queue and no watch; at 1 client it bounds any gateway (nothing to batch); under load a gateway that batches is not bound by it (ours sends the lock transactions issued while two are in flight as one, `server/src/engine/etcd/batches.rs`). Raft proposals per acquire+release cycle, from the growth of `etcd_server_proposals_committed_total` (the highest member's) over each run:\n\n");
    let mut table = Table::new(&["N clients", "one gateway", "etcd v3lock"]);
    for (n, ours, theirs) in proposals {
        table.row([n.to_string(), format!("{ours:.2}"), format!("{theirs:.2}")]);
    }
    table.write(out);
    out.push_str("Contended: 16 clients on one resource, each holding it 10 ms (etcd v3lock: the same through etcd's JSON gateway on the leader, each client with a lease of its own); raft proposals per grant as above.\n\n");
    let mut table =
        Table::new(&["backend", "grants", "proposals per grant", "utilisation", "hand-off gap p50", "p99"]);
    for (name, figures, proposals) in [
        ("embedded", &base, None),
        ("etcd, one gateway", &through_one, Some(one_proposals)),
        ("etcd, two gateways", &through_two, Some(two_proposals)),
        ("etcd v3lock", &v3, Some(v3_proposals)),
    ] {
        table.row([
            name.to_string(),
            figures.grants.to_string(),
            proposals.map_or(String::new(), |proposals| format!("{proposals:.2}")),
            format!("{:.3}", figures.utilisation),
            ms(figures.p50),
            ms(figures.p99),
        ]);
    }
    table.write(out);
}

/// Lock+unlock cycles per second of etcd's own lock service through its JSON gateway: `n`
/// keep-alive connections to `addr`, each with a lease of its own and its own lock name.
pub async fn v3lock_cycles(addr: &str, n: usize, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (addr, done) = (addr.to_string(), done.clone());
            tokio::spawn(async move {
                let (mut conn, lock) = v3lock_client(&addr, format!("v3lock-bench-{i}").as_bytes()).await;
                while started.elapsed() < duration {
                    let (status, locked) = conn.call(&lock).await.expect("lock");
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(locked));
                    let key = json_field(locked, "key");
                    let unlock = request("POST", "/v3/lock/unlock", SECRET, &format!(r#"{{"key":"{key}"}}"#));
                    assert_eq!(conn.call(&unlock).await.expect("unlock").0, 200);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a v3lock client");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// 16 clients taking turns on one lock of etcd's own lock service for `run`, each holding it
/// 10 ms, each with a lease of its own, all through the JSON gateway at `addr`.
pub async fn v3lock_contention(addr: &str, run: Duration) -> Contention {
    let sections = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + run;
    let tasks: Vec<_> = (0..16)
        .map(|client| {
            let (addr, sections) = (addr.to_string(), sections.clone());
            tokio::spawn(async move {
                let (mut conn, lock) = v3lock_client(&addr, b"v3lock-bench-hot").await;
                while Instant::now() < deadline {
                    let (status, locked) = conn.call(&lock).await.expect("lock");
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(locked));
                    let granted = Instant::now();
                    let key = json_field(locked, "key");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let released = Instant::now();
                    sections.lock().unwrap().push((granted, released, client));
                    let unlock = request("POST", "/v3/lock/unlock", SECRET, &format!(r#"{{"key":"{key}"}}"#));
                    assert_eq!(conn.call(&unlock).await.expect("unlock").0, 200);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a v3lock client");
    }
    let sections = sections.lock().unwrap().clone();
    Contention::of(sections)
}

/// The ceiling of any gateway: acquire+release cycles as two transactions per cycle straight
/// from an etcd gRPC client on the leader (`put if absent`, `delete if unchanged`), with no
/// HTTP hop, no values, no queue and no watch; `n` clients, each on its own key.
pub async fn raw_cycles(endpoint: &str, n: usize, duration: Duration) -> f64 {
    use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
    let client = Client::connect([endpoint], None).await.expect("connecting to etcd");
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (mut client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                let key = format!("raw-bench/{i}");
                while started.elapsed() < duration {
                    let put = Txn::new()
                        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.as_str(), "owner", None)]);
                    let granted = client.txn(put).await.expect("a grant");
                    assert!(granted.succeeded());
                    let at = granted.header().map_or(0, |header| header.revision());
                    let delete = Txn::new()
                        .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, at)])
                        .and_then([TxnOp::delete(key.as_str(), None)]);
                    assert!(client.txn(delete).await.expect("a release").succeeded());
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a raw client");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The address of the member that leads (`etcd_server_is_leader 1` in its `/metrics`), or the
/// first one.
async fn leader(members: &[String]) -> String {
    for _ in 0..50 {
        for member in members {
            let Ok(answer) = reqwest::get(format!("http://{member}/metrics")).await else { continue };
            let Ok(text) = answer.text().await else { continue };
            if text.lines().any(|line| line == "etcd_server_is_leader 1") {
                return member.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    members[0].clone()
}

/// A keep-alive connection to etcd's JSON gateway at `addr` with a lease of its own, and the
/// request that locks `name` under that lease.
async fn v3lock_client(addr: &str, name: &[u8]) -> (Conn, Vec<u8>) {
    let mut conn = Conn::connect(addr).await.expect("connecting to etcd");
    let (_, granted) =
        conn.call(&request("POST", "/v3/lease/grant", SECRET, r#"{"TTL": 60}"#)).await.expect("lease");
    let lease = json_field(granted, "ID");
    let body = format!(r#"{{"name":"{}","lease":"{lease}"}}"#, base64(name));
    (conn, request("POST", "/v3/lock/lock", SECRET, &body))
}

/// The highest `etcd_server_proposals_committed_total` among the members (the leader's).
async fn committed(members: &[String]) -> f64 {
    let mut highest = 0f64;
    for member in members {
        // etcd answers /metrics chunked, which the lean load client does not read.
        let Ok(answer) = reqwest::get(format!("http://{member}/metrics")).await else { continue };
        let Ok(text) = answer.text().await else { continue };
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("etcd_server_proposals_committed_total "))
            .and_then(|value| value.trim().parse::<f64>().ok());
        highest = highest.max(value.unwrap_or(0.0));
    }
    highest
}

/// A string field of a JSON body.
fn json_field(body: &[u8], field: &str) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).expect("a JSON answer");
    value[field].as_str().unwrap_or_else(|| panic!("no {field} in {value}")).to_string()
}

/// Standard base64, as etcd's JSON gateway takes bytes.
fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
