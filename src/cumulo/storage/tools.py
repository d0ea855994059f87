"""Running the host's storage tools (mount, mkfs, qemu-img, cp) with typed errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cumulo.errors import DriverError, RuntimeToolError
from cumulo.host.mounts import is_mounted
from cumulo.host.tools import not_installed

TIMEOUT = 600.0


def run(argv: list[str], timeout: float = TIMEOUT) -> str:
    """stdout of ``argv``; a non-zero exit is a RuntimeToolError with its last stderr line."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise not_installed(argv[0]) from None
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DriverError(f"cannot run {argv[0]}: {err}") from err
    if proc.returncode != 0:
        raise RuntimeToolError(argv[0], argv[1:], proc.returncode, proc.stderr)
    return proc.stdout


def mount_source(path: Path) -> str | None:
    """The device mounted at ``path`` (e.g. /dev/loop3), or None."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == target:
                    return fields[fields.index("-") + 2]
    except OSError:
        return None
    return None


def umount(path: Path) -> None:
    """Unmount ``path`` if mounted; lazily if something still holds it."""
    if not is_mounted(path):
        return
    try:
        run(["umount", str(path)])
    except RuntimeToolError:
        run(["umount", "-l", str(path)])


def copy_tree(src: Path, dst: Path) -> None:
    """``cp -a`` (reflinks where the filesystem has them): owners, modes, links, xattrs."""
    run(["cp", "-a", "--reflink=auto", str(src), str(dst)])


def disk_usage(path: Path) -> int:
    """Bytes really allocated under ``path``, like ``du -sx``: blocks, each inode once,
    not descending into other filesystems (overlay or loop mounts are counted where
    their data lives)."""
    if not path.exists():
        return 0
    top = path.lstat()
    seen: set[int] = {top.st_ino}
    total = top.st_blocks * 512
    for dirpath, dirnames, filenames in os.walk(path):
        keep = []
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_dev != top.st_dev:
                continue
            if name in dirnames:
                keep.append(name)
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
        dirnames[:] = [d for d in dirnames if d in keep]
    return total
