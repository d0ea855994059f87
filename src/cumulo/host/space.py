"""Free space where the daemon writes, and the one line for a write that found it full.

Storage pools, image builds and checkpoints share it: a write that failed for want of
space (ENOSPC from the kernel, or a tool that said "No space left on device") becomes
``DriverError("<where> is full (<free> free at <path>): cannot <action>")``, and a step
that knows its size up front is refused before it starts (``require``).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from cumulo.domain.units import format_size
from cumulo.errors import DriverError

ENOSPC_TEXT = "No space left on device"
LOW = 1 << 20   # bytes: a filesystem with less free is taken to be full


def no_space(err: BaseException) -> bool:
    """Did ``err`` (or what caused it) come from a full filesystem?"""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if ENOSPC_TEXT in str(seen) or ENOSPC_TEXT in str(getattr(seen, "stderr", "")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def free(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (or of
    its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def looks_full(path: Path) -> bool:
    """Is ``path``'s filesystem (all but) full? For a tool that failed without saying why."""
    try:
        return free(path) < LOW
    except OSError:
        return False


def full_error(where: str, path: Path, action: str) -> DriverError:
    """The one line for ``action`` that found ``where`` (at ``path``) full."""
    try:
        left = format_size(free(path))
    except OSError:
        left = "unknown"
    return DriverError(f"{where} is full ({left} free at {path}): cannot {action}")


def require(where: str, path: Path, need: int, action: str) -> None:
    """Refuse ``action`` now, before anything is made, when ``path`` has less than
    ``need`` bytes free."""
    left = free(path)
    if left < need:
        raise DriverError(f"{where} has too little space ({format_size(left)} free at"
                          f" {path}, about {format_size(need)} needed): cannot {action}")


@contextlib.contextmanager
def guard(where: str, path: Path, action: str) -> Iterator[None]:
    """Turn a failure for want of space inside the block into ``full_error``."""
    try:
        yield
    except Exception as err:
        if no_space(err):
            raise full_error(where, path, action) from err
        raise
