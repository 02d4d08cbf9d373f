//! A full disk, with the real binary on a small tmpfs that the test mounts (it needs root; as
//! anyone else the test says so and passes without running).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lockserver_tests::{TempDir, TestServer};
use serde_json::json;

/// A tmpfs of a given size, unmounted when dropped.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = TempDir::new("tmpfs");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.arg()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Tmpfs { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path.join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", self.dir.arg()]).status();
    }
}

fn start(data: &str) -> TestServer {
    TestServer::start_raw(&["--secret", "s", "--data-dir", data], Some("s".into()))
}

/// The disk fills up: the change that could not be written is answered 503 naming the data dir
/// and leaves no trace, in memory or after a restart; `/health` says why; refused changes do
/// not pile up in memory; once space comes back the store serves again on its own.
#[tokio::test]
async fn a_full_disk_refuses_changes_without_a_trace_and_the_store_comes_back() {
    let Some(tmpfs) = Tmpfs::mount("2m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let ballast = tmpfs.path("ballast");
    std::fs::write(&ballast, vec![1u8; 1_100_000]).unwrap();
    let data = tmpfs.path("data");
    let data = data.to_str().unwrap();
    let server = start(data);
    let api = server.api();
    assert_eq!(api.acquire(json!({"resource": "kept", "owner": "k"})).await.status, 200);

    let value = "v".repeat(60_000);
    let mut refused = None;
    for i in 0..100 {
        let answer =
            api.acquire(json!({"resource": format!("fill-{i}"), "owner": "f", "value": value})).await;
        if answer.status != 200 {
            refused = Some((i, answer));
            break;
        }
    }
    let (full_at, answer) = refused.expect("the disk filled up");
    answer.assert_error(503, "unavailable");
    let message = answer.body["message"].as_str().unwrap();
    assert!(message.contains(data) && message.contains("No space left"), "{message}");

    // While the disk is full: /health says why, the refused acquire and a refused release leave
    // the state as it was, and reads go on.
    let health = api.get("/health").await;
    assert_eq!(health.status, 503, "{:?}", health.body);
    assert!(health.body["message"].as_str().unwrap().contains("cannot be written"));
    api.inspect(&format!("fill-{full_at}")).await.assert_error(404, "not_held");
    api.release(json!({"resource": "kept", "owner": "k"})).await.assert_error(503, "unavailable");
    assert_eq!(api.inspect("kept").await.body["owner"], "k", "a refused release leaves the lock held");
    api.acquire(json!({"resource": "during", "owner": "d"})).await.assert_error(503, "unavailable");
    api.inspect("during").await.assert_error(404, "not_held");

    // Refused changes do not pile up: 3,000 refused 60 KB refreshes.
    let rss_before = server.rss_kib();
    for _ in 0..3000 {
        let answer = api.post("/refresh", json!({"resource": "kept", "owner": "k", "value": value})).await;
        assert_eq!(answer.status, 503);
    }
    let growth = server.rss_kib().saturating_sub(rss_before);
    assert!(growth < 20_000, "RSS grew by {growth} KiB over 3,000 refused refreshes");

    // Space comes back: the store serves again within seconds, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while api.get("/health").await.status != 200 {
        assert!(Instant::now() < until, "the store did not come back within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.acquire(json!({"resource": "after", "owner": "a"})).await.status, 200);
    api.inspect(&format!("fill-{full_at}")).await.assert_error(404, "not_held");

    // A restart agrees with what every client was told.
    server.kill();
    let server = start(data);
    let api = server.api();
    assert_eq!(api.inspect("kept").await.body["owner"], "k");
    assert_eq!(api.inspect("after").await.body["owner"], "a");
    for i in 0..full_at {
        assert_eq!(api.inspect(&format!("fill-{i}")).await.status, 200, "fill-{i} was acknowledged");
    }
    api.inspect(&format!("fill-{full_at}")).await.assert_error(404, "not_held");
    api.inspect("during").await.assert_error(404, "not_held");
}
