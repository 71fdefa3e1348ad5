#!/usr/bin/env bash
# The peers kefu is compared with: mosquitto and nats-server from Debian,
# on loopback, with the recorded configurations in scripts/peers/.
#
# usage: scripts/peers.sh install
#        scripts/peers.sh start [mosquitto|nats|all]   (default: all)
#        scripts/peers.sh stop  [mosquitto|nats|all]
#        scripts/peers.sh status
#        scripts/peers.sh run [mosquitto|nats|all] -- COMMAND...
#
# install   apt-get update, then install mosquitto and nats-server (root);
#           a package missing from Debian's registry is reported and skipped.
# start     writes each configuration into the state directory with its
#           ports and a fresh data directory, starts the server (under
#           `timeout`, so it never outlives $PEERS_MAX_SECONDS), waits for
#           its WebSocket port and prints `<peer> ws://127.0.0.1:PORT/...`.
#           A peer that is not installed is skipped with a message.
# stop      stops what start started (pid files) and removes its data.
# run       start, run COMMAND with MOSQUITTO_WS / NATS_WS set, stop (trap).
#
# Environment: PEERS_DIR (state, default /tmp/kefu-peers), MOSQUITTO_WS_PORT
# (18083), MOSQUITTO_MQTT_PORT (18883), NATS_WS_PORT (18084),
# NATS_CLIENT_PORT (14222), NATS_HTTP_PORT (18222), PEERS_CPU (run the
# servers under `taskset -c PEERS_CPU`), PEERS_MAX_SECONDS (3600).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${PEERS_DIR:-/tmp/kefu-peers}
mq_ws=${MOSQUITTO_WS_PORT:-18083}
mq_tcp=${MOSQUITTO_MQTT_PORT:-18883}
nats_ws=${NATS_WS_PORT:-18084}
nats_client=${NATS_CLIENT_PORT:-14222}
nats_http=${NATS_HTTP_PORT:-18222}
max_seconds=${PEERS_MAX_SECONDS:-3600}

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

which_peers() {
  case "${1:-all}" in
    all) echo "mosquitto nats" ;;
    mosquitto|nats) echo "$1" ;;
    *) usage >&2; exit 2 ;;
  esac
}

binary_of() {
  case "$1" in
    mosquitto) command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null || true ;;
    nats) command -v nats-server || ls /usr/sbin/nats-server /usr/bin/nats-server 2>/dev/null | head -1 || true ;;
  esac
}

ws_url() {
  case "$1" in
    mosquitto) echo "ws://127.0.0.1:$mq_ws/mqtt" ;;
    nats) echo "ws://127.0.0.1:$nats_ws/" ;;
  esac
}

ws_port() {
  case "$1" in
    mosquitto) echo "$mq_ws" ;;
    nats) echo "$nats_ws" ;;
  esac
}

install_peers() {
  if [ "$(id -u)" != 0 ]; then echo "install needs root (apt-get)" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq
  for pkg in mosquitto nats-server; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      timeout 600 apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
      echo "installed $pkg $(dpkg-query -W -f='${Version}' "$pkg")"
    else
      echo "$pkg: not in this machine's Debian registry; skipped (the comparison leaves it out)"
    fi
  done
  # Debian may start a system mosquitto on 1883; the benchmark uses its own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl stop mosquitto || true
  fi
}

# Waits up to 10 s for 127.0.0.1:$1 to accept connections.
wait_port() {
  local port=$1 i
  for i in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

start_one() {
  local peer=$1 bin dir conf
  bin=$(binary_of "$peer")
  if [ -z "$bin" ]; then
    echo "$peer: not installed (scripts/peers.sh install); skipped" >&2
    return 0
  fi
  if [ -f "$state/$peer.pid" ] && kill -0 "$(cat "$state/$peer.pid")" 2>/dev/null; then
    echo "$peer $(ws_url "$peer") (already running, pid $(cat "$state/$peer.pid"))"
    return 0
  fi
  dir="$state/$peer"
  rm -rf "$dir"
  mkdir -p "$dir/data"
  local pin=()
  if [ -n "${PEERS_CPU:-}" ]; then pin=(taskset -c "$PEERS_CPU"); fi
  case "$peer" in
    mosquitto)
      conf="$dir/mosquitto.conf"
      sed -e "s|@DATA@|$dir/data|g" -e "s|@WS_PORT@|$mq_ws|g" -e "s|@MQTT_PORT@|$mq_tcp|g" \
        "$here/peers/mosquitto.conf" >"$conf"
      # One descriptor per connection: as many as the hard limit allows.
      (ulimit -n "$(ulimit -Hn)"; exec "${pin[@]}" timeout "$max_seconds" "$bin" -c "$conf") \
        >"$dir/log" 2>&1 &
      ;;
    nats)
      conf="$dir/nats-server.conf"
      sed -e "s|@DATA@|$dir/data|g" -e "s|@WS_PORT@|$nats_ws|g" \
        -e "s|@CLIENT_PORT@|$nats_client|g" -e "s|@HTTP_PORT@|$nats_http|g" \
        "$here/peers/nats-server.conf" >"$conf"
      (ulimit -n "$(ulimit -Hn)"; exec "${pin[@]}" timeout "$max_seconds" "$bin" -c "$conf") \
        >"$dir/log" 2>&1 &
      ;;
  esac
  local pid=$!
  echo "$pid" >"$state/$peer.pid"
  if ! wait_port "$(ws_port "$peer")"; then
    echo "$peer: did not open its WebSocket port within 10 s; its log:" >&2
    tail -20 "$dir/log" >&2 || true
    stop_one "$peer"
    return 1
  fi
  echo "$peer $(ws_url "$peer") pid $pid"
}

stop_one() {
  local peer=$1 pid i
  if [ -f "$state/$peer.pid" ]; then
    pid=$(cat "$state/$peer.pid")
    # `timeout` forwards TERM to the server; then wait up to 5 s.
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$state/$peer.pid"
    echo "$peer stopped"
  fi
  rm -rf "${state:?}/$peer"
}

status() {
  local peer
  for peer in mosquitto nats; do
    if [ -f "$state/$peer.pid" ] && kill -0 "$(cat "$state/$peer.pid")" 2>/dev/null; then
      echo "$peer running, pid $(cat "$state/$peer.pid"), $(ws_url "$peer")"
    elif [ -n "$(binary_of "$peer")" ]; then
      echo "$peer installed, not running"
    else
      echo "$peer not installed"
    fi
  done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
mkdir -p "$state"
case "$cmd" in
  install) install_peers ;;
  start)
    for p in $(which_peers "${1:-all}"); do start_one "$p"; done ;;
  stop)
    for p in $(which_peers "${1:-all}"); do stop_one "$p"; done ;;
  status) status ;;
  run)
    which=all
    if [ "${1:-}" != "--" ] && [ $# -gt 0 ]; then which=$1; shift; fi
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || { usage >&2; exit 2; }
    peers=$(which_peers "$which")
    trap 'for p in $peers; do stop_one "$p" >/dev/null; done' EXIT INT TERM
    for p in $peers; do start_one "$p"; done
    MOSQUITTO_WS=$(ws_url mosquitto) NATS_WS=$(ws_url nats) "$@"
    ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
