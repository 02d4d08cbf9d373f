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
    let mut child = Command::new(server_binary())
        .args(["--bind", "127.0.0.1", "--port", "0", "--secret", SECRET, "--storage", "memory"])
        .args(args)
        .env("RUST_LOG", "lockserver=debug")
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
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let api = Api::new(&base, SECRET);
        assert_eq!(api.acquire(json!({"resource": "logged", "owner": "o"})).await.status, 200);
        assert_eq!(api.with_secret("wrong").get("/locks").await.status, 401);
        assert_eq!(api.get("/locks/logged").await.status, 200);
    });
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
