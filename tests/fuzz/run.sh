#!/usr/bin/env bash
# Builds the cargo-fuzz targets of miniauth and runs each for a bounded time.
#
#   tests/fuzz/run.sh                 # every target, 20 s each
#   FUZZ_SECONDS=60 tests/fuzz/run.sh ticket_verify
#   FUZZ_SANITIZER=address tests/fuzz/run.sh
#
# Only a stable toolchain is needed: cargo-fuzz passes nightly-only flags, which
# RUSTC_BOOTSTRAP=1 allows. The default sanitizer is none: the workspace forbids unsafe
# code, so the targets look for panics and broken invariants (ASan would only check
# dependencies, at several times the build and run time).
# A crash stops the script with the failing input under tests/fuzz/artifacts/<target>/
# (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir . -s none <target> <file>).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
all_targets=(payload_decrypt ticket_verify legacy_bind_key gitegg_query)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

export RUSTC_BOOTSTRAP=1
started=$(date +%s)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
installed=$(date +%s)

cd "$here"
# Build what the service ships: start from the workspace's resolved versions.
if [ ! -f Cargo.lock ]; then
    cp ../../Cargo.lock Cargo.lock
fi

echo "== building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --fuzz-dir . --sanitizer "$sanitizer"
built=$(date +%s)

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== fuzzing $target for ${seconds} s"
    log="target/fuzz-$target.log"
    mkdir -p target
    status=0
    cargo fuzz run --fuzz-dir . --sanitizer "$sanitizer" "$target" \
        "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb|Done [0-9]+ runs)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "FAILED: $target (exit $status); the input is under tests/fuzz/artifacts/$target, the log in tests/fuzz/$log" >&2
        exit 1
    fi
done
finished=$(date +%s)
echo "== done: install $((installed - started)) s, build $((built - installed)) s, fuzzing $((finished - built)) s, total $((finished - started)) s"
