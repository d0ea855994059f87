"""Hand the memory the daemon freed back to the kernel: glibc's ``malloc_trim(0)``, every
few seconds, from a thread of its own.

What the daemon allocates outside Python's small-object allocator (objects over 512
bytes, SQLite, buffers) comes from glibc malloc, from an arena per thread (the AnyIO
workers and ``op_N`` threads that come and go share up to 8 per core). A freed chunk stays
in its arena; the free space between live chunks only grows, and glibc gives back on its
own only the top of an arena. ``malloc_trim(0)`` gives back every whole free page in
every arena (madvise). In the soak (docs/faults.md, "Soak") the daemon's RSS rose 3.4-4.1
MiB from NIC cycle 50 to 300 without it, 1.4-2.0 with it, and 0.3 MiB over the last 500
of 1,000 cycles (3.5 before); fewer arenas (``M_ARENA_MAX``), a fixed mmap threshold or
a smaller SQLite cache did no better.

Only with glibc; elsewhere (musl) ``trim`` does nothing and says so by returning None.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from typing import Any

from cumulo.host.periodic import Periodic

INTERVAL = 10.0   # seconds between trims (each a few ms)


@cache
def _glibc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another libc)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        fn = ctypes.CDLL(None).malloc_trim
    except (ValueError, OSError, AttributeError):   # no such confstr name, no symbol
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim() -> bool | None:
    """Give free memory back: True if some was, False if none, None without glibc."""
    fn = _glibc_trim()
    return None if fn is None else bool(fn(0))


class Trimmer(Periodic):
    """A thread that trims every ``interval`` seconds between start and stop."""

    name = "malloc-trim"

    def __init__(self, interval: float = INTERVAL) -> None:
        super().__init__(interval)

    def wanted(self) -> bool:
        return _glibc_trim() is not None

    def tick(self) -> None:
        trim()
