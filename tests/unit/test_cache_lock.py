"""A build that waits for another build's cache lock says so and can be cancelled."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from cumulo.images import debian


class Cancelled(Exception):
    pass


def test_a_build_waiting_for_the_cache_lock_can_be_cancelled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian, "LOCK_POLL", 0.01)
    cache = tmp_path / "bookworm"
    said: list[str] = []

    def progress(_fraction: float, message: str) -> None:
        said.append(message)
        if len(said) == 3:
            raise Cancelled

    entered = False
    # another build holds it
    with debian.cache_lock(cache), pytest.raises(Cancelled), debian.cache_lock(cache, progress):
        entered = True
    assert not entered and said[0] == f"waiting for another build that uses {cache}"
    with debian.cache_lock(cache, progress):   # free again: no wait, no message
        entered = True
    assert entered and len(said) == 3
    with open(tmp_path / ".bookworm.lock", "w") as f:   # and nobody holds it now
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
