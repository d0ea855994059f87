"""Mounting and unmounting with the kernel's own calls (``mount(2)``, ``umount2(2)``).

The standard library has no ``mount``; running mount(8) costs a fork and exec
(~3 ms on a busy host) on every container start. libc's two calls, through ctypes,
do the same for the simple cases here: an overlay and a bind mount, no options
mount(8) would have to look up (no fstab, no helpers, no utab entries).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache
from pathlib import Path

from cumulo.errors import DriverError

MS_BIND = 4096
MNT_DETACH = 2


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _raise(what: str, target: Path) -> None:
    err = ctypes.get_errno()
    raise DriverError(f"cannot {what} {target}: {os.strerror(err)}")


def mount(source: str, target: Path, fstype: str | None, flags: int = 0,
          options: str | None = None) -> None:
    """``mount(2)``; a failure is a DriverError naming the target and the kernel's reason."""
    rc = _libc().mount(source.encode(), os.fsencode(target),
                       fstype.encode() if fstype else None, flags,
                       options.encode() if options else None)
    if rc != 0:
        _raise(f"mount {fstype or 'bind'} on", target)


def overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """An overlay of ``upper`` (with ``work``) on ``lower`` at ``target``."""
    mount("overlay", target, "overlay",
          options=f"lowerdir={lower},upperdir={upper},workdir={work}")


def bind(source: Path, target: Path) -> None:
    mount(str(source), target, None, MS_BIND)


def is_mounted(path: Path) -> bool:
    """Whether something is mounted right at ``path``."""
    if not os.path.lexists(path):   # (a new instance's root: no read of every mount)
        return False
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False


def umount(path: Path) -> None:
    """Unmount ``path`` if mounted; lazily (detached) if something still holds it."""
    if not is_mounted(path):
        return
    target = os.fsencode(path)
    if _libc().umount2(target, 0) != 0 and _libc().umount2(target, MNT_DETACH) != 0:
        _raise("unmount", path)
