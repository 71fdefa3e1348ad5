#!/usr/bin/env bash
# The whole comparison on this machine: micro-benchmarks, then kefu, its
# peers (mosquitto, core NATS, JetStream) and the raw TCP echo ceiling,
# driven by kefu-loadgen with the same message size and rates.
#
# usage: scripts/bench.sh [--quick] [--no-micro] [--no-peers] [--out DIR]
#
#   --quick     fewer, shorter runs (under 2 minutes once built; no
#               micro-benchmarks, no saturation search)
#   --no-micro  skip `cargo bench -p kefu-bench`
#   --no-peers  kefu and the echo ceiling only
#   --out DIR   where results go (default bench/results)
#
# Pinning: the system under test (gateway, peer or echo server) runs on
# CPU $SERVER_CPU (0), the load generator on CPU $LOADGEN_CPU (1).
# Writes DIR/latest.json (one row per system and scenario: system,
# scenario, msgs_per_sec, ack_p99_us, deliver_p99_us, lost, duplicated),
# DIR/latest-raw.jsonl (every run's full --json object and context),
# DIR/latest.svg (throughput against p99), DIR/micro.jsonl, DIR/env.txt
# and DIR/logs/. Peers that are not installed are skipped (see
# scripts/peers.sh install).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
quick=false micro=true peers=true out=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=true ;;
    --no-micro) micro=false ;;
    --no-peers) peers=false ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) sed -n '4p' "$0" | sed 's/^# //' >&2; exit 2 ;;
  esac
  shift
done
$quick && micro=false

server_cpu=${SERVER_CPU:-0}
loadgen_cpu=${LOADGEN_CPU:-1}
if [ "$(nproc)" -lt 2 ]; then
  echo "bench.sh: fewer than 2 CPUs: server and load generator share CPU 0" >&2
  loadgen_cpu=0
fi

# Scenario sizes.
if $quick; then
  duration=2s warmup=1s drain=3s
  rates=(5000 20000)
  flood_n=2000 flood_hold=1s flood_rate=5000
  saturate=()
else
  duration=8s warmup=2s drain=10s
  rates=(5000 10000 20000)
  flood_n=${FLOOD_CONNECTIONS:-19000} flood_hold=5s flood_rate=5000
  saturate=(40000 80000 160000)
fi
visitors=100 agents=10 text_bytes=32 reply=0.1
echo_bytes=64   # about the size of kefu's `msg` frame for a 32-byte text

mkdir -p "$out/logs"
raw="$out/latest-raw.jsonl"
: >"$raw"
work=$(mktemp -d /tmp/kefu-bench.XXXXXX)
export PEERS_DIR="$work/peers" PEERS_CPU="$server_cpu" PEERS_MAX_SECONDS=1800
lg="$root/target/release/kefu-loadgen"
gw="$root/target/release/kefu"
started=$(date +%s)
server_pid=""
current_pid=""

cleanup() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; fi
  scripts/peers.sh stop all >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '[%4ss] %s\n' "$(($(date +%s) - started))" "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------- build
say "building release binaries"
timeout 1200 cargo build --release --quiet -p kefu -p kefu-loadgen

# ---------------------------------------------------------------- environment
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "nproc: $(nproc)"
  echo "uname -r: $(uname -r)"
  echo "load average at start: $(load)"
  echo "RLIMIT_NOFILE: soft $(ulimit -Sn) hard $(ulimit -Hn)"
  echo "--- lscpu | head"
  lscpu | head -20
  echo "--- memory"
  free -m | head -2
  echo "--- disk of the data directories ($work)"
  df -h "$work" | tail -1
  findmnt -no SOURCE,FSTYPE,OPTIONS -T "$work" 2>/dev/null || true
  echo "--- peers"
  echo "mosquitto: $(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null || echo 'not installed')"
  echo "nats-server: $(dpkg-query -W -f='${Version}' nats-server 2>/dev/null || echo 'not installed')"
  echo "--- busiest processes at start"
  ps -eo pcpu,comm --sort=-pcpu | head -8
} >"$out/env.txt"

# ---------------------------------------------------------------- micro
if $micro; then
  say "micro-benchmarks (cargo bench -p kefu-bench)"
  timeout 900 cargo bench -p kefu-bench 2>"$out/logs/micro.stderr" | tee "$out/logs/micro.txt" \
    | grep '^{' >"$out/micro.jsonl" || true
fi

# ---------------------------------------------------------------- runs
# record SYSTEM SCENARIO OFFERED LOGNAME: reads the load generator's
# --json line from LOGNAME.out, appends it with context to $raw.
record() {
  local system=$1 scenario=$2 offered=$3 log=$4 line
  line=$(tail -n 1 "$log.out" 2>/dev/null || true)
  if ! printf '%s' "$line" | jq -e . >/dev/null 2>&1; then
    say "$system $scenario: no result (see $log.err)"
    line=null
  fi
  jq -cn --arg system "$system" --arg scenario "$scenario" --argjson offered "$offered" \
    --argjson result "$line" --arg load "$(load)" \
    --arg batches "$(grep 'gateway shard' "$log.err" 2>/dev/null | sed 's/^kefu-loadgen: //' | paste -sd ';' -)" \
    '{system:$system, scenario:$scenario, offered:$offered, load:$load, batches:$batches, result:$result}' >>"$raw"
  if [ "$line" != null ]; then
    say "$system $scenario: $(jq -r '"\(.msgs_per_sec) msg/s, ack p99 \(.ack_p99_us) µs, deliver p99 \(.deliver_p99_us) µs, lost \(.lost), dup \(.duplicated), errors \(.errors)"' <<<"$line") (load $(load))"
  fi
}

# loadgen LOG ARGS...: runs kefu-loadgen on the load generator's CPU.
loadgen() {
  local log=$1; shift
  timeout 300 taskset -c "$loadgen_cpu" "$lg" "$@" --cpus "$loadgen_cpu" --json --quiet \
    >"$log.out" 2>"$log.err" || true
}

# fresh: before each kefu run, a new gateway with an empty data directory,
# so that no run meets an earlier run's conversations (their agents'
# grace period ends mid-run and requeues them to the new agents, who then
# receive whole logs). The peers' runs use fresh topics (new run ids).
fresh() {
  if [ "$1" = kefu ]; then
    kefu_stop
    kefu_start
  fi
}

# drive SYSTEM TARGET [ADMIN]: flood, chat at each rate, saturation,
# ping-pong; $current_pid is the server's process (RSS per connection).
drive() {
  local system=$1 target=$2 admin=${3:-} log r achieved
  local auth=(--system "$system" --target "$target")
  [ "$system" = kefu ] && auth+=(--secret-file "$work/kefu/demo.secret")
  local extra=()
  [ -n "$admin" ] && extra=(--admin "$admin")

  # JetStream's connections are nats-server's (the flood of `nats` counts
  # them); a JetStream client's consumer is set up per chat client only.
  if [ "$system" != jetstream ]; then
    log="$out/logs/$system-flood"
    say "$system: flood $flood_n connections"
    fresh "$system"
    loadgen "$log" flood "${auth[@]}" --connections "$flood_n" --rate "$flood_rate" \
      --duration "$flood_hold" --gateway-pid "$current_pid"
    record "$system" flood 0 "$log"
  fi

  for r in "${rates[@]}" "${saturate[@]}"; do
    log="$out/logs/$system-chat-$r"
    say "$system: chat at $r msg/s"
    fresh "$system"
    loadgen "$log" chat "${auth[@]}" --visitors "$visitors" --agents "$agents" --rate "$r" \
      --reply-fraction "$reply" --text-bytes "$text_bytes" --duration "$duration" \
      --warmup "$warmup" --drain "$drain" "${extra[@]}"
    record "$system" "chat-$((r / 1000))k" "$r" "$log"
    achieved=$(tail -n 1 "$log.out" 2>/dev/null | jq -r '.msgs_per_sec // 0' 2>/dev/null || echo 0)
    # Past saturation: stop raising the rate once 90% of it is not met.
    if [ "$(jq -n --argjson a "${achieved:-0}" --argjson r "$r" '$a < 0.9 * $r')" = true ]; then
      break
    fi
  done

  log="$out/logs/$system-ping-pong"
  say "$system: ping-pong"
  fresh "$system"
  loadgen "$log" chat "${auth[@]}" --ping-pong --visitors 1 --agents 1 --duration "$duration" \
    --warmup "$warmup" --drain "$drain" --text-bytes "$text_bytes"
  record "$system" ping-pong 0 "$log"
}

wait_http() {
  local url=$1 i
  for i in $(seq 1 100); do
    curl -fsS -m 1 "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# kefu: one shard on the server CPU, fsync before ack, no per-connection
# rate limit (the load generator's agents answer many conversations).
kefu_start() {
  rm -rf "$work/kefu"
  mkdir -p "$work/kefu"
  taskset -c "$server_cpu" timeout 1800 "$gw" serve --listen 127.0.0.1:18080 \
    --admin-listen 127.0.0.1:19090 --data-dir "$work/kefu" --shards 1 --cpus "$server_cpu" \
    --msg-rate-limit 0 >>"$out/logs/kefu-gateway.log" 2>&1 &
  server_pid=$!
  wait_http http://127.0.0.1:18080/health || { say "kefu did not start"; exit 1; }
  current_pid=$(pgrep -P "$server_pid" -x kefu || echo "$server_pid")
}
kefu_stop() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
say "kefu: the gateway on CPU $server_cpu (a fresh one for every run)"
: >"$out/logs/kefu-gateway.log"
drive kefu ws://127.0.0.1:18080/v1/ws 127.0.0.1:19090
kefu_stop

# The peers, one at a time, on the same CPU.
if $peers; then
  for peer in mosquitto nats; do
    if ! scripts/peers.sh start "$peer" >"$out/logs/$peer-start.txt" 2>&1; then
      say "$peer: not started ($(tail -1 "$out/logs/$peer-start.txt"))"
      continue
    fi
    if ! grep -q "^$peer ws://" "$out/logs/$peer-start.txt"; then
      say "$peer: skipped ($(tail -1 "$out/logs/$peer-start.txt"))"
      continue
    fi
    url=$(grep "^$peer ws://" "$out/logs/$peer-start.txt" | cut -d' ' -f2)
    ppid=$(cat "$PEERS_DIR/$peer.pid")
    current_pid=$(pgrep -P "$ppid" | head -1 || true)
    current_pid=${current_pid:-$ppid}
    if [ "$peer" = mosquitto ]; then
      drive mosquitto "$url"
    else
      drive nats "$url"
      drive jetstream "$url"
    fi
    scripts/peers.sh stop "$peer" >/dev/null
  done
fi

# The ceiling: a TCP echo on the same runtime, one core each side.
say "echo: TCP loopback ceiling"
taskset -c "$server_cpu" "$lg" echo-server --listen 127.0.0.1:17070 --cpu "$server_cpu" \
  --duration 600s >"$out/logs/echo-server.log" 2>&1 &
server_pid=$!
sleep 0.5
echo_run() {
  local name=$1 offered=$2; shift 2
  local log="$out/logs/tcp-echo-$name"
  timeout 120 taskset -c "$loadgen_cpu" "$lg" echo --target 127.0.0.1:17070 --cpu "$loadgen_cpu" \
    --msg-bytes "$echo_bytes" --duration "$duration" --warmup "$warmup" --json "$@" \
    >"$log.out" 2>"$log.err" || true
  record tcp-echo "$name" "$offered" "$log"
}
echo_run echo-max 0 --connections "$visitors" --rate 0 --window 16
for r in "${rates[@]}"; do
  echo_run "echo-$((r / 1000))k" "$r" --connections "$visitors" --rate "$r"
done
echo_run ping-pong 0 --connections 1 --rate 0 --window 1
kill -TERM "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=""

# ---------------------------------------------------------------- results
# One row per system and scenario; chat-max is the best chat rate reached
# (with its latencies) among the runs above.
jq -s '
  [ .[] | select(.result != null) ] as $runs
  | ( [ $runs[] | {system, scenario, r: .result} ]
      + [ $runs | map(select(.scenario | startswith("chat-"))) | group_by(.system)[]
          | max_by(.result.msgs_per_sec) | {system, scenario: "chat-max", r: .result} ] )
  | map(if .scenario == "flood"
         # A flood sends no messages: its numbers (connections, RSS) are in
         # latest-raw.jsonl and PERF.md.
         then {system, scenario, msgs_per_sec: null, ack_p99_us: null, deliver_p99_us: null,
               lost: null, duplicated: null}
         else {system, scenario, msgs_per_sec: .r.msgs_per_sec, ack_p99_us: .r.ack_p99_us,
               deliver_p99_us: .r.deliver_p99_us, lost: .r.lost, duplicated: .r.duplicated}
         end)
' "$raw" >"$out/latest.json"
python3 scripts/plot.py "$raw" "$out/latest.svg"
echo "load average at end: $(load)" >>"$out/env.txt"
say "done: $out/latest.json, $out/latest.svg ($(jq length "$out/latest.json") rows)"
jq -r '.[] | [.system, .scenario, .msgs_per_sec, .ack_p99_us, .deliver_p99_us, .lost, .duplicated] | @tsv' \
  "$out/latest.json" | column -t -N system,scenario,msg/s,ack_p99_us,deliver_p99_us,lost,dup
