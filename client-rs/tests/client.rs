//! The Rust client against the real server binary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockserver_client::{blocking, lock_scope, Client, Error, LockMode, LockserverClient};
use lockserver_tests::TestServer;

fn client(server: &TestServer) -> Client {
    Client::builder().addr(&server.base).secret(&server.secret).build().unwrap()
}

fn blocking_client(server: &TestServer) -> blocking::Client {
    Client::builder().addr(&server.base).secret(&server.secret).build_blocking().unwrap()
}

/// A counter incremented non-atomically (read, yield, write) loses updates unless the
/// increments exclude each other.
async fn racy_increment(counter: &AtomicU64) {
    let seen = counter.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1)).await;
    counter.store(seen + 1, Ordering::SeqCst);
}

/// 16 tasks sharing one client exclude each other: each acquisition has its own owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_through_one_shared_client() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, counter) = (client.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                lock_scope!(async &client, "counter", { racy_increment(&counter).await }).unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 80);
}

/// 16 tasks with a client each exclude each other too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_through_sixteen_clients() {
    let server = TestServer::start(&[]);
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, counter) = (client(&server), counter.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let guard = client.lock("counter").expire(Duration::from_secs(10)).acquire().await.unwrap();
                racy_increment(&counter).await;
                guard.release().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 80);
}

/// 16 threads sharing a blocking client, through the blocking `lock_scope!`.
#[test]
fn sixteen_threads_through_the_blocking_lock_scope() {
    let server = TestServer::start(&[]);
    let client = blocking_client(&server);
    let counter = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (client, counter) = (client.clone(), counter.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    lock_scope!(&client, "counter", expire = Duration::from_secs(10), {
                        let seen = counter.load(Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                        counter.store(seen + 1, Ordering::SeqCst);
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 80);
}

/// A blocking acquire waits for the holder's release and is handed the lock.
#[test]
fn blocking_hand_off() {
    let server = TestServer::start(&[]);
    let client = blocking_client(&server);
    let held = client.lock("baton").acquire().unwrap();
    let waiter = {
        let client = client.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let guard = client.lock("baton").acquire().unwrap();
            (started.elapsed(), guard.token())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let first_token = held.token();
    held.release().unwrap();
    let (waited, token) = waiter.join().unwrap();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(token > first_token);
}

/// try_acquire answers None while someone else holds the lock; the non-blocking scope
/// answers Locked naming the holder.
#[tokio::test]
async fn try_acquire_when_held() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let held = client.lock("busy").acquire().await.unwrap();
    assert!(client.lock("busy").try_acquire().await.unwrap().is_none());
    let ran = AtomicU64::new(0);
    let outcome = lock_scope!(async &client, "busy", non_blocking, { ran.fetch_add(1, Ordering::SeqCst) });
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the block must not run without the lock");
    match outcome {
        Err(Error::Locked { owner, .. }) => assert_eq!(owner, held.owner()),
        other => panic!("expected Locked, got {other:?}"),
    }
    let waited = client.lock("busy").wait(Duration::from_millis(200)).acquire().await;
    assert!(matches!(waited, Err(Error::Locked { .. })), "{waited:?}");
    held.release().await.unwrap();
    let guard = client.lock("busy").try_acquire().await.unwrap().expect("free after release");
    guard.release().await.unwrap();
}

/// The background keepalive holds a 1 s lock for 5 s.
#[tokio::test]
async fn keepalive_holds_a_short_lock_for_long() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let guard = client.lock("long-job").expire(Duration::from_secs(1)).acquire().await.unwrap();
    assert!(guard.is_kept_alive());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!guard.is_lost());
    let info = client.inspect("long-job").await.unwrap().expect("still held");
    assert_eq!((info.owner.as_str(), info.token), (guard.owner(), guard.token()));
    guard.release().await.unwrap();
    assert_eq!(client.inspect("long-job").await.unwrap(), None);
}

/// When the server goes away, `lost()` fires by the hold's deadline.
#[tokio::test]
async fn lost_fires_when_the_server_stops() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let guard = client.lock("fragile").expire(Duration::from_secs(1)).acquire().await.unwrap();
    let acquired = Instant::now();
    drop(server);
    tokio::time::timeout(Duration::from_secs(3), guard.lost()).await.expect("lost() fired");
    assert!(acquired.elapsed() <= Duration::from_millis(1100), "{:?}", acquired.elapsed());
    assert!(guard.is_lost());
    assert!(matches!(guard.release().await, Err(Error::Unavailable(_))));
}

/// When the lock is taken over, `lost()` fires and release reports it.
#[tokio::test]
async fn lost_fires_when_the_lock_is_taken_over() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let guard = client.lock("contested").expire(Duration::from_secs(3)).acquire().await.unwrap();
    // Someone with the owner's id releases it behind the guard's back; another takes it.
    let released = lockserver_tests::Api::new(&server.base, &server.secret)
        .release(serde_json::json!({ "resource": "contested", "owner": guard.owner() }))
        .await;
    assert_eq!(released.status, 200);
    let thief = client.lock("contested").acquire().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), guard.lost()).await.expect("lost() fired");
    assert!(matches!(guard.release().await, Err(Error::LockLost)));
    assert!(
        client.inspect("contested").await.unwrap().is_some(),
        "the guard did not release the thief's lock"
    );
    thief.release().await.unwrap();
}

/// Values: set at acquisition, replaced by the guard, handed to the next holder on expiry.
#[tokio::test]
async fn values_travel_with_the_lock() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let guard = client.lock("job").value("started").acquire().await.unwrap();
    assert_eq!(guard.value().as_deref(), Some("started"));
    guard.set_value("half done").await.unwrap();
    assert_eq!(guard.value().as_deref(), Some("half done"));
    assert_eq!(client.inspect("job").await.unwrap().unwrap().value.as_deref(), Some("half done"));
    guard.detach();
    // The holder "dies": its lock expires; a new holder finds the value.
    let owner = client.inspect("job").await.unwrap().unwrap().owner;
    let released = lockserver_tests::Api::new(&server.base, &server.secret)
        .release(serde_json::json!({ "resource": "job", "owner": owner, "keep_value": true }))
        .await;
    assert_eq!(released.status, 200);
    let next = client.lock("job").acquire().await.unwrap();
    assert_eq!(next.value().as_deref(), Some("half done"));
    next.release().await.unwrap();
}

/// Dropping a guard releases its lock in the background.
#[tokio::test]
async fn dropping_a_guard_releases() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    drop(client.lock("dropped").expire(Duration::from_secs(30)).acquire().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(3);
    while client.inspect("dropped").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the dropped guard was not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A lease keeps itself alive; its locks live with it; dropping it revokes it.
#[tokio::test]
async fn leases_keep_themselves_alive_and_revoke_on_drop() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let lease = client.grant_lease(Duration::from_secs(1)).await.unwrap();
    let guard = client.lock("leader").lease(&lease).acquire().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!lease.is_lost());
    assert_eq!(lease.info().await.unwrap().locks, vec!["leader".to_string()]);
    guard.detach();
    drop(lease);
    let deadline = Instant::now() + Duration::from_secs(3);
    while client.inspect("leader").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "revoking the lease did not release its lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The blocking client's guards and leases.
#[test]
fn blocking_guards_and_leases() {
    let server = TestServer::start(&[]);
    let client = blocking_client(&server);
    let lease = client.grant_lease(Duration::from_secs(5)).unwrap();
    let guard = client.lock("b").lease(&lease).value("v").acquire().unwrap();
    assert_eq!(guard.value().as_deref(), Some("v"));
    assert!(client.lock("b").try_acquire().unwrap().is_none());
    assert!(!guard.wait_lost(Duration::from_millis(50)));
    drop(guard);
    assert_eq!(client.inspect("b").unwrap(), None, "a blocking guard's drop releases at once");
    lease.revoke().unwrap();
}

/// The reference API: fixed owner, modes, expiry in seconds, release by name.
#[test]
fn the_reference_api() {
    let server = TestServer::start(&[]);
    let first = LockserverClient::new(server.base.clone(), "worker-1", server.secret.clone());
    let second = LockserverClient::new_with_env(
        Some(server.base.clone()),
        Some("worker-2"),
        Some(server.secret.clone()),
    );
    first.acquire("res").unwrap();
    first.acquire("res").unwrap(); // the same owner again: idempotent
    match second.acquire_with_mode("res", LockMode::NonBlocking) {
        Err(Error::Locked { owner, .. }) => assert_eq!(owner, "worker-1"),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(matches!(second.release("res"), Err(Error::NotOwner)));
    first.release("res").unwrap();
    assert!(matches!(first.release("res"), Err(Error::NotHeld)));

    first.acquire_with_mode_and_expire("res", LockMode::Blocking, Some(1)).unwrap();
    let started = Instant::now();
    second.acquire_with_mode("res", LockMode::Blocking).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(800), "waited for the expiry");
    second.release("res").unwrap();

    let value = lock_scope!(&first, "res", { 7 }).unwrap();
    assert_eq!(value, 7);
}

/// Errors, not panics, when the server is down or the secret is wrong.
#[tokio::test]
async fn errors_when_down_or_unauthorized() {
    let server = TestServer::start(&[]);
    let wrong = Client::builder().addr(&server.base).secret("wrong").build().unwrap();
    assert!(matches!(wrong.lock("r").acquire().await, Err(Error::Unauthorized)));
    let base = server.base.clone();
    drop(server);
    let down = Client::builder().addr(&base).secret("s").retries(1).build().unwrap();
    assert!(matches!(down.lock("r").acquire().await, Err(Error::Unavailable(_))));
    assert!(matches!(lock_scope!(async &down, "r", { 1 }), Err(Error::Unavailable(_))));
    let code = down.lock("r").try_acquire().await.unwrap_err().code();
    assert_eq!(code, "unavailable");
}

/// The blocking scope reports a dead server as an error too.
#[test]
fn blocking_scope_when_down() {
    let server = TestServer::start(&[]);
    let base = server.base.clone();
    drop(server);
    let down = Client::builder().addr(&base).secret("s").retries(0).build_blocking().unwrap();
    assert!(matches!(lock_scope!(&down, "r", non_blocking, { 1 }), Err(Error::Unavailable(_))));
}

/// A guard acquired without a lifetime gets the client's default expiry (30 s), kept alive; a
/// process that dies holding one frees it within that expiry. Holding until released is an
/// explicit choice, and the reference API keeps its meaning (no expire: held until released).
#[test]
fn guards_expire_by_default_and_hold_until_released_only_when_asked() {
    let server = TestServer::start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = client(&server);
        let guard = client.lock("default").acquire().await.unwrap();
        assert!(guard.is_kept_alive());
        let held = client.inspect("default").await.unwrap().unwrap();
        let left = held.expires_in.expect("a default expiry");
        assert!(left > Duration::from_secs(25) && left <= Duration::from_secs(30), "{left:?}");
        guard.release().await.unwrap();

        let forever = client.lock("forever").hold_until_released().acquire().await.unwrap();
        assert!(!forever.is_kept_alive());
        assert_eq!(client.inspect("forever").await.unwrap().unwrap().expires_in, None);
        forever.release().await.unwrap();

        let never =
            Client::builder().addr(&server.base).secret(&server.secret).default_expire(None).build().unwrap();
        let guard = never.lock("configured").acquire().await.unwrap();
        assert_eq!(never.inspect("configured").await.unwrap().unwrap().expires_in, None);
        guard.release().await.unwrap();
    });

    // A holder that dies: its runtime (keepalive included) goes away without a release.
    let dying = tokio::runtime::Runtime::new().unwrap();
    dying.block_on(async {
        let client = Client::builder()
            .addr(&server.base)
            .secret(&server.secret)
            .default_expire(Some(Duration::from_secs(1)))
            .build()
            .unwrap();
        std::mem::forget(client.lock("crashed").acquire().await.unwrap());
    });
    dying.shutdown_background();
    runtime.block_on(async {
        let client = client(&server);
        let started = Instant::now();
        let guard = client.lock("crashed").wait(Duration::from_secs(10)).acquire().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        guard.release().await.unwrap();
    });

    let reference = LockserverClient::new(server.base.clone(), "reference-owner", server.secret.clone());
    reference.acquire("reference").unwrap();
    runtime.block_on(async {
        let info = client(&server).inspect("reference").await.unwrap().unwrap();
        assert_eq!(info.expires_in, None, "the reference API's acquire without expire holds until released");
    });
    reference.release("reference").unwrap();
}

/// A per-call timeout bounds each call of an acquisition against a server that never answers
/// (a listener that accepts and says nothing), instead of the client's 10 s.
#[tokio::test]
async fn a_per_call_timeout_bounds_a_silent_server() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let client = Client::builder().addr(&addr).secret("s").retries(0).build().unwrap();
    let started = Instant::now();
    let answer = client.lock("r").wait(Duration::ZERO).timeout(Duration::from_millis(300)).acquire().await;
    assert!(matches!(answer, Err(Error::Unavailable(_))), "{answer:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    drop(silent);
}

/// `list_all` walks every page under a prefix, and nothing outside it.
#[tokio::test]
async fn list_all_walks_every_page() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let mut guards = Vec::new();
    for i in 0..25 {
        guards.push(client.lock(format!("jobs/{i:02}")).acquire().await.unwrap());
    }
    guards.push(client.lock("other").acquire().await.unwrap());
    let mut listing = client.list_all("jobs/", 10);
    let mut names = Vec::new();
    let mut pages = 0;
    while let Some(page) = listing.next_page().await.unwrap() {
        pages += 1;
        names.extend(page.into_iter().map(|lock| lock.resource));
    }
    assert_eq!(names, (0..25).map(|i| format!("jobs/{i:02}")).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    assert!(listing.next_page().await.unwrap().is_none());
}
