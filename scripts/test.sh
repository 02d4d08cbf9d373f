#!/usr/bin/env bash
# Runs every check and every test suite: formatting, clippy, the Rust suites (unit, doc and
# integration tests against the real server binary), the Python client's pytest suite, the
# Node client's node:test suite, and the installable packages from a fresh venv and npm project.
# Installs what the suites need first (etcd and protoc from
# Debian's packages, a venv with maturin and pytest, npm packages).
# Usage: scripts/test.sh        (from anywhere in the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Integration tests open a thousand connections at once.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

step "Debian packages: etcd-server (the etcd backend's tests), protobuf-compiler (etcd-client's build, feature etcd), curl (the README's examples), chromium and chromium-driver (the status page's test), openssl (the Python and Node TLS tests' certificates)"
if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null || ! command -v curl >/dev/null \
  || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v openssl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq etcd-server protobuf-compiler curl chromium chromium-driver openssl
fi

step "rustfmt and clippy components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "the server builds with the Rust toolchain alone (no protoc), and says how to get the etcd backend"
PROTOC=/nonexistent/protoc cargo build -p lockserver
refused=$(target/debug/lockserver --backend etcd --etcd-endpoints http://127.0.0.1:1 2>&1 || true)
if grep -q -- "--features etcd" <<<"$refused"; then
  echo "ok: --backend etcd names the build command"
else
  echo "a build without the etcd feature must refuse --backend etcd naming --features etcd" >&2
  exit 1
fi

step "cargo clippy --all-targets -- -D warnings (with and without the etcd backend)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --features lockserver/etcd -- -D warnings

step "build the server binary the integration tests start (with the etcd backend)"
cargo build -p lockserver --features etcd

step "Rust tests (unit, doc, integration)"
cargo test --workspace --features lockserver/etcd

step "Python client: pip install ./client-py into target/venv, then pytest"
if [ ! -x target/venv/bin/python ]; then
  python3 -m venv target/venv || {
    apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv target/venv
  }
fi
target/venv/bin/pip install -q --disable-pip-version-check pytest maturin selenium
target/venv/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps ./client-py
# The status page's browser test must run here, not be skipped.
(cd client-py && LOCKSERVER_REQUIRE_BROWSER=1 ../target/venv/bin/python -m pytest -q)

step "Node client: npm install, npm run build (napi-rs), npm test (node:test)"
if ! command -v npm >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
# npm install, not npm ci: npm 11 refuses its own lock file here (optional platform packages of
# @napi-rs/lzma are left out of it); install still follows the lock for everything it holds.
(cd client-js && npm install --no-audit --no-fund && npm run build && npm test)

step "Installable packages: the wheel and the npm tarball, each in a fresh venv / project outside the repo"
bash scripts/smoke-packages.sh target/venv/bin/python
