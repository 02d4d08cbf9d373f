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

    // The blocking client outside async code, with the scope macro (also `non_blocking,`,
    // `expire = ...`, `shared,` and `semaphore = n,` forms, and `lock_scope!(async &client,
    // ...)` in async code).
    let total = tokio::task::spawn_blocking(|| {
        let client = blocking::Client::from_env()?;
        lock_scope!(&client, "ledger", { 1 + 1 })
    })
    .await
    .expect("the blocking task")?;
    println!("total {total}");

    // A semaphore of 4 permits, a reader of a read-write lock, and two locks at once.
    let permit = client.semaphore("gpu-pool", 4).acquire().await?;
    let reader = client.lock("config").shared().acquire().await?;
    let both = client.lock_many(&["account-a", "account-b"]).acquire().await?;
    println!("tokens {} {} {:?}", permit.token(), reader.token(), both.tokens());
    both.release().await?;
    reader.release().await?;
    permit.release().await?;
    Ok(())
}
