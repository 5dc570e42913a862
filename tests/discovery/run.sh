#!/usr/bin/env bash
# Checks the discovery document, introspection and revocation with PyJWT (an
# independent JWT library), against a running service: test_discovery.py starts from
# the discovery URL only.
#
# Usage: tests/discovery/run.sh path/to/miniauth   (it builds nothing)
#
# It starts the embedded default (SQLite and the WeChat simulator) in a temporary
# directory on free ports, with one introspection client, and stops it at the end.
# Needs python3 with `pip install "pyjwt[crypto]==2.10.1"`. DISCOVERY_KEEP=1 keeps the
# temporary directory (the server's log).
set -euo pipefail

PYJWT_VERSION=2.10.1

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 path/to/miniauth" >&2
  exit 2
fi
binary=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")" && pwd)

have=$(python3 -c "import importlib.metadata as m; print(m.version('pyjwt'))" 2>/dev/null || true)
if [ "$have" != "$PYJWT_VERSION" ] || ! python3 -c "import cryptography" 2>/dev/null; then
  echo "PyJWT $PYJWT_VERSION with cryptography is required (found: ${have:-none}):" \
    "pip install \"pyjwt[crypto]==$PYJWT_VERSION\"" >&2
  exit 2
fi

work=$(mktemp -d)
server=
stop() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  if [ -n "${DISCOVERY_KEEP:-}" ]; then
    echo "kept: $work (server.log)"
  else
    rm -rf "$work"
  fi
}
trap stop EXIT

export INTROSPECTION_CLIENT_ID=gateway
INTROSPECTION_CLIENT_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
export INTROSPECTION_CLIENT_SECRET

cd "$work"
MINIAUTH__SERVER__LISTEN=127.0.0.1:0 MINIAUTH__WECHAT__SIMULATOR_LISTEN=127.0.0.1:0 \
  MINIAUTH__INTROSPECTION_CLIENTS__0__ID=$INTROSPECTION_CLIENT_ID \
  MINIAUTH__INTROSPECTION_CLIENTS__0__SECRET_ENV=INTROSPECTION_CLIENT_SECRET \
  "$binary" >server.log 2>&1 &
server=$!

base=
for _ in $(seq 1 100); do
  base=$(sed -n 's/^miniauth listening on \(http:[^ ]*\).*/\1/p' server.log | head -n 1)
  [ -n "$base" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "miniauth did not start:" >&2
  cat server.log >&2
  exit 1
fi
echo "miniauth (embedded default) at $base; PyJWT $PYJWT_VERSION"

MINIAUTH_ADMIN_TOKEN=$(cat data/admin.token) python3 "$here/test_discovery.py" "$base"
