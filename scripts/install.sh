#!/usr/bin/env bash
# Install everything Cumulo needs on Debian 12, as root: system packages (apt-get)
# and the Python package with its dependencies in .venv/ at the repository root.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (containers need namespaces and cgroups)" >&2
  exit 1
fi

# Why each package is here: see README.md, "Dependencies".
PACKAGES=(
  python3 python3-venv python3-pip   # the daemon and CLI
  runc crun conmon                   # OCI runtimes and the per-container monitor
  busybox-static                     # the local busybox image, no internet needed
  iproute2 nftables uidmap procps    # kernel networking tools, id maps, ps
  dnsmasq-base                       # DHCP and DNS per virtual network
  iperf3                             # throughput of virtual networks (bench, bandwidth tests)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.cumulo-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> pip install -e .[dev]"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
echo "==> installed: $(.venv/bin/cumulo --help >/dev/null && echo cumulo) $(.venv/bin/cumulod --version)"
