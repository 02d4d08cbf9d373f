//! What the durable store costs and what it is worth, interleaved in one run: the store against
//! the build it replaced (`LOCKSERVER_BENCH_BASELINE`: a lockserver binary), against Redis
//! giving the same promise (AOF, fsync on every write), and memory storage against Redis
//! without persistence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::measure::{cycle_scripts, redis_cycles, rounds_per_second, SECRET};
use crate::report::{section, verdict, Table};
use crate::server::{RedisServer, Server, Storage};

/// Client counts measured.
const COUNTS: [usize; 3] = [1, 16, 64];
/// Rounds of the interleaved loop; each figure keeps its best round.
const ROUNDS: usize = 3;
/// How long each figure runs per round.
const RUN: Duration = Duration::from_secs(2);

/// The servers compared, each measured for every client count in every round.
enum Subject {
    Ours(Server),
    Redis(RedisServer),
}

impl Subject {
    async fn cycles(&self, n: usize, tag: &str) -> f64 {
        match self {
            Subject::Ours(server) => rounds_per_second(&server.addr, cycle_scripts(n, tag), RUN).await,
            Subject::Redis(redis) => redis_cycles(&redis.addr, n, RUN).await,
        }
    }
}

/// Durable against baseline and Redis AOF, memory against plain Redis, interleaved.
pub async fn durability(binary: &Path, data: &Path, out: &mut String) {
    let mut subjects: Vec<(&str, Subject)> = vec![
        (
            "durable",
            Subject::Ours(Server::lockserver(binary, SECRET, &Storage::Durable(data.join("durability")))),
        ),
        ("memory", Subject::Ours(Server::lockserver(binary, SECRET, &Storage::Memory))),
    ];
    let baseline = std::env::var_os("LOCKSERVER_BENCH_BASELINE").map(PathBuf::from);
    if let Some(baseline) = &baseline {
        let server = Server::lockserver(baseline, SECRET, &Storage::Durable(data.join("baseline")));
        subjects.push(("durable, baseline build", Subject::Ours(server)));
    }
    let bench = std::env::current_exe().expect("the bench binary");
    subjects.push(("HTTP ceiling", Subject::Ours(Server::start(&bench, &["bare-server", SECRET]))));
    let journal = data.join("bare-journal");
    let journal = journal.to_str().expect("a UTF-8 path");
    let fsync_ceiling = Server::start(&bench, &["bare-server", SECRET, journal]);
    subjects.push(("HTTP + fdatasync ceiling", Subject::Ours(fsync_ceiling)));
    let aof_dir = data.join("redis-aof");
    std::fs::create_dir_all(&aof_dir).expect("a dir for Redis");
    let aof =
        RedisServer::start(&["--save", "", "--appendonly", "yes", "--appendfsync", "always"], Some(&aof_dir))
            .await;
    let plain = RedisServer::start(&["--save", "", "--appendonly", "no"], None).await;
    let redis_found = aof.is_some() && plain.is_some();
    subjects.extend(aof.map(|redis| ("Redis AOF, fsync always", Subject::Redis(redis))));
    subjects.extend(plain.map(|redis| ("Redis, no persistence", Subject::Redis(redis))));

    let mut best = vec![[0f64; COUNTS.len()]; subjects.len()];
    for round in 0..ROUNDS {
        for (c, n) in COUNTS.into_iter().enumerate() {
            for (s, (name, subject)) in subjects.iter().enumerate() {
                if *name == "HTTP + fdatasync ceiling" && n > 1 {
                    continue; // one fdatasync per request: a ceiling only without group commit
                }
                let rate = subject.cycles(n, &format!("{}-{round}-{n}", name.replace([' ', ','], ""))).await;
                best[s][c] = best[s][c].max(rate);
            }
        }
    }
    let rate = |name: &str, c: usize| subjects.iter().position(|(n, _)| *n == name).map(|s| best[s][c]);

    section(
        out,
        "Durability: what the durable store costs, against what gives the same promise",
        &format!(
            "Acquire+release cycles per second (Redis: `SET NX PX` + compare-and-delete), each figure the best of {ROUNDS} rounds of {} s, every server measured in turn for each client count in each round.{}",
            RUN.as_secs(),
            if redis_found { "" } else { " redis-server is not installed here: its columns are empty (`apt-get install redis-server`)." }
        ),
    );
    let mut table = Table::new(&[
        "N",
        "durable",
        "durable, baseline build",
        "durable / baseline",
        "Redis AOF always",
        "durable / Redis AOF",
        "memory",
        "Redis plain",
        "memory / Redis plain",
    ]);
    for (c, n) in COUNTS.into_iter().enumerate() {
        let durable = rate("durable", c).unwrap_or(0.0);
        let memory = rate("memory", c).unwrap_or(0.0);
        let figure = |value: Option<f64>| value.map_or(String::new(), |value| format!("{value:.0}"));
        let ratio = |base: Option<f64>, of: f64, target: f64| {
            base.map_or(String::new(), |base| {
                format!("{:.2} (>= {target}: {})", of / base, verdict(of / base >= target))
            })
        };
        table.row([
            n.to_string(),
            format!("{durable:.0}"),
            figure(rate("durable, baseline build", c)),
            ratio(rate("durable, baseline build", c), durable, 0.95),
            figure(rate("Redis AOF, fsync always", c)),
            ratio(rate("Redis AOF, fsync always", c), durable, 1.0),
            format!("{memory:.0}"),
            figure(rate("Redis, no persistence", c)),
            ratio(rate("Redis, no persistence", c), memory, 1.0),
        ]);
    }
    table.write(out);

    out.push_str(
        "What HTTP itself allows, in the same rounds: the bare server (`lockserver-bench bare-server`: \
         the same routes, JSON parsing and secret check, a fixed answer, no lock logic), and at one \
         client the bare server appending each request to a file and `fdatasync`ing it before \
         answering, as Redis AOF does. Where a ceiling is below Redis, no lock logic can reach \
         Redis over this HTTP stack.\n\n",
    );
    let mut ceilings = Table::new(&[
        "N",
        "HTTP ceiling",
        "memory / ceiling",
        "ceiling / Redis plain",
        "HTTP + fdatasync ceiling",
        "durable / that",
        "that / Redis AOF always",
    ]);
    for (c, n) in COUNTS.into_iter().enumerate() {
        let ceiling = rate("HTTP ceiling", c).unwrap_or(0.0);
        let fsync = rate("HTTP + fdatasync ceiling", c).filter(|_| n == 1);
        let of = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => String::new(),
        };
        ceilings.row([
            n.to_string(),
            format!("{ceiling:.0}"),
            of(rate("memory", c), Some(ceiling)),
            of(Some(ceiling), rate("Redis, no persistence", c)),
            fsync.map_or(String::new(), |fsync| format!("{fsync:.0}")),
            of(rate("durable", c), fsync),
            of(fsync, rate("Redis AOF, fsync always", c)),
        ]);
    }
    ceilings.write(out);
    if baseline.is_none() {
        out.push_str("No baseline build given (`LOCKSERVER_BENCH_BASELINE=/path/to/lockserver`): its columns are empty.\n\n");
    }
}
