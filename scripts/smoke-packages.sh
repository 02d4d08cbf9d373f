#!/usr/bin/env bash
# Builds the installable client packages, as an application outside this repository gets them,
# and checks them from a fresh venv and a fresh npm project in a temporary directory:
#   - the Python wheel: maturin build --release  ->  pip install FILE.whl
#   - the Node package: npm pack                  ->  npm install FILE.tgz (native addon inside)
# Each locks and releases through a real server. Prints the packages' sizes.
# Usage: scripts/smoke-packages.sh PYTHON_WITH_MATURIN   (run by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${1:-target/venv/bin/python}
out=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$out"' EXIT

"$python" -m maturin build --release --quiet --manifest-path client-py/Cargo.toml --out "$out/wheels"
wheel=$(ls "$out"/wheels/*.whl)
(cd client-js && npm pack --silent --pack-destination "$out" >/dev/null)
tarball=$(ls "$out"/*.tgz)
echo "wheel: $(basename "$wheel"), $(du -k "$wheel" | cut -f1) KiB"
echo "npm package: $(basename "$tarball"), $(du -k "$tarball" | cut -f1) KiB"

# A server to talk to.
target/debug/lockserver --bind 127.0.0.1 --port 0 --storage memory --secret smoke >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$out/server.log" && break; sleep 0.1; done
addr=$(sed -n 's/^lockserver listening on http:\/\///p' "$out/server.log")
[ -n "$addr" ] || { cat "$out/server.log"; exit 1; }
export LOCKSERVER_ADDR=$addr LOCKSERVER_SECRET=smoke

# Python: a fresh venv outside the repository, the wheel alone.
python3 -m venv "$out/venv"
"$out/venv/bin/pip" install --quiet --disable-pip-version-check "$wheel"
(cd "$out" && "$out/venv/bin/python" - <<'PY'
import lockserver_client
from lockserver_client import LockserverClient

client = LockserverClient()
with client.lock("smoke") as lock:
    assert lock.token > 0
with client.try_lock("smoke") as mine:
    assert mine
print("python", lockserver_client.__version__, "ok:", lockserver_client.__file__)
PY
)
native=$(find "$out/venv" -name '_native*.so')
# Whether an ELF file has a .debug_info section (read from its section headers).
debug_info() {
  python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
def section(i):
    name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
    return name, offset, size
_, strings, _ = section(shstrndx)
names = [data[strings + section(i)[0]:].split(b"\0", 1)[0] for i in range(shnum)]
print("WITH debug info" if b".debug_info" in names else "no debug info")
PY
}
echo "python extension: $(du -k "$native" | cut -f1) KiB, $(debug_info "$native")"

# Node: a fresh project outside the repository, the tarball alone.
mkdir "$out/app"
(cd "$out/app" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "$tarball" && node - <<'JS'
const { LockserverClient, version } = require('lockserver-client')
;(async () => {
  const client = new LockserverClient()
  const value = await client.withLock('smoke', async (lock) => lock.token)
  if (!(value > 0)) throw new Error('no token')
  console.log('node', version, 'ok:', require.resolve('lockserver-client'))
})().catch((error) => { console.error(error); process.exit(1) })
JS
)
addon=$(find "$out/app/node_modules/lockserver-client" -name '*.node')
echo "node addon: $(du -k "$addon" | cut -f1) KiB, $(debug_info "$addon")"
if [ "$(debug_info "$native")$(debug_info "$addon")" != "no debug infono debug info" ]; then
  echo "the packages must not carry debug info" >&2
  exit 1
fi
