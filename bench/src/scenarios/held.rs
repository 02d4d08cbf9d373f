//! Many held locks: memory, disk and restart time.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::http::{json_u64, request, Conn};
use crate::measure::{hold_many, SECRET};
use crate::report::{mb, ms, section, verdict, Table};
use crate::server::{dir_bytes, Server, Storage};

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

    section(
        out,
        &format!("{count} held locks"),
        &format!(
            "Loaded over 64 connections: {:.1} s in memory storage ({:.0} acquires/s), {:.1} s durable ({:.0} acquires/s). Baseline: the idle server's RSS, {}.",
            load_time.as_secs_f64(),
            count as f64 / load_time.as_secs_f64(),
            durable_load.as_secs_f64(),
            count as f64 / durable_load.as_secs_f64(),
            mb(idle_rss)
        ),
    );
    let per_lock = |bytes: u64| format!("{} B", bytes / count as u64);
    let mut table = Table::new(&["measure", "value", "per lock", "target"]);
    table.row([
        "RSS, memory storage".into(),
        mb(memory_rss),
        per_lock(memory_rss),
        format!("<= 250 MB: {}", verdict(memory_rss <= 250_000_000)),
    ]);
    table.row(["RSS, durable".into(), mb(durable_rss), per_lock(durable_rss)]);
    table.row(["disk, durable, log as written".into(), mb(log_bytes), per_lock(log_bytes)]);
    table.row(["disk, durable, after compaction".into(), mb(snapshot_bytes), per_lock(snapshot_bytes)]);
    table.row([
        "restart after kill -9 (spawn to listening, recovery included)".into(),
        ms(restart),
        String::new(),
        format!("report; all recovered: {}", if recovered { "yes" } else { "**NO**" }),
    ]);
    table.row(["RSS after restart".into(), mb(restarted_rss)]);
    table.write(out);
}
