"""The shared periodic thread: rounds until stopped, a failing round does not end it,
``at_start`` runs one at once, a non-positive interval or ``wanted`` false runs nothing."""

from __future__ import annotations

import threading
import time

from cumulo.host.periodic import Periodic


class Counting(Periodic):
    name = "counting-test"

    def __init__(self, interval: float, fail: bool = False) -> None:
        super().__init__(interval)
        self.calls: list[float] = []
        self.fail = fail

    def tick(self) -> None:
        self.calls.append(time.monotonic())
        if self.fail:
            raise RuntimeError("a bad round")


def _until(cond: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:   # type: ignore[operator]
        time.sleep(0.01)


def test_rounds_go_on_after_a_failure_and_end_with_stop() -> None:
    p = Counting(0.01, fail=True)
    p.start()
    _until(lambda: len(p.calls) >= 3)
    assert len(p.calls) >= 3
    p.stop()
    n = len(p.calls)
    time.sleep(0.05)
    assert len(p.calls) == n
    assert "counting-test" not in [t.name for t in threading.enumerate()]


def test_at_start_runs_a_round_at_once() -> None:
    p = Counting(3600.0)
    p.at_start = True
    p.start()
    _until(lambda: p.calls)
    assert len(p.calls) == 1
    p.stop()


def test_nothing_runs_without_an_interval_or_when_not_wanted() -> None:
    p = Counting(0.0)
    p.start()
    assert p._thread is None
    q = Counting(0.01)
    q.wanted = lambda: False   # type: ignore[method-assign]
    q.start()
    assert q._thread is None
    p.stop()
    q.stop()
