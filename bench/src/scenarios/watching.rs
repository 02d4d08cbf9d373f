//! Watching (`GET /watch`): how long after a release its event reaches a watcher, beside how
//! long the release's own answer takes (same run, same requests), and acquire+release cycles with
//! 0 and with 1,000 watchers on the resource.

use std::path::Path;
use std::time::{Duration, Instant};

use lockserver_protocol::SECRET_HEADER;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{request, Conn};
use crate::measure::{percentile, rounds_per_second, SECRET};
use crate::report::{ms, section, verdict, Table};
use crate::server::{Server, Storage};

/// Releases timed for the latency figures.
const SAMPLES: usize = 500;
/// Watchers on the hot resource.
const WATCHERS: usize = 1000;

pub async fn watching(binary: &Path, data: &Path, out: &mut String) {
    section(
        out,
        "Watch: event latency, and cycles with 1,000 watchers",
        &format!("Latency: {SAMPLES} acquire+release pairs on one resource while one client watches it; from sending the release to reading its answer, and to reading its `released` event on the watch. Cycles: acquire+release per second, 3 s, the better of two runs, with 0 and with {WATCHERS} watchers (each its own connection) on the resource the load cycles on, and with the same watchers while 16 clients cycle on other resources."),
    );
    let mut table = Table::new(&["storage", "answer p50", "answer p99", "event p50", "event p99"]);
    for (label, storage) in [("memory", Storage::Memory), ("durable", Storage::Durable(data.join("watch")))] {
        let server = Server::lockserver(binary, SECRET, &storage);
        let (answers, events) = latencies(&server.addr).await;
        table.row([
            label.to_string(),
            ms(percentile(&answers, 0.5)),
            ms(percentile(&answers, 0.99)),
            ms(percentile(&events, 0.5)),
            ms(percentile(&events, 0.99)),
        ]);
    }
    table.write(out);

    let server = Server::lockserver(binary, SECRET, &Storage::Memory);
    let hot = || cycle_on("hot", 1);
    let cold = || (0..16).map(|i| cycle_on(&format!("cold-{i}"), 1).remove(0)).collect::<Vec<_>>();
    let seconds = Duration::from_secs(3);
    let mut best = [0f64; 4]; // hot without, hot with, cold without, cold with
    for _ in 0..2 {
        best[0] = best[0].max(rounds_per_second(&server.addr, hot(), seconds).await);
        best[2] = best[2].max(rounds_per_second(&server.addr, cold(), seconds).await);
        let watchers = open_watchers(&server.addr, "hot", WATCHERS).await;
        best[1] = best[1].max(rounds_per_second(&server.addr, hot(), seconds).await);
        best[3] = best[3].max(rounds_per_second(&server.addr, cold(), seconds).await);
        watchers.into_iter().for_each(|task| task.abort());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut table = Table::new(&["load", "0 watchers", "1000 watchers", "ratio"]);
    table.row([
        "1 client on the watched resource".into(),
        format!("{:.0}", best[0]),
        format!("{:.0}", best[1]),
        format!("{:.2}", best[1] / best[0]),
    ]);
    table.row([
        "16 clients on other resources".into(),
        format!("{:.0}", best[2]),
        format!("{:.0}", best[3]),
        format!("{:.2} ({})", best[3] / best[2], verdict(best[3] / best[2] >= 0.9)),
    ]);
    table.write(out);
    out.push_str("On the watched resource every change is written to all 1,000 connections by the same two cores that serve the load, so that figure measures the fan-out itself; the engine never waits for a watcher (a slow one is told to `reset`). Changes to other resources wake no watcher: their figure should be within noise (target 0.9).\n\n");
}

/// One connection acquiring and releasing `resource`.
fn cycle_on(resource: &str, count: usize) -> Vec<Vec<Vec<u8>>> {
    (0..count)
        .map(|i| {
            let body = format!(r#"{{"resource":"{resource}","owner":"cycler-{i}"}}"#);
            vec![request("POST", "/acquire", SECRET, &body), request("POST", "/release", SECRET, &body)]
        })
        .collect()
}

/// A raw `GET /watch` connection, its response read as bytes.
async fn open_watch(addr: &str, resource: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connecting a watcher");
    stream.set_nodelay(true).expect("nodelay");
    let head = format!(
        "GET /watch?resource={resource} HTTP/1.1\r\nHost: bench\r\n{SECRET_HEADER}: {SECRET}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("sending the watch");
    stream
}

/// Reads from `stream` until `needle` has been seen `count` times in total (`seen` carries
/// the count and the unmatched tail across calls).
async fn read_until(stream: &mut TcpStream, needle: &[u8], tail: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(at) = tail.windows(needle.len()).position(|w| w == needle) {
            tail.drain(..at + needle.len());
            return;
        }
        let read = stream.read(&mut chunk).await.expect("reading the watch");
        assert!(read > 0, "the watch ended");
        tail.extend_from_slice(&chunk[..read]);
    }
}

async fn latencies(addr: &str) -> (Vec<Duration>, Vec<Duration>) {
    let mut watch = open_watch(addr, "latency").await;
    let mut tail = Vec::new();
    read_until(&mut watch, b"event: reset", &mut tail).await;
    let mut conn = Conn::connect(addr).await.expect("connecting");
    let body = r#"{"resource":"latency","owner":"o"}"#;
    let (acquire, release) =
        (request("POST", "/acquire", SECRET, body), request("POST", "/release", SECRET, body));
    let (mut answers, mut events) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        assert_eq!(conn.call(&acquire).await.expect("acquire").0, 200);
        let sent = Instant::now();
        assert_eq!(conn.call(&release).await.expect("release").0, 200);
        answers.push(sent.elapsed());
        read_until(&mut watch, b"event: released", &mut tail).await;
        events.push(sent.elapsed());
    }
    answers.sort();
    events.sort();
    (answers, events)
}

/// `count` watchers of `resource`, each draining its stream until aborted.
async fn open_watchers(addr: &str, resource: &str, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..count {
        let mut stream = open_watch(addr, resource).await;
        tasks.push(tokio::spawn(async move {
            let mut chunk = [0u8; 16384];
            while matches!(stream.read(&mut chunk).await, Ok(read) if read > 0) {}
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // every watch open and past its reset
    tasks
}
