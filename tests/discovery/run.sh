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

export INTROSPECTION_CLIENT_ID=gateway
INTROSPECTION_CLIENT_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
export INTROSPECTION_CLIENT_SECRET

. "$here/../embedded.sh"
start_embedded DISCOVERY_KEEP server.log \
  MINIAUTH__INTROSPECTION_CLIENTS__0__ID=$INTROSPECTION_CLIENT_ID \
  MINIAUTH__INTROSPECTION_CLIENTS__0__SECRET_ENV=INTROSPECTION_CLIENT_SECRET
echo "miniauth (embedded default) at $base; PyJWT $PYJWT_VERSION"

MINIAUTH_ADMIN_TOKEN=$(cat data/admin.token) python3 "$here/test_discovery.py" "$base"
