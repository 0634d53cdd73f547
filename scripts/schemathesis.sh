#!/usr/bin/env bash
# Runs schemathesis against a live `custos serve` and fails on any 5xx or any response that
# does not match the server's own OpenAPI document (GET /openapi.json).
#
# Usage: scripts/schemathesis.sh [PATH_TO_CUSTOS_BINARY]
#   default binary: /var/tmp/custos-target/debug/custos
# Environment:
#   CUSTOS_VENV              Python venv holding schemathesis (default ~/.cache/custos-venv)
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 100)
#   SCHEMATHESIS_SEED        a fixed seed, to replay a run (default: random, printed)
#   SCHEMATHESIS_REPORT_DIR  if set, a HAR file of every request and response per run goes here
#   SCHEMATHESIS_DATABASE_URL  if set, the server keeps its store in PostgreSQL there, in a
#                            schema of its own dropped afterwards (needs psql); else in SQLite
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

BIN=${1:-/var/tmp/custos-target/debug/custos}
VENV=${CUSTOS_VENV:-$HOME/.cache/custos-venv}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-$((RANDOM * 32768 + RANDOM))}

if [[ ! -x $BIN ]]; then
    echo "schemathesis.sh: $BIN is not an executable; build it with" >&2
    echo "  cargo build -p custos-server --bin custos" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

# ---- schemathesis, pinned, in its own venv ----
# Python 3.12 or newer: under 3.11, hypothesis (inside schemathesis) trips CPython's
# "AST constructor recursion depth mismatch" SystemError on deeply nested body schemas.
# shellcheck source=scripts/lib/venv.sh
source "$(dirname "$0")/lib/venv.sh"
ensure_venv "$VENV" "schemathesis.sh: no Python 3.12+ found; trying python3"
if [[ $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true) != "$SCHEMATHESIS_VERSION" ]]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST=$VENV/bin/schemathesis

# ---- a server of our own on a free loopback port, with an empty data directory ----
WORK=$(mktemp -d)
DATA_DIR=$WORK/data
SERVER_PID=
STORE_ARGS=()
SCHEMA=
if [[ -n ${SCHEMATHESIS_DATABASE_URL:-} ]]; then
    # An empty schema of its own, so that the run starts from an empty store as on SQLite.
    SCHEMA=st_$$_$RANDOM
    psql "$SCHEMATHESIS_DATABASE_URL" -qc "CREATE SCHEMA $SCHEMA" >/dev/null
    separator='?'
    [[ $SCHEMATHESIS_DATABASE_URL == *\?* ]] && separator='&'
    STORE_ARGS=(--database-url "$SCHEMATHESIS_DATABASE_URL${separator}options=-c%20search_path%3D$SCHEMA")
fi
cleanup() {
    local status=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $SCHEMA ]]; then
        psql "$SCHEMATHESIS_DATABASE_URL" -qc "DROP SCHEMA $SCHEMA CASCADE" >/dev/null 2>&1 || true
    fi
    if [[ $status -ne 0 && -s $WORK/server.log ]]; then
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

# Only our flags: no preset admin token (the server must mint one), no outside store or config.
# Notification channels the run creates may send only to this machine: generated webhook URLs
# and SMTP hosts name anything.
env -u CUSTOS_ADMIN_TOKEN -u CUSTOS_DATABASE_URL -u CUSTOS_CONFIG -u CUSTOS_MASTER_KEY \
    -u CUSTOS_LISTEN -u CUSTOS_DATA_DIR \
    CUSTOS_LOG_LEVEL=warn CUSTOS_NOTIFY_ALLOWED_HOSTS=127.0.0.1 \
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" "${STORE_ARGS[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "schemathesis.sh: the server exited before it was ready" >&2
        exit 1
    fi
    sleep 0.1
done
curl -fsS -o /dev/null "$BASE/readyz"

TOKEN=$(tr -d '[:space:]' <"$DATA_DIR/admin-token")
[[ -n $TOKEN ]]

# ---- seed records, so that path parameters can name things that exist ----
api() { # METHOD PATH [JSON]
    local args=(-fsS -X "$1" -H "authorization: Bearer $TOKEN")
    if [[ $# -ge 3 ]]; then
        args+=(-H 'content-type: application/json' --data "$3")
    fi
    curl "${args[@]}" "$BASE$2"
}
json_field() { # FIELD < JSON
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

TEAM_NAME=payments
TEAM_ID=$(api POST /v1/teams '{"name":"payments","contact":"payments@example.com"}' | json_field id)
NHI_ID=$(api POST /v1/nhis "{\"name\":\"billing-exporter\",\"kind\":\"service_account\",\
\"platform\":\"aws\",\"environment\":\"prod\",\"owner\":{\"team\":\"$TEAM_ID\"},\
\"purpose\":\"exports invoices\",\"scope_ceiling\":[\"s3:invoices:read\"],\"tags\":{\"tier\":\"1\"}}" | json_field id)
CREDENTIAL_ID=$(api POST "/v1/nhis/$NHI_ID/credentials" '{"ttl_seconds":3600}' | json_field id)
# A reviewer rather than an admin: the bootstrap admin must stay the only admin, so that no
# generated call can revoke the token this run depends on.
OPERATOR_ID=$(api POST /v1/operators "{\"name\":\"reviewer\",\"roles\":[\"reviewer\"],\"teams\":[\"$TEAM_ID\"]}" | json_field id)
echo "seeded team $TEAM_ID, nhi $NHI_ID, credential $CREDENTIAL_ID, operator $OPERATOR_ID"

# Each `{id}` draws, half of the time, a seeded record's id or an id that names nothing, and a
# generated value otherwise; so do team references in bodies.
MISSING_ID=00000000-0000-7000-8000-000000000000
cat >"$WORK/anonymous.toml" <<EOF
[generation]
database = "none"

[dictionaries.teams]
values = ["$TEAM_ID", "$TEAM_NAME", "$MISSING_ID"]
[dictionaries.nhis]
values = ["$NHI_ID", "$MISSING_ID"]
[dictionaries.credentials]
values = ["$CREDENTIAL_ID", "$MISSING_ID"]
[dictionaries.operators]
values = ["$OPERATOR_ID", "$MISSING_ID"]

# Bodies that name a team name a real one most of the time.
[parameters]
"body.owner.team" = { dictionary = "teams", probability = 0.8 }
"body.teams[*]" = { dictionary = "teams", probability = 0.8 }

[[operations]]
include-path-regex = "^/v1/teams/"
parameters = { "path.id" = { dictionary = "teams", probability = 0.5 } }
[[operations]]
include-path-regex = "^/v1/nhis/"
parameters = { "path.id" = { dictionary = "nhis", probability = 0.5 } }
[[operations]]
include-path-regex = "^/v1/credentials/"
parameters = { "path.id" = { dictionary = "credentials", probability = 0.5 } }
[[operations]]
include-path-regex = "^/v1/operators/"
parameters = { "path.id" = { dictionary = "operators", probability = 0.5 } }
# A task long-poll holds the request open for \`wait\` seconds while the task is pending, and
# schemathesis finds real pending tasks from the responses it has seen: every such case would
# take up to a minute. The long-poll itself is tested in crates/custos-server/tests/it/tasks.rs.
[[operations]]
include-path-regex = "^/v1/tasks/"
parameters = { "query.wait" = 0 }

# A body over the server's size limit is refused with 413 (RFC 9110, Content Too Large) before
# it is parsed, whatever else is wrong in it: a rejection of invalid data like the others.
# No 5xx here: not_a_server_error fails those anyway.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
EOF

{
    cat "$WORK/anonymous.toml"
    echo
    echo '[auth.openapi.bearer]'
    echo 'bearer = "${CUSTOS_SCHEMATHESIS_TOKEN}"'
} >"$WORK/admin.toml"

# Checks: all of them, except the one that cannot hold for this API by design:
# - positive_data_acceptance: schema-valid data is often still refused, rightly, for reasons
#   no JSON schema can state: a team or NHI named in a body or path that does not exist
#   (422 / 404), a name already taken (409), a status change not possible from the current
#   status (409), an expiry that is not in the future (422), a cursor or an ETag this server
#   never issued (400 / 412). A schema cannot say "this id exists" or "after now".
EXCLUDED_CHECKS=positive_data_acceptance

RUNS=()
run_schemathesis() { # NAME CONFIG LABEL [extra args...]
    local name=$1 config=$2 label=$3
    shift 3
    local reports=(--report junit --report-junit-path "$WORK/$name.junit.xml")
    if [[ -n ${SCHEMATHESIS_REPORT_DIR:-} ]]; then
        mkdir -p "$SCHEMATHESIS_REPORT_DIR"
        reports=(--report junit,har --report-junit-path "$WORK/$name.junit.xml"
            --report-har-path "$(realpath "$SCHEMATHESIS_REPORT_DIR")/$name.har")
    fi
    RUNS+=("$WORK/$name.junit.xml")
    echo
    echo "==== schemathesis: $label ===="
    (
        cd "$WORK"
        "$ST" --config-file "$WORK/$config.toml" run "$BASE/openapi.json" \
            --checks all --exclude-checks "$EXCLUDED_CHECKS" \
            --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
            --workers 2 --request-timeout 10 \
            --suppress-health-check too_slow,filter_too_much \
            --no-color "${reports[@]}" "$@"
    )
}

# One closing line for CI, over all runs: operations that passed, and those with a failure or
# an error (a run that left no report counts as one failure).
summary() {
    "$VENV/bin/python" - "${RUNS[@]}" <<'PY'
import sys
import xml.etree.ElementTree as ET

passed = failed = 0
for report in sys.argv[1:]:
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        failed += 1
        continue
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is None:
            passed += 1
print(f"schemathesis: {passed} passed, {failed} failed")
PY
}

# POST /v1/operators/{id}/revoke gets a run of its own, after every other run that uses the
# token: once the generated calls have created a second admin, it may revoke the admin whose
# token the runs use (its id is in listings and in /v1/whoami), and every later call would
# only see 401.
REVOKE_OPERATOR='/v1/operators/{id}/revoke'

status=0
CUSTOS_SCHEMATHESIS_TOKEN=$TOKEN run_schemathesis main admin \
    "every operation but operator revocation" --exclude-path "$REVOKE_OPERATOR" || status=1
CUSTOS_SCHEMATHESIS_TOKEN=$TOKEN run_schemathesis revoke-operator admin \
    "operator revocation" --include-path "$REVOKE_OPERATOR" || status=1
# ignored_auth, in the runs above, already checks that calls without a token or with a bad
# one get 401. This short run without any token also checks those 401 responses themselves
# (problem+json, WWW-Authenticate) against the document, on every operation.
run_schemathesis anonymous anonymous "no token" \
    --max-examples 5 --phases examples,coverage,fuzzing --warnings off || status=1
summary
if [[ $status -ne 0 ]]; then
    echo "schemathesis.sh: schemathesis reported failures (seed $SEED)" >&2
fi
exit "$status"
