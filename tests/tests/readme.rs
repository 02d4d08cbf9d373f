//! The README's curl examples, as written, against the real server: every `sh` block of its
//! API section that calls curl runs in one bash script (with `localhost:8080` pointed at the
//! test's server), and the answers its comments show come back.

use std::process::Command;

use lockserver_tests::TestServer;

#[test]
fn the_readme_curl_examples_run() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed (apt-get install curl)");
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let api = &readme[readme.find("## The API").expect("an API section")..];
    let api = &api[..api.find("\n## Clients").expect("the clients section follows")];
    let blocks: Vec<&str> = api
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.contains("curl") && !block.contains("cargo run"))
        .collect();
    assert!(blocks.len() >= 7, "{} curl blocks", blocks.len());

    let server = TestServer::start_raw(&["--secret", "readme", "--storage", "memory"], Some("readme".into()));
    let addr = server.base.trim_start_matches("http://");
    let script = format!(
        "set -eu\nexport LOCKSERVER_SECRET=readme\nS=\"X-LOCKSERVER-SECRET: $LOCKSERVER_SECRET\"\n{}",
        blocks
            .iter()
            .map(|block| format!("{block}echo\n"))
            .collect::<String>()
            .replace("localhost:8080", addr)
    );
    let ran = Command::new("bash").arg("-c").arg(&script).output().expect("running bash");
    let output = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{script}\n{output}\n{}", String::from_utf8_lossy(&ran.stderr));
    for shown in [
        r#"{"resource":"nightly-report","owner":"worker-1","token":1,"expires_in_ms":30000,"value":"step 1"}"#,
        r#""error":"locked""#,
        r#""owner":"worker-1""#,
        r#"{"released":true}"#,
        r#"{"resource":"jobs/a","owner":"w""#,
        r#"{"locks":["#,
        r#"{"ttl":10.0}"#,
        r#""locks":["leader"]"#,
        r#""revoked":true"#,
        r#""holders":["job-1","job-2"]"#,
        r#""error":"limit_mismatch""#,
        r#"{"grants":[{"resource":"account-a""#,
    ] {
        assert!(output.contains(shown), "the README shows {shown}, the server answered:\n{output}");
    }
}

/// The README's Rust example is `client-rs/examples/readme.rs`, word for word, and it runs.
#[test]
fn the_readme_rust_example_is_the_example_and_runs() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let rust = &readme[readme.find("### Rust").expect("a Rust section")..];
    let block =
        rust.split("```rust\n").nth(1).and_then(|block| block.split("```").next()).expect("a rust block");
    let example = std::fs::read_to_string(format!("{root}/client-rs/examples/readme.rs")).unwrap();
    assert!(example.contains(block.trim()), "README's Rust block differs from client-rs/examples/readme.rs");

    let server = TestServer::start_raw(&["--secret", "readme", "--storage", "memory"], Some("readme".into()));
    let ran = Command::new(env!("CARGO"))
        .args(["run", "-q", "-p", "lockserver-client", "--example", "readme"])
        .current_dir(root)
        .env("LOCKSERVER_ADDR", &server.base)
        .env("LOCKSERVER_SECRET", "readme")
        .output()
        .expect("running cargo");
    let output = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{output}\n{}", String::from_utf8_lossy(&ran.stderr));
    assert!(output.contains("token ") && output.contains("total 2"), "{output}");
}
