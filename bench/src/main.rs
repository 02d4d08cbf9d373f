//! `lockserver-bench`: one command that measures lockserver against baselines taken in the
//! same run, and writes `BENCHMARKS.md`.
//!
//! `cargo run --release -p lockserver-bench` builds the release server, starts it (and a bare
//! actix-web ceiling server, and Redis when installed) on free loopback ports, runs every
//! scenario with bounded counts and times, and writes the file at the workspace root.
//! `LOCKSERVER_BENCH_LOCKS` shrinks the held-locks scenario (default 1,000,000);
//! `LOCKSERVER_BENCH_ONLY=contended,expiries` runs just those (see `wanted`).

mod bare;
mod http;
mod measure;
mod report;
mod scenarios;
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use server::Server;

/// The runtime of the one-figure subcommands.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("bare-server") => {
            bare::run(args.next().unwrap_or_default(), args.next()).expect("the bare server");
            return;
        }
        // `cycles ADDR N SECONDS`: one uncontended figure against a running server, for profiling;
        // `v3lock ETCD_ADDR N SECONDS`: etcd's own lock service, the same way, for comparison;
        // `etcd-raw ETCD_URL N SECONDS`: two transactions per cycle from a gRPC client.
        Some(which @ ("cycles" | "v3lock" | "etcd-raw")) => {
            let (addr, n, secs) =
                (args.next().expect("ADDR"), args.next().expect("N"), args.next().expect("SECONDS"));
            let n: usize = n.parse().expect("N");
            let run = std::time::Duration::from_secs(secs.parse().expect("SECONDS"));
            let rate = runtime().block_on(async {
                match which {
                    "cycles" => {
                        measure::rounds_per_second(&addr, measure::cycle_scripts(n, "cycles"), run).await
                    }
                    "v3lock" => scenarios::v3lock_cycles(&addr, n, run).await,
                    _ => scenarios::raw_cycles(&addr, n, run).await,
                }
            });
            println!("{rate:.0} cycles/s");
            return;
        }
        // `contended ADDR[,ADDR...] SECONDS` / `v3lock-contended ETCD_ADDR SECONDS`: 16 clients
        // taking turns on one lock, 10 ms each (spread over the servers given, e.g. two etcd
        // gateways): grants, utilisation, hand-off gap p50 and p99.
        Some(which @ ("contended" | "v3lock-contended")) => {
            let (addr, secs) = (args.next().expect("ADDR"), args.next().expect("SECONDS"));
            let run = std::time::Duration::from_secs(secs.parse().expect("SECONDS"));
            let figures = runtime().block_on(async {
                match which {
                    "contended" => {
                        let addrs: Vec<String> = addr.split(',').map(str::to_string).collect();
                        measure::contention(&addrs, "cli", run).await
                    }
                    _ => scenarios::v3lock_contention(&addr, run).await,
                }
            });
            print_hand_offs(figures.grants, figures.utilisation, figures.p50, figures.p99);
            return;
        }
        // `permits ADDR SECONDS`: 16 clients on a semaphore of 4, 10 ms each.
        Some("permits") => {
            let (addr, secs) = (args.next().expect("ADDR"), args.next().expect("SECONDS"));
            let run = std::time::Duration::from_secs(secs.parse().expect("SECONDS"));
            let figures = runtime().block_on(scenarios::permits(&addr, run));
            print_hand_offs(figures.grants, figures.utilisation, figures.p50, figures.p99);
            return;
        }
        _ => {}
    }
    // Thousands of parked connections: raise the descriptor limit as far as allowed.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard.min(65536), hard);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = std::env::var_os("LOCKSERVER_BIN").map(PathBuf::from).unwrap_or_else(|| {
        // The etcd backend needs protoc to build; without it, the etcd scenario says so.
        let mut args = vec!["build", "--release", "-p", "lockserver"];
        if found("protoc") {
            args.extend(["--features", "etcd"]);
        }
        let status =
            Command::new(env!("CARGO")).args(&args).current_dir(&root).status().expect("running cargo build");
        assert!(status.success(), "building the release server failed");
        root.join("target/release/lockserver")
    });
    let locks =
        std::env::var("LOCKSERVER_BENCH_LOCKS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let data = std::env::temp_dir().join(format!("lockserver-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("creating the bench data dir");

    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let body = runtime.block_on(run_all(&binary, &root, &data, locks));
    let _ = std::fs::remove_dir_all(&data);

    let report = format!(
        "# Benchmarks\n\nWritten by `cargo run --release -p lockserver-bench` on {}, in {:.0} s.\n\n\
         Machine: {} cores, {}, {}. Every server under test, the ceiling and the load generator share \
         this machine, and it is shared and noisy: compare figures only with the baselines beside them, \
         measured in the same run. Figures marked **MISSED** did not reach their target in this run.\n\n{body}",
        date(),
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        memory(),
        cpu_model(),
    );
    let path = root.join("BENCHMARKS.md");
    std::fs::write(&path, report).expect("writing BENCHMARKS.md");
    println!("wrote {}", path.display());
}

/// One line of hand-off figures, as the one-figure subcommands print them.
fn print_hand_offs(grants: usize, utilisation: f64, p50: std::time::Duration, p99: std::time::Duration) {
    let ms = |gap: std::time::Duration| gap.as_secs_f64() * 1000.0;
    println!(
        "{grants} grants, utilisation {utilisation:.3}, gap p50 {:.2} ms, p99 {:.2} ms",
        ms(p50),
        ms(p99)
    );
}

/// Whether a scenario runs: all of them, unless `LOCKSERVER_BENCH_ONLY` names some
/// (`uncontended`, `security`, `watch`, `contended`, `sharing`, `parked`, `expiries`, `held`, `caps`, `clients`, `etcd`,
/// `durability`, `redis`; Redis needs `uncontended` too). `LOCKSERVER_BENCH_BASELINE` names a lockserver binary
/// that `durability` measures the durable store against.
fn wanted(name: &str) -> bool {
    std::env::var("LOCKSERVER_BENCH_ONLY")
        .map(|only| only.split(',').any(|n| n.trim() == name))
        .unwrap_or(true)
}

async fn run_all(binary: &Path, root: &Path, data: &Path, locks: usize) -> String {
    let mut out = String::new();
    let mut memory_64 = None;
    if wanted("uncontended") {
        let bare = Server::start(
            &std::env::current_exe().expect("the bench binary"),
            &["bare-server", measure::SECRET],
        );
        eprintln!("generator ceiling...");
        scenarios::generator_ceiling(&bare, &mut out).await;
        eprintln!("uncontended...");
        memory_64 = Some(scenarios::uncontended(binary, &bare, data, &mut out).await[&(false, 64)]);
    }
    if wanted("security") {
        eprintln!("security...");
        scenarios::security(binary, &mut out).await;
    }
    if wanted("watch") {
        eprintln!("watch...");
        scenarios::watching(binary, data, &mut out).await;
    }
    if wanted("contended") {
        eprintln!("contended...");
        scenarios::contended(binary, &mut out).await;
    }
    if wanted("sharing") {
        eprintln!("semaphore and readers...");
        scenarios::sharing(binary, &mut out).await;
    }
    if wanted("parked") {
        eprintln!("parked waiters...");
        scenarios::parked(binary, &mut out).await;
    }
    if wanted("expiries") {
        eprintln!("expiries...");
        scenarios::expiries(binary, &mut out).await;
    }
    if wanted("held") {
        eprintln!("held locks...");
        scenarios::million(binary, data, locks, &mut out).await;
    }
    if wanted("caps") {
        eprintln!("memory at the caps...");
        scenarios::at_the_caps(binary, &mut out).await;
    }
    if wanted("clients") {
        eprintln!("language clients...");
        scenarios::language_clients(binary, root, &mut out);
    }
    if wanted("etcd") {
        if found("etcd") && found("protoc") {
            eprintln!("etcd backend...");
            scenarios::etcd(binary, data, &mut out).await;
        } else {
            out.push_str("## etcd backend\n\nNot run: it needs etcd and protoc (`apt-get install etcd-server protobuf-compiler`), then the bench builds the server with `--features etcd`.\n\n");
        }
    }
    if wanted("durability") {
        eprintln!("durability...");
        scenarios::durability(binary, data, &mut out).await;
    }
    if let (true, Some(memory_64)) = (wanted("redis"), memory_64) {
        eprintln!("redis...");
        scenarios::redis(memory_64, &mut out).await;
    }
    out
}

/// Whether `program` is on the PATH.
fn found(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn date() -> String {
    command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

fn memory() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB RAM", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default()
}
