"""Heap snapshots of a running daemon, for finding what grows (bench/soak.py --heap).

Only when the daemon runs with ``CUMULO_HEAP_DUMPS=1`` in its environment: the first
SIGUSR2 starts Python's allocation tracing (``tracemalloc``: tracing from the start
would slow the imports tenfold) and writes ``STATE_DIR/heap/tracing``; each later one
writes a snapshot ``STATE_DIR/heap/N.snap`` (N from 1). Compare two with
``tracemalloc.Snapshot.load(...).compare_to(...)``: what was allocated after the tracing
began and is still alive. Without the variable, SIGUSR2 keeps its default action.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
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
        tmp = out / f"{n}.snap.part"
        tracemalloc.take_snapshot().dump(str(tmp))
        tmp.rename(out / f"{n}.snap")

    signal.signal(signal.SIGUSR2, dump)
