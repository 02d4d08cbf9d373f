"""Acquire+release cycles per second from one Python thread: the lockserver client against a
plain `requests` client making the same two calls with a new connection per call (as the
reference Python client does). Prints one JSON line.

    python py_cycles.py ADDR SECRET [SECONDS]
"""

import json
import sys
import time

import requests

from lockserver_client import LockserverClient


def rate(cycle, seconds):
    cycle()  # warm up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds and count < 1_000_000:
        cycle()
        count += 1
    return count / (time.perf_counter() - started)


def main():
    addr, secret = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    base = addr if "://" in addr else f"http://{addr}"
    headers = {"X-LOCKSERVER-SECRET": secret}

    client = LockserverClient(addr=addr, secret=secret, owner="py-bench")

    def ours():
        client.acquire("py-bench-ours")
        client.release("py-bench-ours")

    def plain():
        body = {"resource": "py-bench-plain", "owner": "py-plain"}
        requests.post(f"{base}/acquire", json=body, headers=headers).raise_for_status()
        requests.post(f"{base}/release", json=body, headers=headers).raise_for_status()

    plain_rate, ours_rate = rate(plain, seconds), rate(ours, seconds)
    print(json.dumps({"ours": round(ours_rate), "plain_requests": round(plain_rate), "ratio": round(ours_rate / plain_rate, 2)}))


if __name__ == "__main__":
    main()
