//! Throughput without contention: the load generator against `wrk`, cycles per second of the
//! memory and durable stores against the bare actix-web ceiling, and Redis for comparison.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use lockserver_protocol::SECRET_HEADER;

use crate::http::request;
use crate::measure::{cycle_scripts, redis_cycles, rounds_per_second, SECRET};
use crate::report::{section, verdict, Table};
use crate::server::{RedisServer, Server, Storage};

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
             wrk.headers[\"{SECRET_HEADER}\"] = \"{SECRET}\"\n"
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
    section(
        out,
        "The load generator",
        "`POST /acquire` against the bare server, 64 keep-alive connections, 4 s each.",
    );
    let mut table = Table::new(&["generator", "requests/s", "ratio to wrk", "target"]);
    match wrk_rate {
        Some(wrk_rate) => {
            let ratio = ours / wrk_rate;
            table.row(["wrk (-t2 -c64)".into(), format!("{wrk_rate:.0}"), "1.00".into()]);
            table.row([
                "lockserver-bench".into(),
                format!("{ours:.0}"),
                format!("{ratio:.2}"),
                format!(">= 0.8: {}", verdict(ratio >= 0.8)),
            ]);
        }
        None => {
            table.row(["wrk", "not installed (`apt-get install wrk`)"]);
            table.row(["lockserver-bench".into(), format!("{ours:.0}")]);
        }
    }
    table.write(out);
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
    section(
        out,
        "Uncontended: N clients, each acquiring and releasing its own resource",
        "Cycles (acquire + release) per second, the better of two 3 s runs, the three servers measured back to back for each N. The ceiling is the bare server under the same generator.",
    );
    let mut table = Table::new(&[
        "N",
        "ceiling",
        "memory",
        "memory / ceiling",
        "durable",
        "durable / ceiling",
        "durable / memory",
    ]);
    for n in counts {
        let (c, m, d) = (ceiling[&n], rates[&(false, n)], rates[&(true, n)]);
        let target = |met: bool| if n == 64 { format!(" ({})", verdict(met)) } else { String::new() };
        table.row([
            n.to_string(),
            format!("{c:.0}"),
            format!("{m:.0}"),
            format!("{:.2} ({})", m / c, verdict(m / c >= 0.9)),
            format!("{d:.0}"),
            format!("{:.2}{}", d / c, target(d / c >= 0.8)),
            format!("{:.2}{}", d / m, target(d / m >= 0.8)),
        ]);
    }
    table.write(out);
    out.push_str("Targets: memory at least 0.9 of the ceiling; durable at 64 clients at least 0.8 of the ceiling (issue 8) and of memory (issue 5).\n\n");
    rates
}

/// Redis `SET NX PX` + compare-and-delete at 64 connections, when redis-server is installed.
pub async fn redis(lockserver_64: f64, out: &mut String) {
    section(out, "What users would pick instead: Redis", "");
    let Some(redis) = RedisServer::start(&["--save", "", "--appendonly", "no"], None).await else {
        out.push_str("redis-server is not installed here: skipped.\n\n");
        return;
    };
    let rate = redis_cycles(&redis.addr, 64, Duration::from_secs(3)).await;
    out.push_str(
        "Cycles per second at 64 connections, 3 s, same generator design (raw protocol, keep-alive).\n\n",
    );
    let mut table = Table::new(&["server", "cycles/s", "lockserver / this"]);
    table.row([
        "Redis `SET NX PX` + compare-and-delete (EVAL)".into(),
        format!("{rate:.0}"),
        format!("{:.2}", lockserver_64 / rate),
    ]);
    table.row([
        "lockserver, memory storage (from the uncontended table)".into(),
        format!("{lockserver_64:.0}"),
        "1.00".into(),
    ]);
    table.write(out);
}
