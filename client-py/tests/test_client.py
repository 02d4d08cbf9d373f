"""The Python client against the real server binary."""

import asyncio
import multiprocessing
import os
import threading
import time

import pytest

from lockserver_client import (
    BadRequest,
    LockHeld,
    LockLost,
    LockserverClient,
    LockserverError,
    NoSuchLease,
    NotHeld,
    NotOwner,
    Unauthorized,
    Unavailable,
)


def test_reference_acquire_and_release(server):
    first = LockserverClient(addr=server.addr, owner="worker-1", secret=server.secret)
    second = LockserverClient(addr=server.addr, owner="worker-2", secret=server.secret)
    assert first.owner == "worker-1"
    assert first.acquire("res") is True
    assert first.acquire("res") is True  # idempotent for the same owner
    assert second.acquire("res", blocking=False) is False
    with pytest.raises(NotOwner):
        second.release("res")
    first.release("res")
    with pytest.raises(NotHeld):
        first.release("res")
    assert first.acquire("res", expire=0.5) is True
    started = time.monotonic()
    assert second.acquire("res") is True  # waits for the expiry
    assert time.monotonic() - started >= 0.3
    second.release("res")


def test_with_lock_token_value_and_release(client):
    with client.lock("job", expire=5, value="started") as lock:
        assert lock.held
        assert lock.token > 0
        assert lock.value == "started"
        assert lock.resource == "job"
        lock.set_value("half done")
        assert lock.value == "half done"
        lock.refresh()
        assert not lock.lost
        info = client.inspect("job")
        assert info["owner"] == lock.owner and info["value"] == "half done"
    assert not lock.held
    assert client.inspect("job") is None
    with pytest.raises(NotHeld):
        lock.token


def test_with_releases_on_exception(client):
    with pytest.raises(RuntimeError):
        with client.lock("boom"):
            raise RuntimeError("the block failed")
    assert client.inspect("boom") is None


def test_try_lock(client):
    held = client.try_lock("busy")
    assert held and held.held
    assert not client.try_lock("busy")
    with pytest.raises(LockHeld) as raised:
        with client.lock("busy", wait=0.2):
            pass
    assert raised.value.owner == held.owner
    assert raised.value.code == "locked"
    held.release()
    again = client.try_lock("busy")
    assert again
    again.release()
    again.release()  # releasing twice is a no-op


def test_keepalive_and_lost(server, client):
    with client.lock("long", expire=1) as lock:
        time.sleep(2.5)
        assert not lock.lost
        assert client.inspect("long")["token"] == lock.token
    # Taken over behind the guard's back: the keepalive notices, release says so.
    lock = client.lock("taken", expire=1)
    lock.__enter__()
    thief = LockserverClient(addr=server.addr, owner=lock.owner, secret=server.secret)
    thief.release("taken")
    deadline = time.monotonic() + 3
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.lost
    with pytest.raises(LockLost):
        lock.release()


def test_leases(client):
    with client.lease(1) as lease:
        assert lease.ttl == 1.0 and lease.id
        with client.lock("leader", lease=lease) as lock:
            time.sleep(2)  # longer than the ttl: the lease keeps itself alive
            assert not lease.lost
            assert client.inspect("leader")["lease"] == lease.id
            lease.keepalive()
            lock_token = lock.token
        assert lock_token > 0
        with client.lock("follower", lease=lease.id):
            pass
        client.lock("kept", lease=lease).__enter__()
    assert client.inspect("kept") is None  # revoking the lease released it
    with pytest.raises(NoSuchLease):
        with client.lock("orphan", lease=lease.id):
            pass


def _increment_under_lock(addr, secret, path, rounds):
    client = LockserverClient(addr=addr, secret=secret)
    for _ in range(rounds):
        with client.lock("counter-file", expire=10):
            with open(path) as f:
                value = int(f.read())
            time.sleep(0.001)
            with open(path, "w") as f:
                f.write(str(value + 1))


def test_threads_and_processes_exclude_each_other(server, tmp_path):
    path = str(tmp_path / "counter")
    with open(path, "w") as f:
        f.write("0")
    threads = [
        threading.Thread(target=_increment_under_lock, args=(server.addr, server.secret, path, 10)) for _ in range(8)
    ]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_increment_under_lock, args=(server.addr, server.secret, path, 10)) for _ in range(8)
    ]
    for worker in threads + processes:
        worker.start()
    for thread in threads:
        thread.join(60)
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    with open(path) as f:
        assert int(f.read()) == 160


def test_asyncio_tasks_exclude_each_other(client):
    counter = {"value": 0}

    async def worker():
        for _ in range(5):
            async with client.lock_async("async-counter", expire=10) as lock:
                assert lock.held
                seen = counter["value"]
                await asyncio.sleep(0.001)
                counter["value"] = seen + 1
                await lock.set_value_async(str(seen + 1))

    async def main():
        await asyncio.gather(*(worker() for _ in range(8)))
        assert await client.acquire_async("plain") is True
        await client.release_async("plain")
        held = await client.try_lock_async("plain")
        assert held
        assert not await client.try_lock_async("plain")
        await held.release_async()
        async with client.lease_async(5) as lease:
            async with client.lock_async("under-lease", lease=lease):
                await lease.keepalive_async()

    asyncio.run(main())
    assert counter["value"] == 40


def test_the_event_loop_keeps_running_while_a_lock_is_awaited(client):
    holder = client.try_lock("slow")

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, holder.release)
        async with client.lock_async("slow"):
            pass
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 10


def test_gil_is_released_while_waiting(client):
    holder = client.try_lock("gil")
    progress = []
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            progress.append(1)
            time.sleep(0.01)

    spinner = threading.Thread(target=spin)
    spinner.start()
    threading.Timer(1.0, holder.release).start()
    started = time.monotonic()
    with client.lock("gil"):
        waited = time.monotonic() - started
    stop.set()
    spinner.join()
    assert waited >= 0.8
    assert len(progress) >= 40, "the spinning thread ran while the other waited"


def test_errors_when_down_or_unauthorized(server):
    wrong = LockserverClient(addr=server.addr, secret="wrong")
    with pytest.raises(Unauthorized) as raised:
        wrong.acquire("x")
    assert isinstance(raised.value, LockserverError)
    assert raised.value.code == "unauthorized"
    addr = server.addr
    server.stop()
    down = LockserverClient(addr=addr, secret=server.secret)
    with pytest.raises(Unavailable):
        down.acquire("x")
    with pytest.raises(Unavailable):
        with down.lock("x"):
            pass


def test_configuration_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("LOCKSERVER_ADDR", server.addr)
    monkeypatch.setenv("LOCKSERVER_SECRET", server.secret)
    monkeypatch.setenv("LOCKSERVER_OWNER", "from-env")
    client = LockserverClient()
    assert client.owner == "from-env"
    assert client.acquire("env") is True
    assert client.inspect("env")["owner"] == "from-env"


def test_bad_arguments(client):
    with pytest.raises(ValueError):
        client.lock("x", expire=-1)
    with pytest.raises(LockserverError):
        client.acquire("")  # the server refuses an empty name


def test_try_lock_works_in_with_whether_or_not_the_lock_is_free(client):
    with client.try_lock("shared-job") as mine:
        assert mine and mine.token > 0
        with client.try_lock("shared-job") as other:
            assert not other  # held by mine: entered all the same, nothing to release
        assert client.inspect("shared-job")["owner"] == mine.owner
    assert client.inspect("shared-job") is None


def test_locks_expire_by_default_unless_held_until_released(server, client):
    with client.lock("default-expiry") as lock:
        left = client.inspect("default-expiry")["expires_in"]
        assert 25 < left <= 30
        assert not lock.lost
    with client.lock("forever", hold_until_released=True):
        assert client.inspect("forever")["expires_in"] is None
    with pytest.raises(BadRequest) as refused:
        client.lock("both", expire=5, hold_until_released=True)
    assert isinstance(refused.value, ValueError) and refused.value.code == "bad_request"
    never = LockserverClient(addr=server.addr, secret=server.secret, default_expire=None)
    with never.lock("configured"):
        assert never.inspect("configured")["expires_in"] is None
    short = LockserverClient(addr=server.addr, secret=server.secret, default_expire=2)
    with short.lock("short"):
        assert short.inspect("short")["expires_in"] <= 2
    # The reference API keeps its meaning: without expire, held until released.
    assert client.acquire("reference") is True
    assert client.inspect("reference")["expires_in"] is None
    client.release("reference")


def _hold_and_die(addr, secret):
    dying = LockserverClient(addr=addr, secret=secret, default_expire=1)
    dying.lock("crashed").__enter__()
    os._exit(0)  # dies holding it: no release, no keepalive


def test_a_holder_that_dies_frees_its_default_lock(server, client):
    process = multiprocessing.get_context("spawn").Process(target=_hold_and_die, args=(server.addr, server.secret))
    process.start()
    process.join(30)
    assert client.inspect("crashed") is not None
    started = time.monotonic()
    with client.lock("crashed", wait=10):
        assert time.monotonic() - started < 3


def test_list_walks_every_page(client):
    locks = [client.lock(f"jobs/{i:02}") for i in range(25)]
    for lock in locks:
        lock.__enter__()
    with client.lock("elsewhere"):
        names = [info["resource"] for info in client.list("jobs/", page_size=10)]
    assert names == [f"jobs/{i:02}" for i in range(25)]
    assert all(info["owner"] for info in client.list("jobs/"))
    for lock in locks:
        lock.release()
    assert list(client.list("jobs/")) == []


def test_version_and_timeouts(server):
    import lockserver_client

    assert lockserver_client.__version__.count(".") == 2
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    addr = "127.0.0.1:%d" % silent.getsockname()[1]
    quick = LockserverClient(addr=addr, secret="s", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        quick.try_lock("r")
    assert time.monotonic() - started < 5
    slow = LockserverClient(addr=addr, secret="s")
    started = time.monotonic()
    with pytest.raises(Unavailable):
        slow.try_lock("r", timeout=0.3)
    assert time.monotonic() - started < 5
    silent.close()


def test_the_readme_example_runs(server):
    """The README's Python example, as written, against a real server."""
    import pathlib
    import re
    import subprocess
    import sys

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Python") :]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "LOCKSERVER_ADDR": server.addr, "LOCKSERVER_SECRET": server.secret}
    ran = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "got it, token" in ran.stdout and "held by" in ran.stdout, ran.stdout


def test_cancelling_an_awaited_lock_leaves_the_queue(client):
    holder = client.try_lock("cancel-me")

    async def waiting():
        task = asyncio.ensure_future(client.lock_async("cancel-me").__aenter__())
        for _ in range(100):
            await asyncio.sleep(0.02)
            if client.inspect("cancel-me")["waiters"] == 1:
                break
        assert client.inspect("cancel-me")["waiters"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if client.inspect("cancel-me")["waiters"] == 0:
                break
            await asyncio.sleep(0.02)
        assert client.inspect("cancel-me")["waiters"] == 0

    asyncio.run(waiting())
    holder.release()
    assert client.inspect("cancel-me") is None, "the cancelled request was never granted"
