//! Contention: 16 clients taking turns on one resource, each holding it 10 ms.

use std::path::Path;
use std::time::Duration;

use crate::measure::{contention, Contention, SECRET};
use crate::report::{ms, section, verdict, Table};
use crate::server::{Server, Storage};

/// 16 clients on one resource, each holding it 10 ms.
pub async fn contended(binary: &Path, out: &mut String) {
    let server = Server::lockserver(binary, SECRET, &Storage::Memory);
    let Contention { grants, wall, utilisation, max, min, p50, p99 } =
        contention(std::slice::from_ref(&server.addr), "memory", Duration::from_secs(5)).await;
    let fairness = max as f64 / min.max(1) as f64;
    section(
        out,
        "Contended: 16 clients on one resource, each holding it 10 ms",
        &format!("{grants} grants in {:.1} s (memory storage). The gap runs from the holder sending its release to the next holder reading its grant.", wall.as_secs_f64()),
    );
    let mut table = Table::new(&["measure", "value", "target"]);
    table.row([
        "utilisation (busy / wall)".into(),
        format!("{utilisation:.3}"),
        format!(">= 0.95: {}", verdict(utilisation >= 0.95)),
    ]);
    table.row([
        "max / min grants per client".into(),
        format!("{max} / {min} = {fairness:.2}"),
        format!("<= 1.2: {}", verdict(fairness <= 1.2)),
    ]);
    table.row([
        "hand-off gap p50".into(),
        ms(p50),
        format!("< 1 ms: {}", verdict(p50 < Duration::from_millis(1))),
    ]);
    table.row([
        "hand-off gap p99".into(),
        ms(p99),
        format!("< 5 ms: {}", verdict(p99 < Duration::from_millis(5))),
    ]);
    table.write(out);
}
