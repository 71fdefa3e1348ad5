#!/usr/bin/env bash
# Where the gateway's CPU goes under chat load: perf record -g of a
# `--profile profiling` build (release code with line tables) while
# kefu-loadgen runs a chat at a fixed rate.
#
# usage: scripts/profile.sh [RATE] [SECONDS] [OUT_DIR]
#        (defaults: 15000 msg/s, 10 s, bench/results/profile)
#
# The gateway (1 shard) runs on CPU $SERVER_CPU (0), the load generator on
# $LOADGEN_CPU (1). perf samples cpu-clock (a software event: virtual
# machines here expose no hardware counters) at 499 Hz with DWARF call graphs (the release code has no frame pointers).
# Writes OUT_DIR/perf.data, OUT_DIR/top.txt (self time by symbol),
# OUT_DIR/children.txt (time including callees) and OUT_DIR/chat.txt.
set -euo pipefail

rate=${1:-15000}
secs=${2:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${3:-$root/bench/results/profile}
server_cpu=${SERVER_CPU:-0}
loadgen_cpu=${LOADGEN_CPU:-1}
case "$rate$secs" in *[!0-9]*) sed -n '6,7p' "$0" | sed 's/^# //' >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }

cd "$root"
timeout 1200 cargo build --quiet --profile profiling -p kefu
timeout 1200 cargo build --quiet --release -p kefu-loadgen
mkdir -p "$out"
work=$(mktemp -d /tmp/kefu-profile.XXXXXX)
gw_pid=""
cleanup() {
  if [ -n "$gw_pid" ]; then kill -TERM "$gw_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

taskset -c "$server_cpu" timeout 600 target/profiling/kefu serve --listen 127.0.0.1:18090 \
  --admin-listen 127.0.0.1:19091 --data-dir "$work" --shards 1 --cpus "$server_cpu" \
  --msg-rate-limit 0 >"$out/gateway.log" 2>&1 &
gw_pid=$!
for _ in $(seq 1 100); do
  curl -fsS -m 1 http://127.0.0.1:18090/health >/dev/null 2>&1 && break
  sleep 0.1
done
kefu_pid=$(pgrep -P "$gw_pid" -x kefu || echo "$gw_pid")

# The chat runs warmup (2 s) + SECONDS + drain; perf records the middle.
timeout 300 taskset -c "$loadgen_cpu" target/release/kefu-loadgen chat \
  --target ws://127.0.0.1:18090/v1/ws --secret-file "$work/demo.secret" \
  --visitors 100 --agents 10 --rate "$rate" --duration "$((secs + 4))s" --warmup 2s \
  --cpus "$loadgen_cpu" --admin 127.0.0.1:19091 >"$out/chat.txt" 2>&1 &
chat=$!
sleep 4
timeout $((secs + 30)) perf record -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$kefu_pid" -o "$out/perf.data" \
  -- sleep "$secs" 2>"$out/perf-record.log"
wait "$chat" || true
perf report -i "$out/perf.data" --no-children --sort symbol --stdio --percent-limit 0.7 \
  2>/dev/null | grep -v '^$' | grep -E '^ +[0-9]' | head -60 >"$out/top.txt" || true
perf report -i "$out/perf.data" --children --sort symbol --stdio --percent-limit 3 -g none \
  2>/dev/null | grep -E '^ +[0-9]' | head -60 >"$out/children.txt" || true
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/chat.txt"
echo "== self time (top.txt)"; head -30 "$out/top.txt"
echo "== including callees (children.txt)"; head -30 "$out/children.txt"
