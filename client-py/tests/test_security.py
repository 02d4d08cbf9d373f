"""The Python client over HTTPS (a private CA, mutual TLS, LOCKSERVER_CA_FILE) and against API
keys: each refusal is its own exception."""

import os
import pathlib
import subprocess
import tempfile

import pytest

from conftest import ROOT, Server
from lockserver_client import Forbidden, LockserverClient, QuotaExceeded, RateLimited, Unavailable


@pytest.fixture(scope="module")
def certs():
    directory = tempfile.mkdtemp(prefix="lockserver-py-certs-")
    subprocess.run(["bash", str(ROOT / "scripts" / "test-certs.sh"), directory], check=True)
    return pathlib.Path(directory)


@pytest.fixture
def tls_server(certs):
    server = Server(
        "--tls-cert", str(certs / "server.pem"),
        "--tls-key", str(certs / "server-key.pem"),
        "--tls-client-ca", str(certs / "ca.pem"),
    )
    yield server
    server.stop()


def test_https_with_a_ca_file_and_a_client_certificate(tls_server, certs):
    assert tls_server.addr.startswith("https://")
    client = LockserverClient(
        addr=tls_server.addr,
        secret=tls_server.secret,
        ca_file=str(certs / "ca.pem"),
        cert_file=str(certs / "client.pem"),
        key_file=str(certs / "client-key.pem"),
    )
    with client.lock("over-tls", expire=10) as lock:
        assert lock.token > 0
    async_ok = client.try_lock("async-tls", expire=10)
    async_ok.release()


def test_a_client_without_the_ca_is_refused(tls_server, certs):
    client = LockserverClient(addr=tls_server.addr, secret=tls_server.secret, cert_file=str(certs / "client.pem"), key_file=str(certs / "client-key.pem"))
    with pytest.raises(Unavailable, match="UnknownIssuer"):
        client.try_lock("x")
    without_cert = LockserverClient(addr=tls_server.addr, secret=tls_server.secret, ca_file=str(certs / "ca.pem"))
    with pytest.raises(Unavailable):
        without_cert.try_lock("y")


def test_the_environment_names_the_ca_and_the_certificate(tls_server, certs, monkeypatch):
    monkeypatch.setenv("LOCKSERVER_ADDR", tls_server.addr)
    monkeypatch.setenv("LOCKSERVER_SECRET", tls_server.secret)
    monkeypatch.setenv("LOCKSERVER_CA_FILE", str(certs / "ca.pem"))
    monkeypatch.setenv("LOCKSERVER_CERT_FILE", str(certs / "client.pem"))
    monkeypatch.setenv("LOCKSERVER_KEY_FILE", str(certs / "client-key.pem"))
    with LockserverClient().lock("from-env", expire=10) as lock:
        assert lock.token > 0


def test_roles_quotas_and_rates_raise_their_own_exceptions(tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(
        "[[key]]\nname='reader'\nsecret='r'\nnamespace='n'\nrole='read'\n"
        "[[key]]\nname='small'\nsecret='s'\nnamespace='n'\nrole='lock'\nmax_locks=1\nrate=3\n"
    )
    server = Server("--keys-file", str(keys))
    try:
        with pytest.raises(Forbidden) as refused:
            LockserverClient(addr=server.addr, secret="r").try_lock("a")
        assert refused.value.code == "forbidden"
        small = LockserverClient(addr=server.addr, secret="s")
        held = small.try_lock("one", expire=30)
        with pytest.raises(QuotaExceeded):
            small.try_lock("two")
        with pytest.raises(RateLimited) as limited:
            for _ in range(50):
                small.inspect("one")
        assert limited.value.retry_after == 1.0
        del held
    finally:
        server.stop()
