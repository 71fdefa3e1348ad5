#!/usr/bin/env bash
# Runs kefu's fuzz targets (fuzz/, cargo-fuzz with libFuzzer) one after the
# other, each for SECONDS (default 60), on one core.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Targets (fuzz/fuzz_targets/):
#   ws_decoder   WebSocket frame decoding: arbitrary streams, reads, pauses;
#                checked against a reference decoder, plus memory bounds
#   client_json  client frames: protocol::client::parse on arbitrary text
#   server_json  server frames: every protocol::server encoder round-trips
#   handshake    the HTTP upgrade: parse_request, accept_upgrade, response
#
# Needs a nightly toolchain (libFuzzer's instrumentation uses -Z flags).
# Without one, it falls back to the stable toolchain with
# RUSTC_BOOTSTRAP=1. No sanitizer by default: the fuzzed code has no
# `unsafe`, so panics and failed assertions are what there is to find, and
# AddressSanitizer made them many times slower here (17x for ws_decoder; set
# FUZZ_SANITIZER=address to use it anyway, nightly only). Installs
# cargo-fuzz from crates.io if it is missing.
#
# The corpus grows in fuzz/corpus/TARGET (not committed;
# fuzz/seeds/TARGET holds the committed seeds), crashes land in
# fuzz/artifacts/TARGET. Exits non-zero if any target crashed; reproduce
# one with `cargo +nightly fuzz run -O TARGET fuzz/artifacts/TARGET/crash-...`
# (from fuzz/, with `-s none` unless FUZZ_SANITIZER was set), print it
# with `cargo +nightly fuzz fmt -O TARGET FILE`.
set -euo pipefail

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(ws_decoder client_json server_json handshake)
fi

cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

toolchain=()
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-none}")
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
elif rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    echo "fuzz.sh: no nightly toolchain; stable with RUSTC_BOOTSTRAP=1, no sanitizer" >&2
    export RUSTC_BOOTSTRAP=1
    sanitizer=(--sanitizer none)
fi

cargo "${toolchain[@]}" fuzz build -O "${sanitizer[@]}"

failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    dict=()
    [ -f "dict/$target.dict" ] && dict=("-dict=dict/$target.dict")
    log=$(mktemp)
    echo "== $target: ${seconds}s"
    # No -jobs/-workers: one process, one core. -rss_limit_mb guards the
    # machine; -timeout flags an input that takes over 10 s as a hang.
    set +e
    cargo "${toolchain[@]}" fuzz run -O "${sanitizer[@]}" "$target" \
        "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 "${dict[@]}" 2>&1 | tee "$log" |
        grep -E '^#[0-9]+[[:space:]]+(INITED|DONE|pulse)|panicked|ERROR|SUMMARY|Test unit'
    status=${PIPESTATUS[0]}
    set -e
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
    corpus=$(find "corpus/$target" -type f | wc -l)
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        summary+=("$target: CRASHED (exit $status), see fuzz/artifacts/$target")
    else
        summary+=("$target: ok, ${execs:-?} execs, corpus $corpus files; ${done_line}")
    fi
    rm -f "$log"
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
