//! The one-shot commands: acquire, release, inspect, list, lease and health.

use std::time::Duration;

use clap::Subcommand;
use lockserver_client::{Client, LockInfo};
use lockserver_protocol::durations::parse_duration;
use serde_json::json;

use crate::output::{lease_json, lock_json, print_event, print_locks, seconds};
use crate::Command;

/// `lockctl lease ...`.
#[derive(Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease with this time to live and print its id (nothing keeps it alive).
    Grant {
        /// Its time to live (`10s`, `1m`).
        #[arg(value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Keep lease ID alive once.
    Keepalive {
        /// The lease id.
        id: String,
    },
    /// Revoke lease ID, releasing its locks.
    Revoke {
        /// The lease id.
        id: String,
    },
    /// Show lease ID and its locks.
    Show {
        /// The lease id.
        id: String,
    },
}

/// Runs one command other than `run`, printing its answer.
pub async fn one_shot(client: &Client, command: Command, json: bool) -> Result<(), String> {
    match command {
        Command::Run(_) => unreachable!("run is not a one-shot command"),
        Command::Acquire { name, expire, wait, value, owner: _ } => {
            let mut lock = client.lock(&name).owner(client.owner()).wait(wait.unwrap_or(Duration::ZERO));
            lock = match expire {
                Some(expire) => lock.expire(expire),
                None => lock.hold_until_released(),
            };
            if let Some(value) = value {
                lock = lock.value(value);
            }
            let guard = lock.acquire().await.map_err(|error| format!("cannot acquire {name}: {error}"))?;
            let owner = guard.owner().to_string();
            let token = guard.detach();
            if json {
                println!(
                    "{}",
                    json!({"resource": name, "owner": owner, "token": token, "expire": expire.map(seconds)})
                );
            } else {
                println!("{token}");
            }
        }
        Command::Release { name, owner, token } => {
            client
                .release_by_name(&name, &owner, token)
                .await
                .map_err(|error| format!("cannot release {name}: {error}"))?;
            if json {
                println!("{}", json!({"resource": name, "released": true}));
            } else {
                println!("released {name}");
            }
        }
        Command::Watch { name, prefix, count } => {
            let mut watch = match (name, prefix) {
                (Some(name), _) => client.watch(name),
                (None, prefix) => client.watch_prefix(prefix.unwrap_or_default()),
            };
            for _ in 0..count.unwrap_or(usize::MAX) {
                let event = watch.next().await.map_err(|error| format!("cannot watch: {error}"))?;
                print_event(&event, json);
            }
        }
        Command::Inspect { name } => {
            let info = client.inspect(&name).await.map_err(|error| error.to_string())?;
            match (info, json) {
                (Some(info), true) => println!("{}", lock_json(&info)),
                (None, true) => println!("null"),
                (Some(info), false) => print_locks(&[info]),
                (None, false) => println!("{name} is free"),
            }
        }
        Command::List { prefix, limit } => {
            let mut locks: Vec<LockInfo> = Vec::new();
            let mut listing = client.list_all(&prefix, limit.unwrap_or(1000).min(1000));
            while let Some(page) = listing.next_page().await.map_err(|error| error.to_string())? {
                locks.extend(page);
                if limit.is_some_and(|limit| locks.len() >= limit) {
                    break;
                }
            }
            locks.truncate(limit.unwrap_or(usize::MAX));
            if json {
                println!("{}", serde_json::Value::Array(locks.iter().map(lock_json).collect()));
            } else {
                print_locks(&locks);
            }
        }
        Command::Lease(lease) => lease_command(client, lease, json).await?,
        Command::Health => {
            let health = client.health().await.map_err(|error| error.to_string())?;
            if json {
                println!(
                    "{}",
                    json!({"status": health.status, "backend": health.backend, "version": health.version})
                );
            } else {
                println!("{} (backend {}, version {})", health.status, health.backend, health.version);
            }
        }
    }
    Ok(())
}

async fn lease_command(client: &Client, command: LeaseCommand, json: bool) -> Result<(), String> {
    let failed = |error: lockserver_client::Error| error.to_string();
    match command {
        LeaseCommand::Grant { ttl } => {
            let lease = client.grant_lease_by_name(ttl).await.map_err(failed)?;
            if json {
                println!("{}", lease_json(&lease));
            } else {
                println!("{}", lease.id);
            }
        }
        LeaseCommand::Keepalive { id } => {
            let ttl = client.keepalive_lease(&id).await.map_err(failed)?;
            if json {
                println!("{}", json!({"lease": id, "ttl": seconds(ttl)}));
            } else {
                println!("{id}: {}s to live", seconds(ttl));
            }
        }
        LeaseCommand::Revoke { id } => {
            client.revoke_lease(&id).await.map_err(failed)?;
            if json {
                println!("{}", json!({"lease": id, "revoked": true}));
            } else {
                println!("revoked {id}");
            }
        }
        LeaseCommand::Show { id } => {
            let lease = client.lease_info(&id).await.map_err(failed)?;
            if json {
                println!("{}", lease_json(&lease));
            } else {
                println!("{}: ttl {}s, locks: {}", lease.id, seconds(lease.ttl), lease.locks.join(", "));
            }
        }
    }
    Ok(())
}
