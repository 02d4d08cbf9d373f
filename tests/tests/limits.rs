//! Bounds with clear errors instead of exhaustion: a stalled body, huge list pages, caps on
//! locks and waiters, durations too short to mean anything.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lockserver_tests::TestServer;
use serde_json::json;

fn start(extra: &[&str]) -> TestServer {
    let mut args = vec!["--secret", "s", "--storage", "memory"];
    args.extend_from_slice(extra);
    TestServer::start_raw(&args, Some("s".into()))
}

/// A request that declares a body and never finishes sending it is answered 408 within the
/// timeout and its connection closed.
#[test]
fn a_stalled_body_is_answered_408_and_closed() {
    let server = start(&["--request-timeout", "1s"]);
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    write!(
        stream,
        "POST /acquire HTTP/1.1\r\nHost: t\r\nX-LOCKSERVER-SECRET: s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"resource\":"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap(); // returns once the server closes
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// A listing of locks with large values is bounded in bytes (and can leave values out).
#[tokio::test]
async fn list_pages_are_bounded_in_bytes() {
    let server = start(&[]);
    let api = server.api();
    let value = "v".repeat(60_000);
    for i in 0..40 {
        let answer =
            api.acquire(json!({"resource": format!("big-{i:02}"), "owner": "o", "value": value})).await;
        assert_eq!(answer.status, 200);
    }
    let page = api.get("/locks?limit=1000").await;
    let locks = page.body["locks"].as_array().unwrap();
    assert!(locks.len() < 40 && !locks.is_empty(), "{} locks on one page", locks.len());
    assert!(locks.len() * 60_000 <= (1 << 20) + 60_000);
    assert_eq!(page.body["next"], locks.last().unwrap()["resource"]);
    let lean = api.get("/locks?limit=1000&values=false").await;
    let locks = lean.body["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 40);
    assert!(locks.iter().all(|lock| lock["value"].is_null()));
    assert_eq!(lean.body["next"], serde_json::Value::Null);
}

/// Caps on held locks and queued waiters answer 503 `too_many`; the server still serves.
#[tokio::test]
async fn caps_on_locks_and_waiters_answer_too_many() {
    let server = start(&["--max-locks", "3", "--max-waiters", "2"]);
    let api = server.api();
    for i in 0..3 {
        assert_eq!(api.acquire(json!({"resource": format!("l{i}"), "owner": "o"})).await.status, 200);
    }
    let refused = api.acquire(json!({"resource": "l3", "owner": "o"})).await;
    refused.assert_error(503, "too_many");
    assert!(refused.body["message"].as_str().unwrap().contains("--max-locks"));
    assert_eq!(api.acquire(json!({"resource": "l0", "owner": "o"})).await.status, 200, "held ones renew");

    // Queued one after the other, so that their order is known.
    let mut waiters = Vec::new();
    for i in 0..2 {
        let waiter = api.clone();
        waiters.push(tokio::spawn(async move {
            waiter.acquire(json!({"resource": "l0", "owner": format!("w{i}"), "wait": 30})).await
        }));
        let until = Instant::now() + Duration::from_secs(10);
        while api.inspect("l0").await.body["waiters"] != i + 1 {
            assert!(Instant::now() < until, "waiter {i} did not queue");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let third = api.acquire(json!({"resource": "l0", "owner": "w2", "wait": 30})).await;
    third.assert_error(503, "too_many");
    assert_eq!(api.get("/health").await.status, 200);
    api.release(json!({"resource": "l0", "owner": "o"})).await;
    assert_eq!(waiters.remove(0).await.unwrap().body["owner"], "w0");
}

/// Durations shorter than a millisecond are refused: they would be over before the answer.
#[tokio::test]
async fn durations_below_a_millisecond_are_refused() {
    let server = start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "r", "owner": "o", "expire": 1e-10}))
        .await
        .assert_error(400, "bad_request");
    api.acquire(json!({"resource": "r", "owner": "o", "wait": 0.0001}))
        .await
        .assert_error(400, "bad_request");
    api.post("/leases", json!({"ttl": 0.0005})).await.assert_error(400, "bad_request");
    assert_eq!(
        api.acquire(json!({"resource": "r", "owner": "o", "expire": 0.001, "wait": 0})).await.status,
        200
    );
}

/// Large values cannot exhaust memory under the count caps: `--max-memory` bounds what locks and
/// waiters take, values included. A refused change leaves the state as it was; freed memory is
/// given back; the cap holds after a restart of the durable store.
#[tokio::test]
async fn the_memory_cap_bounds_values_and_waiters() {
    let dir = lockserver_tests::TempDir::new("max-memory");
    let args = ["--secret", "s", "--data-dir", dir.arg(), "--max-memory", "1MiB"];
    let server = TestServer::start_raw(&args, Some("s".into()));
    let api = server.api();
    let value = "v".repeat(60_000);
    let mut held = 0;
    loop {
        let answer = api.acquire(json!({"resource": format!("m{held}"), "owner": "o", "value": value})).await;
        if answer.status != 200 {
            answer.assert_error(503, "too_many");
            assert!(answer.body["message"].as_str().unwrap().contains("--max-memory"), "{:?}", answer.body);
            break;
        }
        held += 1;
        assert!(held < 100, "1 MiB holds fewer than 100 values of 60 KB");
    }
    assert!((14..=17).contains(&held), "{held} values of 60 KB under 1 MiB");
    api.inspect(&format!("m{held}")).await.assert_error(404, "not_held");

    // A refresh that would grow past the cap is refused and changes nothing.
    let small = json!({"resource": "m0", "owner": "o", "value": "small"});
    assert_eq!(api.post("/refresh", small).await.status, 200);
    assert_eq!(api.acquire(json!({"resource": "x", "owner": "o", "value": value})).await.status, 200);
    let grow = json!({"resource": "m0", "owner": "o", "value": "w".repeat(60_000)});
    api.post("/refresh", grow.clone()).await.assert_error(503, "too_many");
    assert_eq!(api.inspect("m0").await.body["value"], "small");
    // Memory comes back when a lock and its value go.
    api.release(json!({"resource": "m1", "owner": "o", "keep_value": false})).await;
    assert_eq!(api.post("/refresh", grow).await.status, 200);
    assert_eq!(api.inspect("m0").await.body["value"].as_str().unwrap().len(), 60_000);

    // A waiter is charged for its value (and its connection) while it waits.
    let waiter = api.acquire(json!({"resource": "m0", "owner": "w", "value": value, "wait": 5})).await;
    waiter.assert_error(503, "too_many");
    assert_eq!(api.get("/health").await.status, 200);

    // After a restart the store counts what it recovered against the same cap.
    drop(server);
    let server = TestServer::start_raw(&args, Some("s".into()));
    let api = server.api();
    let refused = api.acquire(json!({"resource": "after", "owner": "o", "value": value})).await;
    refused.assert_error(503, "too_many");
    api.release(json!({"resource": "m0", "owner": "o", "keep_value": false})).await;
    assert_eq!(api.acquire(json!({"resource": "after", "owner": "o", "value": value})).await.status, 200);
}
