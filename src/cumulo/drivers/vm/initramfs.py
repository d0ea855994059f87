"""The guest's initramfs: static busybox, the needed kernel modules and our ``/init``.

Written in the cpio "newc" format directly (no cpio binary on the host), gzipped, and
cached by content hash, so every VM on the same kernel shares one file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from cumulo.drivers.vm import guest_qga, qga
from cumulo.errors import DriverError, NotFoundError
from cumulo.host.tools import not_installed

KERNEL_CACHE = Path("/var/cache/cumulo/kernel")
READY = "CUMULO-READY"
EXIT = "CUMULO-EXIT"
ROOT_FAILED = "CUMULO-ROOT-FAILED"

# What /init loads, in this order after their dependencies; built-ins are skipped.
WANTED_MODULES = (
    "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_rng", "virtio_balloon",
    "crct10dif_generic", "ata_piix", "ahci", "sd_mod", "e1000", "button", "evdev",
    "virtio_console",
    "crc32c_generic", "ext4",   # root disks (cumulo.root=): ext4 asks for crc32c by name
)

INIT = f"""#!/bin/sh
# PID 1 of a Cumulo VM: mount, load drivers, run the instance command, power off.
# With a root disk (cumulo.root=LABEL=... or a device) it mounts it, puts busybox, the
# agent and itself on a tmpfs at /run/cumulo there, switch_roots and runs again from it.
B=/bin E=/etc
if [ "$0" = /run/cumulo/init ]; then B=/run/cumulo/bin E=/run/cumulo/etc; fi
$B/busybox --install -s $B
export PATH=$B:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
grep -q "^dev /dev " /proc/mounts || mount -t devtmpfs dev /dev
mkdir -p /tmp /run
if [ $B = /bin ]; then
  for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
fi
root=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in cumulo.root=*) root="${{arg#*=}}" ;; esac
done
if [ -n "$root" ] && [ $B = /bin ]; then
  dev="" n=0
  while [ -z "$dev" ] && [ $n -lt 200 ]; do   # the disk shows up once its driver probed
    case "$root" in
      LABEL=*|UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
      *) [ -b "$root" ] && dev=$root ;;
    esac
    [ -n "$dev" ] || {{ sleep 0.05; n=$((n + 1)); }}
  done
  mkdir -p /newroot
  # noinit_itable: no background zeroing of the inode tables mke2fs left lazy, which
  # would write megabytes into every clone for nothing
  if [ -z "$dev" ] || ! mount -t ext4 -o noinit_itable "$dev" /newroot; then
    echo "{ROOT_FAILED} cannot mount the root disk $root"
    echo "{EXIT} 125"
    poweroff -f
  fi
  mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run
  mount -t tmpfs -o mode=755 run /newroot/run
  mkdir -p /newroot/run/cumulo/bin /newroot/run/cumulo/etc
  cp /bin/busybox /bin/cumulo-agent /newroot/run/cumulo/bin/
  cp /init /newroot/run/cumulo/init
  cp -a /etc/acpi /newroot/run/cumulo/etc/
  [ -e /etc/udhcpc.script ] && cp /etc/udhcpc.script /newroot/run/cumulo/etc/
  umount /proc /sys
  mount --move /dev /newroot/dev
  exec switch_root /newroot /run/cumulo/bin/busybox sh /run/cumulo/init
fi
ip link set lo up
# NICs on Cumulo networks: the network's dnsmasq gives each MAC its stored address
for n in /sys/class/net/eth*; do
  [ -e "$n" ] && udhcpc -i "${{n##*/}}" -s $E/udhcpc.script -t 5 -T 1 -b -S >/dev/null 2>&1
done
cmd=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    cumulo.hostname=*) hostname "${{arg#*=}}" ;;
    cumulo.ssh=*) mkdir -p /root/.ssh && chmod 700 /root/.ssh &&
      echo "${{arg#*=}}" | base64 -d > /root/.ssh/authorized_keys &&
      chmod 600 /root/.ssh/authorized_keys ;;
    cumulo.cmd=*) cmd=$(echo "${{arg#*=}}" | base64 -d) ;;
  esac
done
# the guest agent (QEMU's protocol, drivers/vm/guest_qga.py) on its virtio-serial port;
# setsid twice (the second forks), not "&": sh's background jobs ignore SIGINT, and so
# would every command the agent runs (^C in exec -t would do nothing)
for p in /sys/class/virtio-ports/*; do
  case "$(cat $p/name 2>/dev/null)" in
    {qga.PORT_NAME}) setsid setsid sh $B/cumulo-agent /dev/${{p##*/}} </dev/null >/dev/null 2>&1 ;;
  esac
done
# ACPI power button (QMP system_powerdown): stop the command, then power off
acpid -c $E/acpi -l /dev/null
echo {READY}
if [ -n "$cmd" ]; then
  sh -c "$cmd" </dev/console &
else
  sh -c 'while :; do sleep 3600; done' &
fi
echo $! > /run/app.pid
wait $!
code=$?
sync
[ $B = /bin ] || mount -o remount,ro / 2>/dev/null
echo "{EXIT} $code"
poweroff -f
"""

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc's hook: apply the lease (busybox gives $mask as a prefix length)
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
"""

POWER_BUTTON = """#!/bin/sh
kill -TERM $(cat /run/app.pid) 2>/dev/null
"""


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel: ``vmlinuz``, maybe ``vmlinux``, and a ``modules/`` tree."""

    version: str
    root: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def pvh(self) -> Path | None:
        """The uncompressed kernel with a PVH entry, if install.sh could make one: QEMU
        starts it without decompression (microvm without firmware at all; pc and q35
        through SeaBIOS's small PVH loader). On TCG a pc guest's boot to its agent took
        3.8-4.1 s of CPU against 7.1-10.3 s from vmlinuz."""
        path = self.root / "vmlinux"
        return path if path.is_file() else None

    @property
    def boot(self) -> Path:
        """vmlinux through PVH where there is one, else vmlinuz."""
        return self.pvh or self.vmlinuz

    def for_machine(self, microvm: bool, tpm: bool) -> Path:
        """What QEMU's ``-kernel`` boots: ``boot``, but vmlinuz for a pc or q35 guest
        with a TPM (after a PVH boot there the guest found no TPM; microvm's guest is
        told where it is, tpm.MICROVM_APPEND)."""
        return self.vmlinuz if tpm and not microvm else self.boot

    @property
    def modules(self) -> Path:
        return self.root / "modules"


def find_kernel(cache: Path = KERNEL_CACHE) -> Kernel:
    """The newest cached kernel; NotFoundError tells how to get one."""
    found = sorted(p for p in cache.glob("*") if (p / "vmlinuz").is_file()) if cache.is_dir() \
        else []
    if not found:
        raise NotFoundError("guest kernel", f"{cache}/<version>/vmlinuz (run scripts/install.sh)")
    return Kernel(found[-1].name, found[-1])


def _modname(path: Path) -> str:
    return re.sub(r"\.ko(\.xz|\.zst)?$", "", path.name).replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def module_order(kernel: Kernel, wanted: tuple[str, ...] = WANTED_MODULES
                 ) -> list[tuple[str, bytes]]:
    """(name, uncompressed .ko) for every wanted loadable module, dependencies first."""
    files = {_modname(p): p for p in kernel.modules.rglob("*.ko*")}
    builtin_file = kernel.modules / "modules.builtin"
    builtin = {_modname(Path(line.strip())) for line in builtin_file.read_text().splitlines()
               } if builtin_file.exists() else set()
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name in builtin or name not in files:
            return
        done.add(name)
        data = _module_bytes(files[name])
        m = re.search(rb"\0depends=([^\0]*)", data)
        for dep in (m.group(1).split(b",") if m else []):
            if dep:
                visit(dep.decode().replace("-", "_"))
        order.append((name, data))

    for name in wanted:
        visit(name)
    return order


class _Cpio:
    """A minimal writer of the newc format the kernel unpacks."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
               ) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.buf.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))
        self.ino += 1

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build(kernel: Kernel, busybox: Path | None = None, init: str = INIT,
          modules: tuple[str, ...] = WANTED_MODULES) -> bytes:
    """The gzipped cpio archive for ``kernel``: ``init`` as /init (an image VM has its own:
    image_guest.py) and the ``modules`` it loads."""
    bb = busybox or Path(shutil.which("busybox") or "/bin/busybox")
    if not bb.is_file():
        if busybox is None:
            raise not_installed("busybox", "build the VM initramfs")
        raise NotFoundError("busybox", str(bb))
    mods = module_order(kernel, modules)
    c = _Cpio()
    for d in ("bin", "dev", "etc", "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules", "proc",
              "sys", "root", "run", "tmp"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", bb.read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    c.file("init", init.encode(), 0o755)
    c.file("bin/cumulo-agent", guest_qga.GUEST_SCRIPT.encode(), 0o755)
    c.file("etc/acpi/PWRF/00000080", POWER_BUTTON.encode(), 0o755)
    c.file("etc/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755)
    c.file("etc/modules.order", "".join(f"{name}\n" for name, _ in mods).encode())
    for name, data in mods:
        c.file(f"lib/modules/{name}.ko", data)
    return gzip.compress(c.finish(), compresslevel=6, mtime=0)


# what this process built, by its inputs: building only to hash the result cost ~0.3 s of
# CPU at every VM create (modules unpacked, the archive gzipped)
_built: dict[tuple[object, ...], Path] = {}
# one build at a time: ten VMs launched at once build it once (they shared a temp name)
_building = threading.Lock()


def _inputs(kernel: Kernel, cache_dir: Path, busybox: Path | None, init: str,
            modules: tuple[str, ...]) -> tuple[object, ...]:
    """What ``build`` reads besides this module's own text: the kernel's files, busybox."""
    def stamp(path: Path) -> tuple[str, int, int]:
        try:
            st = path.stat()
        except OSError:
            return (str(path), -1, -1)
        return (str(path), st.st_size, st.st_mtime_ns)

    bb = busybox or Path(shutil.which("busybox") or "/bin/busybox")
    return (kernel.version, str(cache_dir), stamp(kernel.root), stamp(kernel.modules),
            stamp(kernel.modules / "modules.builtin"), stamp(bb), init, modules)


def ensure(kernel: Kernel, cache_dir: Path, busybox: Path | None = None, init: str = INIT,
           modules: tuple[str, ...] = WANTED_MODULES) -> Path:
    """Build (once per content) and return the path of the initramfs for ``kernel``."""
    key = _inputs(kernel, cache_dir, busybox, init, modules)
    if (known := _built.get(key)) is not None and known.is_file():
        return known
    with _building:
        if (known := _built.get(key)) is not None and known.is_file():
            return known
        return _build_into(kernel, cache_dir, busybox, init, modules, key)


def _build_into(kernel: Kernel, cache_dir: Path, busybox: Path | None, init: str,
                modules: tuple[str, ...], key: tuple[object, ...]) -> Path:
    try:
        data = build(kernel, busybox, init, modules)
        digest = hashlib.sha256(data).hexdigest()[:16]
        path = cache_dir / f"initramfs-{kernel.version}-{digest}.cpio.gz"
        if not path.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmp.rename(path)
    except OSError as err:
        raise DriverError(f"cannot build the VM initramfs: {err}") from err
    _built[key] = path
    return path


# --- single-application VMs (appvm) -----------------------------------------
def build_app(app: bytes, name: str) -> bytes:
    """The cpio of an app VM: the static program as ``/NAME`` (the kernel runs it with
    ``rdinit=/NAME``, so a multi-call binary like busybox sees its own name) and
    ``/dev/console``. Not compressed: inflating it is about a tenth of a specialised
    kernel's boot on TCG, and it is freed once unpacked."""
    c = _Cpio()
    c.dir("dev")
    c.chardev("dev/console", 5, 1)
    c.file(name, app, 0o755)
    return c.finish()


def build_tree(rootfs: Path, prefix: str = "", extra: dict[str, bytes] | None = None
               ) -> bytes:
    """The gzipped cpio of a whole root filesystem tree (an image's, for a VM that runs
    it from memory), with ``/dev/console``; owners are root, modes kept. With ``prefix``
    the tree goes under that dir; ``extra`` files (path: bytes) are added beside it."""
    c = _Cpio()
    top = f"{prefix}/" if prefix else ""
    if prefix:
        c.dir(prefix)
    has_dev = False
    for path in sorted(rootfs.rglob("*")):
        name = str(path.relative_to(rootfs))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            c.symlink(top + name, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            c._entry(top + name, stat.S_IFDIR | stat.S_IMODE(st.st_mode))
            has_dev = has_dev or name == "dev"
        elif stat.S_ISREG(st.st_mode):
            c.file(top + name, path.read_bytes(), stat.S_IMODE(st.st_mode))
    if not has_dev:
        c.dir(f"{top}dev")
    c.chardev(f"{top}dev/console", 5, 1)
    made: set[str] = set()
    for name, data in (extra or {}).items():
        parent = os.path.dirname(name)
        if parent and parent not in made:
            c.dir(parent)
            made.add(parent)
        c.file(name, data, 0o755)
    return gzip.compress(c.finish(), compresslevel=1, mtime=0)
