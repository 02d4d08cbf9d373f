//! The scenarios. Each drives a server over keep-alive connections for a bounded time and
//! count, and returns its figures as Markdown, every one beside a baseline of the same run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{json_u64, request, Conn};
use crate::server::{dir_bytes, Server, Storage};

/// The shared secret of every server the bench starts.
pub const SECRET: &str = "bench-secret";

/// A verdict for a figure with a target.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**MISSED**"
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// A small deterministic generator, so every run draws the same expiries.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Runs `conns` connections for `duration`, each repeating its own list of requests (all
/// expected to answer 200); returns rounds of the list completed per second.
pub async fn rounds_per_second(addr: &str, scripts: Vec<Vec<Vec<u8>>>, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for script in scripts {
        let (addr, done) = (addr.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(&addr).await.expect("connecting");
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

/// Our generator against `wrk` on the bare server: requests per second of `POST /acquire`.
pub async fn generator_ceiling(bare: &Server, out: &mut String) -> f64 {
    let body = r#"{"resource":"r","owner":"o"}"#;
    let scripts = (0..64).map(|_| vec![request("POST", "/acquire", SECRET, body)]).collect();
    let ours = rounds_per_second(&bare.addr, scripts, Duration::from_secs(4)).await;
    let script = std::env::temp_dir().join("lockserver-bench.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"X-LOCKSERVER-SECRET\"] = \"{SECRET}\"\n"
        ),
    )
    .expect("writing the wrk script");
    let wrk = std::process::Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            "-d4s",
            "-s",
            script.to_str().expect("UTF-8"),
            &format!("http://{}/acquire", bare.addr),
        ])
        .output();
    let wrk_rate = wrk.ok().and_then(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("Requests/sec:").and_then(|r| r.trim().parse::<f64>().ok()))
    });
    out.push_str("## The load generator\n\n");
    out.push_str("`POST /acquire` against the bare server, 64 keep-alive connections, 4 s each.\n\n");
    out.push_str("| generator | requests/s | ratio to wrk | target |\n|---|---|---|---|\n");
    match wrk_rate {
        Some(wrk_rate) => {
            let ratio = ours / wrk_rate;
            out.push_str(&format!("| wrk (-t2 -c64) | {wrk_rate:.0} | 1.00 | |\n"));
            out.push_str(&format!(
                "| lockserver-bench | {ours:.0} | {ratio:.2} | >= 0.8: {} |\n\n",
                verdict(ratio >= 0.8)
            ));
        }
        None => out.push_str(&format!(
            "| wrk | not installed (`apt-get install wrk`) | | |\n| lockserver-bench | {ours:.0} | | |\n\n"
        )),
    }
    ours
}

/// Acquire+release cycles per second with N = 1, 16, 64 clients, against the ceiling. The
/// three servers run side by side and are measured back to back for each N, twice, keeping
/// the better figure of each: the machine's drift then favours none of them.
pub async fn uncontended(
    binary: &Path,
    bare: &Server,
    data: &Path,
    out: &mut String,
) -> HashMap<(bool, usize), f64> {
    let counts = [1usize, 16, 64];
    let memory = Server::lockserver(binary, SECRET, &Storage::Memory);
    let durable = Server::lockserver(binary, SECRET, &Storage::Durable(data.join("uncontended")));
    let mut ceiling: HashMap<usize, f64> = HashMap::new();
    let mut rates: HashMap<(bool, usize), f64> = HashMap::new();
    for round in 0..2 {
        for n in counts {
            let seconds = Duration::from_secs(3);
            let c = rounds_per_second(&bare.addr, cycle_scripts(n, "bare"), seconds).await;
            let m =
                rounds_per_second(&memory.addr, cycle_scripts(n, &format!("m{round}-{n}")), seconds).await;
            let d =
                rounds_per_second(&durable.addr, cycle_scripts(n, &format!("d{round}-{n}")), seconds).await;
            let best = |old: Option<&f64>, new: f64| old.map_or(new, |old| old.max(new));
            ceiling.insert(n, best(ceiling.get(&n), c));
            rates.insert((false, n), best(rates.get(&(false, n)), m));
            rates.insert((true, n), best(rates.get(&(true, n)), d));
        }
    }
    out.push_str("## Uncontended: N clients, each acquiring and releasing its own resource\n\n");
    out.push_str("Cycles (acquire + release) per second, the better of two 3 s runs, the three servers measured back to back for each N. The ceiling is the bare server under the same generator.\n\n");
    out.push_str("| N | ceiling | memory | memory / ceiling | durable | durable / ceiling | durable / memory |\n|---|---|---|---|---|---|---|\n");
    for n in counts {
        let (c, m, d) = (ceiling[&n], rates[&(false, n)], rates[&(true, n)]);
        out.push_str(&format!(
            "| {n} | {c:.0} | {m:.0} | {:.2} ({}) | {d:.0} | {:.2}{} | {:.2}{} |\n",
            m / c,
            verdict(m / c >= 0.9),
            d / c,
            if n == 64 { format!(" ({})", verdict(d / c >= 0.8)) } else { String::new() },
            d / m,
            if n == 64 { format!(" ({})", verdict(d / m >= 0.8)) } else { String::new() },
        ));
    }
    out.push_str("\nTargets: memory at least 0.9 of the ceiling; durable at 64 clients at least 0.8 of the ceiling (issue 8) and of memory (issue 5).\n\n");
    rates
}

/// What 16 clients taking turns on one resource saw.
pub struct Contention {
    grants: usize,
    wall: Duration,
    utilisation: f64,
    max: usize,
    min: usize,
    p50: Duration,
    p99: Duration,
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
    let mut events = events.lock().unwrap().clone();
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

/// 16 clients on one resource, each holding it 10 ms.
pub async fn contended(binary: &Path, out: &mut String) {
    let server = Server::lockserver(binary, SECRET, &Storage::Memory);
    let Contention { grants, wall, utilisation, max, min, p50, p99 } =
        contention(std::slice::from_ref(&server.addr), "memory", Duration::from_secs(5)).await;
    let fairness = max as f64 / min.max(1) as f64;
    out.push_str("## Contended: 16 clients on one resource, each holding it 10 ms\n\n");
    out.push_str(&format!("{grants} grants in {:.1} s (memory storage). The gap runs from the holder sending its release to the next holder reading its grant.\n\n", wall.as_secs_f64()));
    out.push_str("| measure | value | target |\n|---|---|---|\n");
    out.push_str(&format!(
        "| utilisation (busy / wall) | {utilisation:.3} | >= 0.95: {} |\n",
        verdict(utilisation >= 0.95)
    ));
    out.push_str(&format!(
        "| max / min grants per client | {max} / {min} = {fairness:.2} | <= 1.2: {} |\n",
        verdict(fairness <= 1.2)
    ));
    out.push_str(&format!(
        "| hand-off gap p50 | {} | < 1 ms: {} |\n",
        ms(p50),
        verdict(p50 < Duration::from_millis(1))
    ));
    out.push_str(&format!(
        "| hand-off gap p99 | {} | < 5 ms: {} |\n\n",
        ms(p99),
        verdict(p99 < Duration::from_millis(5))
    ));
}

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
    for n in [1usize, 16] {
        let scripts = |tag: &str| cycle_scripts(n, &format!("{tag}-{n}"));
        let base = rounds_per_second(&embedded.addr, scripts("embedded"), seconds).await;
        let through_one = rounds_per_second(&first.addr, scripts("one"), seconds).await;
        let through_two = spread(&two, scripts("two"), seconds).await;
        rows.push((n, base, through_one, through_two));
    }
    let base = contention(std::slice::from_ref(&embedded.addr), "embedded", seconds).await;
    let through_one = contention(&one, "one", seconds).await;
    let through_two = contention(&two, "two", seconds).await;

    out.push_str("## etcd backend: gateways on a 3-member etcd cluster (loopback)\n\n");
    out.push_str("Against the embedded backend (durable) in the same run; 3 s per figure. Clients of \"two gateways\" alternate between them.\n\n");
    out.push_str("| N clients | embedded cycles/s | one gateway | / embedded | two gateways | / embedded |\n|---|---|---|---|---|---|\n");
    for (n, base, one, two) in rows {
        out.push_str(&format!(
            "| {n} | {base:.0} | {one:.0} | {:.2} | {two:.0} | {:.2} |\n",
            one / base,
            two / base
        ));
    }
    out.push_str("\nContended: 16 clients on one resource, each holding it 10 ms.\n\n");
    out.push_str("| backend | grants | utilisation | hand-off gap p50 | p99 |\n|---|---|---|---|---|\n");
    for (name, figures) in
        [("embedded", &base), ("etcd, one gateway", &through_one), ("etcd, two gateways", &through_two)]
    {
        out.push_str(&format!(
            "| {name} | {} | {:.3} | {} | {} |\n",
            figures.grants,
            figures.utilisation,
            ms(figures.p50),
            ms(figures.p99)
        ));
    }
    out.push('\n');
}

/// Like [`rounds_per_second`], with the scripts spread over several servers, each measured
/// for the same `duration` at once; returns the total.
async fn spread(addrs: &[String], scripts: Vec<Vec<Vec<u8>>>, duration: Duration) -> f64 {
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
async fn hold_many(addr: &str, count: usize, tag: &str) -> Duration {
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

/// 1,000,000 held locks: RSS in memory storage; disk bytes, RSS and restart time durable.
pub async fn million(binary: &Path, data: &Path, count: usize, out: &mut String) {
    let memory = Server::lockserver(binary, SECRET, &Storage::Memory);
    let idle_rss = memory.rss();
    let load_time = hold_many(&memory.addr, count, "held").await;
    let memory_rss = memory.rss();
    memory.kill();

    let dir = data.join("million");
    let durable = Server::lockserver(binary, SECRET, &Storage::Durable(dir.clone()));
    let durable_load = hold_many(&durable.addr, count, "held").await;
    let durable_rss = durable.rss();
    let log_bytes = dir_bytes(&dir);
    durable.kill(); // a crash: recovery replays the start-up snapshot and the log
    let restarted = Server::lockserver(binary, SECRET, &Storage::Durable(dir.clone()));
    let restart = restarted.startup;
    let mut conn = Conn::connect(&restarted.addr).await.expect("connecting");
    let (_, body) = conn
        .call(&request("GET", &format!("/locks/held-{:07}", count - 1), SECRET, ""))
        .await
        .expect("inspect");
    let recovered = json_u64(body, "token").is_some();
    // Wait for the start-up compaction to replace the log with one snapshot.
    let wait_until = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) > 3 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snapshot_bytes = dir_bytes(&dir);
    let restarted_rss = restarted.rss();
    restarted.kill();

    let mb = |bytes: u64| format!("{:.1} MB", bytes as f64 / 1e6);
    out.push_str(&format!("## {count} held locks\n\n"));
    out.push_str(&format!(
        "Loaded over 64 connections: {:.1} s in memory storage ({:.0} acquires/s), {:.1} s durable ({:.0} acquires/s). Baseline: the idle server's RSS, {}.\n\n",
        load_time.as_secs_f64(),
        count as f64 / load_time.as_secs_f64(),
        durable_load.as_secs_f64(),
        count as f64 / durable_load.as_secs_f64(),
        mb(idle_rss)
    ));
    out.push_str("| measure | value | per lock | target |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| RSS, memory storage | {} | {} B | <= 250 MB: {} |\n",
        mb(memory_rss),
        memory_rss / count as u64,
        verdict(memory_rss <= 250_000_000)
    ));
    out.push_str(&format!("| RSS, durable | {} | {} B | |\n", mb(durable_rss), durable_rss / count as u64));
    out.push_str(&format!(
        "| disk, durable, log as written | {} | {} B | |\n",
        mb(log_bytes),
        log_bytes / count as u64
    ));
    out.push_str(&format!(
        "| disk, durable, after compaction | {} | {} B | |\n",
        mb(snapshot_bytes),
        snapshot_bytes / count as u64
    ));
    out.push_str(&format!(
        "| restart after kill -9 (spawn to listening, recovery included) | {} | | report; all recovered: {} |\n",
        ms(restart),
        if recovered { "yes" } else { "**NO**" }
    ));
    out.push_str(&format!("| RSS after restart | {} | | |\n\n", mb(restarted_rss)));
}

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
    out.push_str(&format!("## {} waiters parked on {RESOURCES} resources\n\n", RESOURCES * PER));
    out.push_str("Each waiter was confirmed queued before the next one on its resource was sent. Baseline for CPU: one core.\n\n");
    out.push_str("| measure | value | target |\n|---|---|---|\n");
    out.push_str(&format!(
        "| server CPU while parked (3 s) | {:.2}% of a core | < 2%: {} |\n",
        cpu_share * 100.0,
        verdict(cpu_share < 0.02)
    ));
    out.push_str(&format!(
        "| grants out of arrival order | {wrong} of {} | strictly FIFO: {} |\n\n",
        RESOURCES * PER,
        verdict(wrong == 0)
    ));
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
    out.push_str(&format!("## {LOCKS} locks with random expiries of 0.1-2 s\n\n"));
    out.push_str("Each lock is taken and its waiter parked under a long expiry; then each is refreshed to its random expiry, longest first, so that every deadline falls after the burst of refreshes. Lateness: from the earliest moment the server's deadline can be (the refresh that set the expiry was sent, plus the expiry) to the parked waiter reading its grant. Baseline: 0 ms, a release exactly at the deadline.\n\n");
    out.push_str("| measure | value | target |\n|---|---|---|\n");
    out.push_str(&format!(
        "| locks | {} ({early} granted before that earliest moment: none should be) | |\n",
        lateness.len()
    ));
    out.push_str(&format!("| lateness p50 | {} | |\n", ms(percentile(&lateness, 0.5))));
    out.push_str(&format!(
        "| lateness p99 | {} | < 20 ms: {} |\n",
        ms(p99),
        verdict(p99 < Duration::from_millis(20))
    ));
    out.push_str(&format!("| lateness max | {} | |\n\n", ms(*lateness.last().unwrap_or(&Duration::ZERO))));
}

/// The Python and Node clients, one caller each, against a plain HTTP client in their language.
pub fn language_clients(binary: &Path, root: &Path, out: &mut String) {
    let server = Server::lockserver(binary, SECRET, &Storage::Memory);
    out.push_str("## Python and Node clients, one caller each\n\n");
    out.push_str("Acquire+release cycles per second (memory storage), 3 s each, against a plain client in the same language making the same calls.\n\n");
    out.push_str("| client | ours | plain | ratio | aim |\n|---|---|---|---|---|\n");
    let python = root.join("target/venv/bin/python");
    let runs = [
        (
            "Python (plain: requests, new connection per call)",
            python.clone(),
            root.join("bench/clients/py_cycles.py"),
            "plain_requests",
        ),
        ("Node (plain: fetch)", "node".into(), root.join("bench/clients/js_cycles.js"), "plain_fetch"),
    ];
    for (label, program, script, plain_key) in runs {
        let output =
            std::process::Command::new(&program).arg(&script).args([&server.addr, SECRET, "3"]).output();
        let figures = output
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        match figures {
            Some(f) => {
                let ratio = f["ratio"].as_f64().unwrap_or(0.0);
                out.push_str(&format!("| {label} | {} | {} | {ratio:.2} | >= 2x: {} |\n", f["ours"], f[plain_key], verdict(ratio >= 2.0)));
            }
            None => out.push_str(&format!(
                "| {label} | not run: build the client first (`bash scripts/test.sh`; Python also needs `requests` in target/venv) | | | |\n"
            )),
        }
    }
    out.push('\n');
}

/// Redis `SET NX PX` + compare-and-delete at 64 connections, when redis-server is installed.
pub async fn redis(lockserver_64: f64, out: &mut String) {
    out.push_str("## What users would pick instead: Redis\n\n");
    let Ok(port) = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port())
    else {
        return;
    };
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        out.push_str("redis-server is not installed here: skipped.\n\n");
        return;
    };
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let script =
        "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (addr, done) = (addr.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    out.push_str(
        "Cycles per second at 64 connections, 3 s, same generator design (raw protocol, keep-alive).\n\n",
    );
    out.push_str("| server | cycles/s | lockserver / this |\n|---|---|---|\n");
    out.push_str(&format!(
        "| Redis `SET NX PX` + compare-and-delete (EVAL) | {rate:.0} | {:.2} |\n",
        lockserver_64 / rate
    ));
    out.push_str(&format!(
        "| lockserver, memory storage (from the uncontended table) | {lockserver_64:.0} | 1.00 |\n\n"
    ));
}
