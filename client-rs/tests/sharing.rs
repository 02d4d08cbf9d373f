//! Semaphores, read-write locks and multi-locks through the Rust client, against the real
//! server binary.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lockserver_client::{lock_scope, Client, Error, Mode};
use lockserver_tests::TestServer;

fn client(server: &TestServer) -> Client {
    Client::builder().addr(&server.base).secret(&server.secret).build().unwrap()
}

/// 12 tasks through `lock_scope!(async ..., semaphore = 3, ...)`: never more than 3 inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_semaphore_scope_admits_up_to_its_limit() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let (inside, most) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (client, inside, most) = (client.clone(), inside.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                lock_scope!(async &client, "pool", semaphore = 3, {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 3);
}

/// Guards of every kind; the errors carry holders and the current limit.
#[tokio::test]
async fn guards_of_every_kind_and_their_errors() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let a = client.semaphore("gpu", 2).acquire().await.unwrap();
    let b = client.semaphore("gpu", 2).expire(Duration::from_secs(5)).acquire().await.unwrap();
    assert!(b.token() > a.token());
    let info = client.inspect("gpu").await.unwrap().unwrap();
    assert_eq!((info.mode, info.limit, info.holders.len()), (Mode::Permit, Some(2), 2));
    match client.semaphore("gpu", 2).wait(Duration::ZERO).acquire().await {
        Err(Error::Locked { holders, .. }) => assert_eq!(holders, [a.owner(), b.owner()]),
        other => panic!("expected Locked, got {other:?}"),
    }
    let mismatch = client.semaphore("gpu", 5).wait(Duration::ZERO).acquire().await;
    assert!(matches!(mismatch, Err(Error::LimitMismatch { limit: Some(2), .. })), "{mismatch:?}");
    assert_eq!(mismatch.unwrap_err().code(), "limit_mismatch");
    a.release().await.unwrap();
    b.release().await.unwrap();

    let reader = client.lock("cfg").shared().acquire().await.unwrap();
    let second = client.lock("cfg").shared().acquire().await.unwrap();
    assert!(client.lock("cfg").try_acquire().await.unwrap().is_none(), "a writer waits for the readers");
    assert_eq!(client.inspect("cfg").await.unwrap().unwrap().mode, Mode::Shared);
    reader.release().await.unwrap();
    second.release().await.unwrap();

    let both = client.lock_many(&["x", "y"]).expire(Duration::from_secs(5)).acquire().await.unwrap();
    assert!(client.lock_many(&["y", "z"]).try_acquire().await.unwrap().is_none());
    assert!(client.inspect("z").await.unwrap().is_none(), "a refused multi-lock holds nothing");
    assert_eq!(both.grants().iter().map(|g| g.resource.as_str()).collect::<Vec<_>>(), ["x", "y"]);
    both.release().await.unwrap();
    assert!(client.inspect("x").await.unwrap().is_none());
}
