#!/usr/bin/env bash
# Host tuning for a flash-sale kefu box. Prints each setting, its current
# value, the recommended one and why; changes nothing unless --apply is given
# (then it needs root, and writes /etc/sysctl.d/60-kefu.conf and
# /etc/security/limits.d/60-kefu.conf so the settings survive a reboot).
set -euo pipefail

apply=false
case "${1:-}" in
  --apply) apply=true ;;
  ""|--show) ;;
  -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--show|--apply]" >&2; exit 2 ;;
esac

# name | recommended | why
sysctls=(
  "net.core.somaxconn|65535|the accept backlog per listening socket; kefu asks for 16384 per shard, the kernel caps it at this value, and a connect storm overflows a small one (SYNs dropped, clients retry after 1 s)"
  "net.ipv4.tcp_max_syn_backlog|65535|half-open connections waiting for their final ACK during a connect storm"
  "net.core.netdev_max_backlog|16384|packets queued between the NIC and the stack under bursts"
  "net.ipv4.ip_local_port_range|1024 65535|ephemeral ports: matters on the load generator and on proxies in front of kefu (each source address gets one connection per port)"
  "net.ipv4.tcp_fin_timeout|15|frees sockets of closed connections sooner after a reconnect storm"
  "net.ipv4.tcp_tw_reuse|1|lets clients (and the load generator) reuse TIME_WAIT ports for new outgoing connections"
  "fs.file-max|2097152|system-wide file handles: one per connection, plus sled's files"
  "fs.nr_open|2097152|the ceiling for a process's open-files limit (LimitNOFILE)"
)

echo "== sysctls"
conf=""
for entry in "${sysctls[@]}"; do
  IFS='|' read -r name want why <<<"$entry"
  have=$(sysctl -n "$name" 2>/dev/null | tr -s '\t ' ' ' || echo "?")
  printf '%-32s now: %-14s recommended: %-12s %s\n' "$name" "$have" "$want" "$why"
  conf+="$name = $want"$'\n'
done

echo
echo "== limits"
printf '%-32s now: %-14s recommended: %-12s %s\n' "nofile (ulimit -n)" "$(ulimit -n)" "1048576" \
  "one descriptor per connection; kefu raises its soft limit to the hard limit at start, so the hard limit is what counts (systemd: LimitNOFILE)"
printf '%-32s now: %-14s recommended: %-12s %s\n' "memlock (ulimit -l)" "$(ulimit -l)" "unlimited" \
  "io_uring registers a little memory per shard (systemd: LimitMEMLOCK)"

if $apply; then
  if [ "$(id -u)" != 0 ]; then echo "--apply needs root" >&2; exit 1; fi
  printf '# written by kefu scripts/tune.sh\n%s' "$conf" > /etc/sysctl.d/60-kefu.conf
  sysctl --quiet --load /etc/sysctl.d/60-kefu.conf
  cat > /etc/security/limits.d/60-kefu.conf <<LIMITS
# written by kefu scripts/tune.sh (login sessions; systemd units use LimitNOFILE)
*    soft nofile  1048576
*    hard nofile  1048576
*    soft memlock unlimited
*    hard memlock unlimited
LIMITS
  echo
  echo "applied: /etc/sysctl.d/60-kefu.conf, /etc/security/limits.d/60-kefu.conf"
else
  echo
  echo "nothing changed; run with --apply (as root) to apply and persist these"
fi
