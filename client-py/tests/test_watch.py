"""Watching locks from Python: the sync and async iterators, and a lock's `lost` flag turning
true within 100 ms of a forced release."""

import asyncio
import time
import urllib.request
import json

from lockserver_client import LockserverClient


def force_release(server, resource):
    request = urllib.request.Request(
        server.addr + "/release",
        data=json.dumps({"resource": resource, "owner": "operator", "force": True}).encode(),
        headers={"X-LOCKSERVER-SECRET": server.secret, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200


def test_a_sync_watch_sees_the_state_then_each_change(client):
    watch = client.watch("job")
    first = next(watch)
    assert first["event"] == "reset" and first["locks"] == []
    with client.lock("job", expire=10) as lock:
        acquired = next(watch)
        assert (acquired["event"], acquired["resource"], acquired["token"]) == ("acquired", "job", lock.token)
        assert acquired["id"] > first["id"]
    assert next(watch)["event"] == "released"


def test_an_async_watch_over_a_prefix(client):
    async def main():
        watch = client.watch_prefix("jobs/")
        assert (await watch.__anext__())["event"] == "reset"
        await client.try_lock_async("other", expire=10)
        await client.try_lock_async("jobs/1", expire=10)
        async for event in watch:
            return event

    event = asyncio.run(main())
    assert (event["event"], event["resource"]) == ("acquired", "jobs/1")


def test_a_lock_knows_of_a_forced_release_within_100_ms(server, client):
    lock = client.try_lock("taken", expire=30)
    time.sleep(0.2)
    assert not lock.lost
    force_release(server, "taken")
    forced = time.monotonic()
    while not lock.lost and time.monotonic() - forced < 2:
        time.sleep(0.002)
    assert lock.lost
    assert time.monotonic() - forced < 0.1


def test_a_lock_of_a_client_that_does_not_watch_learns_only_from_its_keepalive(server):
    client = LockserverClient(addr=server.addr, secret=server.secret, watch_locks=False)
    lock = client.try_lock("unwatched", expire=30)
    force_release(server, "unwatched")
    time.sleep(0.3)
    assert not lock.lost, "no watch: the loss is seen at the next keepalive (10 s away)"
