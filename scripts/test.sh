#!/usr/bin/env bash
# Every test kefu has: the Rust unit and integration tests (real gateways on
# port 0 over real sockets), then the browser tests of the widget and the
# console (scripts/web-test.sh installs Chromium and Playwright if missing).
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace

echo "== browser tests"
scripts/web-test.sh
