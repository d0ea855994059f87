#!/usr/bin/env bash
# The demo: start cumulod on the embedded default (SQLite in /var/lib/cumulo, socket
# /run/cumulo/cumulo.sock), build the busybox image, launch a limited container, run a
# command in it, list, and clean up (the container, and the daemon if we started it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
unset CUMULO_URL CUMULO_SOCKET
NAME=${DEMO_NAME:-demo}

daemon=""
if ! cumulo host info >/dev/null 2>&1; then
  mkdir -p /var/log/cumulo
  # no default network: the demo needs none, and leaves the host's links and firewall alone
  cumulod --no-default-network --log-level warning >>/var/log/cumulo/demo-daemon.log 2>&1 &
  daemon=$!
  for _ in $(seq 100); do
    cumulo host info >/dev/null 2>&1 && break
    kill -0 "$daemon" 2>/dev/null || { echo "cumulod failed; see /var/log/cumulo/demo-daemon.log" >&2; exit 1; }
    sleep 0.1
  done
fi
cleanup() {
  cumulo delete --force "$NAME" >/dev/null 2>&1 || true
  if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
}
trap cleanup EXIT

run() { printf '\n$'; printf ' %q' "$@"; printf '\n'; "$@"; }
run cumulo host info
run cumulo image build busybox
run cumulo launch busybox "$NAME" --memory 64MiB --cpu 0.5 --pids 64
run cumulo exec "$NAME" -- sh -c 'echo "hello from $(hostname)"; id; ps'
run cumulo list
run cumulo info "$NAME"
run cumulo delete --force "$NAME"
run cumulo list
