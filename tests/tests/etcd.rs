//! The etcd backend: the API suite (`suite/api.rs`) on gateways in front of a 3-member etcd
//! cluster on loopback ports, and what only a shared lock space has: FIFO order, hand-off and
//! tokens across gateways, and the expiry backstop when a gateway dies.

use std::time::{Duration, Instant};

use lockserver_tests::{Backend, EtcdCluster, TestServer};
use serde_json::json;

fn backend() -> &'static Backend {
    static BACKEND: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
    BACKEND.get_or_init(|| Backend::Etcd(EtcdCluster::shared()))
}

#[path = "suite/api.rs"]
mod suite;

/// Two gateways on one lock space (same cluster, same prefix).
fn two_gateways() -> (TestServer, TestServer) {
    let cluster = EtcdCluster::shared();
    let prefix = cluster.fresh_prefix();
    let flags = cluster.gateway_flags(&prefix);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (TestServer::start(&flags), TestServer::start(&flags))
}

/// Waiters queued through either gateway are served in arrival order, each release handing
/// the lock to the next, with tokens growing across gateways.
#[tokio::test]
async fn fifo_hand_off_and_tokens_across_gateways() {
    let (a, b) = two_gateways();
    let (api_a, api_b) = (a.api(), b.api());
    let first = api_a.acquire(json!({"resource": "f", "owner": "w0"})).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let mut waiters = Vec::new();
    for i in 1..=4 {
        let api = if i % 2 == 0 { api_a.clone() } else { api_b.clone() };
        waiters.push(tokio::spawn(async move {
            let owner = format!("w{i}");
            let grant = api.acquire(json!({"resource": "f", "owner": owner, "wait": 20})).await;
            assert_eq!(grant.status, 200, "{:?}", grant.body);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let released = api.release(json!({"resource": "f", "owner": owner})).await;
            assert_eq!(released.status, 200, "{:?}", released.body);
            (i, grant.token())
        }));
        // Queue strictly one after the other.
        while api_b.inspect("f").await.body["waiters"] != i {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let released = Instant::now();
    api_b.release(json!({"resource": "f", "owner": "w9"})).await.assert_error(409, "not_owner");
    // Released through the other gateway than the one that granted it.
    assert_eq!(api_b.release(json!({"resource": "f", "owner": "w0"})).await.status, 200);
    let mut tokens = vec![first.token()];
    for waiter in waiters {
        let (i, token) = waiter.await.unwrap();
        tokens.push(token);
        assert_eq!(tokens.len() - 1, i);
    }
    assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]), "tokens grow in grant order: {tokens:?}");
    assert!(released.elapsed() < Duration::from_secs(3), "handed off, not polled: {:?}", released.elapsed());
}

/// A gateway that dies takes its timers with it: the etcd lease backstop ends its holds within
/// BACKSTOP_SLACK of their deadline, and its queued waiters leave the queue with its session.
#[tokio::test]
async fn a_dead_gateways_holds_expire_and_its_waiters_leave() {
    let (a, b) = two_gateways();
    let (api_a, api_b) = (a.api(), b.api());
    assert_eq!(api_a.acquire(json!({"resource": "x", "owner": "a", "expire": 1})).await.status, 200);
    let granted = Instant::now();
    // A waiter through the gateway that will die, then one through the survivor.
    let doomed = {
        let api = api_a.clone();
        let body = json!({"resource": "x", "owner": "doomed", "wait": 30});
        tokio::spawn(async move { api.request(reqwest::Method::POST, "/acquire").json(&body).send().await })
    };
    while api_b.inspect("x").await.body["waiters"] != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let survivor = {
        let api = api_b.clone();
        tokio::spawn(
            async move { api.acquire(json!({"resource": "x", "owner": "survivor", "wait": 30})).await },
        )
    };
    while api_b.inspect("x").await.body["waiters"] != 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    assert!(doomed.await.unwrap().is_err(), "the waiter's gateway died under it");
    let grant = survivor.await.unwrap();
    assert_eq!((grant.status, grant.body["owner"].clone()), (200, json!("survivor")), "{:?}", grant.body);
    let waited = granted.elapsed();
    // The hold's deadline (1 s) plus the backstop's slack, or the dead session's ttl (5 s).
    assert!(waited < Duration::from_secs(9), "{waited:?}");
}

#[path = "suite/keys.rs"]
mod keys;

#[path = "suite/watch.rs"]
mod watch;

/// A watcher that resumes on another gateway, which never recorded what it missed, gets the
/// missed events from etcd's history by revision, not a reset.
#[tokio::test]
async fn a_watch_resumes_on_another_gateway_by_revision() {
    let (first, second) = two_gateways();
    let (a, b) = (first.api(), second.api());
    let mut watch = a.watch("resource=moved", None).await;
    assert_eq!(watch.next(Duration::from_secs(5)).await.unwrap().event, "reset");
    a.acquire(json!({"resource": "moved", "owner": "one"})).await;
    let seen = watch.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(seen.event, "acquired");
    drop(watch);
    a.release(json!({"resource": "moved", "owner": "one"})).await;
    b.acquire(json!({"resource": "moved", "owner": "two", "expire": 30})).await;

    let mut resumed = b.watch("resource=moved", Some(seen.id)).await;
    let released = resumed.next(Duration::from_secs(5)).await.unwrap();
    let acquired = resumed.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!((released.event.as_str(), acquired.event.as_str()), ("released", "acquired"));
    assert!(released.id > seen.id && acquired.id > released.id);
    assert_eq!(acquired.data["owner"], "two");
    assert_eq!(acquired.data["waiters"], 0, "events on etcd carry the waiter count");
    assert!(resumed.next(Duration::from_millis(300)).await.is_none(), "nothing twice");
}

#[path = "suite/sharing.rs"]
mod sharing;
