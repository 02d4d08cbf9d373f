//! The etcd backend against the embedded one, in one run.

use std::path::Path;
use std::time::Duration;

use crate::measure::{contention, cycle_scripts, rounds_per_second, spread, SECRET};
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
    ]);
    for (n, base, one, two) in rows {
        table.row([
            n.to_string(),
            format!("{base:.0}"),
            format!("{one:.0}"),
            format!("{:.2}", one / base),
            format!("{two:.0}"),
            format!("{:.2}", two / base),
        ]);
    }
    table.write(out);
    out.push_str("Contended: 16 clients on one resource, each holding it 10 ms.\n\n");
    let mut table = Table::new(&["backend", "grants", "utilisation", "hand-off gap p50", "p99"]);
    for (name, figures) in
        [("embedded", &base), ("etcd, one gateway", &through_one), ("etcd, two gateways", &through_two)]
    {
        table.row([
            name.to_string(),
            figures.grants.to_string(),
            format!("{:.3}", figures.utilisation),
            ms(figures.p50),
            ms(figures.p99),
        ]);
    }
    table.write(out);
}
