//! Waiting: thousands of parked waiters (CPU while parked, FIFO order of grants) and thousands of
//! expiries (how late each is released after its deadline).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{json_u64, request, Conn};
use crate::measure::{percentile, Rng, SECRET};
use crate::report::{ms, section, verdict, Table};
use crate::server::{Server, Storage};

/// 10,000 waiters parked on 100 resources: server CPU while parked, and the order of grants.
pub async fn parked(binary: &Path, out: &mut String) {
    const RESOURCES: usize = 100;
    const PER: usize = 100;
    let server = Server::lockserver(binary, SECRET, &Storage::Memory);
    let mut holder = Conn::connect(&server.addr).await.expect("connecting");
    for r in 0..RESOURCES {
        let body = format!(r#"{{"resource":"park-{r}","owner":"holder"}}"#);
        assert_eq!(holder.call(&request("POST", "/acquire", SECRET, &body)).await.expect("acquire").0, 200);
    }
    // Queue the waiters of each resource one after another (each confirmed queued before the
    // next is sent), the resources in parallel.
    let mut queues = Vec::new();
    for r in 0..RESOURCES {
        let addr = server.addr.clone();
        queues.push(tokio::spawn(async move {
            let mut inspect = Conn::connect(&addr).await.expect("connecting");
            let mut waiters = Vec::new();
            for j in 0..PER {
                let mut conn = Conn::connect(&addr).await.expect("connecting");
                let body = format!(r#"{{"resource":"park-{r}","owner":"w{j}","wait":120}}"#);
                conn.send(&request("POST", "/acquire", SECRET, &body)).await.expect("queue");
                loop {
                    let (_, info) = inspect
                        .call(&request("GET", &format!("/locks/park-{r}"), SECRET, ""))
                        .await
                        .expect("inspect");
                    if json_u64(info, "waiters") == Some(j as u64 + 1) {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                waiters.push(conn);
            }
            waiters
        }));
    }
    let mut all = Vec::new();
    for queue in queues {
        all.push(queue.await.expect("queueing"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (cpu_before, wall_before) = (server.cpu(), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_share = (server.cpu() - cpu_before).as_secs_f64() / wall_before.elapsed().as_secs_f64();
    // Release every holder; each waiter, once granted, notes its turn and releases.
    let turns: Arc<Vec<AtomicU64>> = Arc::new((0..RESOURCES).map(|_| AtomicU64::new(0)).collect());
    let out_of_order = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (r, waiters) in all.into_iter().enumerate() {
        for (j, mut conn) in waiters.into_iter().enumerate() {
            let (turns, out_of_order) = (turns.clone(), out_of_order.clone());
            tasks.push(tokio::spawn(async move {
                let (status, _) = conn.response().await.expect("a grant");
                assert_eq!(status, 200);
                if turns[r].fetch_add(1, Ordering::SeqCst) != j as u64 {
                    out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                let body = format!(r#"{{"resource":"park-{r}","owner":"w{j}"}}"#);
                conn.call(&request("POST", "/release", SECRET, &body)).await.expect("release");
            }));
        }
    }
    for r in 0..RESOURCES {
        let body = format!(r#"{{"resource":"park-{r}","owner":"holder"}}"#);
        holder.call(&request("POST", "/release", SECRET, &body)).await.expect("release");
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("every waiter is granted")
            .expect("a waiter");
    }
    let wrong = out_of_order.load(Ordering::Relaxed);
    section(
        out,
        &format!("{} waiters parked on {RESOURCES} resources", RESOURCES * PER),
        "Each waiter was confirmed queued before the next one on its resource was sent. Baseline for CPU: one core.",
    );
    let mut table = Table::new(&["measure", "value", "target"]);
    table.row([
        "server CPU while parked (3 s)".into(),
        format!("{:.2}% of a core", cpu_share * 100.0),
        format!("< 2%: {}", verdict(cpu_share < 0.02)),
    ]);
    table.row([
        "grants out of arrival order".into(),
        format!("{wrong} of {}", RESOURCES * PER),
        format!("strictly FIFO: {}", verdict(wrong == 0)),
    ]);
    table.write(out);
}

/// 10,000 locks with random expiries of 0.1-2 s: how late each is released after its deadline,
/// seen as its parked waiter's grant. The locks are taken and their waiters parked first (under
/// a long expiry), then each is refreshed to its random expiry, so that setting up ten thousand
/// connections does not load the machine while the deadlines pass.
pub async fn expiries(binary: &Path, out: &mut String) {
    const LOCKS: usize = 10_000;
    let server = Server::lockserver(binary, SECRET, &Storage::Memory);
    let expiry = |i: usize| 0.1 + (Rng(i as u64 + 1).next() % 1900) as f64 / 1000.0;
    // Refreshed longest first, so that every deadline falls after the refresh burst: the
    // figure is the server's timer, not the generator's own load.
    let mut order: Vec<usize> = (0..LOCKS).collect();
    order.sort_by(|a, b| expiry(*b).total_cmp(&expiry(*a)));
    let order = Arc::new(order);
    let next = Arc::new(AtomicU64::new(0));
    let take_all = |phase: &'static str| {
        let (addr, next, order) = (server.addr.clone(), next.clone(), order.clone());
        async move {
            next.store(0, Ordering::SeqCst);
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (addr, next, order) = (addr.clone(), next.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = Conn::connect(&addr).await.expect("connecting");
                    let mut deadlines = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if n >= LOCKS {
                            return deadlines;
                        }
                        let i = order[n];
                        let expire = expiry(i);
                        let (path, body) = match phase {
                            "acquire" => {
                                ("/acquire", format!(r#"{{"resource":"exp-{i}","owner":"h","expire":60}}"#))
                            }
                            _ => (
                                "/refresh",
                                format!(r#"{{"resource":"exp-{i}","owner":"h","expire":{expire}}}"#),
                            ),
                        };
                        let sent = Instant::now();
                        assert_eq!(
                            conn.call(&request("POST", path, SECRET, &body)).await.expect("a call").0,
                            200
                        );
                        // The server's deadline is at least the send time plus the expiry.
                        deadlines.push((i, sent + Duration::from_secs_f64(expire)));
                    }
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("a worker"));
            }
            all
        }
    };
    take_all("acquire").await;
    let mut waiters = Vec::with_capacity(LOCKS);
    for i in 0..LOCKS {
        let mut conn = Conn::connect(&server.addr).await.expect("connecting");
        let body = format!(r#"{{"resource":"exp-{i}","owner":"w","wait":100}}"#);
        conn.send(&request("POST", "/acquire", SECRET, &body)).await.expect("queue");
        waiters.push(tokio::spawn(async move {
            let (status, _) = conn.response().await.expect("a grant");
            assert_eq!(status, 200);
            Instant::now()
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // every waiter queued
    let deadlines = take_all("refresh").await;
    let mut granted = Vec::with_capacity(LOCKS);
    for waiter in waiters {
        granted.push(waiter.await.expect("a waiter"));
    }
    let mut lateness: Vec<Duration> =
        deadlines.iter().map(|(i, deadline)| granted[*i].saturating_duration_since(*deadline)).collect();
    let early = deadlines.iter().filter(|(i, deadline)| granted[*i] < *deadline).count();
    lateness.sort();
    let p99 = percentile(&lateness, 0.99);
    section(
        out,
        &format!("{LOCKS} locks with random expiries of 0.1-2 s"),
        "Each lock is taken and its waiter parked under a long expiry; then each is refreshed to its random expiry, longest first, so that every deadline falls after the burst of refreshes. Lateness: from the earliest moment the server's deadline can be (the refresh that set the expiry was sent, plus the expiry) to the parked waiter reading its grant. Baseline: 0 ms, a release exactly at the deadline.",
    );
    let mut table = Table::new(&["measure", "value", "target"]);
    table.row([
        "locks".into(),
        format!("{} ({early} granted before that earliest moment: none should be)", lateness.len()),
    ]);
    table.row(["lateness p50".into(), ms(percentile(&lateness, 0.5))]);
    table.row([
        "lateness p99".into(),
        ms(p99),
        format!("< 20 ms: {}", verdict(p99 < Duration::from_millis(20))),
    ]);
    table.row(["lateness max".into(), ms(*lateness.last().unwrap_or(&Duration::ZERO))]);
    table.write(out);
}
