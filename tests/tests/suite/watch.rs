//! `GET /watch` on the real binary: every change to a watched lock arrives once and in order,
//! a prefix watch sees only its prefix, and a reconnect with `Last-Event-ID` resumes without
//! loss (or resets when the id is no longer known).
//!
//! Backend-independent: `tests/api.rs` and `tests/etcd.rs` include it.

use std::time::Duration;

use lockserver_tests::{Sse, SseEvent};
use serde_json::json;

use super::backend;

const WITHIN: Duration = Duration::from_secs(5);

async fn next(watch: &mut Sse) -> SseEvent {
    watch.next(WITHIN).await.expect("an event within 5 s")
}

/// The events of `count` changes: (event, owner) pairs, with ids that only grow.
async fn changes(watch: &mut Sse, count: usize) -> Vec<(String, Option<String>)> {
    let mut seen = Vec::new();
    let mut last = 0;
    for _ in 0..count {
        let event = next(watch).await;
        assert!(event.id > last, "ids grow: {} after {last}", event.id);
        last = event.id;
        seen.push((event.event, event.data["owner"].as_str().map(str::to_string)));
    }
    seen
}

fn pair(event: &str, owner: Option<&str>) -> (String, Option<String>) {
    (event.to_string(), owner.map(str::to_string))
}

#[tokio::test]
async fn every_change_arrives_once_and_in_order() {
    let server = backend().start(&[]);
    let api = server.api();
    let mut watch = api.watch("resource=w", None).await;
    let first = next(&mut watch).await;
    assert_eq!(
        (first.event.as_str(), first.data["locks"].clone()),
        ("reset", json!([])),
        "a watch starts with the state"
    );

    let token = api.acquire(json!({"resource": "w", "owner": "a", "expire": 30})).await.token();
    assert_eq!(api.post("/refresh", json!({"resource": "w", "owner": "a", "expire": 20})).await.status, 200);
    let waiter = {
        let api = api.clone();
        tokio::spawn(async move {
            api.acquire(json!({"resource": "w", "owner": "b", "expire": 30, "wait": 10})).await
        })
    };
    while api.inspect("w").await.body["waiters"] != 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(api.release(json!({"resource": "w", "owner": "a"})).await.status, 200);
    let handed = waiter.await.unwrap();
    assert_eq!(handed.status, 200);
    assert_eq!(api.release(json!({"resource": "w", "owner": "b"})).await.status, 200);
    assert_eq!(api.acquire(json!({"resource": "w", "owner": "c", "expire": 0.3})).await.status, 200);
    api.acquire(json!({"resource": "other", "owner": "x"})).await;

    let seen = changes(&mut watch, 7).await;
    assert_eq!(
        seen,
        [
            pair("acquired", Some("a")),
            pair("refreshed", Some("a")),
            pair("released", None),
            pair("handoff", Some("b")),
            pair("released", None),
            pair("acquired", Some("c")),
            pair("expired", None),
        ]
    );
    assert!(watch.next(Duration::from_millis(300)).await.is_none(), "nothing else, nothing twice");
    let state = api.watch("resource=w", None).await.next(WITHIN).await.unwrap();
    assert_eq!(state.data["locks"], json!([]), "a new watch sees it free");
    let _ = token;
}

#[tokio::test]
async fn a_prefix_watch_sees_only_its_prefix() {
    let server = backend().start(&[]);
    let api = server.api();
    api.acquire(json!({"resource": "jobs/0", "owner": "o"})).await;
    let mut watch = api.watch("prefix=jobs/", None).await;
    let first = next(&mut watch).await;
    assert_eq!(first.event, "reset");
    assert_eq!(first.data["locks"][0]["resource"], "jobs/0");
    for name in ["jobs/1", "other/1", "jobs/2"] {
        assert_eq!(api.acquire(json!({"resource": name, "owner": "o"})).await.status, 200);
    }
    let names: Vec<String> = [next(&mut watch).await, next(&mut watch).await]
        .iter()
        .map(|event| event.data["resource"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["jobs/1", "jobs/2"]);
    let more = watch.next(Duration::from_millis(300)).await;
    assert!(more.is_none(), "nothing else: {more:?}");
}

#[tokio::test]
async fn a_reconnect_resumes_from_the_last_event_id() {
    let server = backend().start(&[]);
    let api = server.api();
    let mut watch = api.watch("resource=r", None).await;
    next(&mut watch).await;
    api.acquire(json!({"resource": "r", "owner": "a"})).await;
    let seen = next(&mut watch).await;
    drop(watch);

    api.release(json!({"resource": "r", "owner": "a"})).await;
    api.acquire(json!({"resource": "r", "owner": "b"})).await;
    let mut resumed = api.watch("resource=r", Some(seen.id)).await;
    assert_eq!(changes(&mut resumed, 2).await, [pair("released", None), pair("acquired", Some("b"))]);

    let mut stale = api.watch("resource=r", Some(1)).await;
    let reset = next(&mut stale).await;
    assert_eq!(reset.event, "reset", "an id no longer known resets");
    assert_eq!(reset.data["locks"][0]["owner"], "b");
}

/// A server with watchers stops at once on SIGTERM: their streams end rather than hold it.
#[tokio::test]
async fn watchers_do_not_hold_up_shutdown() {
    let server = backend().start(&[]);
    let api = server.api();
    let mut watch = api.watch("prefix=", None).await;
    next(&mut watch).await;
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?}", started.elapsed());
    assert!(watch.next(Duration::from_secs(1)).await.is_none(), "the stream ended");
}

/// A thousand watchers on one lock each get every change (paced, in batches, none lost).
#[tokio::test]
async fn a_thousand_watchers_each_get_every_change() {
    let server = backend().start(&[]);
    let api = server.api();
    let mut watchers = Vec::new();
    for _ in 0..1000 {
        let mut watch = api.watch("resource=crowded", None).await;
        watchers.push(tokio::spawn(async move {
            let mut names = Vec::new();
            while names.len() < 41 {
                match watch.next(Duration::from_secs(20)).await {
                    Some(event) => names.push(event.event),
                    None => break,
                }
            }
            names
        }));
    }
    for _ in 0..20 {
        assert_eq!(api.acquire(json!({"resource": "crowded", "owner": "o"})).await.status, 200);
        assert_eq!(api.release(json!({"resource": "crowded", "owner": "o"})).await.status, 200);
    }
    for watcher in watchers {
        let names = watcher.await.unwrap();
        assert_eq!(names.len(), 41, "a reset and 40 changes: {names:?}");
        assert_eq!(names[0], "reset");
        assert!(names[1..].chunks(2).all(|pair| pair == ["acquired", "released"]), "{names:?}");
    }
}
