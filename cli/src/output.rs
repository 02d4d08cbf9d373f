//! How answers are printed: aligned tables for people, JSON for scripts (`--json`).

use std::time::Duration;

use lockserver_client::{HolderInfo, LeaseInfo, LockInfo, WatchEvent, WatchEventKind};
use serde_json::{json, Value};

/// A duration as seconds, to the millisecond.
pub fn seconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A held lock as JSON (the fields of `GET /locks/{name}`, times in seconds).
pub fn lock_json(info: &LockInfo) -> Value {
    json!({
        "resource": info.resource,
        "owner": info.owner,
        "token": info.token,
        "expires_in": info.expires_in.map(seconds),
        "value": info.value,
        "waiters": info.waiters,
        "lease": info.lease,
        "mode": info.mode.as_str(),
        "limit": info.limit,
        "holders": info.holders.iter().map(|holder| json!({
            "owner": holder.owner,
            "token": holder.token,
            "expires_in": holder.expires_in.map(seconds),
            "mode": holder.mode.as_str(),
            "lease": holder.lease,
        })).collect::<Vec<_>>(),
    })
}

/// A lease as JSON.
pub fn lease_json(lease: &LeaseInfo) -> Value {
    json!({"lease": lease.id, "ttl": seconds(lease.ttl), "locks": lease.locks})
}

/// Held locks as a table: name, owner, token, time left, waiters, lease, mode (a row per
/// holder of a shared lock or semaphore; the mode says `permit 2/4` for a semaphore's).
pub fn print_locks(locks: &[LockInfo]) {
    let mut rows =
        vec![["RESOURCE", "OWNER", "TOKEN", "EXPIRES IN", "WAITERS", "LEASE", "MODE"].map(String::from)];
    for info in locks {
        // A server older than the holders list names only the one holder.
        let single = [HolderInfo {
            owner: info.owner.clone(),
            token: info.token,
            expires_in: info.expires_in,
            mode: info.mode,
            lease: info.lease.clone(),
        }];
        let holders = if info.holders.is_empty() { &single[..] } else { &info.holders[..] };
        rows.extend(holders.iter().map(|holder| {
            let mode = match info.limit {
                Some(limit) => format!("permit {}/{limit}", holders.len()),
                None => holder.mode.as_str().to_string(),
            };
            [
                info.resource.clone(),
                holder.owner.clone(),
                holder.token.to_string(),
                holder.expires_in.map_or("-".to_string(), |left| format!("{:.1}s", left.as_secs_f64())),
                info.waiters.to_string(),
                holder.lease.clone().unwrap_or_else(|| "-".to_string()),
                mode,
            ]
        }));
    }
    let widths: Vec<usize> =
        (0..7).map(|column| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// One watch event: a JSON object a line, or a line for people (a `reset` is followed by the
/// table of what is held).
pub fn print_event(event: &WatchEvent, json: bool) {
    if json {
        let mut line = json!({
            "id": event.id,
            "event": event.kind.as_str(),
            "resource": event.resource,
            "owner": event.owner,
            "token": event.token,
            "expires_in": event.expires_in.map(seconds),
            "value": event.value,
            "waiters": event.waiters,
        });
        if event.kind == WatchEventKind::Reset {
            line["locks"] = event.locks.iter().map(lock_json).collect();
        }
        println!("{line}");
    } else if event.kind == WatchEventKind::Reset {
        println!("{} reset: {} held", event.id, event.locks.len());
        if !event.locks.is_empty() {
            print_locks(&event.locks);
        }
    } else {
        let owner = event.owner.as_deref().unwrap_or("-");
        let token = event.token.map_or("-".to_string(), |token| token.to_string());
        let resource = event.resource.as_deref().unwrap_or("");
        println!("{} {} {resource} owner={owner} token={token}", event.id, event.kind.as_str());
    }
}
