"""Size-limited filesystems in sparse files: ext4 made by mke2fs, loop-mounted by mount(8).

Used where a size must be enforced whatever the host filesystem is (container roots
with ``--disk``, volumes). The file is sparse, so only written blocks cost host disk;
``mount -o loop`` sets the loop device to autoclear, so unmounting frees it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cumulo.errors import DriverError
from cumulo.host.mounts import is_mounted
from cumulo.storage.tools import mount_source, run, umount

MIN_SIZE = 8 * 1024 * 1024


def make(image: Path, size: int, root_owner: int = 0, tree: Path | None = None) -> None:
    """A sparse file of ``size`` bytes holding a fresh ext4 (filled from ``tree`` if given)."""
    try:
        with open(image, "wb") as f:
            f.truncate(size)
    except OSError as err:
        raise DriverError(f"cannot create {image}: {err}") from err
    argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-m", "0",
            "-E", f"lazy_itable_init=1,lazy_journal_init=1,nodiscard,"
                  f"root_owner={root_owner}:{root_owner}"]
    if tree is not None:
        argv += ["-d", str(tree)]
    run([*argv, str(image)])


def mount(image: Path, target: Path) -> None:
    """Loop-mount ``image`` at ``target`` (idempotent).

    ``noinit_itable``: no background zeroing of inode tables, which would turn the
    sparse file dense for nothing (mke2fs marked them unused).
    """
    if is_mounted(target):
        return
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "ext4", "-o", "loop,noinit_itable", str(image), str(target)])


def unmount(target: Path) -> None:
    umount(target)


def used_bytes(image: Path) -> int:
    """Bytes of the filesystem in use (blocks minus free blocks, from the superblock)."""
    out = run(["dumpe2fs", "-h", str(image)])
    fields = dict(re.findall(r"^([A-Za-z ]+):\s+(\d+)$", out, re.M))
    try:
        blocks, free = int(fields["Block count"]), int(fields["Free blocks"])
        return (blocks - free) * int(fields["Block size"])
    except KeyError as err:
        raise DriverError(f"cannot read the size of {image}: no {err} in dumpe2fs") from err


def min_bytes(image: Path) -> int:
    """The smallest size resize2fs could shrink this filesystem to."""
    out = run(["resize2fs", "-P", str(image)])
    m = re.search(r"minimum size of the filesystem:\s*(\d+)", out)
    if not m:
        raise DriverError(f"cannot read the minimum size of {image}")
    block = int(re.findall(r"^Block size:\s+(\d+)$", run(["dumpe2fs", "-h", str(image)]),
                           re.M)[0])
    return int(m.group(1)) * block


def resize(image: Path, size: int, mounted_at: Path | None = None) -> None:
    """Grow (online when mounted) or shrink (offline only) the file and its filesystem."""
    current = os.stat(image).st_size
    if mounted_at is not None and is_mounted(mounted_at):
        if size < current:
            raise DriverError(f"cannot shrink {image} while it is mounted")
        os.truncate(image, size)
        dev = mount_source(mounted_at)
        if dev is None:
            raise DriverError(f"cannot find the loop device of {mounted_at}")
        run(["losetup", "-c", dev])
        run(["resize2fs", dev])
        return
    if size >= current:
        os.truncate(image, size)
        run(["e2fsck", "-f", "-p", str(image)])
        run(["resize2fs", str(image)])
    else:
        run(["e2fsck", "-f", "-p", str(image)])
        run(["resize2fs", str(image), f"{size // 1024}K"])
        os.truncate(image, size)
