//! HTTPS on the real binary with certificates made for the run: a private CA trusted by the
//! client, a client without it refused, mutual TLS, the certificate swapped on SIGHUP while a
//! connection stays open, bad files refused at start, and the warning for plain HTTP on a
//! public address.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockserver_tests::{server_binary, start_expecting_failure, Issued, TempDir, TestCa, TestServer};
use serde_json::json;

fn https_client(ca: Option<&TestCa>, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(1);
    if let Some(ca) = ca {
        let pem = std::fs::read(&ca.cert_file).unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    if let Some(issued) = identity {
        let mut pem = std::fs::read(&issued.cert_file).unwrap();
        pem.extend(std::fs::read(&issued.key_file).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// A server speaking HTTPS with a certificate `ca` signed; `extra` flags after the TLS ones.
fn tls_server(dir: &TempDir, ca: &TestCa, extra: &[&str]) -> (TestServer, Issued) {
    let issued = ca.server(&dir.path, "server");
    let mut args = vec![
        "--tls-cert",
        issued.cert_file.to_str().unwrap(),
        "--tls-key",
        issued.key_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (TestServer::start(&args), issued)
}

async fn acquire_status(server: &TestServer, http: reqwest::Client, resource: &str) -> Result<u16, String> {
    let response = http
        .post(format!("{}/acquire", server.base))
        .header(lockserver_tests::SECRET_HEADER, &server.secret)
        .json(&json!({"resource": resource, "owner": "o"}))
        .send()
        .await;
    response.map(|r| r.status().as_u16()).map_err(|error| format!("{error:?}"))
}

#[tokio::test]
async fn https_with_a_private_ca_and_nothing_else() {
    let dir = TempDir::new("tls");
    let ca = TestCa::new(&dir.path, "private");
    let (server, _) = tls_server(&dir, &ca, &[]);
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    assert_eq!(acquire_status(&server, https_client(Some(&ca), None), "a").await, Ok(200));

    let untrusted = acquire_status(&server, https_client(None, None), "b").await;
    assert!(untrusted.as_ref().is_err_and(|e| e.contains("UnknownIssuer")), "{untrusted:?}");
    let plain = server.base.replace("https://", "http://");
    let answer = reqwest::Client::new().get(format!("{plain}/health")).send().await;
    assert!(answer.is_err(), "plain HTTP is not served: {answer:?}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let dir = TempDir::new("mtls");
    let ca = TestCa::new(&dir.path, "private");
    let other = TestCa::new(&dir.path, "other");
    let (server, _) = tls_server(&dir, &ca, &["--tls-client-ca", ca.cert_file.to_str().unwrap()]);
    let worker = ca.client(&dir.path, "worker");
    let stranger = other.client(&dir.path, "stranger");
    assert_eq!(acquire_status(&server, https_client(Some(&ca), Some(&worker)), "a").await, Ok(200));
    assert!(acquire_status(&server, https_client(Some(&ca), None), "b").await.is_err());
    assert!(acquire_status(&server, https_client(Some(&ca), Some(&stranger)), "c").await.is_err());
}

/// SIGHUP swaps the certificate for new handshakes; a connection opened before keeps working
/// (its client trusts only the old CA, so a new connection of its own would be refused).
#[tokio::test]
async fn sighup_swaps_the_certificate_without_dropping_connections() {
    let dir = TempDir::new("tls-reload");
    let old_ca = TestCa::new(&dir.path, "old");
    let new_ca = TestCa::new(&dir.path, "new");
    let (server, files) = tls_server(&dir, &old_ca, &[]);
    let kept = https_client(Some(&old_ca), None);
    assert_eq!(acquire_status(&server, kept.clone(), "before").await, Ok(200));

    let renewed = new_ca.server(&dir.path, "renewed");
    std::fs::copy(&renewed.cert_file, &files.cert_file).unwrap();
    std::fs::copy(&renewed.key_file, &files.key_file).unwrap();
    server.hangup();
    let start = Instant::now();
    while acquire_status(&server, https_client(Some(&new_ca), None), "probe").await != Ok(200) {
        assert!(start.elapsed() < Duration::from_secs(10), "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(acquire_status(&server, https_client(Some(&old_ca), None), "new-conn").await.is_err());
    assert_eq!(acquire_status(&server, kept, "after").await, Ok(200), "the open connection was kept");

    std::fs::write(&files.key_file, "not a key").unwrap();
    server.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(acquire_status(&server, https_client(Some(&new_ca), None), "still").await, Ok(200));
}

#[test]
fn unusable_tls_files_stop_start_up_naming_the_file() {
    let dir = TempDir::new("tls-bad");
    let ca = TestCa::new(&dir.path, "private");
    let good = ca.server(&dir.path, "good");
    let other = ca.server(&dir.path, "other");
    let missing = dir.path.join("missing.pem");
    let garbage = dir.path.join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let (cert, key) = (good.cert_file.to_str().unwrap(), good.key_file.to_str().unwrap());
    for (args, named) in [
        (vec!["--tls-cert", missing.to_str().unwrap(), "--tls-key", key], missing.to_str().unwrap()),
        (vec!["--tls-cert", garbage.to_str().unwrap(), "--tls-key", key], garbage.to_str().unwrap()),
        (
            vec!["--tls-cert", cert, "--tls-key", other.key_file.to_str().unwrap()],
            other.key_file.to_str().unwrap(),
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", garbage.to_str().unwrap()],
            garbage.to_str().unwrap(),
        ),
    ] {
        let (status, stderr) = start_expecting_failure(&args);
        assert!(!status.success(), "{args:?} started");
        assert!(stderr.contains(named), "{args:?}: the message names {named}: {stderr}");
    }
}

/// Plain HTTP on a non-loopback address logs a warning at start.
#[test]
fn plain_http_on_a_public_address_warns() {
    let mut child = Command::new(server_binary())
        .args(["--bind", "0.0.0.0", "--port", "0", "--secret", "s", "--storage", "memory"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, warned) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let _ = found.send(lines.any(|line| line.contains("plain HTTP")));
    });
    // Bounded: a server that never warns is killed after 10 s, which ends the reader.
    let warned = warned.recv_timeout(Duration::from_secs(10)).unwrap_or(false);
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no warning about plain HTTP on 0.0.0.0");
}
