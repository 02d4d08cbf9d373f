//! Memory at the caps: the server filled until it answers `too_many`, with large values, with
//! small locks, and with parked waiters; its RSS then, against the cap that stopped it. The
//! ratio says what the default cap (half the memory the process may use) costs when reached.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{json_u64, request, Conn};
use crate::measure::SECRET;
use crate::report::{mb, section, verdict, Table};
use crate::server::Server;

/// What `--max-memory` counts for a waiter without value (the server's `WAITER_OVERHEAD`).
const WAITER_COUNTED: u64 = 24 * 1024;

/// The longest any fill may run.
const FILL_LIMIT: Duration = Duration::from_secs(120);

/// Fills three servers to their caps and reports their RSS against the caps.
pub async fn at_the_caps(binary: &Path, out: &mut String) {
    let value = "v".repeat(60_000);
    let large = fill(binary, &["--max-memory", "256MiB"], move |i| {
        format!(r#"{{"resource":"large-{i:07}","owner":"o","value":"{value}"}}"#)
    })
    .await;
    let small = fill(binary, &["--max-memory", "64MiB"], |i| {
        format!(r#"{{"resource":"small-{i:07}","owner":"holder-{}"}}"#, i % 64)
    })
    .await;
    let waiters = park(binary, 4000).await;

    section(
        out,
        "Memory at the caps",
        "Each server (memory storage) is filled until it answers 503 `too_many`; RSS is read then. \
         `--max-memory` counts each lock's name, owner and value plus a fixed overhead, and each \
         queued waiter its owner, value and connection. The default cap is half the memory the \
         process may use, so RSS at the default cap stays within that memory while RSS / cap \
         stays below 2.",
    );
    let mut table =
        Table::new(&["filled with", "cap", "admitted", "RSS, idle", "RSS at the cap", "RSS / cap"]);
    for (what, cap, fill) in [
        ("locks with 60 KB values", 256u64 << 20, &large),
        ("locks without values, 21-byte names and owners", 64u64 << 20, &small),
    ] {
        let ratio = fill.rss as f64 / cap as f64;
        table.row([
            what.to_string(),
            mb(cap),
            fill.admitted.to_string(),
            mb(fill.idle),
            mb(fill.rss),
            format!("{ratio:.2} (< 2: {})", verdict(ratio < 2.0)),
        ]);
    }
    let per_waiter = waiters.rss.saturating_sub(waiters.idle) / waiters.admitted.max(1);
    table.row([
        "parked waiters (`--max-waiters 4000`)".to_string(),
        "4000 waiters".to_string(),
        waiters.admitted.to_string(),
        mb(waiters.idle),
        mb(waiters.rss),
        format!(
            "{per_waiter} B per waiter (<= the {WAITER_COUNTED} counted: {})",
            verdict(per_waiter <= WAITER_COUNTED)
        ),
    ]);
    table.write(out);
}

/// What a server took before it refused.
struct Filled {
    admitted: u64,
    idle: u64,
    rss: u64,
}

/// Acquires `body(i)` for i = 0, 1, ... over 16 connections until the server answers
/// `too_many`; any other refusal fails the bench.
async fn fill(binary: &Path, flags: &[&str], body: impl Fn(u64) -> String + Send + Sync + 'static) -> Filled {
    let server = start(binary, flags);
    let idle = server.rss();
    let (next, admitted, body) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(body));
    let deadline = Instant::now() + FILL_LIMIT;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (addr, next, admitted, body) =
            (server.addr.clone(), next.clone(), admitted.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&addr).await.expect("connecting");
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (status, reply) =
                    conn.call(&request("POST", "/acquire", SECRET, &body(i))).await.expect("acquire");
                match status {
                    200 => _ = admitted.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        let reply = String::from_utf8_lossy(reply);
                        assert!(status == 503 && reply.contains("too_many"), "{status} {reply}");
                        return;
                    }
                }
            }
            panic!("the server took more than {FILL_LIMIT:?} of locks without reaching its cap");
        }));
    }
    for task in tasks {
        task.await.expect("a filling task");
    }
    Filled { admitted: admitted.load(Ordering::Relaxed), idle, rss: server.rss() }
}

/// Parks waiters on one held lock until `--max-waiters max` refuses one.
async fn park(binary: &Path, max: u64) -> Filled {
    let server = start(binary, &["--max-waiters", &max.to_string()]);
    let idle = server.rss();
    let mut control = Conn::connect(&server.addr).await.expect("connecting");
    let hold = r#"{"resource":"parked","owner":"holder"}"#;
    assert_eq!(control.call(&request("POST", "/acquire", SECRET, hold)).await.expect("acquire").0, 200);
    let mut parked = Vec::new();
    let deadline = Instant::now() + FILL_LIMIT;
    for i in 0.. {
        assert!(Instant::now() < deadline, "parking {max} waiters took more than {FILL_LIMIT:?}");
        let mut conn = Conn::connect(&server.addr).await.expect("connecting");
        let body = format!(r#"{{"resource":"parked","owner":"w{i}","wait":120}}"#);
        conn.send(&request("POST", "/acquire", SECRET, &body)).await.expect("queue");
        parked.push(conn);
        if i + 1 == max {
            // Wait until all are queued, then one more must be refused.
            loop {
                let (_, info) =
                    control.call(&request("GET", "/locks/parked", SECRET, "")).await.expect("inspect");
                if json_u64(info, "waiters") == Some(max) {
                    break;
                }
                assert!(Instant::now() < deadline, "the waiters did not all queue");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let body = r#"{"resource":"parked","owner":"one-too-many","wait":120}"#;
            let (status, reply) =
                control.call(&request("POST", "/acquire", SECRET, body)).await.expect("queue");
            assert_eq!(status, 503, "{}", String::from_utf8_lossy(reply));
            break;
        }
    }
    let rss = server.rss();
    drop(parked);
    Filled { admitted: max, idle, rss }
}

fn start(binary: &Path, flags: &[&str]) -> Server {
    let mut args = vec!["--bind", "127.0.0.1", "--port", "0", "--secret", SECRET, "--storage", "memory"];
    args.extend_from_slice(flags);
    args.extend(["--max-wait", "120"]);
    Server::start(binary, &args)
}
