"""Heap snapshots of a running daemon, for finding what grows (bench/soak.py --heap).

Only when the daemon runs with ``CUMULO_HEAP_DUMPS=1`` in its environment: the first
SIGUSR2 starts Python's allocation tracing (``tracemalloc``: tracing from the start
would slow the imports tenfold) and writes ``STATE_DIR/heap/tracing``; each later one
writes a snapshot ``STATE_DIR/heap/N.snap`` (N from 1). Compare two with
``tracemalloc.Snapshot.load(...).compare_to(...)``: what was allocated after the tracing
began and is still alive. Beside each snapshot, ``N.interned``: the interned strings
alive then, one ``repr`` a line (where CPython lets them be read: 3.11's ``interned``
dict), to tell what keeps the table of interned strings growing. Without the variable,
SIGUSR2 keeps its default action.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

DIR = "heap"
ENV = "CUMULO_HEAP_DUMPS"
FRAMES = 12


def heap_dumps_on_usr2(state_dir: Path) -> None:
    if os.environ.get(ENV) != "1":
        return
    out = state_dir / DIR
    out.mkdir(exist_ok=True)
    count = itertools.count(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(FRAMES)
            (out / "tracing").touch()
            return
        gc.collect()   # what is alive, not garbage waiting for a collection
        n = next(count)
        strings = interned()
        if strings is not None:
            (out / f"{n}.interned").write_text("".join(f"{x!r}\n" for x in sorted(strings)))
        tmp = out / f"{n}.snap.part"
        tracemalloc.take_snapshot().dump(str(tmp))
        tmp.rename(out / f"{n}.snap")

    signal.signal(signal.SIGUSR2, dump)


def interned() -> list[str] | None:
    """The interned strings alive now, or None where they cannot be read: CPython 3.11
    keeps them in a static dict, ``interned`` in libpython's symbol table (nm), found
    here beside an exported function of known address; 3.12 moved it."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return None
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "/libpython3.11" in line}
    if len(libs) != 1:
        return None   # a static build: no library to read the symbols of
    try:
        table = subprocess.run(["nm", libs.pop()], capture_output=True, text=True,
                               timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    where = {parts[2]: int(parts[0], 16) for parts in map(str.split, table.splitlines())
             if len(parts) == 3 and parts[2] in ("interned", "PyUnicode_InternInPlace")}
    if len(where) != 2:
        return None
    known = ctypes.cast(ctypes.pythonapi.PyUnicode_InternInPlace, ctypes.c_void_p).value
    assert known is not None
    pointer = ctypes.c_void_p.from_address(
        known - where["PyUnicode_InternInPlace"] + where["interned"]).value
    if pointer is None:
        return None
    strings = ctypes.cast(pointer, ctypes.py_object).value
    return list(strings) if isinstance(strings, dict) else None
