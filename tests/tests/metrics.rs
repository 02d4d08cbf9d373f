//! `GET /metrics`: the named series exist with their types, need the secret (header or Bearer),
//! and move as a test acquires, waits, releases and lets a lock expire; on both backends.

use std::collections::HashMap;
use std::time::Duration;

use lockserver_tests::{EtcdCluster, TempDir, TestServer};
use serde_json::json;

/// The exposition as `series -> value` (labels kept in the series name), and `name -> type`.
struct Exposition {
    values: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Exposition {
    fn value(&self, series: &str) -> f64 {
        self.values.get(series).copied().unwrap_or(0.0)
    }
}

async fn scrape(server: &TestServer) -> Exposition {
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&server.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let mut exposition = Exposition { values: HashMap::new(), types: HashMap::new() };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            exposition.types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').unwrap();
            exposition.values.insert(series.to_string(), value.parse().unwrap());
        }
    }
    exposition
}

#[tokio::test]
async fn the_series_exist_with_their_types_and_move() {
    let dir = TempDir::new("metrics");
    let server = TestServer::start(&["--data-dir", dir.arg()]);
    let api = server.api();
    let unauthorized = reqwest::get(format!("{}/metrics", server.base)).await.unwrap();
    assert_eq!(unauthorized.status(), 401, "the secret is needed");
    assert_eq!(api.get("/metrics").await.status, 200, "as the usual header too");

    let before = scrape(&server).await;
    for (name, kind) in [
        ("lockserver_locks_held", "gauge"),
        ("lockserver_waiters", "gauge"),
        ("lockserver_leases", "gauge"),
        ("lockserver_grants", "counter"),
        ("lockserver_releases", "counter"),
        ("lockserver_expiries", "counter"),
        ("lockserver_wait_seconds", "histogram"),
        ("lockserver_hold_seconds", "histogram"),
        ("lockserver_http_requests", "counter"),
        ("lockserver_http_request_duration_seconds", "histogram"),
        ("lockserver_journal_sync_seconds", "histogram"),
        ("lockserver_journal_batch_records", "histogram"),
        ("lockserver_build_info", "gauge"),
        ("lockserver_key_requests", "counter"),
    ] {
        assert_eq!(before.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        before.value(&format!("lockserver_build_info{{version=\"{version}\",backend=\"embedded\"}}")),
        1.0
    );

    // Held, then a waiter queued behind it.
    assert_eq!(api.acquire(json!({"resource": "m", "owner": "a"})).await.status, 200);
    let waiter = api.clone();
    let queued =
        tokio::spawn(async move { waiter.acquire(json!({"resource": "m", "owner": "b", "wait": 10})).await });
    while api.inspect("m").await.body["waiters"] != 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lease = api.post("/leases", json!({"ttl": 10})).await;
    let during = scrape(&server).await;
    assert_eq!(during.value("lockserver_locks_held"), 1.0);
    assert_eq!(during.value("lockserver_waiters"), 1.0);
    assert_eq!(during.value("lockserver_leases"), 1.0);

    api.release(json!({"resource": "m", "owner": "a"})).await;
    assert_eq!(queued.await.unwrap().status, 200);
    api.release(json!({"resource": "m", "owner": "b"})).await;
    assert_eq!(api.acquire(json!({"resource": "short", "owner": "c", "expire": 0.05})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.delete(&format!("/leases/{}", lease.body["lease"].as_str().unwrap())).await;

    let after = scrape(&server).await;
    let moved = |series: &str| after.value(series) - before.value(series);
    assert_eq!(moved("lockserver_grants_total{how=\"immediate\"}"), 2.0);
    assert_eq!(moved("lockserver_grants_total{how=\"handoff\"}"), 1.0);
    assert_eq!(moved("lockserver_releases_total"), 2.0);
    assert_eq!(moved("lockserver_expiries_total{what=\"lock\"}"), 1.0);
    assert_eq!(moved("lockserver_wait_seconds_count"), 1.0);
    assert_eq!(moved("lockserver_hold_seconds_count"), 3.0);
    assert!(moved("lockserver_http_requests_total{route=\"/acquire\",status=\"200\"}") >= 3.0);
    assert!(moved("lockserver_key_requests_total{key=\"secret\",outcome=\"accepted\"}") >= 5.0);
    assert!(moved("lockserver_journal_sync_seconds_count") >= 1.0);
    assert!(moved("lockserver_journal_batch_records_sum") >= 4.0);
    assert_eq!(after.value("lockserver_locks_held"), 0.0);
    assert_eq!(after.value("lockserver_waiters"), 0.0);
    assert_eq!(after.value("lockserver_leases"), 0.0);
}

#[tokio::test]
async fn the_etcd_backend_counts_its_operations() {
    let cluster = EtcdCluster::shared();
    let flags = cluster.gateway_flags(&cluster.fresh_prefix());
    let server = TestServer::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let api = server.api();
    assert_eq!(api.acquire(json!({"resource": "e", "owner": "a"})).await.status, 200);
    api.acquire(json!({"resource": "e", "owner": "b"})).await.assert_error(409, "locked");
    let during = scrape(&server).await;
    assert_eq!(during.value("lockserver_locks_held"), 1.0);
    api.release(json!({"resource": "e", "owner": "a"})).await;
    let after = scrape(&server).await;
    assert_eq!(after.types.get("lockserver_etcd_requests").map(String::as_str), Some("counter"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(after.value(&format!("lockserver_build_info{{version=\"{version}\",backend=\"etcd\"}}")), 1.0);
    assert_eq!(after.value("lockserver_etcd_requests_total{op=\"acquire\",result=\"ok\"}"), 2.0);
    assert_eq!(after.value("lockserver_etcd_requests_total{op=\"release\",result=\"ok\"}"), 1.0);
    assert_eq!(after.value("lockserver_grants_total{how=\"immediate\"}"), 1.0);
    assert_eq!(after.value("lockserver_locks_held"), 0.0);
}
