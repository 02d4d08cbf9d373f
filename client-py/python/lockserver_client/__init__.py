"""Python client of lockserver, a distributed lock service.

A thin binding of the Rust client: every call goes through it, the GIL is released while a
call waits, and ``*_async`` methods and ``async with`` work under asyncio.

    from lockserver_client import LockserverClient

    client = LockserverClient()  # LOCKSERVER_ADDR, LOCKSERVER_SECRET, LOCKSERVER_OWNER
    with client.lock("nightly-report", expire=30) as lock:
        print(lock.token)        # the fencing token
        lock.set_value("step 1") # seen by the next holder if this process dies
"""

from ._native import (
    __version__,
    BadRequest,
    Forbidden,
    InvalidArgument,
    Lease,
    LimitMismatch,
    Lock,
    LockHeld,
    Locks,
    LockLost,
    LockserverClient,
    LockserverError,
    MultiLock,
    NoSuchLease,
    NotHeld,
    NotOwner,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    Unavailable,
    Watch,
)

__all__ = [
    "__version__",
    "BadRequest",
    "Forbidden",
    "InvalidArgument",
    "Lease",
    "LimitMismatch",
    "Lock",
    "LockHeld",
    "Locks",
    "LockLost",
    "LockserverClient",
    "LockserverError",
    "MultiLock",
    "NoSuchLease",
    "NotHeld",
    "NotOwner",
    "QuotaExceeded",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "Watch",
]
