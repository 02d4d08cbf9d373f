//! Semaphores, read-write locks and multi-locks over HTTP against the real server binary:
//! invariant checkers over concurrent clients (each records entering and leaving what it holds)
//! and the error paths. Each loop is bounded in count and time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockserver_tests::Api;
use serde_json::{json, Value};

use super::backend;

/// How many holders are inside at once, and the most ever seen.
#[derive(Default)]
struct Occupancy {
    now: AtomicI64,
    most: AtomicI64,
}

impl Occupancy {
    fn enter(&self) -> i64 {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        now
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_semaphore_never_has_more_holders_than_its_limit() {
    let server = backend().start(&[]);
    let api = server.api();
    let inside = Arc::new(Occupancy::default());
    let grants = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for client in 0..16 {
        let (api, inside, grants) = (api.clone(), inside.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{client}");
            for _ in 0..40 {
                if Instant::now() > stop_at {
                    break;
                }
                let body = json!({"resource": "pool", "owner": owner, "limit": 4, "wait": 10, "expire": 10});
                let grant = api.acquire(body).await;
                assert_eq!(grant.status, 200, "{:?}", grant.body);
                assert!(inside.enter() <= 4, "more than 4 permit holders at once");
                grants.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                inside.leave();
                let token = grant.token();
                let released = api.release(json!({"resource": "pool", "owner": owner, "token": token})).await;
                assert_eq!(released.status, 200, "{:?}", released.body);
            }
        }));
    }
    for task in tasks {
        task.await.expect("a client failed");
    }
    assert!(grants.load(Ordering::SeqCst) >= 32, "the clients got through");
    assert!(inside.most.load(Ordering::SeqCst) > 1, "the permits were used together");
}

#[tokio::test]
async fn semaphore_answers_limits_holders_and_expiry() {
    let server = backend().start(&[]);
    let api = server.api();
    let a = api.acquire(json!({"resource": "gpu", "owner": "a", "limit": 2, "expire": 0.5})).await;
    let b = api.acquire(json!({"resource": "gpu", "owner": "b", "limit": 2})).await;
    assert_eq!((a.status, b.status), (200, 200));
    assert!(b.token() > a.token(), "each permit has its own token");
    let again = api.acquire(json!({"resource": "gpu", "owner": "a", "limit": 2, "expire": 0.5})).await;
    assert_eq!(again.token(), a.token(), "the same owner again is idempotent");

    let full = api.acquire(json!({"resource": "gpu", "owner": "c", "limit": 2})).await;
    full.assert_error(409, "locked");
    assert_eq!(full.body["holders"], json!(["a", "b"]));
    let mismatch = api.acquire(json!({"resource": "gpu", "owner": "c", "limit": 3})).await;
    mismatch.assert_error(409, "limit_mismatch");
    assert_eq!(mismatch.body["limit"], 2);
    assert!(mismatch.body["message"].as_str().unwrap().contains('2'), "{:?}", mismatch.body);
    let plain = api.acquire(json!({"resource": "gpu", "owner": "c"})).await;
    plain.assert_error(409, "limit_mismatch");
    let as_semaphore = {
        api.acquire(json!({"resource": "mutex", "owner": "x"})).await;
        api.acquire(json!({"resource": "mutex", "owner": "c", "limit": 2})).await
    };
    as_semaphore.assert_error(409, "limit_mismatch");
    assert_eq!(as_semaphore.body["limit"], Value::Null);

    let info = api.inspect("gpu").await;
    assert_eq!((info.body["mode"].clone(), info.body["limit"].clone()), (json!("permit"), json!(2)));
    let holders: Vec<_> =
        info.body["holders"].as_array().unwrap().iter().map(|h| h["owner"].clone()).collect();
    assert_eq!(holders, [json!("a"), json!("b")]);
    assert_eq!(info.body["owner"], "a", "the top-level fields describe the first holder");

    // a's permit expires alone and goes to the head waiter.
    let started = Instant::now();
    let c = api.acquire(json!({"resource": "gpu", "owner": "c", "limit": 2, "wait": 5})).await;
    assert_eq!(c.status, 200, "{:?}", c.body);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(c.token() > b.token());
    let owners: Vec<_> = api.inspect("gpu").await.body["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["owner"].clone())
        .collect();
    assert_eq!(owners, [json!("b"), json!("c")]);

    for (body, field) in [
        (json!({"resource": "s", "owner": "o", "limit": 0}), "limit"),
        (json!({"resource": "s", "owner": "o", "limit": 10001}), "limit"),
        (json!({"resource": "s", "owner": "o", "limit": 2, "mode": "shared"}), "mode"),
        (json!({"resource": "s", "owner": "o", "mode": "permit"}), "mode"),
        (json!({"resource": "s", "owner": "o", "mode": "bogus"}), "shared"),
    ] {
        let refused = api.acquire(body).await;
        refused.assert_error(400, "bad_request");
        assert!(refused.body["message"].as_str().unwrap().contains(field), "{:?}", refused.body);
    }
    api.inspect("s").await.assert_error(404, "not_held");
}

#[tokio::test]
async fn readers_share_writers_are_alone_and_waiting_is_fifo_across_modes() {
    let server = backend().start(&[]);
    let api = server.api();
    assert_eq!(api.acquire(json!({"resource": "cfg", "owner": "r1", "mode": "shared"})).await.status, 200);
    assert_eq!(api.acquire(json!({"resource": "cfg", "owner": "r2", "mode": "shared"})).await.status, 200);
    let refused = api.acquire(json!({"resource": "cfg", "owner": "w"})).await;
    refused.assert_error(409, "locked");
    assert_eq!(refused.body["holders"], json!(["r1", "r2"]), "a writer is told who reads");
    let waited = api.acquire(json!({"resource": "cfg", "owner": "w", "wait": 0.2})).await;
    waited.assert_error(409, "locked");
    assert_eq!(waited.body["holders"], json!(["r1", "r2"]), "also after waiting");
    let writer = tokio::spawn({
        let api = api.clone();
        async move { api.acquire(json!({"resource": "cfg", "owner": "w", "wait": 10})).await }
    });
    wait_for_waiters(&api, "cfg", 1).await;
    let reader = tokio::spawn({
        let api = api.clone();
        async move { api.acquire(json!({"resource": "cfg", "owner": "r3", "mode": "shared", "wait": 10})).await }
    });
    wait_for_waiters(&api, "cfg", 2).await;
    api.release(json!({"resource": "cfg", "owner": "r1"})).await;
    api.release(json!({"resource": "cfg", "owner": "r2"})).await;
    let writer = writer.await.unwrap();
    assert_eq!(writer.status, 200, "the queued writer goes before the later reader");
    let info = api.inspect("cfg").await;
    assert_eq!((info.body["mode"].clone(), info.body["waiters"].clone()), (json!("exclusive"), json!(1)));
    api.release(json!({"resource": "cfg", "owner": "w"})).await;
    let reader = reader.await.unwrap();
    assert!(reader.token() > writer.token());

    // Under load: never a writer beside anyone.
    let readers = Arc::new(Occupancy::default());
    let writers = Arc::new(Occupancy::default());
    api.release(json!({"resource": "cfg", "owner": "r3"})).await;
    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for client in 0..16 {
        let (api, readers, writers) = (api.clone(), readers.clone(), writers.clone());
        tasks.push(tokio::spawn(async move {
            let writes = client % 4 == 0;
            let owner = format!("c{client}");
            for _ in 0..30 {
                if Instant::now() > stop_at {
                    break;
                }
                let mode = if writes { "exclusive" } else { "shared" };
                let body = json!({"resource": "rw", "owner": owner, "mode": mode, "wait": 10, "expire": 10});
                assert_eq!(api.acquire(body).await.status, 200);
                if writes {
                    assert_eq!(writers.enter(), 1, "two writers at once");
                    assert_eq!(readers.now.load(Ordering::SeqCst), 0, "a writer beside readers");
                } else {
                    readers.enter();
                    assert_eq!(writers.now.load(Ordering::SeqCst), 0, "a reader beside a writer");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                if writes {
                    writers.leave()
                } else {
                    readers.leave()
                }
                assert_eq!(api.release(json!({"resource": "rw", "owner": owner})).await.status, 200);
            }
        }));
    }
    for task in tasks {
        task.await.expect("a client failed");
    }
    assert!(readers.most.load(Ordering::SeqCst) > 1, "readers shared the lock");
}

#[tokio::test]
async fn multi_locks_are_all_or_nothing_and_never_deadlock() {
    let server = backend().start(&[]);
    let api = server.api();
    let grants = api.acquire(json!({"resources": ["a", "b"], "owner": "m1"})).await;
    assert_eq!(grants.status, 200, "{:?}", grants.body);
    let names: Vec<_> =
        grants.body["grants"].as_array().unwrap().iter().map(|g| g["resource"].clone()).collect();
    assert_eq!(names, [json!("a"), json!("b")]);
    let refused = api.acquire(json!({"resources": ["b", "c"], "owner": "m2"})).await;
    refused.assert_error(409, "locked");
    api.inspect("c").await.assert_error(404, "not_held");
    api.release(json!({"resources": ["a", "b"], "owner": "other"})).await.assert_error(409, "not_owner");
    assert_eq!(api.inspect("a").await.status, 200, "a failed multi-release releases nothing");
    let released = api.release(json!({"resources": ["a", "b"], "owner": "m1"})).await;
    assert_eq!(released.status, 200, "{:?}", released.body);
    api.inspect("a").await.assert_error(404, "not_held");
    for body in [
        json!({"resources": ["a"], "owner": "o"}),
        json!({"resources": ["a", "a"], "owner": "o"}),
        json!({"resources": ["a", "b"], "owner": "o", "value": "v"}),
        json!({"resources": ["a", "b"], "owner": "o", "limit": 2}),
        json!({"resources": ["a", "b"], "resource": "a", "owner": "o"}),
        json!({"resources": (0..65).map(|i| format!("r{i}")).collect::<Vec<_>>(), "owner": "o"}),
    ] {
        api.acquire(body).await.assert_error(400, "bad_request");
    }

    // A storm of overlapping multi-locks over 8 names, 16 clients.
    let holders: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for client in 0..16u64 {
        let (api, holders, done) = (api.clone(), holders.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let owner = format!("m{client}");
            let mut seed = client * 7919 + 17;
            for _ in 0..30 {
                if Instant::now() > stop_at {
                    break;
                }
                let mut set = Vec::new();
                let size = 2 + (seed % 3) as usize;
                while set.len() < size {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let name = format!("n{}", (seed >> 33) % 8);
                    if !set.contains(&name) {
                        set.push(name);
                    }
                }
                let body = json!({"resources": set, "owner": owner, "wait": 20, "expire": 20});
                let grant = api.acquire(body).await;
                assert_eq!(grant.status, 200, "{:?}", grant.body);
                {
                    let mut held = holders.lock().unwrap();
                    for name in &set {
                        assert!(held.insert(name.clone(), owner.clone()).is_none(), "{name} held twice");
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                {
                    let mut held = holders.lock().unwrap();
                    set.iter().for_each(|name| _ = held.remove(name));
                }
                assert_eq!(api.release(json!({"resources": set, "owner": owner})).await.status, 200);
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let all = futures_join(tasks);
    tokio::time::timeout(Duration::from_secs(60), all).await.expect("the storm deadlocked");
    assert!(done.load(Ordering::SeqCst) >= 16, "the clients got through");
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        task.await.expect("a client failed");
    }
}

async fn wait_for_waiters(api: &Api, resource: &str, count: u64) {
    let until = Instant::now() + Duration::from_secs(5);
    while api.inspect(resource).await.body["waiters"] != json!(count) {
        assert!(Instant::now() < until, "{resource} never had {count} waiters");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn permits_and_shared_holds_under_a_lease_end_with_it() {
    let server = backend().start(&[]);
    let api = server.api();
    let lease = api.post("/leases", json!({"ttl": 30})).await.body["lease"].as_str().unwrap().to_string();
    let leased = api.acquire(json!({"resource": "pool", "owner": "a", "limit": 1, "lease": lease})).await;
    assert_eq!(leased.status, 200, "{:?}", leased.body);
    let reader =
        api.acquire(json!({"resource": "cfg", "owner": "r", "mode": "shared", "lease": lease})).await;
    assert_eq!(reader.status, 200, "{:?}", reader.body);
    let info = api.get(&format!("/leases/{lease}")).await;
    assert_eq!(info.body["locks"], json!(["cfg", "pool"]), "{:?}", info.body);
    let waiter = {
        let api = api.clone();
        tokio::spawn(async move {
            api.acquire(json!({"resource": "pool", "owner": "b", "limit": 1, "wait": 20})).await
        })
    };
    wait_for_waiters(&api, "pool", 1).await;
    assert_eq!(api.delete(&format!("/leases/{lease}")).await.status, 200);
    let granted = tokio::time::timeout(Duration::from_secs(15), waiter).await.expect("b is granted").unwrap();
    assert_eq!((granted.status, granted.body["owner"].clone()), (200, json!("b")), "{:?}", granted.body);
    assert!(granted.token() > leased.token());
    let until = Instant::now() + Duration::from_secs(10);
    while api.inspect("cfg").await.status != 404 {
        assert!(Instant::now() < until, "the shared hold did not end with its lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
