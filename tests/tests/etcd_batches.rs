//! The etcd backend under load: the lock transactions of many clients go to etcd in batches
//! (`server/src/engine/etcd/batches.rs`), and a lock is still never held twice, its tokens still
//! only grow, and a batch etcd refuses as a whole is sent again one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockserver_tests::{Api, EtcdCluster, TestServer};
use serde_json::json;

/// Per lock: whether a client is inside, and the tokens it was granted under, in grant order.
type Locks = Arc<Mutex<HashMap<String, (bool, Vec<u64>)>>>;

/// `lockserver_etcd_requests_total{op="batch",result=...}` of the gateway behind `api`.
async fn batches(api: &Api, result: &str) -> f64 {
    let text = api.request(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    let series = format!("lockserver_etcd_requests_total{{op=\"batch\",result=\"{result}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&series)).map_or(0.0, |value| value.parse().unwrap())
}

/// 24 clients on 12 locks (two per lock, so some transactions of one lock meet while others
/// batch, and releases hand locks to waiters), each acquiring with a wait and releasing in a
/// loop, a third with an expiry, a third under a lease and a third with neither, every other
/// time with a value: batches are sent, every grant finds its lock free and returns its value,
/// and each lock's tokens grow in the order it was granted.
#[tokio::test]
async fn batched_lock_transactions_keep_locks_exclusive_and_tokens_growing() {
    let cluster = EtcdCluster::shared();
    let flags = cluster.gateway_flags(&cluster.fresh_prefix());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gateway = TestServer::start(&flags);
    let api = gateway.api();
    let lease = api.post("/leases", json!({"ttl": 60})).await;
    assert_eq!(lease.status, 200, "{:?}", lease.body);
    let lease = lease.body["lease"].as_str().unwrap().to_string();
    let locks = Locks::default();
    let until = Instant::now() + Duration::from_secs(3);
    let mut clients = Vec::new();
    for client in 0..24 {
        let (api, locks, lease) = (api.clone(), locks.clone(), lease.clone());
        clients.push(tokio::spawn(async move {
            let (name, owner) = (format!("b{}", client % 12), format!("c{client}"));
            let mut cycles = 0;
            while Instant::now() < until && cycles < 400 {
                let mut body = json!({"resource": name, "owner": owner, "wait": 10});
                match client % 3 {
                    0 => body["expire"] = json!(30),
                    1 => body["lease"] = json!(lease),
                    _ => {}
                }
                let value = format!("{owner}-{cycles}");
                if cycles % 2 == 1 {
                    body["value"] = json!(value);
                }
                let grant = api.acquire(body).await;
                assert_eq!(grant.status, 200, "{:?}", grant.body);
                if cycles % 2 == 1 {
                    assert_eq!(grant.body["value"].as_str(), Some(value.as_str()), "{:?}", grant.body);
                }
                {
                    let mut locks = locks.lock().unwrap();
                    let (inside, tokens) = locks.entry(name.clone()).or_default();
                    assert!(!*inside, "{name} granted to {owner} while held");
                    *inside = true;
                    tokens.push(grant.token());
                }
                tokio::task::yield_now().await;
                locks.lock().unwrap().get_mut(&name).unwrap().0 = false;
                let released = api.release(json!({"resource": name, "owner": owner})).await;
                assert_eq!(released.status, 200, "{:?}", released.body);
                cycles += 1;
            }
            cycles
        }));
    }
    let mut cycles = 0;
    for client in clients {
        cycles += client.await.unwrap();
    }
    for (name, (_, tokens)) in locks.lock().unwrap().iter() {
        assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]), "{name}'s tokens grow: {tokens:?}");
    }
    let sent = batches(&api, "ok").await;
    assert!(sent > 0.0, "24 clients made no batch in {cycles} cycles");
}

/// etcd refuses a request over its `--max-request-bytes` as a whole: a batch of lock
/// transactions with large values is too large where each alone is not, so each is sent
/// again alone and answered as if never batched.
#[tokio::test]
async fn a_batch_etcd_refuses_goes_again_one_by_one() {
    // Three members: the gateway talks to the leader through its one-write channel
    // (`member_channel.rs`), so large requests cross it in many frames.
    let cluster = EtcdCluster::start_with(3, &["--max-request-bytes", "262144"]);
    let flags = cluster.gateway_flags(&cluster.fresh_prefix());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let gateway = TestServer::start(&flags);
    let api = gateway.api();
    let until = Instant::now() + Duration::from_secs(20);
    let mut clients = Vec::new();
    for client in 0..16 {
        let api = api.clone();
        clients.push(tokio::spawn(async move {
            let (name, owner) = (format!("big{client}"), format!("c{client}"));
            for round in 0..20 {
                let value = format!("{client}-{round}-").repeat(60 * 1024 / 8);
                let grant = api.acquire(json!({"resource": name, "owner": owner, "value": value})).await;
                assert_eq!(grant.status, 200, "{:?}", grant.body);
                assert_eq!(grant.body["value"].as_str(), Some(value.as_str()));
                let released = api.release(json!({"resource": name, "owner": owner})).await;
                assert_eq!(released.status, 200, "{:?}", released.body);
                if Instant::now() > until {
                    break;
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    assert!(batches(&api, "error").await > 0.0, "some batch was too large for etcd");
}
