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

# Why each package is here: see docs/dependencies.md. Every program the code runs is
# in src/cumulo/host/tools.py with its package (a unit test holds the two together).
# No iptables: CRIU locks a container's network with nftables (scripts/install-criu.sh).
PACKAGES=(
  python3 python3-venv python3-pip   # the daemon and CLI
  runc crun conmon                   # OCI runtimes and the per-container monitor
  busybox-static                     # the local busybox image, no internet needed
  iproute2 nftables uidmap procps    # kernel networking tools, id maps, ps
  kmod                               # modprobe: kernel modules networks need (br_netfilter...)
  qemu-system-x86 qemu-utils         # virtual machines (KVM or TCG) and qemu-img
  e2fsprogs                          # mke2fs -d: VM base disks from image trees, sized ext4 files
  dnsmasq-base                       # DHCP and DNS per virtual network
  iperf3                             # throughput of virtual networks (bench, bandwidth tests)
  qperf                              # request/response latency of virtual networks (bench)
  swtpm swtpm-tools                  # vTPM: one software TPM 2.0 per VM (launch --tpm)
  mmdebstrap                         # image build debian/<release>: a rootfs from the Debian mirror
  grub-pc-bin grub-efi-amd64-bin     # image build --vm: GRUB for BIOS and UEFI, put on the disk
                                     # without mapping partitions (grub-mkimage, no grub-install)
  ovmf                               # UEFI firmware for VMs that boot from their disk
  fdisk dosfstools mtools            # image build --vm: partition table, FAT EFI partition, mcopy
  genisoimage                        # cloud-init: the NoCloud seed of a VM, an ISO labelled cidata
  openssh-client                     # tests: ssh into a VM with the key cloud-init installed
  umoci                              # image import of OCI image layouts: unpacks layers to a rootfs
  sysbench                           # bench lab: cpu and memory workloads (cumulo bench run)
  hpcc                               # bench lab: HPL/LINPACK at several sizes and STREAM
  fio                                # bench lab: disk suite, random/sequential IOPS and MiB/s
  postgresql                         # cumulod --database postgresql://; tests start a throwaway server
  linux-source make gcc binutils     # image build kernel: app-VM kernels from Debian's
  flex bison bc libelf-dev           # own source (built on first use, not here)
  podman netavark                    # bench: the peer for container launch (netavark, not
                                     # the CNI plugins, which would pull in iptables)
  chromium                           # tests of the web console: Playwright drives it headless
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

# microvm boots the uncompressed kernel (vmlinux) straight at its PVH entry: no firmware
# loading the bzImage and no decompression, which on TCG took ~4 s of a ~10 s boot
# (bench/vm_launch.py). Unpacked once from vmlinuz's xz payload; kept only if it has the
# PVH entry note (Xen ELF note 18), else microvm goes on booting vmlinuz.
if [ -n "$kver" ] && [ -f "$KERNEL_CACHE/$kver/vmlinuz" ] && [ ! -f "$KERNEL_CACHE/$kver/vmlinux" ]; then
  echo "==> unpacking the guest kernel for PVH boot (microvm)"
  python3 - "$KERNEL_CACHE/$kver" <<'PY'
import lzma, os, pathlib, struct, sys
top = pathlib.Path(sys.argv[1])
data = (top / "vmlinuz").read_bytes()
start = data.find(b"\xfd7zXZ\x00")
if start < 0:
    print("    no xz payload in vmlinuz: microvm keeps booting vmlinuz")
    sys.exit(0)
elf = lzma.LZMADecompressor().decompress(data[start:])

def pvh_entry(elf: bytes) -> bool:
    """An ELF64 PT_NOTE holding the Xen note XEN_ELFNOTE_PHYS32_ENTRY (18)."""
    if not elf.startswith(b"\x7fELF\x02"):
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        ptype, _, off, _, _, size = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        pos, end = off, off + size
        while ptype == 4 and pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False

if not pvh_entry(elf):
    print("    vmlinux has no PVH entry: microvm keeps booting vmlinuz")
    sys.exit(0)
tmp = top / "vmlinux.tmp"
tmp.write_bytes(elf)
os.replace(tmp, top / "vmlinux")
PY
fi

# CRIU 4.2.1 (pinned) for container checkpoint/restore and migration, from Debian forky
# into a private prefix; why and how: scripts/install-criu.sh. It locks a container's
# network with nftables, so no iptables is needed (see docs/host-info.md).
bash scripts/install-criu.sh /opt/cumulo/criu
CRIU_PREFIX=/opt/cumulo/criu
# runc finds criu on PATH: /usr/local/sbin comes before /usr/sbin (where a criu 3.17 would be)
ln -sfn "$CRIU_PREFIX/criu" /usr/local/sbin/criu

# A docker client for the Docker-compatible socket (docs/docker.md) and its tests, where
# none is installed: only the client binary of Debian's docker.io, unpacked into
# /opt/cumulo/docker/bin (installing the package would bring a Docker engine, not wanted).
DOCKER_CLI=/opt/cumulo/docker/bin/docker
if ! command -v docker >/dev/null && [ ! -x "$DOCKER_CLI" ]; then
  echo "==> fetching the docker client (Debian docker.io)"
  dwork=$(mktemp -d)
  chmod 755 "$dwork"                 # apt-get download drops to the _apt user
  (cd "$dwork" && apt-get download -qq docker.io >/dev/null)
  dpkg-deb --fsys-tarfile "$dwork"/docker.io_*.deb | tar -x -C "$dwork" ./usr/bin/docker
  install -D -m 0755 "$dwork/usr/bin/docker" "$DOCKER_CLI"
  rm -rf "$dwork"
fi

# The web console's terminal (xterm.js) from the npm registry, pinned by the committed
# package-lock.json; only its dist files go to the (gitignored) static/vendor/. Without
# npm the console works and its terminal says why it cannot open.
WEB=src/cumulo/web
if command -v npm >/dev/null; then
  if [ ! -f "$WEB/static/vendor/xterm.mjs" ] || [ "$WEB/package-lock.json" -nt "$WEB/static/vendor/xterm.mjs" ]; then
    echo "==> npm ci (xterm.js for the web console)"
    (cd "$WEB" && npm ci --no-audit --no-fund --silent)
    mkdir -p "$WEB/static/vendor"
    cp "$WEB"/node_modules/@xterm/xterm/lib/xterm.mjs "$WEB"/node_modules/@xterm/xterm/css/xterm.css \
       "$WEB"/node_modules/@xterm/addon-fit/lib/addon-fit.mjs "$WEB/static/vendor/"
  fi
else
  echo "==> npm not found: the web console's terminal stays off (install Node.js + npm, run again)"
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.cumulo-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> pip install -e .[dev]"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  # Playwright (tests of the web console) drives Debian's chromium; it must not fetch its own
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
# Bytecode for our own modules now: pip compiles the dependencies it installs but not an
# editable project, and where PYTHONDONTWRITEBYTECODE is set (as on this machine) every
# `cumulo` run would compile them again (~0.2x of importing typer, docs/cli.md).
.venv/bin/python -m compileall -q src/cumulo >/dev/null
echo "==> installed: $(.venv/bin/cumulo --help >/dev/null && echo cumulo) $(.venv/bin/cumulod --version)"
