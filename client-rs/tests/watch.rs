//! The Rust client's watch and its guards' loss signal, against the real server binary.

use std::time::{Duration, Instant};

use lockserver_client::{Client, WatchEventKind};
use lockserver_tests::TestServer;
use serde_json::json;

fn client(server: &TestServer) -> Client {
    Client::builder().addr(&server.base).secret(&server.secret).build().unwrap()
}

#[tokio::test]
async fn a_watch_streams_the_state_then_every_change() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let mut watch = client.watch("job");
    let first = watch.next().await.unwrap();
    assert_eq!((first.kind, first.locks.len()), (WatchEventKind::Reset, 0));
    let guard = client.lock("job").expire(Duration::from_secs(10)).acquire().await.unwrap();
    let acquired = watch.next().await.unwrap();
    assert_eq!(acquired.kind, WatchEventKind::Acquired);
    assert_eq!((acquired.resource.as_deref(), acquired.token), (Some("job"), Some(guard.token())));
    assert!(acquired.id > first.id);
    guard.release().await.unwrap();
    assert_eq!(watch.next().await.unwrap().kind, WatchEventKind::Released);

    let mut prefix = client.watch_prefix("jobs/");
    assert_eq!(prefix.next().await.unwrap().kind, WatchEventKind::Reset);
    let _other = client.lock("other").try_acquire().await.unwrap();
    let _mine = client.lock("jobs/1").try_acquire().await.unwrap();
    assert_eq!(prefix.next().await.unwrap().resource.as_deref(), Some("jobs/1"));
}

/// A guard learns of a forced release within 100 ms, not at its next keepalive.
#[tokio::test]
async fn a_guard_knows_of_a_forced_release_within_100_ms() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let guard = client.lock("taken").expire(Duration::from_secs(30)).acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // its watch is open
    assert!(!guard.is_lost());
    let forced = server.api().release(json!({"resource": "taken", "owner": "operator", "force": true})).await;
    assert_eq!(forced.status, 200);
    let answered = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), guard.lost()).await.expect("the loss is signalled");
    let after = answered.elapsed();
    assert!(after < Duration::from_millis(100), "lost() fired {after:?} after the forced release");
    assert!(guard.is_lost());
}

/// A guard whose hold expires (its keepalive too slow for the deadline set behind its back)
/// learns of it within 100 ms of the expiry.
#[tokio::test]
async fn a_guard_knows_of_its_expiry_within_100_ms() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let guard = client.lock("expiring").expire(Duration::from_secs(30)).acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The holder's deadline moved to 300 ms from now: the keepalive (every 10 s) will not
    // renew it in time.
    let body = json!({"resource": "expiring", "owner": guard.owner(), "token": guard.token(), "expire": 0.3});
    assert_eq!(server.api().post("/refresh", body).await.status, 200);
    let expires_at = Instant::now() + Duration::from_millis(300);
    tokio::time::timeout(Duration::from_secs(3), guard.lost()).await.expect("the loss is signalled");
    let late = Instant::now().saturating_duration_since(expires_at);
    assert!(late < Duration::from_millis(100), "lost() fired {late:?} after the expiry");
}

/// A guard of a lock without expiry (held until released) is still told of a takeover.
#[tokio::test]
async fn a_guard_without_expiry_learns_of_a_takeover() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let guard = client.lock("forever").hold_until_released().acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!guard.is_lost());
    server.api().release(json!({"resource": "forever", "owner": "ops", "force": true})).await;
    tokio::time::timeout(Duration::from_secs(2), guard.lost()).await.expect("the takeover is signalled");
}
