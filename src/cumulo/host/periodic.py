"""A daemon thread that does one round of work every few seconds between ``start`` and
``stop``: the watchdog, the metrics history and the malloc trims share it. A round that
raises is logged and the next one comes as usual."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``tick`` every ``interval`` seconds in a thread named ``name`` (first at once
    with ``at_start``); an interval of 0 or less runs nothing."""

    name = "periodic"
    at_start = False

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        raise NotImplementedError

    def wanted(self) -> bool:
        """Whether ``start`` starts the thread (beyond a positive interval)."""
        return True

    def start(self) -> None:
        if self._thread is None and self.interval > 0 and self.wanted():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        if self.at_start:
            self._round()
        while not self._stop.wait(self.interval):
            self._round()

    def _round(self) -> None:
        try:
            self.tick()
        except Exception:   # one bad round must not end the thread
            log.exception("%s: a round failed", self.name)
