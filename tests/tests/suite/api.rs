//! The HTTP API against the real server binary: every endpoint and every error path.
//!
//! Backend-independent: `tests/api.rs` runs it on the embedded store, `tests/etcd.rs` on
//! gateways in front of an etcd cluster. Each includes this file and says which with its
//! `backend()`.

use std::time::{Duration, Instant};

use lockserver_tests::encode;
use serde_json::{json, Value};

use super::backend;

/// Health needs no secret; every other route needs one of the configured secrets.
#[tokio::test]
async fn secrets_guard_every_route_but_health() {
    let server = backend().start_raw(&["--secret", "first, second"], Some("first".into()));
    let api = server.api();
    let health = api.with_secret("").get("/health").await;
    assert_eq!((health.status, health.body["status"].clone()), (200, json!("ok")), "{:?}", health.body);
    assert!(health.body["backend"].is_string(), "health names the backend: {:?}", health.body);
    let version = health.body["version"].as_str().unwrap_or_default();
    assert!(
        !version.is_empty() && version.split('.').count() == 3,
        "health says the version: {:?}",
        health.body
    );

    let body = json!({"resource": "r", "owner": "o"});
    api.with_secret("").acquire(body.clone()).await.assert_error(401, "unauthorized");
    api.with_secret("wrong").acquire(body.clone()).await.assert_error(401, "unauthorized");
    api.with_secret("firs").get("/locks").await.assert_error(401, "unauthorized");
    assert_eq!(api.with_secret("second").acquire(body.clone()).await.status, 200);
    assert_eq!(api.acquire(body).await.status, 200, "both rotated secrets are accepted");
}

/// Without a configured secret the server generates one, prints it, and requires it.
#[tokio::test]
async fn a_server_without_a_secret_generates_one() {
    let server = backend().start_raw(&[], None);
    assert!(server.stdout.iter().any(|line| line.contains("generated")), "{:?}", server.stdout);
    assert_eq!(server.secret.len(), 64);
    let api = server.api();
    assert_eq!(api.acquire(json!({"resource": "r", "owner": "o"})).await.status, 200);
    api.with_secret("")
        .acquire(json!({"resource": "r", "owner": "o"}))
        .await
        .assert_error(401, "unauthorized");
}

/// `--secret-file` adds the file's secrets.
#[tokio::test]
async fn secrets_can_come_from_a_file() {
    let path = std::env::temp_dir().join(format!("lockserver-secret-{}", std::process::id()));
    std::fs::write(&path, "from-file\n").unwrap();
    let server = backend().start_raw(&["--secret-file", path.to_str().unwrap()], Some("from-file".into()));
    assert_eq!(server.api().acquire(json!({"resource": "r", "owner": "o"})).await.status, 200);
    std::fs::remove_file(path).unwrap();
}

/// A grant carries the token, the expiry and the value; tokens grow across resources.
#[tokio::test]
async fn acquire_release_and_tokens_that_only_grow() {
    let server = backend().start(&[]);
    let api = server.api();
    let first = api.acquire(json!({"resource": "a", "owner": "o1", "expire": 10, "value": "job-1"})).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["resource"], "a");
    assert_eq!(first.body["owner"], "o1");
    assert_eq!(first.body["value"], "job-1");
    let expires = first.body["expires_in_ms"].as_u64().unwrap();
    assert!((9_000..=10_000).contains(&expires), "{expires}");

    let other = api.acquire(json!({"resource": "b", "owner": "o1"})).await;
    assert_eq!(other.body["expires_in_ms"], Value::Null, "no expire: held until released");
    assert!(other.token() > first.token());

    let release = api.release(json!({"resource": "a", "owner": "o1"})).await;
    assert_eq!((release.status, release.body), (200, json!({"released": true})));
    let again = api.acquire(json!({"resource": "a", "owner": "o2", "expire": 0.25})).await;
    assert!(again.token() > other.token());
    assert_eq!(again.body["value"], Value::Null, "release cleared the value");
    assert_eq!(again.body["expires_in_ms"], 250);
}

/// The holder acquiring again gets the same token and a fresh expiry.
#[tokio::test]
async fn re_acquire_by_the_holder_is_idempotent() {
    let server = backend().start(&[]);
    let api = server.api();
    let first = api.acquire(json!({"resource": "r", "owner": "o", "expire": 1})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = api.acquire(json!({"resource": "r", "owner": "o", "expire": 30})).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.token(), first.token());
    assert!(second.body["expires_in_ms"].as_u64().unwrap() > 29_000);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let info = api.inspect("r").await;
    assert_eq!(
        (info.status, info.body["owner"].clone()),
        (200, json!("o")),
        "the old expiry no longer applies"
    );
}

/// A held lock answers 409 `locked` naming the holder and its time left.
#[tokio::test]
async fn a_held_lock_is_refused_with_its_holder() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "r", "owner": "o1", "expire": 20})).await;
    let refused = api.acquire(json!({"resource": "r", "owner": "o2"})).await;
    refused.assert_error(409, "locked");
    assert_eq!(refused.body["owner"], "o1");
    assert!(refused.body["expires_in_ms"].as_u64().unwrap() > 19_000);

    let started = Instant::now();
    let waited = api.acquire(json!({"resource": "r", "owner": "o2", "wait": 0.3})).await;
    waited.assert_error(409, "locked");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(api.inspect("r").await.body["waiters"], 0, "a waiter that timed out left the queue");
}

/// Release answers 404 when nobody holds the lock and 409 for another owner or token.
#[tokio::test]
async fn release_checks_holder_and_token() {
    let server = backend().start(&[]);
    let api = server.api();
    api.release(json!({"resource": "r", "owner": "o"})).await.assert_error(404, "not_held");
    let token = api.acquire(json!({"resource": "r", "owner": "o"})).await.token();
    api.release(json!({"resource": "r", "owner": "x"})).await.assert_error(409, "not_owner");
    api.release(json!({"resource": "r", "owner": "o", "token": token + 1}))
        .await
        .assert_error(409, "not_owner");
    assert_eq!(api.release(json!({"resource": "r", "owner": "o", "token": token})).await.status, 200);
    api.release(json!({"resource": "r", "owner": "o", "token": token})).await.assert_error(404, "not_held");
}

/// Refresh extends the hold and may replace the value; it checks holder and token.
#[tokio::test]
async fn refresh_extends_the_hold() {
    let server = backend().start(&[]);
    let api = server.api();
    api.post("/refresh", json!({"resource": "r", "owner": "o", "expire": 1}))
        .await
        .assert_error(404, "not_held");
    let token = api.acquire(json!({"resource": "r", "owner": "o", "expire": 0.5})).await.token();
    let refreshed =
        api.post("/refresh", json!({"resource": "r", "owner": "o", "expire": 5, "value": "v2"})).await;
    assert_eq!(refreshed.status, 200);
    assert_eq!(refreshed.body["token"], token);
    assert_eq!(refreshed.body["expires_in_ms"], 5000);
    api.post("/refresh", json!({"resource": "r", "owner": "x", "expire": 1}))
        .await
        .assert_error(409, "not_owner");
    api.post("/refresh", json!({"resource": "r", "owner": "o", "expire": 1, "token": token + 1}))
        .await
        .assert_error(409, "not_owner");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let info = api.inspect("r").await;
    assert_eq!(info.status, 200, "refreshed past the first expiry");
    assert_eq!(info.body["value"], "v2");

    // Without `expire`, a refresh replaces only the value: on a lock without expiry, too.
    let value_only = api.post("/refresh", json!({"resource": "r", "owner": "o", "value": "v3"})).await;
    assert_eq!(value_only.status, 200);
    assert!(value_only.body["expires_in_ms"].as_u64().unwrap() <= 4200, "the expiry was not reset");
    api.acquire(json!({"resource": "forever", "owner": "o"})).await;
    let value_only = api.post("/refresh", json!({"resource": "forever", "owner": "o", "value": "x"})).await;
    assert_eq!((value_only.status, value_only.body["expires_in_ms"].clone()), (200, Value::Null));
    assert_eq!(api.inspect("forever").await.body["value"], "x");
}

/// Five queued waiters are granted strictly in arrival order.
#[tokio::test]
async fn waiters_are_served_first_come_first_served() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "q", "owner": "holder"})).await;
    let mut waiters = Vec::new();
    for i in 0..5 {
        let mine = api.clone();
        waiters.push(tokio::spawn(async move {
            let api = mine;
            let grant = api.acquire(json!({"resource": "q", "owner": format!("w{i}"), "wait": 30})).await;
            assert_eq!(grant.status, 200, "{:?}", grant.body);
            let token = grant.token();
            assert_eq!(api.release(json!({"resource": "q", "owner": format!("w{i}")})).await.status, 200);
            (token, i)
        }));
        // Queue them one after another so arrival order is known.
        while api.inspect("q").await.body["waiters"] != i + 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    api.release(json!({"resource": "q", "owner": "holder"})).await;
    let mut grants = Vec::new();
    for waiter in waiters {
        grants.push(waiter.await.unwrap());
    }
    grants.sort();
    let order: Vec<_> = grants.iter().map(|(_, i)| *i).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
}

/// On release the head waiter is granted at once; on expiry, when the deadline passes.
#[tokio::test]
async fn hand_off_on_release_and_on_expiry() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "h", "owner": "a"})).await;
    let waiter = {
        let api = api.clone();
        tokio::spawn(async move { api.acquire(json!({"resource": "h", "owner": "b", "wait": 10})).await })
    };
    while api.inspect("h").await.body["waiters"] != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let released = Instant::now();
    api.release(json!({"resource": "h", "owner": "a"})).await;
    let grant = waiter.await.unwrap();
    assert_eq!((grant.status, grant.body["owner"].clone()), (200, json!("b")));
    assert!(released.elapsed() < Duration::from_secs(1), "handed off, not polled");

    // Expiry: b's lock lives 400 ms; c queues and gets it when it expires.
    api.acquire(json!({"resource": "h", "owner": "b", "expire": 0.4})).await;
    let started = Instant::now();
    let grant = api.acquire(json!({"resource": "h", "owner": "c", "wait": 10})).await;
    assert_eq!((grant.status, grant.body["owner"].clone()), (200, json!("c")));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(350) && waited < Duration::from_secs(3), "{waited:?}");
}

/// A lock with an expiry is free once it passes.
#[tokio::test]
async fn an_expired_lock_is_free() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "e", "owner": "a", "expire": 0.2})).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    api.inspect("e").await.assert_error(404, "not_held");
    api.release(json!({"resource": "e", "owner": "a"})).await.assert_error(404, "not_held");
    assert_eq!(api.acquire(json!({"resource": "e", "owner": "b"})).await.status, 200);
}

/// The value of an expired lock goes to the next holder; release clears it unless asked not to.
#[tokio::test]
async fn values_survive_expiry_and_are_cleared_on_release() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "v", "owner": "a", "expire": 0.2, "value": "step 3 of 7"})).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let next = api.acquire(json!({"resource": "v", "owner": "b"})).await;
    assert_eq!(next.body["value"], "step 3 of 7", "the holder died: its value is kept");

    api.release(json!({"resource": "v", "owner": "b", "keep_value": true})).await;
    let next = api.acquire(json!({"resource": "v", "owner": "c"})).await;
    assert_eq!(next.body["value"], "step 3 of 7", "keep_value kept it");

    api.release(json!({"resource": "v", "owner": "c"})).await;
    let next = api.acquire(json!({"resource": "v", "owner": "d"})).await;
    assert_eq!(next.body["value"], Value::Null, "a plain release clears it");

    let set = api.acquire(json!({"resource": "v", "owner": "d", "value": "new"})).await;
    assert_eq!(set.body["value"], "new", "re-acquire may set the value");
}

/// A value left by an expired lock is dropped after the retention period.
#[tokio::test]
async fn values_are_dropped_after_retention() {
    let server = backend().start(&["--value-retention", "300ms"]);
    let api = server.api();
    api.acquire(json!({"resource": "v", "owner": "a", "expire": 0.1, "value": "x"})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let next = api.acquire(json!({"resource": "v", "owner": "b"})).await;
    assert_eq!(next.body["value"], Value::Null);
}

/// Leases: grant, bind locks, inspect, keep alive, revoke (which releases its locks).
#[tokio::test]
async fn lease_revoke_releases_its_locks() {
    let server = backend().start(&[]);
    let api = server.api();
    let lease = api.post("/leases", json!({"ttl": 5})).await;
    assert_eq!(lease.status, 200);
    assert_eq!(lease.body["ttl"], 5.0);
    let id = lease.body["lease"].as_str().unwrap().to_string();

    for resource in ["l1", "l2"] {
        let grant = api.acquire(json!({"resource": resource, "owner": "o", "lease": id})).await;
        assert_eq!(grant.status, 200, "{:?}", grant.body);
        assert!(grant.body["expires_in_ms"].as_u64().unwrap() <= 5000);
    }
    let info = api.get(&format!("/leases/{id}")).await;
    assert_eq!(info.body["locks"], json!(["l1", "l2"]));
    assert_eq!(api.inspect("l1").await.body["lease"], id.as_str());
    api.post("/refresh", json!({"resource": "l1", "owner": "o", "expire": 5}))
        .await
        .assert_error(400, "bad_request");
    let value_only =
        api.post("/refresh", json!({"resource": "l1", "owner": "o", "value": "under lease"})).await;
    assert_eq!(value_only.status, 200, "a lock under a lease may still change its value");

    let kept = api.post(&format!("/leases/{id}/keepalive"), json!({})).await;
    assert_eq!((kept.status, kept.body), (200, json!({"ttl": 5.0})));

    let revoked = api.delete(&format!("/leases/{id}")).await;
    assert_eq!((revoked.status, revoked.body), (200, json!({"revoked": true})));
    api.inspect("l1").await.assert_error(404, "not_held");
    api.inspect("l2").await.assert_error(404, "not_held");
    api.get(&format!("/leases/{id}")).await.assert_error(404, "no_such_lease");
    api.post(&format!("/leases/{id}/keepalive"), json!({})).await.assert_error(404, "no_such_lease");
    api.delete(&format!("/leases/{id}")).await.assert_error(404, "no_such_lease");
    api.acquire(json!({"resource": "l3", "owner": "o", "lease": id}))
        .await
        .assert_error(404, "no_such_lease");
}

/// A lease that is not kept alive expires and releases its locks; keepalive postpones that.
#[tokio::test]
async fn lease_expiry_releases_its_locks() {
    let server = backend().start(&[]);
    let api = server.api();
    let id = api.post("/leases", json!({"ttl": 0.6})).await.body["lease"].as_str().unwrap().to_string();
    api.acquire(json!({"resource": "x", "owner": "o", "lease": id})).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(api.post(&format!("/leases/{id}/keepalive"), json!({})).await.status, 200);
    }
    assert_eq!(api.inspect("x").await.status, 200, "kept alive past its ttl");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    api.inspect("x").await.assert_error(404, "not_held");
    api.get(&format!("/leases/{id}")).await.assert_error(404, "no_such_lease");
}

/// A waiter under a lease that expires while it is queued is refused, never granted.
#[tokio::test]
async fn a_waiter_whose_lease_dies_is_never_granted() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "w", "owner": "holder"})).await;
    let id = api.post("/leases", json!({"ttl": 0.4})).await.body["lease"].as_str().unwrap().to_string();
    let started = Instant::now();
    let refused = api.acquire(json!({"resource": "w", "owner": "dead", "lease": id, "wait": 10})).await;
    refused.assert_error(404, "no_such_lease");
    assert!(started.elapsed() < Duration::from_secs(5), "refused when the lease died, not at the wait's end");
    api.release(json!({"resource": "w", "owner": "holder"})).await;
    api.inspect("w").await.assert_error(404, "not_held");
}

/// A waiter whose lease is revoked while it is queued is refused too.
#[tokio::test]
async fn a_waiter_whose_lease_is_revoked_is_refused() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "w", "owner": "holder"})).await;
    let id = api.post("/leases", json!({"ttl": 30})).await.body["lease"].as_str().unwrap().to_string();
    let waiter = {
        let (api, id) = (api.clone(), id.clone());
        tokio::spawn(async move {
            api.acquire(json!({"resource": "w", "owner": "o", "lease": id, "wait": 10})).await
        })
    };
    while api.inspect("w").await.body["waiters"] != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    api.delete(&format!("/leases/{id}")).await;
    waiter.await.unwrap().assert_error(404, "no_such_lease");
    assert_eq!(api.inspect("w").await.body["owner"], "holder");
}

/// A waiter whose client disconnects leaves the queue; the next one is served.
#[tokio::test]
async fn a_waiter_that_disconnects_is_skipped() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "d", "owner": "holder"})).await;
    // A client that gives up after 300 ms while queued for 30 s.
    let impatient = api
        .request(reqwest::Method::POST, "/acquire")
        .json(&json!({"resource": "d", "owner": "gone", "wait": 30}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(impatient.is_err(), "the impatient client timed out");
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.inspect("d").await.body["waiters"] != 0 {
        assert!(Instant::now() < deadline, "the disconnected waiter never left the queue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let patient = {
        let api = api.clone();
        tokio::spawn(
            async move { api.acquire(json!({"resource": "d", "owner": "patient", "wait": 10})).await },
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.inspect("d").await.body["waiters"] != 1 {
        assert!(Instant::now() < deadline, "the patient waiter never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.release(json!({"resource": "d", "owner": "holder"})).await;
    let grant = patient.await.unwrap();
    assert_eq!((grant.status, grant.body["owner"].clone()), (200, json!("patient")));
}

/// The resource routes do what the RPC routes do, with percent-encoded names.
#[tokio::test]
async fn resource_routes() {
    let server = backend().start(&[]);
    let api = server.api();
    let name = "jobs/nightly report ü";
    let path = format!("/locks/{}", encode(name));
    let grant = api.put(&path, json!({"owner": "o", "expire": 10, "value": "v"})).await;
    assert_eq!((grant.status, grant.body["resource"].clone()), (200, json!(name)));
    let token = grant.token();
    api.put(&path, json!({"owner": "p"})).await.assert_error(409, "locked");

    let info = api.get(&path).await;
    assert_eq!(info.body["owner"], "o");
    assert_eq!(info.body["token"], token);
    assert_eq!(info.body["value"], "v");
    assert_eq!(info.body["waiters"], 0);

    let refreshed = api.patch(&path, json!({"owner": "o", "expire": 20})).await;
    assert_eq!((refreshed.status, refreshed.body["expires_in_ms"].clone()), (200, json!(20000)));

    api.delete(&format!("{path}?owner=o&token={}", token + 1)).await.assert_error(409, "not_owner");
    api.delete(&format!("{path}?owner=p")).await.assert_error(409, "not_owner");
    api.delete(&format!("{path}?token={token}")).await.assert_error(400, "bad_request");
    let released = api.delete(&format!("{path}?owner=o&token={token}")).await;
    assert_eq!((released.status, released.body), (200, json!({"released": true})));
    api.get(&path).await.assert_error(404, "not_held");
    api.delete(&format!("{path}?owner=o")).await.assert_error(404, "not_held");
}

/// Listing is in name order, filtered by prefix and paginated with a cursor.
#[tokio::test]
async fn listing_pages_through_held_locks() {
    let server = backend().start(&[]);
    let api = server.api();
    for i in (0..25).rev() {
        api.acquire(json!({"resource": format!("job-{i:02}"), "owner": "o"})).await;
    }
    api.acquire(json!({"resource": "other", "owner": "o"})).await;
    let mut seen = Vec::new();
    let mut path = "/locks?prefix=job-&limit=10".to_string();
    loop {
        let page = api.get(&path).await;
        assert_eq!(page.status, 200);
        for lock in page.body["locks"].as_array().unwrap() {
            seen.push(lock["resource"].as_str().unwrap().to_string());
        }
        match page.body["next"].as_str() {
            Some(next) => path = format!("/locks?prefix=job-&limit=10&after={}", encode(next)),
            None => break,
        }
    }
    let expected: Vec<_> = (0..25).map(|i| format!("job-{i:02}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(api.get("/locks").await.body["locks"].as_array().unwrap().len(), 26);
    api.get("/locks?limit=0").await.assert_error(400, "bad_request");
    api.get("/locks?limit=1001").await.assert_error(400, "bad_request");
    api.get("/locks?limit=ten").await.assert_error(400, "bad_request");
}

/// Unknown routes answer 404 `not_found`, wrong methods 405, both in the JSON error format.
#[tokio::test]
async fn unknown_routes_and_methods() {
    let server = backend().start(&[]);
    let api = server.api();
    api.get("/nope").await.assert_error(404, "not_found");
    api.get("/acquire").await.assert_error(405, "method_not_allowed");
    api.delete("/locks").await.assert_error(405, "method_not_allowed");
    api.send(api.request(reqwest::Method::POST, "/health")).await.assert_error(405, "method_not_allowed");
}

/// Every malformed request gets a JSON 400 (or 413), and none changes what is held.
#[tokio::test]
async fn malformed_requests_are_refused_without_changing_state() {
    let server = backend().start(&["--max-wait", "5", "--max-expire", "100"]);
    let api = server.api();
    let held = api.acquire(json!({"resource": "keep", "owner": "o", "expire": 50, "value": "v"})).await;
    let token = held.token();

    let long_name = "n".repeat(513);
    let bad_acquires = [
        json!({"owner": "o"}),
        json!({"resource": "keep"}),
        json!({"resource": "", "owner": "x"}),
        json!({"resource": "keep", "owner": ""}),
        json!({"resource": long_name, "owner": "x"}),
        json!({"resource": "keep", "owner": "x".repeat(257)}),
        json!({"resource": "bad\nname", "owner": "x"}),
        json!({"resource": "keep", "owner": "x\u{7}"}),
        json!({"resource": 7, "owner": "x"}),
        json!({"resource": "keep", "owner": ["x"]}),
        json!({"resource": "keep", "owner": "x", "expire": 0}),
        json!({"resource": "keep", "owner": "x", "expire": -1}),
        json!({"resource": "keep", "owner": "x", "expire": 101}),
        json!({"resource": "keep", "owner": "x", "expire": "10"}),
        json!({"resource": "keep", "owner": "x", "expire": 1e300}),
        json!({"resource": "keep", "owner": "x", "wait": -0.5}),
        json!({"resource": "keep", "owner": "x", "wait": 6}),
        json!({"resource": "keep", "owner": "x", "wait": true}),
        json!({"resource": "keep", "owner": "x", "expire": 1, "lease": "abc"}),
        json!({"resource": "keep", "owner": "x", "lease": ""}),
        json!({"resource": "keep", "owner": "x", "value": 5}),
        json!({"resource": "keep", "owner": "x", "value": "v".repeat(64 * 1024 + 1)}),
        json!({"resource": "keep", "owner": "o", "expire": 0}),
        json!([1, 2, 3]),
        json!("keep"),
        json!(null),
    ];
    for body in bad_acquires {
        let reply = api.acquire(body.clone()).await;
        assert_eq!((reply.status, reply.code()), (400, "bad_request"), "{body}: {:?}", reply.body);
    }
    for raw in ["", "{", "not json", "{\"resource\": \"keep\", \"owner\": \"o\",}", "\u{0}"] {
        api.post_raw("/acquire", raw).await.assert_error(400, "bad_request");
        api.post_raw("/release", raw).await.assert_error(400, "bad_request");
    }
    let bad_releases = [
        json!({"resource": "keep"}),
        json!({"resource": "keep", "owner": "o", "token": -1}),
        json!({"resource": "keep", "owner": "o", "token": "1"}),
        json!({"resource": "keep", "owner": "o", "token": 1.5}),
        json!({"resource": "keep", "owner": "o", "keep_value": "yes"}),
    ];
    for body in bad_releases {
        api.release(body).await.assert_error(400, "bad_request");
    }
    for body in
        [json!({"resource": "keep", "owner": "o"}), json!({"resource": "keep", "owner": "o", "expire": 0})]
    {
        api.post("/refresh", body).await.assert_error(400, "bad_request");
    }
    for body in [json!({}), json!({"ttl": 0}), json!({"ttl": "5"}), json!({"ttl": 101})] {
        api.post("/leases", body).await.assert_error(400, "bad_request");
    }
    api.get(&format!("/leases/{}", "x".repeat(65))).await.assert_error(400, "bad_request");
    // Escapes that are not UTF-8 stay undecoded: a name nobody holds, not a server error.
    api.get("/locks/%FF%FE").await.assert_error(404, "not_held");
    api.delete("/locks/keep?owner=o&token=minus").await.assert_error(400, "bad_request");

    let huge =
        format!("{{\"resource\": \"keep\", \"owner\": \"o\", \"value\": \"{}\"}}", "v".repeat(200_000));
    api.post_raw("/acquire", huge.clone()).await.assert_error(413, "too_large");
    api.put("/locks/keep", serde_json::from_str(&huge).unwrap()).await.assert_error(413, "too_large");

    // Unknown fields are ignored.
    let extra = api.acquire(json!({"resource": "extra", "owner": "x", "colour": "blue"})).await;
    assert_eq!(extra.status, 200);

    let info = api.inspect("keep").await;
    assert_eq!(info.status, 200);
    assert_eq!((info.body["owner"].clone(), info.body["token"].clone()), (json!("o"), json!(token)));
    assert_eq!(info.body["value"], "v");
    assert!(info.body["expires_in_ms"].as_u64().unwrap() > 40_000);
}

/// Names at the limits are accepted: 512-byte resources, 256-byte owners, 64 KiB values.
#[tokio::test]
async fn names_and_values_at_their_limits() {
    let server = backend().start(&[]);
    let api = server.api();
    let resource = "é".repeat(256);
    let owner = "o".repeat(256);
    let value = "v".repeat(64 * 1024);
    let grant = api.acquire(json!({"resource": resource, "owner": owner, "value": value})).await;
    assert_eq!(grant.status, 200);
    assert_eq!(grant.body["value"].as_str().unwrap().len(), 64 * 1024);
    assert_eq!(api.inspect(&resource).await.body["owner"], owner.as_str());
}

/// SIGTERM answers queued waiters with 503 and exits cleanly.
#[tokio::test]
async fn graceful_shutdown_answers_waiters() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "s", "owner": "holder"})).await;
    let waiter = {
        let api = api.clone();
        tokio::spawn(async move { api.acquire(json!({"resource": "s", "owner": "w", "wait": 30})).await })
    };
    while api.inspect("s").await.body["waiters"] != 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");
    waiter.await.unwrap().assert_error(503, "unavailable");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Flags override the environment, and the environment configures what flags do not.
#[tokio::test]
async fn configuration_from_the_environment() {
    let server = backend().start_with_env(
        &["--secret", "s"],
        Some("s".into()),
        &[("LOCKSERVER_MAX_WAIT", "1"), ("LOCKSERVER_MAX_EXPIRE", "2")],
    );
    let api = server.api();
    api.acquire(json!({"resource": "r", "owner": "o", "wait": 1.5})).await.assert_error(400, "bad_request");
    api.acquire(json!({"resource": "r", "owner": "o", "expire": 3})).await.assert_error(400, "bad_request");
    assert_eq!(api.acquire(json!({"resource": "r", "owner": "o", "expire": 2, "wait": 1})).await.status, 200);
}

/// `GET /leases` lists the leases alive, in id order, with their locks.
#[tokio::test]
async fn leases_are_listed_with_their_locks() {
    let server = backend().start(&[]);
    let api = server.api();
    let first = api.post("/leases", json!({"ttl": 10})).await.body["lease"].as_str().unwrap().to_string();
    let second = api.post("/leases", json!({"ttl": 20})).await.body["lease"].as_str().unwrap().to_string();
    assert_eq!(api.acquire(json!({"resource": "under", "owner": "o", "lease": first})).await.status, 200);
    let listed = api.get("/leases").await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let leases = listed.body["leases"].as_array().unwrap();
    let mut ids: Vec<&str> = leases.iter().map(|lease| lease["lease"].as_str().unwrap()).collect();
    assert!(ids.contains(&first.as_str()) && ids.contains(&second.as_str()), "{leases:?}");
    let sorted = {
        let mut sorted = ids.clone();
        sorted.sort();
        sorted
    };
    assert_eq!(ids, sorted, "in id order");
    let with_lock = leases.iter().find(|lease| lease["lease"] == first.as_str()).unwrap();
    assert_eq!(with_lock["locks"], json!(["under"]));
    assert_eq!(api.get("/leases?limit=1").await.body["leases"].as_array().unwrap().len(), 1);
    api.get("/leases?limit=0").await.assert_error(400, "bad_request");
    api.delete(&format!("/leases/{second}")).await;
    ids = Vec::new();
    for lease in api.get("/leases").await.body["leases"].as_array().unwrap() {
        ids.push(if lease["lease"] == second.as_str() { "revoked" } else { "alive" });
    }
    assert!(!ids.contains(&"revoked"));
}
