//! Semaphores and read-write locks: a semaphore of 4 permits under 16 clients holding 10 ms
//! each, and 16 shared holders of one read-write lock against 16 uncontended mutex cycles.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{request, Conn};
use crate::measure::{cycle_scripts, percentile, rounds_per_second, SECRET};
use crate::report::{ms, section, verdict, Table};
use crate::server::{Server, Storage};

/// The semaphore's permits.
const PERMITS: usize = 4;
/// The clients.
const CLIENTS: usize = 16;

/// Both measurements, each against its baseline of the same run.
pub async fn sharing(binary: &Path, out: &mut String) {
    let server = Server::lockserver(binary, SECRET, &Storage::Memory);
    semaphore(&server.addr, out).await;
    readers(&server.addr, out).await;
}

/// What 16 clients on a semaphore of 4 saw.
pub struct Permits {
    pub grants: usize,
    pub wall: Duration,
    /// The permits' busy time over 4 × the wall time.
    pub utilisation: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// 16 clients on a semaphore of 4 at `addr` for `run`, each holding a permit 10 ms.
pub async fn permits(addr: &str, run: Duration) -> Permits {
    let events = Arc::new(Mutex::new(Vec::new())); // (granted, release sent)
    let deadline = Instant::now() + run;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (addr, events) = (addr.to_string(), events.clone());
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"resource":"pool","owner":"c{client}","limit":{PERMITS},"wait":60}}"#);
            let (acquire, release) =
                (request("POST", "/acquire", SECRET, &body), request("POST", "/release", SECRET, &body));
            let mut conn = Conn::connect(&addr).await.expect("connecting");
            while Instant::now() < deadline {
                let (status, body) = conn.call(&acquire).await.expect("acquire");
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
                let granted = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                events.lock().unwrap().push((granted, Instant::now()));
                conn.call(&release).await.expect("release");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a semaphore client");
    }
    let events = events.lock().unwrap().clone();
    let mut grants: Vec<Instant> = events.iter().map(|e| e.0).collect();
    let mut releases: Vec<Instant> = events.iter().map(|e| e.1).collect();
    grants.sort();
    releases.sort();
    let wall = *releases.last().unwrap() - grants[0];
    let busy: Duration = events.iter().map(|(g, r)| *r - *g).sum();
    // First come, first served: grant k + 4 takes the permit that release k freed.
    let mut gaps: Vec<Duration> =
        grants.iter().skip(PERMITS).zip(&releases).map(|(g, r)| g.saturating_duration_since(*r)).collect();
    gaps.sort();
    Permits {
        grants: events.len(),
        wall,
        utilisation: busy.as_secs_f64() / (PERMITS as f64 * wall.as_secs_f64()),
        p50: percentile(&gaps, 0.5),
        p99: percentile(&gaps, 0.99),
    }
}

/// 16 clients on a semaphore of 4, each holding a permit 10 ms.
async fn semaphore(addr: &str, out: &mut String) {
    let Permits { grants, wall, utilisation, p50, p99 } = permits(addr, Duration::from_secs(5)).await;
    section(
        out,
        "Semaphore: 16 clients on 4 permits, each holding one 10 ms",
        &format!(
            "{grants} grants in {:.1} s (memory storage). Utilisation is the permits' busy time over 4 × the wall time; \
             the gap runs from a holder sending its release to the next holder reading its grant.",
            wall.as_secs_f64()
        ),
    );
    let mut table = Table::new(&["measure", "value", "target"]);
    table.row([
        "utilisation of the 4 permits".into(),
        format!("{utilisation:.3}"),
        format!(">= 0.95: {}", verdict(utilisation >= 0.95)),
    ]);
    table.row(["hand-off gap p50".into(), ms(p50), String::new()]);
    table.row([
        "hand-off gap p99".into(),
        ms(p99),
        format!("< 5 ms: {}", verdict(p99 < Duration::from_millis(5))),
    ]);
    table.write(out);
}

/// 16 connections taking one read-write lock shared, against 16 taking their own mutexes;
/// interleaved, twice, keeping the better figure of each.
async fn readers(addr: &str, out: &mut String) {
    let shared: Vec<Vec<Vec<u8>>> = (0..CLIENTS)
        .map(|i| {
            let body = format!(r#"{{"resource":"config","owner":"reader-{i}","mode":"shared"}}"#);
            vec![request("POST", "/acquire", SECRET, &body), request("POST", "/release", SECRET, &body)]
        })
        .collect();
    let (mut readers, mut mutexes) = (0f64, 0f64);
    for _ in 0..2 {
        readers = readers.max(rounds_per_second(addr, shared.clone(), Duration::from_secs(3)).await);
        mutexes =
            mutexes.max(rounds_per_second(addr, cycle_scripts(CLIENTS, "own"), Duration::from_secs(3)).await);
    }
    let ratio = readers / mutexes;
    section(
        out,
        "Readers: 16 shared holders of one lock against 16 uncontended mutexes",
        "Acquire+release cycles per second over 16 keep-alive connections (memory storage): all on one \
         read-write lock in `shared` mode, against each on its own mutex. Interleaved, 3 s each, twice; \
         the better of each.",
    );
    let mut table = Table::new(&["clients", "cycles/s", "ratio", "target"]);
    table.row(["16 mutexes, one each".into(), format!("{mutexes:.0}"), "1.00".into(), String::new()]);
    table.row([
        "16 readers, one lock".into(),
        format!("{readers:.0}"),
        format!("{ratio:.2}"),
        format!(">= 0.9: {}", verdict(ratio >= 0.9)),
    ]);
    table.write(out);
}
