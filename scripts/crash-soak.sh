#!/usr/bin/env bash
# Crash-recovery soak: `kefu-loadgen soak` (chat, churn, reconnects, resends,
# end-to-end verification) against a gateway that a loop kills with SIGKILL
# at random moments (every KILL_MIN..KILL_MAX seconds) and restarts on the
# same data directory and port. At the end it prints the kills and the load
# generator's counts; it exits 0 only if no acknowledged message was lost,
# none was stored or delivered twice, and none came out of order.
#
#   scripts/crash-soak.sh [DURATION]          # default 5m; e.g. 90s, 10m
#
# Environment (defaults in brackets): PORT [18480], ADMIN_PORT [18481],
# SHARDS [2], VISITORS [50], AGENTS [5], RATE [1000] msg/s, CHURN [2]
# disconnections/s, KILL_MIN [3], KILL_MAX [15] seconds, KEEP_DATA=1 keeps
# the data directory and logs (they are always kept on failure).
#
# The load is modest on purpose: it shares the machine with builds. Kills
# stop when the measurement window ends, so the load generator's final
# drain (resends, replays from cursors) runs against a live gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-5m}
PORT=${PORT:-18480}
ADMIN_PORT=${ADMIN_PORT:-18481}
SHARDS=${SHARDS:-2}
VISITORS=${VISITORS:-50}
AGENTS=${AGENTS:-5}
RATE=${RATE:-1000}
CHURN=${CHURN:-2}
KILL_MIN=${KILL_MIN:-3}
KILL_MAX=${KILL_MAX:-15}
WARMUP=5 # seconds (the load generator's --warmup)

seconds() { # 90s, 5m, 1h, or plain seconds
    local v=$1
    case $v in
    *ms) echo $((${v%ms} / 1000)) ;;
    *s) echo "${v%s}" ;;
    *m) echo $((${v%m} * 60)) ;;
    *h) echo $((${v%h} * 3600)) ;;
    *) echo "$v" ;;
    esac
}
DURATION_S=$(seconds "$DURATION")

echo "== building release binaries"
cargo build --release -p kefu -p kefu-loadgen
KEFU=target/release/kefu
LOADGEN=target/release/kefu-loadgen

WORK=$(mktemp -d /tmp/kefu-crash-soak.XXXXXX)
DATA=$WORK/data
GW_LOG=$WORK/gateway.log
LG_OUT=$WORK/loadgen.out
LG_ERR=$WORK/loadgen.err
GW_PID=
LG_PID=
KILLER_PID=
ok=0

cleanup() {
    [ -n "$KILLER_PID" ] && kill "$KILLER_PID" 2>/dev/null || true
    [ -n "$LG_PID" ] && kill "$LG_PID" 2>/dev/null || true
    if [ -f "$WORK/gateway.pid" ]; then
        kill -9 "$(cat "$WORK/gateway.pid")" 2>/dev/null || true
    fi
    if [ "$ok" = 1 ] && [ "${KEEP_DATA:-0}" != 1 ]; then
        rm -rf "$WORK"
    else
        echo "data directory and logs kept in $WORK"
    fi
}
trap cleanup EXIT

# Starts the gateway in the background; waits for its ready line. Prints how
# long that took (ms). The pid goes to $WORK/gateway.pid.
start_gateway() {
    local out=$WORK/gateway.stdout started=$(date +%s%N)
    : >"$out"
    "$KEFU" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --shards "$SHARDS" --data-dir "$DATA" --msg-rate-limit 0 \
        >"$out" 2>>"$GW_LOG" &
    echo $! >"$WORK/gateway.pid"
    for _ in $(seq 1 600); do
        if grep -q '^kefu ready' "$out"; then
            echo $((($(date +%s%N) - started) / 1000000))
            return 0
        fi
        if ! kill -0 "$(cat "$WORK/gateway.pid")" 2>/dev/null; then
            echo "the gateway exited during start-up; log: $GW_LOG" >&2
            tail -5 "$GW_LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "the gateway did not become ready in 60 s" >&2
    return 1
}

# Kills the gateway with SIGKILL every KILL_MIN..KILL_MAX seconds until
# $1 (epoch seconds), restarting it each time; writes one line per kill
# (kill time, restart ms) to $WORK/kills.
killer() {
    local until=$1
    # Not during the set-up and the warmup.
    sleep $((WARMUP + 2))
    while :; do
        local pause=$((KILL_MIN + RANDOM % (KILL_MAX - KILL_MIN + 1)))
        if [ $(($(date +%s) + pause)) -ge "$until" ]; then
            return 0
        fi
        sleep "$pause"
        local pid
        pid=$(cat "$WORK/gateway.pid")
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        local ms
        ms=$(start_gateway) || exit 1
        echo "$(date +%s) $ms" >>"$WORK/kills"
    done
}

mkdir -p "$DATA"
: >"$WORK/kills"
echo "== gateway: 127.0.0.1:$PORT, $SHARDS shards, data in $DATA"
first_ms=$(start_gateway)
echo "   ready in ${first_ms} ms"

echo "== soak: $DURATION, $VISITORS visitors, $AGENTS agents, $RATE msg/s, churn $CHURN/s;" \
    "SIGKILL every ${KILL_MIN}-${KILL_MAX} s"
"$LOADGEN" soak --target "ws://127.0.0.1:$PORT/v1/ws" --secret-file "$DATA/demo.secret" \
    --duration "${DURATION_S}s" --warmup "${WARMUP}s" --drain 60s \
    --visitors "$VISITORS" --agents "$AGENTS" --rate "$RATE" --churn "$CHURN" \
    --downtime 1s --backoff-max 1s --threads 1 --no-pin --json \
    >"$LG_OUT" 2>"$LG_ERR" &
LG_PID=$!

# Kill only inside the measurement window (it starts after the warmup and
# the agents' assignments, a few seconds in).
started=$(date +%s)
killer $((started + WARMUP + 3 + DURATION_S)) &
KILLER_PID=$!

set +e
wait "$LG_PID"
lg_status=$?
wait "$KILLER_PID"
killer_status=$?
set -e
LG_PID=
KILLER_PID=

kills=$(wc -l <"$WORK/kills")
report=$(tail -n 1 "$LG_OUT")
field() { echo "$report" | jq -r ".$1 // \"?\"" 2>/dev/null || echo "?"; }
echo
echo "== result"
echo "duration:     $DURATION (measurement window), $(($(date +%s) - started)) s in all"
echo "kills:        $kills (SIGKILL, each followed by a restart on the same data and port)"
if [ "$kills" -gt 0 ]; then
    awk '{ s += $2; if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2 }
        END { printf "restarts:     ready again in %d ms on average (min %d, max %d)\n", s / NR, min, max }' \
        "$WORK/kills"
fi
echo "sent:         $(field sent)"
echo "acked:        $(field acked)"
echo "delivered:    $(field delivered)"
echo "lost:         $(field lost)"
echo "duplicated:   $(field duplicated)"
echo "reordered:    $(field reordered)"
echo "errors:       $(field errors) (failed connections, error frames; restarts excepted)"
echo "loadgen exit: $lg_status"
grep -iE "panic|corrupt" "$GW_LOG" | head -5 || true

lost=$(field lost)
duplicated=$(field duplicated)
reordered=$(field reordered)
if [ "$killer_status" != 0 ]; then
    echo "FAIL: the gateway could not be restarted (see $GW_LOG)"
    exit 1
fi
if [ "$lost" != 0 ] || [ "$duplicated" != 0 ] || [ "$reordered" != 0 ]; then
    echo "FAIL: lost $lost, duplicated $duplicated, reordered $reordered"
    exit 1
fi
if [ "$lg_status" = 2 ]; then
    echo "FAIL: the load generator could not carry out the run (see $LG_ERR)"
    exit 1
fi
echo "OK: nothing lost, nothing duplicated, nothing out of order across $kills kills"
ok=1
