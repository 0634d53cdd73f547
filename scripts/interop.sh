#!/usr/bin/env bash
# Runs the interop suite (interop/): real third-party OAuth and JOSE clients from PyPI (PyJWT,
# Authlib over httpx) against a live `custos serve` on the embedded SQLite store.
#
# Usage: scripts/interop.sh [PATH_TO_CUSTOS_BINARY] [PYTEST_ARGS...]
#   default binary: $CARGO_TARGET_DIR/debug/custos (CARGO_TARGET_DIR: /var/tmp/custos-target);
#   arguments after it go to pytest (e.g. -k private_key_jwt -v)
# Environment:
#   CUSTOS_INTEROP_VENV  the venv holding the pinned clients (default ~/.cache/custos-interop-venv)
#   CUSTOS_PYTHON        a Python 3.12+ interpreter to build the venv with (default: found)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQUIREMENTS=$ROOT/interop/requirements.txt

BIN=${1:-${CARGO_TARGET_DIR:-/var/tmp/custos-target}/debug/custos}
if [[ $# -gt 0 ]]; then shift; fi
VENV=${CUSTOS_INTEROP_VENV:-$HOME/.cache/custos-interop-venv}

if [[ ! -x $BIN ]]; then
    echo "interop.sh: $BIN is not an executable; build it with" >&2
    echo "  cargo build -p custos-server --bin custos" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

# ---- the pinned clients, in a venv of their own ----
# Python 3.12 or newer preferred, found the way scripts/schemathesis.sh finds it; the pinned set
# needs 3.11 or newer (joserfc, under Authlib), which is what Debian 12's python3 is.
# shellcheck source=scripts/lib/venv.sh
source "$(dirname "$0")/lib/venv.sh"
ensure_venv "$VENV" "interop.sh: no Python 3.12+ found; using python3 (3.11 or newer is enough)"
# Reinstall only when the pins change: the stamp holds the hash of the requirements installed.
STAMP=$VENV/.custos-interop-requirements.sha256
WANTED=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [[ $(cat "$STAMP" 2>/dev/null || true) != "$WANTED" ]]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$WANTED" >"$STAMP"
fi

# ---- a server of our own on a free loopback port, with an empty data directory ----
WORK=$(mktemp -d)
DATA_DIR=$WORK/data
SERVER_PID=
cleanup() {
    local status=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -s $WORK/server.log ]]; then
        # Keep the log for a look; the store, master key and admin token go in any case.
        rm -rf "$DATA_DIR"
        echo "---- last lines of the server log ($WORK/server.log) ----" >&2
        tail -n 40 "$WORK/server.log" >&2 || true
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
ADMIN_TOKEN=interop-admin-$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')

# Only our settings: a preset admin token, the embedded store, no outside config. The issuer is
# then http://LISTEN, which is the base URL the tests use.
env -u CUSTOS_DATABASE_URL -u CUSTOS_CONFIG -u CUSTOS_MASTER_KEY \
    -u CUSTOS_LISTEN -u CUSTOS_DATA_DIR \
    CUSTOS_ADMIN_TOKEN="$ADMIN_TOKEN" CUSTOS_LOG_LEVEL=warn \
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "interop.sh: the server exited before it was ready" >&2
        exit 1
    fi
    sleep 0.1
done
curl -fsS -o /dev/null "$BASE/readyz"

# Loopback calls must never go through a proxy (httpx and urllib both honour *_proxy).
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"

echo "interop: server $BASE, clients from $VENV"
cd "$ROOT/interop"
CUSTOS_INTEROP_BASE_URL=$BASE CUSTOS_INTEROP_ADMIN_TOKEN=$ADMIN_TOKEN CUSTOS_INTEROP_BIN=$BIN \
    PYTHONDONTWRITEBYTECODE=1 \
    "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
