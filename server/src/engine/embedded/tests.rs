//! Engine unit tests on paused Tokio time: expiry, hand-off order, lease end, cancelled waiters
//! and value retention, with no HTTP and no wall-clock sleeping. With time paused, a `sleep`
//! returns as soon as every task is idle, the clock jumped exactly to its deadline.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use super::EmbeddedBackend;
use crate::engine::{
    AcquireRequest, Claim, EngineError, FencingToken, Grant, Lifetime, LockBackend, RefreshRequest,
    ReleaseRequest,
};

const RETENTION: Duration = Duration::from_secs(10);

pub(super) fn backend() -> EmbeddedBackend {
    EmbeddedBackend::in_memory(RETENTION)
}

pub(super) fn acquire(resource: &str, owner: &str, lifetime: Lifetime, wait: Duration) -> AcquireRequest {
    AcquireRequest {
        resource: resource.into(),
        owner: owner.into(),
        lifetime,
        wait,
        value: None,
        claim: Claim::Exclusive,
    }
}

pub(super) fn expire(secs: f64) -> Lifetime {
    Lifetime::Expire(Duration::from_secs_f64(secs))
}

pub(super) fn release(resource: &str, owner: &str) -> ReleaseRequest {
    ReleaseRequest {
        resource: resource.into(),
        owner: owner.into(),
        token: None,
        keep_value: false,
        force: false,
    }
}

/// Queues `owner` for `resource` in a task, and returns once it is queued.
pub(super) async fn queue(
    backend: &EmbeddedBackend,
    resource: &str,
    owner: &str,
    lifetime: Lifetime,
) -> JoinHandle<Result<Grant, EngineError>> {
    let before = backend.inspect(resource).await.expect("held while queueing").waiters;
    let (task_backend, request) =
        (backend.clone(), acquire(resource, owner, lifetime, Duration::from_secs(60)));
    let task = tokio::spawn(async move { task_backend.acquire(request).await });
    while backend.inspect(resource).await.expect("held while queueing").waiters == before {
        tokio::task::yield_now().await;
    }
    task
}

/// A hold expires exactly at its deadline on the monotonic clock, and hands the lock to the
/// waiter at that moment.
#[tokio::test(start_paused = true)]
async fn a_hold_expires_at_its_deadline_and_hands_off() {
    let backend = backend();
    let started = Instant::now();
    let first = backend.acquire(acquire("r", "a", expire(1.0), Duration::ZERO)).await.unwrap();
    assert_eq!(first.expires_in, Some(Duration::from_secs(1)));
    let waiter = queue(&backend, "r", "b", Lifetime::Unbounded).await;
    sleep(Duration::from_millis(999)).await;
    assert_eq!(backend.inspect("r").await.unwrap().owner, "a", "still held just before the deadline");
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(1), "granted at the deadline, not later");
    assert_eq!(second.owner, "b");
    assert!(second.token > first.token);
}

/// Waiters are granted in arrival order, each under a new, larger token.
#[tokio::test(start_paused = true)]
async fn waiters_are_granted_first_come_first_served() {
    let backend = backend();
    let mut last =
        backend.acquire(acquire("r", "holder", Lifetime::Unbounded, Duration::ZERO)).await.unwrap();
    let mut waiters = Vec::new();
    for owner in ["w1", "w2", "w3"] {
        waiters.push((owner, queue(&backend, "r", owner, Lifetime::Unbounded).await));
    }
    assert_eq!(backend.inspect("r").await.unwrap().waiters, 3);
    for (owner, waiter) in waiters {
        backend.release(release("r", &last.owner)).await.unwrap();
        let grant = waiter.await.unwrap().unwrap();
        assert_eq!(grant.owner, owner);
        assert!(grant.token > last.token, "tokens only increase");
        last = grant;
    }
}

/// A waiter whose wait runs out is told who holds the lock and for how long.
#[tokio::test(start_paused = true)]
async fn a_wait_that_runs_out_names_the_holder() {
    let backend = backend();
    backend.acquire(acquire("r", "a", expire(30.0), Duration::ZERO)).await.unwrap();
    let started = Instant::now();
    let refused = backend.acquire(acquire("r", "b", Lifetime::Unbounded, Duration::from_secs(2))).await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    match refused {
        Err(EngineError::Locked { owner, expires_in, .. }) => {
            assert_eq!(owner, "a");
            assert_eq!(expires_in, Some(Duration::from_secs(28)));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(backend.inspect("r").await.unwrap().waiters, 0, "it left the queue");
}

/// A waiter that goes away (its request dropped) leaves the queue: the next one is granted.
#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue() {
    let backend = backend();
    backend.acquire(acquire("r", "holder", Lifetime::Unbounded, Duration::ZERO)).await.unwrap();
    let gone = queue(&backend, "r", "gone", Lifetime::Unbounded).await;
    let next = queue(&backend, "r", "next", Lifetime::Unbounded).await;
    gone.abort();
    let _ = gone.await;
    assert_eq!(backend.inspect("r").await.unwrap().waiters, 1);
    backend.release(release("r", "holder")).await.unwrap();
    assert_eq!(next.await.unwrap().unwrap().owner, "next");
}

/// When a lease ends, its locks are released (and handed on) and its waiters refused.
#[tokio::test(start_paused = true)]
async fn a_lease_that_ends_releases_its_locks_and_refuses_its_waiters() {
    let backend = backend();
    let lease = backend.grant_lease(Duration::from_secs(2), "").await.unwrap();
    let under_lease = Lifetime::Lease(lease.id.clone());
    backend.acquire(acquire("held", "a", under_lease.clone(), Duration::ZERO)).await.unwrap();
    backend.acquire(acquire("other", "x", Lifetime::Unbounded, Duration::ZERO)).await.unwrap();
    let after_lease = queue(&backend, "held", "b", Lifetime::Unbounded).await;
    let refused = queue(&backend, "other", "a", under_lease).await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(backend.keepalive(&lease.id).await.unwrap(), Duration::from_secs(2));
    let kept_until = Instant::now() + Duration::from_secs(2);
    assert_eq!(after_lease.await.unwrap().unwrap().owner, "b");
    assert_eq!(Instant::now(), kept_until, "released when the kept-alive lease ended");
    assert!(matches!(refused.await.unwrap(), Err(EngineError::NoSuchLease)));
    assert!(matches!(backend.lease_info(&lease.id).await, Err(EngineError::NoSuchLease)));
}

/// A released value is kept for the next holder for the retention period, then dropped.
#[tokio::test(start_paused = true)]
async fn a_kept_value_is_retained_then_dropped() {
    let backend = backend();
    let mut first = acquire("job", "a", Lifetime::Unbounded, Duration::ZERO);
    first.value = Some("step 2".into());
    backend.acquire(first).await.unwrap();
    backend.release(ReleaseRequest { keep_value: true, ..release("job", "a") }).await.unwrap();
    sleep(RETENTION - Duration::from_millis(1)).await;
    let second = backend.acquire(acquire("job", "b", Lifetime::Unbounded, Duration::ZERO)).await.unwrap();
    assert_eq!(second.value.as_deref(), Some("step 2"), "kept for the next holder");
    backend.release(ReleaseRequest { keep_value: true, ..release("job", "b") }).await.unwrap();
    sleep(RETENTION).await;
    let third = backend.acquire(acquire("job", "c", Lifetime::Unbounded, Duration::ZERO)).await.unwrap();
    assert_eq!(third.value, None, "dropped after the retention period");
}

/// A refresh moves the deadline; a stale token can neither refresh nor release.
#[tokio::test(start_paused = true)]
async fn a_refresh_moves_the_deadline_and_a_stale_token_is_refused() {
    let backend = backend();
    let grant = backend.acquire(acquire("r", "a", expire(1.0), Duration::ZERO)).await.unwrap();
    sleep(Duration::from_millis(900)).await;
    let refresh = |token: u64| RefreshRequest {
        resource: "r".into(),
        owner: "a".into(),
        expire: Some(Duration::from_secs(1)),
        token: Some(FencingToken(token)),
        value: None,
    };
    assert!(matches!(backend.refresh(refresh(grant.token.0 + 1)).await, Err(EngineError::NotOwner)));
    backend.refresh(refresh(grant.token.0)).await.unwrap();
    sleep(Duration::from_millis(900)).await;
    assert_eq!(backend.inspect("r").await.unwrap().token, grant.token, "still held after the old deadline");
    sleep(Duration::from_millis(100)).await;
    assert!(matches!(backend.inspect("r").await, Err(EngineError::NotHeld)));
}
