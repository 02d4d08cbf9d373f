//! API keys on the real binary: namespaces that keep tenants apart, roles, the rate limit, the
//! quota, forced release, and SIGHUP re-reading the keys file while locks are held.
//!
//! Backend-independent: `tests/api.rs` and `tests/etcd.rs` include it beside `suite/api.rs`.

use std::time::{Duration, Instant};

use lockserver_tests::{encode, Api, TempDir, TestServer};
use serde_json::{json, Value};

use super::backend;

/// The keys every test here starts with: two tenants, a reader, an admin.
const KEYS: &str = r#"
[[key]]
name = "alpha-workers"
secret = "alpha-secret"
namespace = "alpha"
role = "lock"

[[key]]
name = "beta-workers"
secret = "beta-secret"
namespace = "beta"
role = "lock"

[[key]]
name = "alpha-dashboard"
secret = "alpha-reader"
namespace = "alpha"
role = "read"

[[key]]
name = "operators"
secret = "admin-secret"
namespace = "default"
role = "admin"
"#;

/// A server reading `keys` from a keys file (which the test may rewrite: its path is returned).
fn server_with_keys(keys: &str) -> (TestServer, std::path::PathBuf) {
    let dir = TempDir::new("keys");
    let file = dir.path.join("keys.toml");
    std::fs::write(&file, keys).unwrap();
    let mut server = backend().start_raw(&["--keys-file", file.to_str().unwrap()], Some(String::new()));
    server.dirs.push(dir);
    (server, file)
}

fn acquire(owner: &str, resource: &str) -> Value {
    json!({"resource": resource, "owner": owner, "expire": 60})
}

/// Two namespaces hold the same name independently, and nothing one tenant sends reaches the
/// other's locks or leases: each attempt is refused as if they did not exist.
#[tokio::test]
async fn tenants_share_names_but_never_see_each_other() {
    let (server, _) = server_with_keys(KEYS);
    let alpha = server.api().with_secret("alpha-secret");
    let beta = server.api().with_secret("beta-secret");

    let a = alpha.acquire(acquire("a", "jobs/1")).await;
    let b = beta.acquire(acquire("b", "jobs/1")).await;
    assert_eq!((a.status, b.status), (200, 200), "{:?} {:?}", a.body, b.body);
    assert_eq!(a.body["resource"], "jobs/1", "names come back as the client sent them");
    assert_ne!(a.token(), b.token());

    let lease = alpha.post("/leases", json!({"ttl": 30})).await;
    let lease_id = lease.body["lease"].as_str().unwrap().to_string();
    assert!(!lease_id.chars().any(char::is_control), "lease ids are plain: {lease_id:?}");
    let bound = alpha.acquire(json!({"resource": "only-alpha", "owner": "a", "lease": lease_id})).await;
    assert_eq!(bound.status, 200, "{:?}", bound.body);
    let before = alpha.inspect("only-alpha").await.body;

    // Everything beta tries on alpha's names and lease.
    beta.inspect("only-alpha").await.assert_error(404, "not_held");
    beta.release(json!({"resource": "only-alpha", "owner": "a"})).await.assert_error(404, "not_held");
    beta.post("/refresh", json!({"resource": "only-alpha", "owner": "a", "expire": 5}))
        .await
        .assert_error(404, "not_held");
    beta.post(&format!("/leases/{lease_id}/keepalive"), json!({})).await.assert_error(404, "no_such_lease");
    beta.get(&format!("/leases/{lease_id}")).await.assert_error(404, "no_such_lease");
    beta.delete(&format!("/leases/{lease_id}")).await.assert_error(404, "no_such_lease");
    beta.acquire(json!({"resource": "x", "owner": "b", "lease": lease_id}))
        .await
        .assert_error(404, "no_such_lease");
    beta.get("/locks/only-alpha?namespace=alpha").await.assert_error(403, "forbidden");
    beta.get(&format!("/locks/{}", encode("\u{1}alpha\u{1}only-alpha")))
        .await
        .assert_error(400, "bad_request");
    beta.get(&format!("/locks?prefix={}", encode("\u{1}alpha"))).await.assert_error(400, "bad_request");

    let listed = beta.get("/locks").await.body;
    let names: Vec<&str> =
        listed["locks"].as_array().unwrap().iter().map(|l| l["resource"].as_str().unwrap()).collect();
    assert_eq!(names, ["jobs/1"], "beta lists only its own: {listed:?}");
    assert_eq!(beta.get("/leases").await.body["leases"], json!([]), "beta sees no lease");
    let alpha_leases = alpha.get("/leases").await.body;
    assert_eq!(alpha_leases["leases"][0]["lease"], json!(lease_id));
    assert_eq!(alpha_leases["leases"][0]["locks"], json!(["only-alpha"]));

    // Nothing changed for alpha; beta can take the same name for itself.
    let after = alpha.inspect("only-alpha").await.body;
    assert_eq!(
        (after["owner"].clone(), after["token"].clone()),
        (before["owner"].clone(), before["token"].clone())
    );
    assert_eq!(after["lease"], json!(lease_id));
    assert_eq!(beta.acquire(acquire("b", "only-alpha")).await.status, 200);
    assert_eq!(alpha.inspect("only-alpha").await.body["owner"], "a");

    // The default namespace (the admin's own) sees neither tenant.
    let admin = server.api().with_secret("admin-secret");
    assert_eq!(admin.get("/locks").await.body["locks"], json!([]));
    admin.inspect("jobs/1").await.assert_error(404, "not_held");
    assert_eq!(admin.get("/leases").await.body["leases"], json!([]));
}

/// `read` reads, `lock` locks in its own namespace, `admin` acts anywhere and forces releases.
#[tokio::test]
async fn each_role_does_what_it_may_and_no_more() {
    let (server, _) = server_with_keys(KEYS);
    let alpha = server.api().with_secret("alpha-secret");
    let reader = server.api().with_secret("alpha-reader");
    let admin = server.api().with_secret("admin-secret");
    assert_eq!(alpha.acquire(acquire("a", "report")).await.status, 200);

    assert_eq!(reader.inspect("report").await.body["owner"], "a");
    assert_eq!(reader.get("/locks").await.status, 200);
    assert_eq!(reader.get("/leases").await.status, 200);
    assert_eq!(reader.get("/metrics").await.status, 200);
    let refused = reader.acquire(acquire("r", "other")).await;
    refused.assert_error(403, "forbidden");
    let message = refused.body["message"].as_str().unwrap();
    assert!(message.contains("alpha-dashboard") && message.contains("read"), "{message}");
    reader.release(json!({"resource": "report", "owner": "a"})).await.assert_error(403, "forbidden");
    reader.post("/leases", json!({"ttl": 5})).await.assert_error(403, "forbidden");
    assert_eq!(reader.inspect("other").await.status, 404, "the refused acquire left nothing");

    alpha
        .release(json!({"resource": "report", "owner": "x", "force": true}))
        .await
        .assert_error(403, "forbidden");
    assert_eq!(alpha.inspect("report").await.body["owner"], "a");

    let seen = admin.get("/locks/report?namespace=alpha").await;
    assert_eq!(seen.body["owner"], "a", "{:?}", seen.body);
    admin.get("/locks/report?namespace=no%20such").await.assert_error(400, "bad_request");
}

/// A forced release ends any hold: the head waiter is granted at once, and the old holder's
/// refresh and release answer `not_owner`.
#[tokio::test]
async fn a_forced_release_hands_the_lock_to_the_head_waiter() {
    let (server, _) = server_with_keys(KEYS);
    let alpha = server.api().with_secret("alpha-secret");
    let admin = server.api().with_secret("admin-secret");
    let first = alpha.acquire(acquire("stuck", "migration")).await.token();
    let waiter = {
        let alpha = alpha.clone();
        tokio::spawn(async move {
            alpha.acquire(json!({"resource": "migration", "owner": "next", "expire": 60, "wait": 20})).await
        })
    };
    let queued = Instant::now();
    while alpha.inspect("migration").await.body["waiters"] != 1 {
        assert!(queued.elapsed() < Duration::from_secs(10), "the waiter never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let forced = admin
        .post(
            "/release?namespace=alpha",
            json!({"resource": "migration", "owner": "operator", "force": true}),
        )
        .await;
    assert_eq!(forced.status, 200, "{:?}", forced.body);
    let granted = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    assert!(granted.token() > first);
    alpha
        .post("/refresh", json!({"resource": "migration", "owner": "stuck", "expire": 30}))
        .await
        .assert_error(409, "not_owner");
    alpha.release(json!({"resource": "migration", "owner": "stuck"})).await.assert_error(409, "not_owner");
    assert_eq!(alpha.inspect("migration").await.body["owner"], "next");
}

/// Beyond its rate a key gets 429 `rate_limited` with `Retry-After`; other keys are unaffected.
#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let keys = format!("{KEYS}\n[[key]]\nname = \"slow\"\nsecret = \"slow-secret\"\nnamespace = \"alpha\"\nrole = \"read\"\nrate = 5\n");
    let (server, _) = server_with_keys(&keys);
    let slow = server.api().with_secret("slow-secret");
    let mut limited = None;
    for _ in 0..50 {
        let response = slow.request(reqwest::Method::GET, "/locks").send().await.unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("50 requests at once exceed 5 per second");
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry_after), "Retry-After: {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("slow"), "{body:?}");
    assert_eq!(server.api().with_secret("alpha-secret").get("/locks").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(slow.get("/locks").await.status, 200, "the rate refills");
}

/// `max_locks` caps what a namespace holds at once: 429 `quota_exceeded` beyond, the holder
/// may still re-acquire, and a release makes room.
#[tokio::test]
async fn the_quota_caps_locks_held_in_the_namespace() {
    let keys = "[[key]]\nname = \"small\"\nsecret = \"small-secret\"\nnamespace = \"small\"\nrole = \"lock\"\nmax_locks = 2\n";
    let (server, _) = server_with_keys(keys);
    let small = server.api().with_secret("small-secret");
    assert_eq!(small.acquire(acquire("o", "one")).await.status, 200);
    assert_eq!(small.acquire(acquire("o", "two")).await.status, 200);
    let refused = small.acquire(acquire("o", "three")).await;
    refused.assert_error(429, "quota_exceeded");
    assert!(refused.body["message"].as_str().unwrap().contains("at most 2"), "{:?}", refused.body);
    small.inspect("three").await.assert_error(404, "not_held");
    assert_eq!(small.acquire(acquire("o", "two")).await.status, 200, "the holder re-acquires");
    assert_eq!(small.release(json!({"resource": "one", "owner": "o"})).await.status, 200);
    assert_eq!(small.acquire(acquire("o", "three")).await.status, 200);
}

/// SIGHUP re-reads the keys file: an added key works, a removed one gets 401, held locks stay;
/// an invalid file keeps the keys in use.
#[tokio::test]
async fn sighup_reloads_the_keys_and_keeps_the_locks() {
    let (server, file) = server_with_keys(KEYS);
    let alpha = server.api().with_secret("alpha-secret");
    let held = alpha.acquire(acquire("a", "kept")).await.token();
    let gamma = server.api().with_secret("gamma-secret");
    gamma.get("/locks").await.assert_error(401, "unauthorized");

    let without_beta = KEYS.replace("beta-secret", "beta-secret-rotated");
    let added = format!("{without_beta}\n[[key]]\nname = \"gamma\"\nsecret = \"gamma-secret\"\nnamespace = \"alpha\"\nrole = \"read\"\n");
    std::fs::write(&file, added).unwrap();
    server.hangup();
    wait_for(&gamma, 200).await;
    assert_eq!(gamma.inspect("kept").await.token(), held, "the lock is still held, by the same hold");
    server.api().with_secret("beta-secret").get("/locks").await.assert_error(401, "unauthorized");
    assert_eq!(alpha.release(json!({"resource": "kept", "owner": "a"})).await.status, 200);

    std::fs::write(&file, "[[key]]\nname = broken").unwrap();
    server.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gamma.get("/locks").await.status, 200, "an invalid file keeps the old keys");
}

/// Polls until `api` is answered `status` on `GET /locks` (a reload takes effect asynchronously).
async fn wait_for(api: &Api, status: u16) {
    let start = Instant::now();
    while api.get("/locks").await.status != status {
        assert!(start.elapsed() < Duration::from_secs(10), "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A watch sees its own namespace only, with the names its clients send.
#[tokio::test]
async fn a_watch_sees_its_own_namespace_only() {
    let (server, _) = server_with_keys(KEYS);
    let alpha = server.api().with_secret("alpha-secret");
    let beta = server.api().with_secret("beta-secret");
    let mut everything = alpha.watch("prefix=", None).await;
    let first = everything.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.event, "reset");
    assert_eq!(beta.acquire(acquire("b", "jobs/1")).await.status, 200);
    assert_eq!(alpha.acquire(acquire("a", "jobs/1")).await.status, 200);
    let event = everything.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.data["resource"].clone(), event.data["owner"].clone()),
        ("acquired", json!("jobs/1"), json!("a"))
    );
    assert!(everything.next(Duration::from_millis(300)).await.is_none(), "beta's lock is not seen");
    let reader = server.api().with_secret("alpha-reader");
    assert_eq!(
        reader.watch("resource=jobs/1", None).await.next(Duration::from_secs(5)).await.unwrap().data["locks"]
            [0]["owner"],
        "a"
    );
    let refused =
        beta.request(reqwest::Method::GET, "/watch?resource=x&namespace=alpha").send().await.unwrap();
    assert_eq!(refused.status(), 403);
}
