//! The server's log: JSON lines with `--log-format json`, a debug line per request (never the
//! secret), grants at debug, start-up lines that name only the chosen storage, and no colour
//! codes when stderr is not a terminal.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use lockserver_tests::{server_binary, Api};
use serde_json::{json, Value};

const SECRET: &str = "a-secret-that-must-never-be-logged";

/// Runs a server with `args` and RUST_LOG=lockserver=debug, makes a few requests, stops it;
/// returns what it wrote on stderr.
fn log_of(args: &[&str]) -> String {
    log_with(args, "lockserver=debug", |api| async move {
        assert_eq!(api.acquire(json!({"resource": "logged", "owner": "o"})).await.status, 200);
        assert_eq!(api.with_secret("wrong").get("/locks").await.status, 401);
        assert_eq!(api.get("/locks/logged").await.status, 200);
    })
}

/// Runs a server with `args` and this RUST_LOG, runs `requests` against it (with [`SECRET`]),
/// stops it; returns what it wrote on stderr.
fn log_with<F: std::future::Future<Output = ()>>(
    args: &[&str],
    rust_log: &str,
    requests: impl FnOnce(Api) -> F,
) -> String {
    let mut child = Command::new(server_binary())
        .args(["--bind", "127.0.0.1", "--port", "0", "--secret", SECRET, "--storage", "memory"])
        .args(args)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the server");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let base = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the server exited");
        if let Some(addr) = line.trim().strip_prefix("lockserver listening on ") {
            break addr.to_string();
        }
    };
    tokio::runtime::Runtime::new().unwrap().block_on(requests(Api::new(&base, SECRET)));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    log
}

#[test]
fn json_lines_with_a_line_per_request_and_never_the_secret() {
    let log = log_of(&["--log-format", "json"]);
    assert!(!log.contains(SECRET), "the secret was logged:\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let request = |route: &str, status: u64| {
        lines.iter().any(|line| {
            line["message"] == "request"
                && line["route"] == route
                && line["status"] == status
                && line["method"].is_string()
        })
    };
    assert!(request("/acquire", 200), "{log}");
    assert!(request("/locks", 401), "refusals are logged too: {log}");
    assert!(request("/locks/{resource:.+}", 200), "the route's pattern, not the name: {log}");
    assert!(lines.iter().any(|line| line["message"] == "granted" && line["resource"] == "logged"), "{log}");
    assert!(
        lines.iter().any(|line| line["message"].as_str().is_some_and(|m| m.contains("memory storage"))),
        "{log}"
    );
    assert!(!log.contains("data_dir"), "memory storage has no data dir to report: {log}");
    assert!(lines
        .iter()
        .any(|line| line["message"].as_str().is_some_and(|m| m.starts_with("shutting down"))));
}

#[test]
fn text_lines_without_colour_codes_off_a_terminal() {
    let log = log_of(&[]);
    assert!(log.contains("lockserver started") && log.contains("request"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log that is not a terminal:\n{log}");
    assert!(!log.contains(SECRET));
}

/// At RUST_LOG=trace, with a keys file: no secret in any line (the plain one, a key's, a wrong
/// one), and the audit target names the key and the peer of a failed authentication and of a
/// forced release.
#[test]
fn no_secret_at_trace_and_an_audit_of_failures_and_admin_actions() {
    const KEY_SECRET: &str = "a-key-secret-that-must-never-be-logged";
    const WRONG: &str = "a-wrong-secret-that-must-never-be-logged";
    let dir = lockserver_tests::TempDir::new("audit");
    let keys = dir.path.join("keys.toml");
    let text = format!(
        "[[key]]\nname = \"audited-tenant\"\nsecret = \"{KEY_SECRET}\"\nnamespace = \"t\"\nrole = \"lock\"\n"
    );
    std::fs::write(&keys, text).unwrap();
    let log = log_with(
        &["--keys-file", keys.to_str().unwrap(), "--log-format", "json"],
        "trace",
        |api| async move {
            let tenant = api.with_secret(KEY_SECRET);
            assert_eq!(
                tenant.acquire(json!({"resource": "r", "owner": "o", "expire": 30})).await.status,
                200
            );
            assert_eq!(api.with_secret(WRONG).get("/locks").await.status, 401);
            let forced = api
                .post("/release?namespace=t", json!({"resource": "r", "owner": "ops", "force": true}))
                .await;
            assert_eq!(forced.status, 200, "{:?}", forced.body);
        },
    );
    for secret in [SECRET, KEY_SECRET, WRONG] {
        assert!(!log.contains(secret), "a secret was logged at trace:\n{log}");
    }
    let audit: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "audit")
        .collect();
    assert!(
        audit.iter().any(|line| line["message"] == "authentication failed"
            && line["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:"))),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|line| line["message"] == "forced release"
            && line["key"] == "secret"
            && line["resource"] == "r"
            && line["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:"))),
        "{audit:?}"
    );
}
