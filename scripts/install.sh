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

# Why each package is here: see docs/dependencies.md.
PACKAGES=(
  python3 python3-venv python3-pip   # the daemon and CLI
  runc crun conmon                   # OCI runtimes and the per-container monitor
  busybox-static                     # the local busybox image, no internet needed
  iproute2 nftables uidmap procps    # kernel networking tools, id maps, ps
  qemu-system-x86 qemu-utils         # virtual machines (KVM or TCG) and qemu-img
  e2fsprogs                          # mke2fs -d: VM base disks from image trees, sized ext4 files
  dnsmasq-base                       # DHCP and DNS per virtual network
  iperf3                             # throughput of virtual networks (bench, bandwidth tests)
  qperf                              # request/response latency of virtual networks (bench)
  swtpm swtpm-tools                  # vTPM: one software TPM 2.0 per VM (launch --tpm)
  mmdebstrap                         # image build debian/<release>: a rootfs from the Debian mirror
  umoci                              # image import of OCI image layouts: unpacks layers to a rootfs
  sysbench                           # bench lab: cpu and memory workloads (cumulo bench run)
  hpcc                               # bench lab: HPL/LINPACK at several sizes and STREAM
  fio                                # bench lab: disk suite, random/sequential IOPS and MiB/s
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

# The guest kernel for VMs: Debian's, unpacked once into a cache (never committed).
# Keep vmlinuz, modules.builtin and the virtio drivers the initramfs loads.
KERNEL_CACHE=/var/cache/cumulo/kernel
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kver=${kpkg#linux-image-}
# (fetched again when a cache from before VM root disks lacks ext4)
if [ -n "$kver" ] && { [ ! -f "$KERNEL_CACHE/$kver/vmlinuz" ] ||
    [ -z "$(find "$KERNEL_CACHE/$kver/modules" -name 'ext4.ko*' 2>/dev/null)" ]; }; then
  echo "==> fetching guest kernel $kpkg"
  work=$(mktemp -d)
  chmod 755 "$work"                  # apt-get download drops to the _apt user
  dest="$KERNEL_CACHE/$kver.tmp"
  trap 'rm -rf "$work" "$dest"' EXIT
  (cd "$work" && apt-get download -qq "$kpkg" >/dev/null)
  dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/root"
  rm -rf "$dest"
  mkdir -p "$dest/modules"
  cp "$work/root/boot/vmlinuz-$kver" "$dest/vmlinuz"
  mods="$work/root/lib/modules/$kver"
  cp "$mods"/modules.builtin "$dest/modules/"   # no modules.dep: depmod makes it at install
  # the drivers for --io paravirt (virtio) and --io emulated (IDE disk, e1000), with their deps
  python3 - "$mods" "$dest/modules" <<'PY'
import lzma, pathlib, re, shutil, sys
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
want = ["virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio-rng", "virtio_balloon",
        "virtio_console", "ata_piix", "ahci", "evdev", "button", "ata_generic", "sd_mod", "e1000", "crct10dif_generic",
        "ext4", "crc32c_generic"]   # root disks: ext4 and the crc32c its checksums ask for
files = {re.sub(r"\.ko(\.xz)?$", "", p.name).replace("-", "_"): p for p in src.rglob("*.ko*")}
seen: set[str] = set()
while want:
    name = want.pop().replace("-", "_")
    if name in seen or name not in files:
        continue
    seen.add(name)
    path = files[name]
    (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, dst / path.relative_to(src))
    data = path.read_bytes()
    data = lzma.decompress(data) if path.name.endswith(".xz") else data
    m = re.search(rb"\0depends=([^\0]*)", data)
    want += [d.decode() for d in (m.group(1).split(b",") if m else []) if d]
PY
  rm -rf "$KERNEL_CACHE/$kver.old"
  if [ -d "$KERNEL_CACHE/$kver" ]; then mv "$KERNEL_CACHE/$kver" "$KERNEL_CACHE/$kver.old"; fi
  mv "$dest" "$KERNEL_CACHE/$kver"
  rm -rf "$KERNEL_CACHE/$kver.old"
  rm -rf "$work"
  trap - EXIT
fi

# CRIU 4.2+ for container checkpoint/restore and migration (runc drives it). Debian 12's
# criu 3.17 fails `criu check` on recent kernels; Debian 13's 4.1.1 passes it but cannot dump
# any TCP/UDP socket on kernels >= 6.16 ("Can't get 1:16 opt": SO_PASSCRED is refused on
# inet sockets since then; fixed in CRIU 4.2), so containers serving on a NIC could not be
# checkpointed. Debian forky has 4.2.1. It needs a newer libc than bookworm's, so: forky's
# criu and its libraries unpacked into a private prefix (never dpkg-installed, the host's
# bookworm libc is untouched), run by their own loader from a wrapper script.
# A private apt state in a temp dir resolves the dependencies; nothing is added to /etc/apt.
# Re-runs only check the wrapper's `--version`.
CRIU_PREFIX=/opt/cumulo/criu
CRIU_SUITE=forky
if ! "$CRIU_PREFIX/criu" --version 2>/dev/null | grep -Eq 'Version: (4\.([2-9]|[1-9][0-9])|[5-9])'; then
  echo "==> fetching criu from Debian $CRIU_SUITE into $CRIU_PREFIX"
  cwork=$(mktemp -d)
  chmod 755 "$cwork"                 # apt-get download drops to the _apt user
  trap 'rm -rf "$cwork" "$CRIU_PREFIX.tmp"' EXIT
  mkdir -p "$cwork"/{lists/partial,cache/archives/partial,parts,prefs,debs}
  chmod 777 "$cwork/debs"
  touch "$cwork/status"              # an empty dpkg status: every dependency is fetched
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $CRIU_SUITE main" \
    > "$cwork/sources.list"
  capt=(-o Dir::Etc::sourcelist="$cwork/sources.list" -o Dir::Etc::sourceparts="$cwork/parts"
        -o Dir::Etc::preferencesparts="$cwork/prefs" -o Dir::State::Lists="$cwork/lists"
        -o Dir::State::status="$cwork/status" -o Dir::Cache="$cwork/cache" -o APT::Architecture=amd64)
  apt-get "${capt[@]}" update -qq
  mapfile -t cpkgs < <(apt-cache "${capt[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances criu | grep -v '^ ' | sort -u)
  (cd "$cwork/debs" && apt-get "${capt[@]}" download -qq "${cpkgs[@]}" >/dev/null)
  rm -rf "$CRIU_PREFIX.tmp"
  mkdir -p "$CRIU_PREFIX.tmp/root"
  for deb in "$cwork"/debs/*.deb; do dpkg-deb -x "$deb" "$CRIU_PREFIX.tmp/root"; done
  rm -rf "$CRIU_PREFIX.tmp/root/usr/share/doc" "$CRIU_PREFIX.tmp/root/usr/share/man" \
    "$CRIU_PREFIX.tmp/root/usr/share/locale"
  {
    echo '#!/bin/sh'
    echo "# criu from Debian $CRIU_SUITE, run by its own loader and libraries (scripts/install.sh)"
    echo "r=$CRIU_PREFIX/root"
    echo 'exec "$r/usr/lib64/ld-linux-x86-64.so.2" --library-path "$r/usr/lib/x86_64-linux-gnu" "$r/usr/sbin/criu" "$@"'
  } > "$CRIU_PREFIX.tmp/criu"
  chmod 755 "$CRIU_PREFIX.tmp/criu"
  rm -rf "$CRIU_PREFIX.old"
  if [ -d "$CRIU_PREFIX" ]; then mv "$CRIU_PREFIX" "$CRIU_PREFIX.old"; fi
  mv "$CRIU_PREFIX.tmp" "$CRIU_PREFIX"
  rm -rf "$CRIU_PREFIX.old" "$cwork"
  trap - EXIT
  if ! "$CRIU_PREFIX/criu" --version | grep -Eq 'Version: (4\.([2-9]|[1-9][0-9])|[5-9])'; then
    echo "install.sh: criu from $CRIU_SUITE does not run" >&2
    exit 1
  fi
fi
# runc finds criu on PATH: /usr/local/sbin comes before /usr/sbin (where a criu 3.17 would be)
ln -sfn "$CRIU_PREFIX/criu" /usr/local/sbin/criu

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
