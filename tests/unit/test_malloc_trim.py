"""cumulo.host.malloc_trim: the trim gives back freed memory that glibc itself keeps; the
daemon's thread trims until stopped; without glibc nothing happens."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from cumulo.host import malloc_trim


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_a_trim_gives_back_the_free_pages_between_live_chunks() -> None:
    if malloc_trim.trim() is None:
        pytest.skip("not glibc")
    # 40 MiB in 2 KiB chunks (malloc's, not Python's small-object arenas), then 19 of 20
    # freed: the holes between the ones kept hold whole pages that free() keeps
    chunks = [bytes(2048) for _ in range(20_000)]
    keep = chunks[::20]
    del chunks
    before = _rss()
    assert malloc_trim.trim() is True
    after = _rss()
    assert before - after > 10 * 2**20, (before, after)
    assert all(len(c) == 2048 and not any(c) for c in keep)   # what lives is untouched


def test_without_glibc_nothing_is_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(name: str) -> str:
        raise ValueError(name)

    malloc_trim._glibc_trim.cache_clear()
    monkeypatch.setattr(os, "confstr", no_such_name)
    try:
        assert malloc_trim.trim() is None
        t = malloc_trim.Trimmer(interval=0.01)
        t.start()
        assert t._thread is None
        t.stop()
    finally:
        malloc_trim._glibc_trim.cache_clear()


def test_the_trimmer_trims_until_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    if malloc_trim.trim() is None:
        pytest.skip("not glibc")
    calls: list[float] = []
    monkeypatch.setattr(malloc_trim, "trim", lambda: calls.append(time.monotonic()))
    t = malloc_trim.Trimmer(interval=0.01)
    t.start()
    deadline = time.monotonic() + 30
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 3
    assert "malloc-trim" in [th.name for th in threading.enumerate()]
    t.stop()
    n = len(calls)
    time.sleep(0.05)
    assert len(calls) == n and "malloc-trim" not in [th.name for th in threading.enumerate()]
