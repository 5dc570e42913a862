#!/usr/bin/env bash
# Runs the mini program module's tests (Node's built-in test runner) against a real
# miniauth and its in-process WeChat simulator. Usable from anywhere; exits non-zero
# when a test fails or something it needs is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

if ! command -v node >/dev/null 2>&1; then
  echo "miniprogram/run-tests.sh: Node.js is not installed (needs Node 18 or newer for node --test and fetch)" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
  echo "miniprogram/run-tests.sh: Node $(node --version) is too old: needs Node 18 or newer" >&2
  exit 1
fi

# Test the binary of the current sources: cargo rebuilds only what changed. Without
# cargo (or with MINIAUTH_BIN set) the given or existing binary is used as it is.
bin="${MINIAUTH_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/miniauth}"
if [ -z "${MINIAUTH_BIN:-}" ] && command -v cargo >/dev/null 2>&1; then
  cargo build -p miniauth --quiet
fi
if [ ! -x "$bin" ]; then
  echo "miniprogram/run-tests.sh: no miniauth binary at $bin (build it with cargo build -p miniauth)" >&2
  exit 1
fi
export MINIAUTH_BIN="$bin"

node miniprogram/build.mjs --check
exec node --test miniprogram/test/
