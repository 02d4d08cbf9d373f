//! The Rust client over HTTPS (a private CA, mutual TLS) and against API keys: each refusal of
//! the server decodes into its own error.

use std::time::Duration;

use lockserver_client::{Client, Error};
use lockserver_tests::{TempDir, TestCa, TestServer};

#[tokio::test]
async fn https_with_a_ca_file_and_a_client_certificate() {
    let dir = TempDir::new("client-tls");
    let ca = TestCa::new(&dir.path, "private");
    let server_cert = ca.server(&dir.path, "server");
    let worker = ca.client(&dir.path, "worker");
    let server = TestServer::start(&[
        "--tls-cert",
        server_cert.cert_file.to_str().unwrap(),
        "--tls-key",
        server_cert.key_file.to_str().unwrap(),
        "--tls-client-ca",
        ca.cert_file.to_str().unwrap(),
    ]);
    assert!(server.base.starts_with("https://"));
    let client = Client::builder()
        .addr(&server.base)
        .secret(&server.secret)
        .ca_file(&ca.cert_file)
        .client_cert(&worker.cert_file, &worker.key_file)
        .build()
        .unwrap();
    let guard = client.lock("over-tls").expire(Duration::from_secs(10)).acquire().await.unwrap();
    assert!(guard.token() > 0);
    guard.release().await.unwrap();

    let without_ca = Client::builder().addr(&server.base).secret(&server.secret).retries(0).build().unwrap();
    match without_ca.lock("x").try_acquire().await {
        Err(Error::Unavailable(message)) => assert!(message.contains("UnknownIssuer"), "{message}"),
        other => panic!("a server signed by an unknown CA was trusted: {other:?}"),
    }
    let without_cert = Client::builder()
        .addr(&server.base)
        .secret(&server.secret)
        .ca_file(&ca.cert_file)
        .retries(0)
        .build()
        .unwrap();
    assert!(matches!(without_cert.lock("y").try_acquire().await, Err(Error::Unavailable(_))));
    let missing = Client::builder().addr(&server.base).ca_file(dir.path.join("nope.pem")).build();
    assert!(matches!(missing, Err(Error::InvalidArgument(message)) if message.contains("nope.pem")));
}

#[tokio::test]
async fn forbidden_quota_and_rate_limit_are_errors_of_their_own() {
    let dir = TempDir::new("client-keys");
    let keys = dir.path.join("keys.toml");
    std::fs::write(
        &keys,
        "[[key]]\nname='reader'\nsecret='r'\nnamespace='n'\nrole='read'\n\
         [[key]]\nname='small'\nsecret='s'\nnamespace='n'\nrole='lock'\nmax_locks=1\nrate=3\n",
    )
    .unwrap();
    let server = TestServer::start_raw(&["--keys-file", keys.to_str().unwrap()], Some("s".into()));
    let as_key = |secret: &str| Client::builder().addr(&server.base).secret(secret).build().unwrap();
    let error = as_key("r").lock("a").try_acquire().await.unwrap_err();
    assert!(matches!(&error, Error::Forbidden(message) if message.contains("reader")), "{error:?}");
    assert_eq!(error.code(), "forbidden");

    let small = as_key("s");
    let _held = small.lock("one").expire(Duration::from_secs(30)).try_acquire().await.unwrap();
    let error = small.lock("two").try_acquire().await.unwrap_err();
    assert_eq!(error.code(), "quota_exceeded", "{error:?}");
    let mut limited = None;
    for _ in 0..50 {
        if let Err(error) = small.inspect("one").await {
            limited = Some(error);
            break;
        }
    }
    match limited.expect("50 requests at once exceed 3 per second") {
        Error::RateLimited { retry_after, .. } => assert_eq!(retry_after, Some(Duration::from_secs(1))),
        other => panic!("expected rate_limited: {other:?}"),
    }
}
