"""The host programs Cumulo runs, the Debian package each comes from, and the one-line
error when one is missing.

Every program here is installed by ``scripts/install.sh`` (its PACKAGES list) or comes
with every Debian install (``BASE``: essential or "required" packages); a unit test
checks both, and that the code runs no program this table does not name. CRIU is not
here: ``scripts/install-criu.sh`` unpacks a pinned one (see ``host/criu.py``).
"""

from __future__ import annotations

from cumulo.errors import UnsupportedError

# program -> Debian package
PACKAGE_OF: dict[str, str] = {
    # containers
    "runc": "runc", "crun": "crun", "conmon": "conmon", "busybox": "busybox-static",
    # virtual machines and their disks
    "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils",
    "swtpm": "swtpm", "mke2fs": "e2fsprogs", "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs", "dumpe2fs": "e2fsprogs", "tune2fs": "e2fsprogs",
    # networks
    "nft": "nftables", "dnsmasq": "dnsmasq-base", "modprobe": "kmod",
    # images
    "mmdebstrap": "mmdebstrap", "umoci": "umoci",
    # specialised guest kernels (image build kernel)
    "make": "make", "gcc": "gcc", "flex": "flex", "bison": "bison", "bc": "bc",
    "strip": "binutils",
    # the heap dumps' census of interned strings (host/heap_dump.py: libpython's symbols)
    "nm": "binutils",
    # bootable VM disks (image build --vm): GPT, GRUB (grub-common comes with it), EFI FAT
    "sfdisk": "fdisk", "grub-mkimage": "grub-pc-bin", "mkfs.vfat": "dosfstools",
    "mmd": "mtools", "mcopy": "mtools",
    # the cloud-init NoCloud seed of a VM
    "genisoimage": "genisoimage",
    # benchmarks (cumulo bench)
    "sysbench": "sysbench", "fio": "fio", "iperf3": "iperf3", "qperf": "qperf",
    # on every Debian install
    "tar": "tar", "cp": "coreutils", "mount": "mount", "umount": "mount",
    "losetup": "mount", "fsfreeze": "util-linux", "unshare": "util-linux",
    "setpriv": "util-linux", "nsenter": "util-linux", "ldd": "libc-bin",
    "dpkg-query": "dpkg", "sh": "dash",
}
# essential or priority "required" in Debian 12: present even on a minimal install
BASE = frozenset({"tar", "coreutils", "mount", "util-linux", "libc-bin", "dpkg", "dash"})


def not_installed(program: str, needed_for: str | None = None) -> UnsupportedError:
    """``PROGRAM is not installed[ (needed to ...)]: apt-get install PACKAGE ...``"""
    name = program.rsplit("/", 1)[-1]
    package = PACKAGE_OF.get(name)
    why = f" (needed to {needed_for})" if needed_for else ""
    fix = (f"apt-get install {package}, or run scripts/install.sh" if package
           else "run scripts/install.sh")
    return UnsupportedError(f"{name} is not installed{why}: {fix}")
