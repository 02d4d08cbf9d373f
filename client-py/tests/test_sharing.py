"""Semaphores, read-write locks and multi-locks from Python, sync and async, against the real server."""

import asyncio
import threading
import time

import pytest

from lockserver_client import InvalidArgument, LimitMismatch, LockHeld, MultiLock


def test_a_semaphore_admits_up_to_its_limit(client):
    inside = {"now": 0, "most": 0}
    guard = threading.Lock()

    def worker():
        for _ in range(5):
            with client.semaphore("pool", 3, expire=10) as permit:
                assert permit.held and permit.token > 0
                with guard:
                    inside["now"] += 1
                    inside["most"] = max(inside["most"], inside["now"])
                time.sleep(0.005)
                with guard:
                    inside["now"] -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert inside["most"] == 3


def test_semaphore_errors_and_inspect(client):
    first = client.semaphore("gpu", 2, hold_until_released=True)
    second = client.semaphore("gpu", 2, hold_until_released=True)
    with first, second:
        assert second.token > first.token
        info = client.inspect("gpu")
        assert (info["mode"], info["limit"]) == ("permit", 2)
        assert [holder["owner"] for holder in info["holders"]] == [first.owner, second.owner]
        with pytest.raises(LockHeld) as held:
            with client.semaphore("gpu", 2, wait=0):
                pass
        assert held.value.holders == [first.owner, second.owner]
        with pytest.raises(LimitMismatch) as mismatch:
            with client.semaphore("gpu", 3, wait=0):
                pass
        assert (mismatch.value.code, mismatch.value.limit) == ("limit_mismatch", 2)
    assert client.inspect("gpu") is None
    with pytest.raises(InvalidArgument):
        client.lock("r", mode="read")


def test_readers_share_and_a_writer_waits(client):
    with client.lock("cfg", mode="shared", expire=10) as r1, client.lock("cfg", mode="shared", expire=10) as r2:
        assert client.inspect("cfg")["mode"] == "shared"
        assert len(client.inspect("cfg")["holders"]) == 2
        assert not client.try_lock("cfg")
        assert r1.token != r2.token
    with client.lock("cfg", expire=10):
        with pytest.raises(LockHeld):
            with client.lock("cfg", mode="shared", wait=0):
                pass


def test_lock_many_takes_all_or_none(client):
    with client.lock_many(["a", "b", "c"], expire=10) as locks:
        assert isinstance(locks, MultiLock) and locks.held
        assert len(locks.tokens) == 3 and locks.tokens == sorted(locks.tokens)
        assert client.inspect("b")["owner"] == locks.owner
        with pytest.raises(LockHeld):
            with client.lock_many(["c", "d"], wait=0):
                pass
        assert client.inspect("d") is None
    assert client.inspect("a") is None


def test_async_forms(client):
    async def main():
        async with client.semaphore_async("apool", 2, expire=10) as permit:
            assert permit.held
        async with client.lock_async("arw", mode="shared", expire=10) as reader:
            assert reader.held
        async with client.lock_many_async(["x", "y"], expire=10) as locks:
            assert len(locks.tokens) == 2
        assert client.inspect("x") is None

    asyncio.run(main())
