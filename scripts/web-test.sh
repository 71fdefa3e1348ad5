#!/usr/bin/env bash
# Browser tests of the visitor widget and the agent console (docs/WEB.md).
#
# Installs what they need when it is missing: Debian's chromium (apt-get, as
# root or through sudo) and playwright-core from web/package-lock.json
# (npm ci). Builds kefu (debug) unless KEFU_BIN names a binary, then runs
# web/tests/*.test.mjs with node's test runner: each test starts real
# gateways on loopback (port 0, or a port it picked for the restart case)
# with temporary data directories. Exits non-zero when a test fails.
#
#   scripts/web-test.sh            run the tests
#   scripts/web-test.sh --shots    also write the screenshots to docs/img/
#
# Environment: KEFU_BIN (a kefu binary), CHROMIUM (default /usr/bin/chromium),
# KEFU_TEST_LOG (the gateways' RUST_LOG, default warn).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ "${1:-}" == "--shots" ]]; then
  export KEFU_SHOTS="$root/docs/img"
  shift
fi

as_root() {
  if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=
need_apt() {
  [[ -n $apt_updated ]] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $CHROMIUM ]]; then
  echo "== installing chromium (apt)"
  need_apt chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing nodejs and npm (apt)"
  need_apt nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if (( node_major < 20 )); then
  echo "web-test: Node.js 20 or newer is needed (found $(node --version))" >&2
  exit 2
fi

echo "== npm ci (web/)"
(cd web && npm ci --no-audit --no-fund --loglevel=error)

if [[ -z ${KEFU_BIN:-} ]]; then
  echo "== cargo build"
  cargo build --bin kefu
  KEFU_BIN=$root/target/debug/kefu
fi
export KEFU_BIN

echo "== browser tests ($($CHROMIUM --version 2>/dev/null | head -1))"
cd web
start=$SECONDS
timeout 900 node --test --test-concurrency=1 --test-timeout=120000 tests/*.test.mjs "$@"
echo "== browser tests passed in $((SECONDS - start)) s"
