//! The Rust example of the README (kept identical to it): `cargo run -p lockserver-client --example readme`
//! against a server, with LOCKSERVER_ADDR and LOCKSERVER_SECRET set.

use lockserver_client::{blocking, lock_scope, Client, Error};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let client = Client::from_env()?;
    let guard = client.lock("nightly-report").expire(Duration::from_secs(30)).acquire().await?;
    println!("token {}", guard.token());
    guard.release().await?;

    // The blocking client outside async code, with the scope macro (also `non_blocking,`
    // and `expire = ...` forms, and `lock_scope!(async &client, ...)` in async code).
    let total = tokio::task::spawn_blocking(|| {
        let client = blocking::Client::from_env()?;
        lock_scope!(&client, "ledger", { 1 + 1 })
    })
    .await
    .expect("the blocking task")?;
    println!("total {total}");
    Ok(())
}
