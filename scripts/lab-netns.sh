#!/usr/bin/env bash
# Run one command (usually `cumulo bench run ...`) against a cumulod started for it inside a
# network namespace made for it, then remove everything: the benchmark lab's network suite
# then keeps the traffic between instances (its bridge, veths, taps, dnsmasq) inside that
# namespace, while native runs use the host's loopback. Needs root.
#
#   sudo scripts/lab-netns.sh cumulo bench run --quick --platforms native,container,vm \
#       --suites network,disk --output /tmp/lab/net.json
#
# The daemon has its own state dir (a fresh temp dir: the `bench` image is built in it and
# deleted with it), its own cgroup parent, and no default network. On exit (also on failure
# or Ctrl-C) every instance and network it holds is deleted, it is stopped, the namespace and
# the state dir are removed. CUMULO_LAB_LOG=FILE keeps a copy of the daemon's log.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
unset CUMULO_URL
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

tag=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
ns=cu-lab-$tag
state=$(mktemp -d /tmp/cumulo-lab-XXXXXX)
chmod 711 "$state"   # dnsmasq drops to its own user and must reach its files
daemon=""

cleanup() {
  set +e
  trap '' INT TERM   # cleanup must finish
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    CUMULO_SOCKET="$state/cumulo.sock" python - <<'EOF'
from cumulo.client import Client
with Client() as c:
    for inst in c.instances():
        c.delete(inst["name"], force=True)
    for net in c.networks():
        c.delete_network(net["name"])
EOF
    kill "$daemon"
    wait "$daemon"
  fi
  [ -n "${CUMULO_LAB_LOG:-}" ] && cp "$state/cumulod.log" "$CUMULO_LAB_LOG"
  for cg in /sys/fs/cgroup/*/"cumulo-lab-$tag"; do [ -d "$cg" ] && rmdir "$cg"; done
  ip netns del "$ns" 2>/dev/null
  rm -rf "$state"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$ns"
nsenter --net="/run/netns/$ns" cumulod --state-dir "$state/state" --socket "$state/cumulo.sock" \
  --cgroup-parent "cumulo-lab-$tag" --no-default-network --log-level info \
  >"$state/cumulod.log" 2>&1 &
daemon=$!
export CUMULO_SOCKET="$state/cumulo.sock"
for _ in $(seq 200); do
  cumulo host info >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { tail -20 "$state/cumulod.log" >&2; daemon=""; exit 1; }
  sleep 0.1
done
cumulo host info >/dev/null || exit 1
echo "cumulod in network namespace $ns (state $state)" >&2
"$@"
