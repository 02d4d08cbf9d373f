//! The durable store with the real binary: crashes, restarts, compaction, and refusals.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockserver_tests::{run_expecting_failure, start_expecting_failure, Api, TempDir, TestServer};
use serde_json::{json, Value};

fn start_on(dir: &TempDir, secret: &str, extra: &[&str]) -> TestServer {
    let mut args = vec!["--secret", secret, "--data-dir", dir.arg()];
    args.extend_from_slice(extra);
    TestServer::start_raw(&args, Some(secret.to_string()))
}

/// What the clients were told before the crash.
#[derive(Default)]
struct Ledger {
    /// Answered 200 to an acquire, and no release was tried since: (owner, token).
    held: HashMap<String, (String, u64)>,
    /// Every token any answer carried.
    max_token: u64,
}

/// Under load from many clients, `kill -9` the server at several moments; after each restart,
/// every acquire answered 200 and not released is held by the same owner with the same token,
/// and new tokens are larger than any seen before the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_answered_is_lost_by_a_crash() {
    let dir = TempDir::new("crash");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (round, kill_after_ms) in [150u64, 400, 700, 250].into_iter().enumerate() {
        let server = start_on(&dir, "s", &[]);
        let api = Api::new(&server.base, "s");
        // What survived the last crash: every ledger entry, exactly.
        {
            let expected: Vec<_> = ledger.lock().unwrap().held.clone().into_iter().collect();
            for (resource, (owner, token)) in expected {
                let info = api.inspect(&resource).await;
                assert_eq!(info.status, 200, "round {round}: {resource} held by {owner} was lost");
                assert_eq!((info.body["owner"].as_str().unwrap(), info.token()), (owner.as_str(), token));
            }
            let before = ledger.lock().unwrap().max_token;
            let fresh = api.acquire(json!({"resource": format!("fresh-{round}"), "owner": "probe"})).await;
            assert!(fresh.token() > before, "round {round}: token {} not above {before}", fresh.token());
            api.release(json!({"resource": format!("fresh-{round}"), "owner": "probe"})).await;
        }
        let mut clients = Vec::new();
        for client in 0..24 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let (api, ledger, mut rng) = (api.clone(), ledger.clone(), seed);
            clients.push(tokio::spawn(async move {
                let owner = format!("r{round}-c{client}");
                for _ in 0..10_000 {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let resource = format!("res-{}", (rng >> 33) % 64);
                    let expire = if rng & 1 == 0 { json!(120) } else { Value::Null };
                    let body = json!({"resource": resource, "owner": owner, "expire": expire, "value": format!("{rng}")});
                    let Ok(response) = api.request(reqwest::Method::POST, "/acquire").json(&body).send().await else {
                        return; // the server died
                    };
                    if response.status() != 200 {
                        continue;
                    }
                    let Ok(grant) = response.json::<Value>().await else { return };
                    let token = grant["token"].as_u64().unwrap();
                    {
                        let mut ledger = ledger.lock().unwrap();
                        ledger.max_token = ledger.max_token.max(token);
                        ledger.held.insert(resource.clone(), (owner.clone(), token));
                    }
                    if rng & 2 == 0 {
                        // From here on the release may or may not have happened.
                        ledger.lock().unwrap().held.remove(&resource);
                        let body = json!({"resource": resource, "owner": owner, "token": token});
                        if api.request(reqwest::Method::POST, "/release").json(&body).send().await.is_err() {
                            return;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        server.kill();
        for client in clients {
            client.await.unwrap();
        }
    }
    assert!(ledger.lock().unwrap().max_token > 0, "the load ran");
}

/// The same under load with permits, shared holds and multi-locks: after each `kill -9`, every
/// grant answered 200 and not released is among its lock's holders with the same token, and no
/// semaphore has more holders than its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_answered_permit_or_shared_hold_is_lost_by_a_crash() {
    let dir = TempDir::new("crash-sharing");
    // (resource, owner) -> token, for grants answered and not released.
    let ledger: Arc<Mutex<HashMap<(String, String), u64>>> = Arc::default();
    for (round, kill_after_ms) in [200u64, 500, 300].into_iter().enumerate() {
        let server = start_on(&dir, "s", &[]);
        let api = Api::new(&server.base, "s");
        let expected: Vec<_> = ledger.lock().unwrap().clone().into_iter().collect();
        for ((resource, owner), token) in expected {
            let info = api.inspect(&resource).await;
            assert_eq!(info.status, 200, "round {round}: {resource} held by {owner} was lost");
            let holders = info.body["holders"].as_array().unwrap();
            assert!(
                holders.iter().any(|h| h["owner"] == owner.as_str() && h["token"] == token),
                "round {round}: {owner}'s hold of {resource} (token {token}) was lost: {holders:?}"
            );
            if resource.starts_with("sem-") {
                assert!(holders.len() <= 3, "round {round}: {resource} has {} holders", holders.len());
            }
        }
        let mut clients = Vec::new();
        for client in 0..16u64 {
            let (api, ledger) = (api.clone(), ledger.clone());
            clients.push(tokio::spawn(async move {
                let owner = format!("r{round}-c{client}");
                let mut rng = client * 7919 + round as u64 * 104729 + 1;
                for _ in 0..10_000 {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let n = (rng >> 33) % 8;
                    let (body, names) = match rng % 3 {
                        0 => (
                            json!({"resource": format!("sem-{n}"), "owner": owner, "limit": 3}),
                            vec![format!("sem-{n}")],
                        ),
                        1 => (
                            json!({"resource": format!("rw-{n}"), "owner": owner, "mode": "shared"}),
                            vec![format!("rw-{n}")],
                        ),
                        _ => {
                            let names = vec![format!("m-{n}"), format!("m-{}", (n + 1) % 8)];
                            (json!({"resources": names, "owner": owner}), names)
                        }
                    };
                    let Ok(response) =
                        api.request(reqwest::Method::POST, "/acquire").json(&body).send().await
                    else {
                        return; // the server died
                    };
                    if response.status() != 200 {
                        continue;
                    }
                    let Ok(grant) = response.json::<Value>().await else { return };
                    let grants =
                        grant.get("grants").and_then(Value::as_array).cloned().unwrap_or_else(|| vec![grant]);
                    {
                        let mut ledger = ledger.lock().unwrap();
                        for (name, grant) in names.iter().zip(&grants) {
                            ledger.insert((name.clone(), owner.clone()), grant["token"].as_u64().unwrap());
                        }
                    }
                    if rng & 8 == 0 {
                        // From here on the release may or may not have happened.
                        {
                            let mut ledger = ledger.lock().unwrap();
                            names.iter().for_each(|name| _ = ledger.remove(&(name.clone(), owner.clone())));
                        }
                        let body = match names.len() {
                            1 => json!({"resource": names[0], "owner": owner}),
                            _ => json!({"resources": names, "owner": owner}),
                        };
                        if api.request(reqwest::Method::POST, "/release").json(&body).send().await.is_err() {
                            return;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        server.kill();
        for client in clients {
            client.await.unwrap();
        }
    }
    assert!(!ledger.lock().unwrap().is_empty(), "the load held something");
}

/// A lock with 2 s left, server down for 3 s: free after the restart, its value kept for the
/// next holder. A lock without expiry and a lease-bound lock survive a restart.
#[tokio::test]
async fn expiry_runs_across_a_restart() {
    let dir = TempDir::new("expiry");
    let server = start_on(&dir, "s", &[]);
    let api = server.api();
    api.acquire(json!({"resource": "short", "owner": "a", "expire": 1, "value": "step 4"})).await;
    let forever = api.acquire(json!({"resource": "forever", "owner": "b"})).await.token();
    let lease = api.post("/leases", json!({"ttl": 60})).await.body["lease"].as_str().unwrap().to_string();
    let leased = api.acquire(json!({"resource": "leased", "owner": "c", "lease": lease})).await.token();
    server.kill();
    // The hold's deadline must pass while the server is down: real time, across processes.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let server = start_on(&dir, "s", &[]);
    let api = server.api();
    api.inspect("short").await.assert_error(404, "not_held");
    let next = api.acquire(json!({"resource": "short", "owner": "d"})).await;
    assert_eq!(next.body["value"], "step 4", "the expired holder's value is kept");
    assert_eq!(api.inspect("forever").await.token(), forever);
    assert_eq!(api.inspect("leased").await.token(), leased);
    assert_eq!(api.get(&format!("/leases/{lease}")).await.body["locks"], json!(["leased"]));
    api.delete(&format!("/leases/{lease}")).await;
    api.inspect("leased").await.assert_error(404, "not_held");
}

/// Permits, shared holds and multi-locks survive `kill -9` as acknowledged: every holder with
/// its token, mode and limit; a permit that expired while the server was down is gone alone;
/// new tokens are larger; a compaction writes them into the snapshot the same way.
#[tokio::test]
async fn permits_shared_holds_and_multi_locks_survive_a_crash() {
    let dir = TempDir::new("sharing");
    let holders = |body: &Value| -> Vec<(String, u64, String)> {
        body["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["owner"].as_str().unwrap().into(),
                    h["token"].as_u64().unwrap(),
                    h["mode"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let server = start_on(&dir, "s", &[]);
    let api = server.api();
    let mut max = 0;
    for owner in ["a", "b", "c"] {
        let expire = if owner == "b" { json!(1) } else { Value::Null };
        let grant =
            api.acquire(json!({"resource": "pool", "owner": owner, "limit": 3, "expire": expire})).await;
        assert_eq!(grant.status, 200, "{:?}", grant.body);
        max = max.max(grant.token());
    }
    for owner in ["r1", "r2"] {
        max =
            max.max(api.acquire(json!({"resource": "cfg", "owner": owner, "mode": "shared"})).await.token());
    }
    let multi = api.acquire(json!({"resources": ["m1", "m2"], "owner": "m"})).await;
    assert_eq!(multi.status, 200);
    let pool = holders(&api.inspect("pool").await.body);
    let cfg = holders(&api.inspect("cfg").await.body);
    let m1 = api.inspect("m1").await.token();
    server.kill();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    for round in 0..2 {
        let server = start_on(&dir, "s", if round == 1 { &["--compact-after", "1"] } else { &[] });
        let api = server.api();
        let after = api.inspect("pool").await;
        assert_eq!(after.body["limit"], 3);
        let kept: Vec<_> = pool.iter().filter(|(owner, ..)| owner != "b").cloned().collect();
        assert_eq!(holders(&after.body), kept, "b's permit expired while down, alone");
        assert_eq!(holders(&api.inspect("cfg").await.body), cfg);
        assert_eq!(api.inspect("m1").await.token(), m1);
        assert_eq!(api.inspect("m2").await.body["owner"], "m");
        api.acquire(json!({"resource": "pool", "owner": "d", "limit": 4}))
            .await
            .assert_error(409, "limit_mismatch");
        let next = api.acquire(json!({"resource": "fresh", "owner": "d"})).await.token();
        assert!(next > max, "tokens only grow: {next} > {max}");
        max = next;
        api.release(json!({"resource": "fresh", "owner": "d"})).await;
        server.kill();
    }
}

/// The log is compacted into snapshots as it grows: the data dir stays small, and a restart
/// still finds exactly what is held.
#[tokio::test]
async fn compaction_keeps_the_data_dir_small() {
    let dir = TempDir::new("compact");
    let server = start_on(&dir, "s", &["--compact-after", "65536"]);
    let api = server.api();
    for i in 0..20 {
        api.acquire(json!({"resource": format!("kept-{i}"), "owner": "o", "value": "x".repeat(100)})).await;
    }
    for i in 0..3000 {
        let resource = format!("churn-{}", i % 50);
        api.acquire(json!({"resource": resource, "owner": "o", "value": "y".repeat(200)})).await;
        api.release(json!({"resource": resource, "owner": "o"})).await;
    }
    // Compaction runs in the background: wait for it (bounded), not for a fixed time.
    let dir_size = || -> u64 {
        std::fs::read_dir(&dir.path).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while dir_size() >= 1_000_000 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let size = dir_size();
    assert!(size < 1_000_000, "the data dir holds {size} bytes after ~2 MB of changes");
    server.kill();
    let server = start_on(&dir, "s", &[]);
    let api = server.api();
    let page = api.get("/locks?limit=1000").await;
    let names: Vec<_> =
        page.body["locks"].as_array().unwrap().iter().map(|l| l["resource"].clone()).collect();
    assert_eq!(names.len(), 20, "{names:?}");
    assert!(names.iter().all(|n| n.as_str().unwrap().starts_with("kept-")));
}

/// A second server on the same data dir refuses to start.
#[tokio::test]
async fn a_second_server_on_one_dir_refuses() {
    let dir = TempDir::new("second");
    let _first = start_on(&dir, "s", &[]);
    let (status, stderr) = start_expecting_failure(&["--data-dir", dir.arg()]);
    assert!(!status.success());
    assert!(stderr.contains("another lockserver is using this data dir"), "{stderr}");
    assert!(stderr.contains(dir.arg()), "{stderr}");
}

/// A corrupt file, or one from another format version, stops the server with a message naming
/// it; nothing is reset.
#[tokio::test]
async fn a_damaged_data_dir_is_refused_not_reset() {
    let dir = TempDir::new("corrupt");
    let server = start_on(&dir, "s", &[]);
    server.api().acquire(json!({"resource": "precious", "owner": "o"})).await;
    // Let the start-up snapshot land (bounded wait for the file, not a fixed sleep).
    let has_snapshot = || {
        std::fs::read_dir(&dir.path).unwrap().any(|e| {
            let name = e.unwrap().file_name();
            let name = name.to_str().unwrap();
            name.starts_with("snapshot-") && name.ends_with(".db")
        })
    };
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !has_snapshot() && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let snapshot = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("snapshot-"))
        .expect("a snapshot was written");
    let original = std::fs::read(&snapshot).unwrap();

    let mut damaged = original.clone();
    damaged[20] ^= 0xff;
    std::fs::write(&snapshot, &damaged).unwrap();
    let (status, stderr) = start_expecting_failure(&["--data-dir", dir.arg()]);
    assert!(!status.success());
    assert!(stderr.contains("corrupt") && stderr.contains(snapshot.to_str().unwrap()), "{stderr}");

    let mut future = original.clone();
    future[8] = 99;
    std::fs::write(&snapshot, &future).unwrap();
    let (_, stderr) = start_expecting_failure(&["--data-dir", dir.arg()]);
    assert!(stderr.contains("version 99") && stderr.contains(snapshot.to_str().unwrap()), "{stderr}");

    std::fs::write(&snapshot, &original).unwrap();
    let server = start_on(&dir, "s", &[]);
    assert_eq!(server.api().inspect("precious").await.status, 200, "the repaired dir is used as it was");
}

/// A data dir the server may not use stops it with a message naming the path.
#[tokio::test]
async fn a_data_dir_without_permission_is_refused() {
    let dir = TempDir::new("perm");
    let locked = dir.path.join("locked");
    std::fs::create_dir(&locked).unwrap();
    let as_root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let (status, stderr) = if as_root {
        // Root reads everything: run the server as nobody, with a dir only root may enter.
        std::process::Command::new("chmod").args(["700", locked.to_str().unwrap()]).status().unwrap();
        std::process::Command::new("chmod").args(["755", dir.arg()]).status().unwrap();
        let mut command = std::process::Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(lockserver_tests::server_binary());
        run_expecting_failure(command, &["--data-dir", locked.join("data").to_str().unwrap()])
    } else {
        std::process::Command::new("chmod").args(["000", locked.to_str().unwrap()]).status().unwrap();
        start_expecting_failure(&["--data-dir", locked.join("data").to_str().unwrap()])
    };
    assert!(!status.success());
    assert!(stderr.contains("Permission denied") && stderr.contains(locked.to_str().unwrap()), "{stderr}");
    std::process::Command::new("chmod").args(["755", locked.to_str().unwrap()]).status().unwrap();
}

/// `--repair`, asked for by the operator: a damaged dir that the server refuses is salvaged.
/// What still reads is kept, what does not is reported, the old files are moved aside, and new
/// tokens stay above every token issued before.
#[tokio::test]
async fn repair_salvages_a_damaged_dir_on_request() {
    let dir = TempDir::new("repair");
    let server = start_on(&dir, "s", &[]);
    let api = server.api();
    let mut highest = 0;
    for i in 0..20 {
        highest = api.acquire(json!({"resource": format!("lock-{i:02}"), "owner": "o"})).await.token();
    }
    server.kill();
    // Damage the middle of the newest log: the server must refuse it.
    let log = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log-"))
        .max()
        .expect("a log");
    let mut bytes = std::fs::read(&log).unwrap();
    let written = bytes.iter().rposition(|&byte| byte != 0).unwrap();
    bytes[written / 2] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();
    let (status, stderr) = start_expecting_failure(&["--data-dir", dir.arg()]);
    assert!(!status.success() && stderr.contains("corrupt"), "{stderr}");

    let output = std::process::Command::new(lockserver_tests::server_binary())
        .args(["--repair", "--data-dir", dir.arg()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("dropped ") && report.contains("unreadable"), "{report}");
    assert!(std::fs::read_dir(&dir.path).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_str()
        .unwrap()
        .starts_with("damaged-")));

    let server = start_on(&dir, "s", &[]);
    let api = server.api();
    let page = api.get("/locks?limit=100").await;
    let kept = page.body["locks"].as_array().unwrap().len();
    assert!((1..20).contains(&kept), "some locks before the damage are kept, not all: {kept}");
    let fresh = api.acquire(json!({"resource": "fresh", "owner": "o"})).await.token();
    assert!(fresh > highest, "token {fresh} not above {highest}");
}
