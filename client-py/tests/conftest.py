"""Starts the real lockserver binary for the tests, on a free loopback port."""

import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def server_binary() -> str:
    binary = os.environ.get("LOCKSERVER_BIN") or str(ROOT / "target" / "debug" / "lockserver")
    if not os.path.exists(binary):
        subprocess.run(["cargo", "build", "-p", "lockserver"], cwd=ROOT, check=True)
    return binary


class Server:
    def __init__(self, *args: str) -> None:
        self.secret = "py-" + uuid.uuid4().hex
        self.data_dir = tempfile.mkdtemp(prefix="lockserver-py-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSERVER_")}
        env["RUST_LOG"] = "warn"
        self.process = subprocess.Popen(
            [server_binary(), "--bind", "127.0.0.1", "--port", "0", "--secret", self.secret, "--data-dir", self.data_dir, *args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd="/",
        )
        for line in self.process.stdout:
            if line.startswith("lockserver listening on "):
                self.addr = line.split()[-1].strip()
                break
        else:
            raise RuntimeError("lockserver exited before listening")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def server():
    server = Server()
    yield server
    server.stop()


@pytest.fixture
def client(server):
    from lockserver_client import LockserverClient

    return LockserverClient(addr=server.addr, secret=server.secret)
