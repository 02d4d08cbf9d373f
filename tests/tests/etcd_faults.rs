//! The etcd backend under failure, each test on a cluster of its own: etcd down and back, and
//! clients contending through two gateways while an etcd member and a gateway crash, and
//! etcd's database full.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockserver_tests::{Api, EtcdCluster, TestServer};
use serde_json::{json, Value};

/// One test at a time: each runs its own cluster, and two would crowd a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn gateway(cluster: &EtcdCluster, prefix: &str) -> TestServer {
    let flags = cluster.gateway_flags(prefix);
    TestServer::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// etcd's quota is what bounds the etcd backend: once etcd's database is full, acquires answer
/// 503 `too_many` naming the quota (not `unavailable`: retrying at once will not help), and
/// what is held stays readable.
#[tokio::test]
async fn a_full_etcd_answers_too_many() {
    let _serial = SERIAL.lock().await;
    let cluster = EtcdCluster::start_with(1, &["--quota-backend-bytes", &(2u64 << 20).to_string()]);
    let server = gateway(&cluster, "full/");
    let api = server.api();
    let value = "v".repeat(60_000);
    let mut refused = None;
    for i in 0..200 {
        let answer = api.acquire(json!({"resource": format!("f{i}"), "owner": "o", "value": value})).await;
        if answer.status != 200 {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("2 MiB of etcd quota holds fewer than 200 values of 60 KB");
    refused.assert_error(503, "too_many");
    assert!(refused.body["message"].as_str().unwrap().contains("quota-backend-bytes"), "{:?}", refused.body);
    assert_eq!(api.inspect("f0").await.body["owner"], "o");
}

/// With etcd down, requests and `/health` answer 503 `unavailable` (no false grants); once it
/// is back, the same gateway serves again and what was held is still held.
#[tokio::test]
async fn etcd_down_is_unavailable_and_recovery_needs_no_restart() {
    let _serial = SERIAL.lock().await;
    let cluster = EtcdCluster::start(1);
    let server = gateway(&cluster, "down/");
    let api = server.api();
    let held = api.acquire(json!({"resource": "kept", "owner": "o"})).await;
    assert_eq!(held.status, 200, "{:?}", held.body);

    cluster.kill(0);
    let started = Instant::now();
    let health = api.with_secret("").get("/health").await;
    assert_eq!(
        (health.status, health.body["status"].clone()),
        (503, json!("unavailable")),
        "{:?}",
        health.body
    );
    assert_eq!(health.body["backend"], "etcd");
    api.acquire(json!({"resource": "new", "owner": "o"})).await.assert_error(503, "unavailable");
    api.acquire(json!({"resource": "new", "owner": "o", "wait": 2})).await.assert_error(503, "unavailable");
    api.inspect("kept").await.assert_error(503, "unavailable");
    assert!(started.elapsed() < Duration::from_secs(30), "answered, not hung: {:?}", started.elapsed());

    cluster.restart(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.with_secret("").get("/health").await.status != 200 {
        assert!(Instant::now() < deadline, "the gateway never saw etcd come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api.inspect("kept").await.body["owner"], "o");
    let grant = api.acquire(json!({"resource": "new", "owner": "o"})).await;
    assert_eq!(grant.status, 200, "{:?}", grant.body);
    assert!(grant.token() > held.token());
}

/// A critical section as a client saw it.
#[derive(Debug, Clone)]
struct Section {
    resource: String,
    client: usize,
    token: u64,
    start: Instant,
    end: Instant,
    gateway: usize,
}

/// Clients on both gateways contend for three resources while the test kills an etcd member,
/// then a gateway, then restarts them. From the clients' own records: no two critical sections
/// on a resource overlap, tokens grow per resource, and every client that lost its gateway
/// went on through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_through_member_and_gateway_crashes() {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(EtcdCluster::start(3));
    let mut gateway_a = Some(gateway(&cluster, "faults/"));
    let gateway_b = gateway(&cluster, "faults/");
    let apis = [gateway_a.as_ref().expect("started").api(), gateway_b.api()];
    let stop = Arc::new(AtomicBool::new(false));
    let sections = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..6)
        .map(|client| {
            let (apis, stop, sections) = (apis.clone(), stop.clone(), sections.clone());
            tokio::spawn(run_client(client, apis, stop, sections))
        })
        .collect();

    let phase = Duration::from_millis(2500);
    tokio::time::sleep(phase).await;
    let member = cluster.clone();
    tokio::task::spawn_blocking(move || member.kill(1)).await.unwrap();
    tokio::time::sleep(phase).await;
    let gateway_killed = Instant::now();
    gateway_a.take().expect("started").kill();
    tokio::time::sleep(phase * 2).await;
    let member = cluster.clone();
    tokio::task::spawn_blocking(move || member.restart(1)).await.unwrap();
    let _gateway_a_again = gateway(&cluster, "faults/");
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client).await.expect("a client finished").unwrap();
    }

    let sections = sections.lock().unwrap().clone();
    assert!(sections.len() >= 30, "too few critical sections to judge: {}", sections.len());
    let mut by_resource: BTreeMap<&str, Vec<&Section>> = BTreeMap::new();
    for section in &sections {
        by_resource.entry(&section.resource).or_default().push(section);
    }
    for (resource, mut list) in by_resource {
        list.sort_by_key(|section| section.start);
        for pair in list.windows(2) {
            assert!(pair[0].end <= pair[1].start, "overlapping critical sections on {resource}: {pair:#?}");
            assert!(pair[0].token < pair[1].token, "tokens went back on {resource}: {pair:#?}");
        }
    }
    for client in (0..6).filter(|client| client % 2 == 0) {
        let went_on =
            sections.iter().any(|s| s.client == client && s.gateway == 1 && s.start > gateway_killed);
        let after: Vec<_> =
            sections.iter().filter(|s| s.start > gateway_killed).map(|s| (s.client, s.gateway)).collect();
        assert!(
            went_on,
            "client {client} lost gateway A and never went on through B; after the kill: {after:?}"
        );
    }
}

/// One client: acquires its resource through its gateway (the other once its own is gone),
/// holds it briefly, releases it; records each critical section. Bounded by `stop`.
async fn run_client(
    client: usize,
    apis: [Api; 2],
    stop: Arc<AtomicBool>,
    sections: Arc<Mutex<Vec<Section>>>,
) {
    let resource = format!("r{}", client % 3);
    let mut gateway = client % 2;
    let mut round = 0;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        let owner = format!("c{client}-{round}");
        let api = &apis[gateway];
        let body = json!({"resource": resource, "owner": owner, "expire": 2, "wait": 6});
        let response = match api.request(reqwest::Method::POST, "/acquire").json(&body).send().await {
            Ok(response) => response,
            Err(_) => {
                // The gateway is gone: go on through the other one.
                gateway = 1 - gateway;
                continue;
            }
        };
        let status = response.status().as_u16();
        let grant: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let end = Instant::now();
        let token = grant["token"].as_u64().expect("a grant has a token");
        sections.lock().unwrap().push(Section {
            resource: resource.clone(),
            client,
            token,
            start,
            end,
            gateway,
        });
        let release = json!({"resource": resource, "owner": owner, "token": token});
        let _ = api.request(reqwest::Method::POST, "/release").json(&release).send().await;
    }
}

/// Waits until `resource` has `count` waiters, as seen through `api`.
async fn waiters(api: &Api, resource: &str, count: u64) {
    for _ in 0..500 {
        if api.inspect(resource).await.body["waiters"] == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{resource} never had {count} waiters");
}

/// A hold handed to a waiter with neither expiry nor lease is bound to the waiter's gateway's
/// etcd session at first, then rebound to nothing: once settled, it outlives that gateway, as
/// every hold without expiry does.
#[tokio::test]
async fn a_handed_off_hold_outlives_its_gateway_once_settled() {
    let _serial = SERIAL.lock().await;
    let cluster = EtcdCluster::start(1);
    let (first, second) = (gateway(&cluster, "settle/"), gateway(&cluster, "settle/"));
    let (api, other) = (first.api(), second.api());
    let held = api.acquire(json!({"resource": "r", "owner": "a"})).await.token();
    let waiter =
        tokio::spawn(async move { other.acquire(json!({"resource": "r", "owner": "b", "wait": 10})).await });
    waiters(&api, "r", 1).await;
    assert_eq!(api.release(json!({"resource": "r", "owner": "a"})).await.status, 200);
    let handed = waiter.await.unwrap();
    assert_eq!(handed.status, 200, "{:?}", handed.body);
    assert!(handed.token() > held, "tokens grow across a hand-off");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    second.kill();
    // Past the dead gateway's session lease (5 s) and etcd's lease checks.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = api.inspect("r").await;
    assert_eq!((now.status, now.body["owner"].clone()), (200, json!("b")), "{:?}", now.body);
    assert_eq!(now.body["token"], handed.token());
}

/// A waiter whose gateway died is not left holding the lock: a hand-off made to it before etcd
/// noticed (its waiter key lives until that gateway's session lease runs out) ends with that
/// lease, and the next waiter gets the lock.
#[tokio::test]
async fn a_hand_off_to_a_dead_gateways_waiter_does_not_keep_the_lock() {
    let _serial = SERIAL.lock().await;
    let cluster = EtcdCluster::start(1);
    let (first, second) = (gateway(&cluster, "dead/"), gateway(&cluster, "dead/"));
    let (api, other) = (first.api(), second.api());
    let held = api.acquire(json!({"resource": "r", "owner": "a"})).await.token();
    let gone =
        tokio::spawn(async move { other.acquire(json!({"resource": "r", "owner": "b", "wait": 30})).await });
    waiters(&api, "r", 1).await;
    let patient = {
        let api = api.clone();
        tokio::spawn(async move { api.acquire(json!({"resource": "r", "owner": "c", "wait": 30})).await })
    };
    waiters(&api, "r", 2).await;
    second.kill();
    gone.abort();
    let started = Instant::now();
    assert_eq!(api.release(json!({"resource": "r", "owner": "a"})).await.status, 200);
    let granted =
        tokio::time::timeout(Duration::from_secs(15), patient).await.expect("c is granted").unwrap();
    assert_eq!((granted.status, granted.body["owner"].clone()), (200, json!("c")), "{:?}", granted.body);
    assert!(granted.token() > held);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the session lease's time: {:?}",
        started.elapsed()
    );
}

/// A gateway holding a semaphore's permits dies: each permit ends by its etcd lease backstop
/// (expire + slack), the group hold left without tickets is ended by the next request that
/// reads it, and a permit request queued on another gateway is granted; a request that was
/// queued on the dead gateway is never granted.
#[tokio::test]
async fn permits_of_a_dead_gateway_end_and_go_to_the_next_waiter() {
    let _serial = SERIAL.lock().await;
    let cluster = EtcdCluster::start(1);
    let (first, second) = (gateway(&cluster, "sem/"), gateway(&cluster, "sem/"));
    let (api, other) = (first.api(), second.api());
    let mut highest = 0;
    for owner in ["a", "b"] {
        let grant = api.acquire(json!({"resource": "pool", "owner": owner, "limit": 2, "expire": 1})).await;
        assert_eq!(grant.status, 200, "{:?}", grant.body);
        highest = highest.max(grant.token());
    }
    let doomed = {
        let api = api.clone();
        tokio::spawn(async move {
            api.acquire(json!({"resource": "pool", "owner": "d", "limit": 2, "wait": 30})).await
        })
    };
    waiters(&other, "pool", 1).await;
    let patient = {
        let other = other.clone();
        tokio::spawn(async move {
            other
                .acquire(json!({"resource": "pool", "owner": "c", "limit": 2, "wait": 30, "expire": 10}))
                .await
        })
    };
    waiters(&other, "pool", 2).await;
    first.kill();
    doomed.abort();
    let granted =
        tokio::time::timeout(Duration::from_secs(20), patient).await.expect("c is granted").unwrap();
    assert_eq!((granted.status, granted.body["owner"].clone()), (200, json!("c")), "{:?}", granted.body);
    assert!(granted.token() > highest);
    let info = other.inspect("pool").await;
    let owners: Vec<_> =
        info.body["holders"].as_array().unwrap().iter().map(|h| h["owner"].clone()).collect();
    assert_eq!(owners, [json!("c")], "the dead gateway's permits and waiter are gone: {:?}", info.body);
}
