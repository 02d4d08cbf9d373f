//! The engine's answers as the protocol's reply bodies, with the stored names shown as the
//! caller's namespace sends them.

use lockserver_protocol::bodies::{
    GrantReply, HolderReply, LeaseReply, LockPageReply, LockReply, Mode, RefreshedReply,
};
use lockserver_protocol::millis;

use crate::engine::{Grant, HoldMode, LeaseInfo, LockInfo, LockPage, Refreshed};
use crate::security::Namespace;

/// A grant as `POST /acquire` answers it.
pub fn grant(grant: Grant, namespace: &Namespace) -> GrantReply {
    GrantReply {
        resource: namespace.show(&grant.resource),
        owner: grant.owner,
        token: grant.token.0,
        expires_in_ms: grant.expires_in.map(millis),
        value: grant.value,
    }
}

/// A refresh as `POST /refresh` answers it.
pub fn refreshed(refreshed: Refreshed) -> RefreshedReply {
    RefreshedReply { token: refreshed.token.0, expires_in_ms: refreshed.expires_in.map(millis) }
}

/// A held lock as inspection and listing show it.
pub fn lock(lock: LockInfo, namespace: &Namespace) -> LockReply {
    LockReply {
        resource: namespace.show(&lock.resource),
        owner: lock.owner,
        token: lock.token.0,
        expires_in_ms: lock.expires_in.map(millis),
        value: lock.value,
        waiters: lock.waiters,
        lease: lock.lease.map(|lease| namespace.show(&lease.0)),
        mode: mode(lock.mode),
        limit: lock.limit,
        holders: lock
            .holders
            .into_iter()
            .map(|holder| HolderReply {
                owner: holder.owner,
                token: holder.token.0,
                expires_in_ms: holder.expires_in.map(millis),
                mode: mode(holder.mode),
                lease: holder.lease.map(|lease| namespace.show(&lease.0)),
            })
            .collect(),
    }
}

/// A hold's mode as the protocol names it.
pub fn mode(mode: HoldMode) -> Mode {
    match mode {
        HoldMode::Exclusive => Mode::Exclusive,
        HoldMode::Shared => Mode::Shared,
        HoldMode::Permit => Mode::Permit,
    }
}

/// A page of held locks.
pub fn lock_page(page: LockPage, namespace: &Namespace) -> LockPageReply {
    LockPageReply {
        locks: page.locks.into_iter().map(|info| lock(info, namespace)).collect(),
        next: page.next.map(|next| namespace.show(&next)),
    }
}

/// A lease as granted or inspected.
pub fn lease(lease: LeaseInfo, namespace: &Namespace) -> LeaseReply {
    LeaseReply {
        lease: namespace.show(&lease.id.0),
        ttl: lease.ttl.as_secs_f64(),
        expires_in_ms: millis(lease.expires_in),
        locks: lease.locks.iter().map(|name| namespace.show(name)).collect(),
    }
}
