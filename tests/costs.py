"""Where the suite's time goes, by kind of step (a daemon's start, a CLI call...): the
fixtures add what each step took; tests/conftest.py carries the sums from each xdist
worker to the run's summary, beside the slowest modules."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

_SPENT: dict[str, list[float]] = {}   # kind -> [count, seconds], since the last take()


@contextmanager
def timed(kind: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        entry = _SPENT.setdefault(kind, [0, 0.0])
        entry[0] += 1
        entry[1] += time.monotonic() - start


def take() -> dict[str, list[float]]:
    """What was added since the last call (the worker hands it on with a test's report)."""
    spent = dict(_SPENT)
    _SPENT.clear()
    return spent
