#!/usr/bin/env bash
# Runs GitEgg's front-end calls through the real flyio WeChat build (pinned in
# package-lock.json) against a real miniauth and its in-process WeChat simulator.
# Needs Node 18+ and npm (installs flyio from the npm registry on first use).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "tests/gitegg-frontend/run-tests.sh: needs Node.js 18+ and npm" >&2
  exit 1
fi

bin="${MINIAUTH_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/miniauth}"
if [ -z "${MINIAUTH_BIN:-}" ] && command -v cargo >/dev/null 2>&1; then
  (cd "$root" && cargo build -p miniauth --quiet)
fi
if [ ! -x "$bin" ]; then
  echo "tests/gitegg-frontend/run-tests.sh: no miniauth binary at $bin (cargo build -p miniauth)" >&2
  exit 1
fi
export MINIAUTH_BIN="$bin"

cd "$here"
# Exactly the locked versions; nothing is written back to package-lock.json.
npm ci --no-audit --no-fund --loglevel=error
exec node --test test/
