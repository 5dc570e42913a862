#!/usr/bin/env bash
# Checks that /openapi.json tells the truth, against a running service:
#   1. openapi-spec-validator validates the document;
#   2. Schemathesis generates requests from it (with the admin token, and an access token
#      of a password user it creates) and fails on any 5xx or conformance failure.
#
# Usage: tests/schemathesis/run.sh path/to/miniauth   (it builds nothing)
#
# It starts the embedded default (`miniauth` without a configuration: SQLite and the
# WeChat simulator) in a temporary directory on free ports, and stops it at the end.
# Needs python3 with the pinned packages (`pip install schemathesis==4.32.5
# openapi-spec-validator==0.7.2`) and curl. SCHEMATHESIS_MAX_EXAMPLES and
# SCHEMATHESIS_SEED override the bounded, reproducible defaults; SCHEMATHESIS_KEEP=1
# keeps the temporary directory (the server's log).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.7.2
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
SEED=${SCHEMATHESIS_SEED:-20261129}

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 path/to/miniauth" >&2
  exit 2
fi
binary=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")" && pwd)

for pinned in "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"; do
  name=${pinned%%==*}
  want=${pinned##*==}
  have=$(python3 -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  if [ "$have" != "$want" ]; then
    echo "$name $want is required (found: ${have:-none}): pip install $pinned" >&2
    exit 2
  fi
done

. "$here/../embedded.sh"
start_embedded SCHEMATHESIS_KEEP "server.log, openapi.json, tickets.dict"
echo "miniauth (embedded default) at $base"

echo "== openapi-spec-validator $VALIDATOR_VERSION"
curl -fsS "$base/openapi.json" -o openapi.json
python3 -m openapi_spec_validator openapi.json

# A password user, whose access token authenticates the bearer routes.
MINIAUTH_ADMIN_TOKEN=$(cat data/admin.token)
curl -fsS -o /dev/null -X POST "$base/v1/admin/users" \
  -H "Authorization: Bearer $MINIAUTH_ADMIN_TOKEN" -H 'Content-Type: application/json' \
  -d '{"account":"schemathesis","password":"schemathesis-password"}'
MINIAUTH_ACCESS_TOKEN=$(curl -fsS -X POST "$base/v1/token" \
  -H 'Content-Type: application/json' \
  -d '{"grant_type":"password","account":"schemathesis","password":"schemathesis-password"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
export MINIAUTH_ADMIN_TOKEN MINIAUTH_ACCESS_TOKEN

# Tickets of WeChat users of the demo app, logged in through the simulator, so that the
# routes that read a ticket reach their use cases (schemathesis.toml: `tickets`).
json_field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
sim=$(sed -n 's/.*the simulator at \(http:[^ ]*\).*/\1/p' server.log | head -n 1)
appid=wxdemo000000000001
for i in 1 2 3 4; do
  user=$(curl -fsS -X POST "$sim/device/users" -H 'Content-Type: application/json' \
    -d "{\"nickname\":\"Schemathesis $i\",\"phone\":\"1390000990$i\",\"country_code\":\"86\"}" |
    json_field user_id)
  code=$(curl -fsS -X POST "$sim/device/users/$user/login" -H 'Content-Type: application/json' \
    -d "{\"appid\":\"$appid\"}" | json_field code)
  ticket=$(curl -fsS -X POST "$base/v1/apps/$appid/sessions" -H 'Content-Type: application/json' \
    -d "{\"code\":\"$code\"}" | json_field ticket)
  echo "\"$ticket\"" >>tickets.dict
done
cp "$here/schemathesis.toml" .

echo "== schemathesis $SCHEMATHESIS_VERSION (at most $MAX_EXAMPLES examples per operation, seed $SEED)"
started=$(date +%s)
status=0
# python3 -m: the interpreter whose packages were checked above, whatever is on PATH.
python3 -m schemathesis.cli --config-file schemathesis.toml run "$base/openapi.json" \
  --max-examples "$MAX_EXAMPLES" --seed "$SEED" --no-color || status=$?
echo "schemathesis took $(($(date +%s) - started)) s"
if [ "$status" -ne 0 ]; then
  echo "server log: the last lines" >&2
  tail -n 40 server.log >&2
fi
exit "$status"
