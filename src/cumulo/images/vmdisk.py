"""An image's VM base disk: the image's root filesystem as an ext4 in a qcow2.

Built from the same tree containers use, without loop mounts: ``mke2fs -d TREE``
fills a sparse ext4 file, ``qemu-img convert -O qcow2`` turns it into the base
disk VM roots are cloned from (qcow2 backing files). Unwritten blocks (lazy inode
tables, the journal) stay holes, so a 1 GiB disk of a 2 MiB tree costs a few MiB.

Cached next to the image (``<image dir>/vm/base-<key>.qcow2``); ``key`` hashes the
image's content address, the disk size and the recipe version, so one file exists
per image and size. It is built once, under a lock, in a temp dir that is removed
whatever happens, and renamed into place: it exists complete or not at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from cumulo.errors import DriverError, InvalidInputError, NotFoundError
from cumulo.images.files import tree_size
from cumulo.storage import ext4
from cumulo.storage.tools import run

RECIPE = 1                        # bump when the way the disk is made changes
MIB = 1024 * 1024
DEFAULT_MIN = 1024 * MIB          # virtual size: costs only what the tree fills
OVERHEAD = 32 * MIB               # journal, inode tables and room for a few files
LABEL = "cumulo-root"             # the guest's /init finds its root by this ext4 label


def min_size(rootfs: Path) -> int:
    """The smallest disk the tree fits in with ext4's metadata and some room."""
    return _round_mib(tree_size(rootfs) * 5 // 4 + OVERHEAD)


def default_size(rootfs: Path) -> int:
    return max(DEFAULT_MIN, _round_mib(tree_size(rootfs) * 2 + 256 * MIB))


def _round_mib(n: int) -> int:
    return -(-n // MIB) * MIB


def disk_key(rootfs: Path, size: int) -> str:
    """Names the base disk: the image's content address (its dir), size and recipe."""
    image = rootfs.resolve().parent.name
    return hashlib.sha256(f"{RECIPE}:{image}:{size}".encode()).hexdigest()[:16]


def base_disk(rootfs: Path, size: int | None = None) -> Path:
    """The qcow2 base disk of the image whose root filesystem is ``rootfs`` (built once).

    ``size`` is the disk's virtual size in bytes (the guest's ext4 fills it);
    None gives ``default_size``. Too small for the tree is an InvalidInputError.
    """
    if not rootfs.is_dir():
        raise NotFoundError("root filesystem", str(rootfs))
    need = min_size(rootfs)
    if size is None:
        size = default_size(rootfs)
    elif size < need:
        raise InvalidInputError(f"--disk {size // MIB}MiB is too small for this image:"
                                f" its files need at least {need // MIB}MiB")
    size = _round_mib(size)
    cache = rootfs.parent / "vm"
    final = cache / f"base-{disk_key(rootfs, size)}.qcow2"
    if final.is_file():
        return final
    try:
        cache.mkdir(exist_ok=True)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if final.is_file():      # built by whoever held the lock before us
                return final
            tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
            try:
                raw = tmp / "root.ext4"
                ext4.make(raw, size, tree=rootfs)
                run(["tune2fs", "-L", LABEL, str(raw)])
                run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                     str(tmp / "base.qcow2")])
                os.chmod(tmp / "base.qcow2", 0o444)   # a shared backing file: never written
                os.rename(tmp / "base.qcow2", final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        raise DriverError(f"cannot build the VM disk of {rootfs}: {err}") from err
    return final
