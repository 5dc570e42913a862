# Sourced by the scripts that test a running service (tests/schemathesis/run.sh,
# tests/discovery/run.sh): `start_embedded KEEP_VARIABLE WHAT [NAME=value ...]` starts
# "$binary" — the embedded default, SQLite and the WeChat simulator — in a new
# temporary directory (`$work`, the current directory afterwards) on free ports, with
# the extra environment given, and sets `$base` to its URL. It stops the service and
# removes the directory on exit, unless the variable named KEEP_VARIABLE is set (then
# it says WHAT is kept there).

start_embedded() {
  keep_variable=$1
  kept_files=$2
  shift 2
  work=$(mktemp -d)
  server=
  trap stop_embedded EXIT
  cd "$work"
  env MINIAUTH__SERVER__LISTEN=127.0.0.1:0 MINIAUTH__WECHAT__SIMULATOR_LISTEN=127.0.0.1:0 \
    "$@" "$binary" >server.log 2>&1 &
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
}

stop_embedded() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  if [ -n "${!keep_variable:-}" ]; then
    echo "kept: $work ($kept_files)"
  else
    rm -rf "$work"
  fi
}
