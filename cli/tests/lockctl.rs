//! `lockctl` against the real server: commands run one at a time under a lock, exit codes pass
//! through, a held lock is not waited for with --no-wait, the token reaches the child, the child
//! is stopped before the lock's deadline when the server stops answering, and Ctrl-C reaches
//! the child and releases the lock.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockserver_client::Client;
use lockserver_tests::{TempDir, TestServer};

fn lockctl(server: &TestServer, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockctl"));
    command
        .args(args)
        .env("LOCKSERVER_ADDR", &server.base)
        .env("LOCKSERVER_SECRET", &server.secret)
        .env_remove("LOCKSERVER_OWNER")
        .current_dir(std::env::temp_dir());
    command
}

fn output(server: &TestServer, args: &[&str]) -> Output {
    lockctl(server, args).output().expect("running lockctl")
}

fn client(server: &TestServer) -> Client {
    Client::builder().addr(&server.base).secret(&server.secret).build().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Waits until `name` is held (by anyone).
fn until_held(server: &TestServer, name: &str) {
    let client = client(server);
    let until = Instant::now() + Duration::from_secs(10);
    while runtime().block_on(client.inspect(name)).unwrap().is_none() {
        assert!(Instant::now() < until, "{name} was never acquired");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap().success());
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn two_runs_on_one_name_never_overlap() {
    let server = TestServer::start(&[]);
    let dir = TempDir::new("lockctl-overlap");
    let log = dir.path.join("log");
    let script =
        format!("echo start $(date +%s%N) >> {0}; sleep 0.3; echo end $(date +%s%N) >> {0}", log.display());
    let runs: Vec<Child> = (0..2)
        .map(|_| lockctl(&server, &["run", "shared", "--", "sh", "-c", &script]).spawn().unwrap())
        .collect();
    for mut run in runs {
        assert!(run.wait().unwrap().success());
    }
    let events: Vec<(String, u128)> = lines(&log)
        .iter()
        .map(|line| {
            let (what, at) = line.split_once(' ').unwrap();
            (what.to_string(), at.parse().unwrap())
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(kinds, ["start", "end", "start", "end"], "the two commands overlapped: {events:?}");
    assert!(events[1].1 <= events[2].1);
    assert!(runtime().block_on(client(&server).inspect("shared")).unwrap().is_none(), "released at the end");
}

#[test]
fn the_exit_code_passes_through_and_the_token_reaches_the_child() {
    let server = TestServer::start(&[]);
    let run = output(
        &server,
        &["run", "job", "--", "sh", "-c", "echo $LOCKSERVER_RESOURCE $LOCKSERVER_TOKEN; exit 7"],
    );
    assert_eq!(run.status.code(), Some(7), "{}", String::from_utf8_lossy(&run.stderr));
    let printed = String::from_utf8_lossy(&run.stdout);
    let (resource, token) = printed.trim().split_once(' ').unwrap();
    assert_eq!(resource, "job");
    assert!(token.parse::<u64>().unwrap() > 0);
    let killed = output(&server, &["run", "job", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.status.code(), Some(128 + 15), "128 + the signal that ended the command");
    let missing = output(&server, &["run", "job", "--", "/nonexistent/command"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(runtime().block_on(client(&server).inspect("job")).unwrap().is_none(), "released at once");
}

#[test]
fn no_wait_on_a_held_lock_exits_75_without_running_the_command() {
    let server = TestServer::start(&[]);
    let dir = TempDir::new("lockctl-conflict");
    let marker = dir.path.join("ran");
    let acquired = output(&server, &["acquire", "busy", "--owner", "someone"]);
    assert!(acquired.status.success());
    let run = output(&server, &["run", "busy", "--no-wait", "--", "touch", marker.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&run.stderr).contains("someone"), "names the holder");
    assert!(!marker.exists(), "the command did not run");
    let custom = output(&server, &["run", "busy", "--no-wait", "--conflict-exit-code", "9", "--", "true"]);
    assert_eq!(custom.status.code(), Some(9));
    assert!(output(&server, &["release", "busy", "--owner", "someone"]).status.success());
}

/// `--limit N` runs up to N at once on a semaphore; `--shared` runs beside other readers, and a
/// run without it waits for them.
#[test]
fn limit_and_shared_runs() {
    let server = TestServer::start(&[]);
    let client = client(&server);
    let rt = runtime();
    let first = rt.block_on(client.semaphore("pool", 2).hold_until_released().acquire()).unwrap();
    let run = |args: &[&str]| output(&server, args).status.code();
    assert_eq!(
        run(&["run", "pool", "--limit", "2", "--no-wait", "--", "true"]),
        Some(0),
        "a second permit is free"
    );
    let second = rt.block_on(client.semaphore("pool", 2).hold_until_released().acquire()).unwrap();
    let full = output(&server, &["run", "pool", "--limit", "2", "--no-wait", "--", "true"]);
    assert_eq!(full.status.code(), Some(75));
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(stderr.contains(first.owner()) && stderr.contains(second.owner()), "names the holders: {stderr}");
    assert_eq!(
        run(&["run", "pool", "--limit", "3", "--no-wait", "--", "true"]),
        Some(1),
        "a limit mismatch is an error"
    );
    rt.block_on(first.release()).unwrap();
    rt.block_on(second.release()).unwrap();

    let reader = rt.block_on(client.lock("cfg").shared().hold_until_released().acquire()).unwrap();
    assert_eq!(run(&["run", "cfg", "--shared", "--no-wait", "--", "true"]), Some(0), "readers go together");
    assert_eq!(run(&["run", "cfg", "--no-wait", "--", "true"]), Some(75), "a writer waits for the reader");
    rt.block_on(reader.release()).unwrap();
}

/// The server stops answering (SIGSTOP): the child's group gets SIGTERM, and SIGKILL since it
/// ignores it, before the lock's deadline (at most 2 s after the pause).
#[test]
fn the_child_is_stopped_before_the_deadline_when_the_lock_cannot_be_renewed() {
    let server = TestServer::start(&[]);
    let dir = TempDir::new("lockctl-paused");
    let log = dir.path.join("log");
    let script = format!("trap 'echo term >> {}' TERM; while :; do sleep 0.05; done", log.display());
    let mut run = lockctl(&server, &["run", "paused", "--expire", "2s", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    until_held(&server, "paused");
    std::thread::sleep(Duration::from_millis(700)); // a keepalive or two
    signal(server.pid(), "STOP");
    let paused = Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(paused.elapsed() < Duration::from_secs(10), "lockctl did not stop the command");
        std::thread::sleep(Duration::from_millis(10));
    };
    let stopped_after = paused.elapsed();
    signal(server.pid(), "CONT");
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(70), "{stderr}");
    assert!(
        stopped_after < Duration::from_secs(2),
        "the child outlived the lock's deadline: {stopped_after:?}"
    );
    assert_eq!(lines(&log), ["term"], "SIGTERM reached the child first; {stderr}");
    assert!(stderr.contains("SIGKILL"), "{stderr}");
}

/// Ctrl-C (SIGINT to lockctl) reaches the child; the lock is released once it exits.
#[test]
fn ctrl_c_reaches_the_child_and_the_lock_is_released() {
    let server = TestServer::start(&[]);
    let dir = TempDir::new("lockctl-interrupt");
    let log = dir.path.join("log");
    let script = format!("trap 'echo int >> {}; exit 3' INT; while :; do sleep 0.05; done", log.display());
    let mut run = lockctl(&server, &["run", "interrupted", "--", "sh", "-c", &script]).spawn().unwrap();
    until_held(&server, "interrupted");
    std::thread::sleep(Duration::from_millis(100));
    signal(run.id(), "INT");
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(lines(&log), ["int"]);
    assert!(runtime().block_on(client(&server).inspect("interrupted")).unwrap().is_none());
}

#[test]
fn the_one_shot_commands() {
    let server = TestServer::start(&[]);
    let token = output(&server, &["acquire", "jobs/a", "--owner", "w", "--value", "v"]);
    assert!(token.status.success());
    let token: u64 = String::from_utf8_lossy(&token.stdout).trim().parse().unwrap();
    let inspect = output(&server, &["--json", "inspect", "jobs/a"]);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        (info["owner"].as_str(), info["token"].as_u64(), info["value"].as_str()),
        (Some("w"), Some(token), Some("v"))
    );
    let table = String::from_utf8_lossy(&output(&server, &["list", "--prefix", "jobs/"]).stdout).to_string();
    assert!(table.starts_with("RESOURCE") && table.contains("jobs/a"), "{table}");
    let wrong = output(&server, &["release", "jobs/a", "--owner", "w", "--token", &(token + 1).to_string()]);
    assert_eq!(wrong.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&wrong.stderr).lines().count(), 1, "one line on stderr");
    assert!(output(&server, &["release", "jobs/a", "--owner", "w", "--token", &token.to_string()])
        .status
        .success());
    assert_eq!(
        String::from_utf8_lossy(&output(&server, &["--json", "inspect", "jobs/a"]).stdout).trim(),
        "null"
    );

    let lease = output(&server, &["lease", "grant", "10s"]);
    let id = String::from_utf8_lossy(&lease.stdout).trim().to_string();
    assert!(output(&server, &["lease", "keepalive", &id]).status.success());
    let shown: serde_json::Value =
        serde_json::from_slice(&output(&server, &["--json", "lease", "show", &id]).stdout).unwrap();
    assert_eq!(shown["lease"], id.as_str());
    assert!(output(&server, &["lease", "revoke", &id]).status.success());
    assert_eq!(output(&server, &["lease", "show", &id]).status.code(), Some(1));

    let health: serde_json::Value =
        serde_json::from_slice(&output(&server, &["--json", "health"]).stdout).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(output(&server, &["run", "x"]).status.code(), Some(2), "usage errors exit 2");
}

/// `lockctl watch` prints the state, then each change, one JSON object a line.
#[test]
fn watch_prints_the_state_then_each_change() {
    use std::io::{BufRead, BufReader};
    let server = TestServer::start(&[]);
    let mut watcher = lockctl(&server, &["--json", "watch", "watched", "--count", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running lockctl watch");
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut events = vec![lines.next().unwrap().unwrap()]; // the state: the watch is open
    assert!(output(&server, &["acquire", "watched", "--owner", "w"]).status.success());
    assert!(output(&server, &["release", "watched", "--owner", "w"]).status.success());
    events.extend(lines.map_while(Result::ok));
    assert!(watcher.wait().unwrap().success());
    let events: Vec<serde_json::Value> =
        events.iter().map(|line| serde_json::from_str(line).unwrap()).collect();
    let names: Vec<&str> = events.iter().map(|event| event["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["reset", "acquired", "released"]);
    assert_eq!(events[1]["owner"], "w");
}
