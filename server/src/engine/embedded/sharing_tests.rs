//! Engine unit tests of semaphores, read-write locks and multi-locks on paused Tokio time:
//! who is granted, in which order, and what a waiting request holds.

use std::time::Duration;

use tokio::time::sleep;

use super::tests::{acquire, backend, expire, queue, release};
use super::EmbeddedBackend;
use crate::engine::{
    AcquireManyRequest, AcquireRequest, Claim, EngineError, HoldMode, Lifetime, LockBackend,
    ReleaseManyRequest,
};

fn permit(resource: &str, owner: &str, limit: u32, lifetime: Lifetime) -> AcquireRequest {
    AcquireRequest { claim: Claim::Permit { limit }, ..acquire(resource, owner, lifetime, Duration::ZERO) }
}

fn shared(resource: &str, owner: &str) -> AcquireRequest {
    AcquireRequest { claim: Claim::Shared, ..acquire(resource, owner, Lifetime::Unbounded, Duration::ZERO) }
}

fn many(resources: &[&str], owner: &str, wait: Duration) -> AcquireManyRequest {
    AcquireManyRequest {
        resources: resources.iter().map(|name| name.to_string()).collect(),
        owner: owner.into(),
        lifetime: Lifetime::Unbounded,
        wait,
    }
}

/// Queues `request` in a task and returns once `resource` has one more waiter.
async fn queue_request(
    backend: &EmbeddedBackend,
    resource: &str,
    request: AcquireRequest,
) -> tokio::task::JoinHandle<crate::engine::Result<crate::engine::Grant>> {
    let before = backend.inspect(resource).await.map_or(0, |info| info.waiters);
    let (task_backend, request) =
        (backend.clone(), AcquireRequest { wait: Duration::from_secs(60), ..request });
    let task = tokio::spawn(async move { task_backend.acquire(request).await });
    while backend.inspect(resource).await.map_or(0, |info| info.waiters) == before {
        tokio::task::yield_now().await;
    }
    task
}

#[tokio::test(start_paused = true)]
async fn a_semaphore_grants_up_to_its_limit_and_a_permit_expires_alone() {
    let backend = backend();
    let a = backend.acquire(permit("gpu", "a", 2, expire(1.0))).await.unwrap();
    let b = backend.acquire(permit("gpu", "b", 2, expire(5.0))).await.unwrap();
    assert!(b.token > a.token);
    let again = backend.acquire(permit("gpu", "a", 2, expire(1.0))).await.unwrap();
    assert_eq!(again.token, a.token, "the same owner again is idempotent");
    match backend.acquire(permit("gpu", "c", 2, Lifetime::Unbounded)).await {
        Err(EngineError::Locked { holders, .. }) => assert_eq!(holders, ["a", "b"]),
        other => panic!("expected Locked, got {other:?}"),
    }
    for wrong in
        [permit("gpu", "c", 3, Lifetime::Unbounded), acquire("gpu", "c", Lifetime::Unbounded, Duration::ZERO)]
    {
        assert!(matches!(backend.acquire(wrong).await, Err(EngineError::LimitMismatch { current: Some(2) })));
    }
    let info = backend.inspect("gpu").await.unwrap();
    assert_eq!((info.limit, info.mode, info.holders.len()), (Some(2), HoldMode::Permit, 2));
    let c = queue_request(&backend, "gpu", permit("gpu", "c", 2, Lifetime::Unbounded)).await;
    sleep(Duration::from_secs(1)).await;
    let c = c.await.unwrap().unwrap();
    assert!(c.token > b.token, "a's permit expired alone and went to the head waiter");
    let owners: Vec<_> = backend.inspect("gpu").await.unwrap().holders.into_iter().map(|h| h.owner).collect();
    assert_eq!(owners, ["b", "c"]);
    backend.release(release("gpu", "b")).await.unwrap();
    backend.release(release("gpu", "c")).await.unwrap();
    backend
        .acquire(acquire("gpu", "d", Lifetime::Unbounded, Duration::ZERO))
        .await
        .expect("free again: any kind");
}

#[tokio::test(start_paused = true)]
async fn readers_share_and_a_queued_writer_holds_back_later_readers() {
    let backend = backend();
    backend.acquire(shared("cfg", "r1")).await.unwrap();
    backend.acquire(shared("cfg", "r2")).await.unwrap();
    let writer = queue(&backend, "cfg", "w", Lifetime::Unbounded).await;
    let r3 = queue_request(&backend, "cfg", shared("cfg", "r3")).await;
    let r4 = queue_request(&backend, "cfg", shared("cfg", "r4")).await;
    assert!(matches!(backend.acquire(shared("cfg", "r5")).await, Err(EngineError::Locked { .. })));
    backend.release(release("cfg", "r1")).await.unwrap();
    assert!(!writer.is_finished());
    backend.release(release("cfg", "r2")).await.unwrap();
    let w = writer.await.unwrap().unwrap();
    assert_eq!(backend.inspect("cfg").await.unwrap().mode, HoldMode::Exclusive);
    backend.release(release("cfg", "w")).await.unwrap();
    let (r3, r4) = (r3.await.unwrap().unwrap(), r4.await.unwrap().unwrap());
    assert!(r3.token > w.token && r4.token > r3.token, "both readers at the head granted together");
    assert_eq!(backend.inspect("cfg").await.unwrap().holders.len(), 2);
    assert!(
        matches!(
            backend.acquire(acquire("cfg", "r3", Lifetime::Unbounded, Duration::ZERO)).await,
            Err(EngineError::Locked { .. })
        ),
        "no upgrade from shared to exclusive"
    );
}

#[tokio::test(start_paused = true)]
async fn a_multi_lock_takes_all_or_queues_holding_nothing() {
    let backend = backend();
    let first = backend.acquire_many(many(&["a", "b"], "m1", Duration::ZERO)).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(matches!(
        backend.acquire_many(many(&["b", "c"], "m2", Duration::ZERO)).await,
        Err(EngineError::Locked { .. })
    ));
    assert!(
        matches!(backend.inspect("c").await, Err(EngineError::NotHeld)),
        "a refused multi-lock took nothing"
    );
    let task_backend = backend.clone();
    let m2 = tokio::spawn(async move {
        task_backend.acquire_many(many(&["b", "c"], "m2", Duration::from_secs(60))).await
    });
    while backend.inspect("b").await.unwrap().waiters == 0 {
        tokio::task::yield_now().await;
    }
    assert!(
        matches!(backend.inspect("c").await, Err(EngineError::NotHeld)),
        "a waiting multi-lock holds nothing"
    );
    let s = tokio::spawn({
        let backend = backend.clone();
        async move { backend.acquire(acquire("c", "s", Lifetime::Unbounded, Duration::from_secs(60))).await }
    });
    sleep(Duration::from_millis(10)).await;
    assert!(!s.is_finished(), "a later request queues behind the multi-lock");
    backend
        .release_many(ReleaseManyRequest {
            resources: vec!["a".into(), "b".into()],
            owner: "m1".into(),
            keep_value: false,
        })
        .await
        .unwrap();
    let second = m2.await.unwrap().unwrap();
    assert!(second.iter().all(|grant| grant.token > first[1].token));
    assert_eq!(backend.inspect("c").await.unwrap().owner, "m2");
    backend.release(release("c", "m2")).await.unwrap();
    assert_eq!(s.await.unwrap().unwrap().owner, "s");
}

#[tokio::test(start_paused = true)]
async fn a_multi_lock_that_runs_out_leaves_every_queue() {
    let backend = backend();
    backend.acquire(acquire("b", "x", Lifetime::Unbounded, Duration::ZERO)).await.unwrap();
    let task_backend = backend.clone();
    let m = tokio::spawn(async move {
        task_backend.acquire_many(many(&["a", "b"], "m", Duration::from_secs(2))).await
    });
    while backend.inspect("b").await.unwrap().waiters == 0 {
        tokio::task::yield_now().await;
    }
    let s = tokio::spawn({
        let backend = backend.clone();
        async move { backend.acquire(acquire("a", "s", Lifetime::Unbounded, Duration::from_secs(60))).await }
    });
    sleep(Duration::from_secs(2)).await;
    assert!(matches!(m.await.unwrap(), Err(EngineError::Locked { .. })));
    assert_eq!(s.await.unwrap().unwrap().owner, "s", "the request behind it is granted once it leaves");
    assert_eq!(backend.inspect("b").await.unwrap().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn a_multi_lock_whose_lease_ends_while_queued_is_refused_and_leaves() {
    let backend = backend();
    backend.acquire(acquire("b", "x", Lifetime::Unbounded, Duration::ZERO)).await.unwrap();
    let lease = backend.grant_lease(Duration::from_secs(30), "").await.unwrap();
    let request = AcquireManyRequest {
        lifetime: Lifetime::Lease(lease.id.clone()),
        ..many(&["a", "b"], "m", Duration::from_secs(60))
    };
    let task_backend = backend.clone();
    let m = tokio::spawn(async move { task_backend.acquire_many(request).await });
    while backend.inspect("b").await.unwrap().waiters == 0 {
        tokio::task::yield_now().await;
    }
    backend.revoke(&lease.id).await.unwrap();
    assert!(matches!(m.await.unwrap(), Err(EngineError::NoSuchLease)));
    assert_eq!(backend.inspect("b").await.unwrap().waiters, 0, "its places are gone");
    backend
        .acquire(acquire("a", "s", Lifetime::Unbounded, Duration::ZERO))
        .await
        .expect("a is free and unqueued");
}

#[tokio::test(start_paused = true)]
async fn shutdown_answers_queued_multi_locks_and_permits() {
    let backend = backend();
    backend.acquire(permit("pool", "a", 1, Lifetime::Unbounded)).await.unwrap();
    let permit_waiter = queue_request(&backend, "pool", permit("pool", "b", 1, Lifetime::Unbounded)).await;
    backend.acquire(acquire("p", "x", Lifetime::Unbounded, Duration::ZERO)).await.unwrap();
    let task_backend = backend.clone();
    let m = tokio::spawn(async move {
        task_backend.acquire_many(many(&["p2", "p"], "m", Duration::from_secs(60))).await
    });
    while backend.inspect("p").await.unwrap().waiters == 0 {
        tokio::task::yield_now().await;
    }
    backend.shutdown().await;
    assert!(matches!(permit_waiter.await.unwrap(), Err(EngineError::ShuttingDown)));
    assert!(matches!(m.await.unwrap(), Err(EngineError::ShuttingDown)));
}
