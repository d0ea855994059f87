"""Each instance's recent usage, kept by the daemon for graphs without Prometheus.

A sampler thread reads every instance (services/telemetry.py) every ``interval``
seconds and keeps the last ``points`` readings per instance in a ring (360 x 10 s:
the last hour). Rings of instances that are gone are dropped at the next round.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from cumulo.host.periodic import Periodic
from cumulo.services.instances import InstanceService
from cumulo.services.telemetry import Sample, sample_all

log = logging.getLogger(__name__)
INTERVAL = 10.0   # seconds between readings
POINTS = 360      # readings kept per instance


@dataclass(frozen=True)
class Point:
    time: float
    cpu_seconds: float | None
    memory_bytes: int | None
    processes: int | None
    disk_read_bytes: int | None
    disk_write_bytes: int | None
    rx_bytes: int
    tx_bytes: int

    @classmethod
    def of(cls, s: Sample) -> Point:
        u = s.usage
        return cls(time=s.time,
                   cpu_seconds=None if u.cpu_time_ns is None else u.cpu_time_ns / 1e9,
                   memory_bytes=u.memory_bytes, processes=u.pids,
                   disk_read_bytes=u.io_read_bytes, disk_write_bytes=u.io_write_bytes,
                   rx_bytes=sum(c.rx_bytes for c in s.nics.values()),
                   tx_bytes=sum(c.tx_bytes for c in s.nics.values()))


class History(Periodic):
    """Rings of points by (project, name), filled by a thread between start and stop."""

    name = "history"
    at_start = True

    def __init__(self, instances: InstanceService, interval: float = INTERVAL,
                 points: int = POINTS) -> None:
        super().__init__(interval)
        self.instances, self.points = instances, points
        self._rings: dict[tuple[str, str], deque[Point]] = {}
        self._lock = threading.Lock()

    def tick(self) -> None:
        self.record(sample_all(self.instances))

    def record(self, samples: list[Sample]) -> None:
        """Append one reading per instance; forget instances not in ``samples``."""
        seen = set()
        with self._lock:
            for s in samples:
                key = (s.instance.project, s.instance.name)
                seen.add(key)
                ring = self._rings.get(key)
                if ring is None:
                    ring = self._rings[key] = deque(maxlen=self.points)
                ring.append(Point.of(s))
            for key in set(self._rings) - seen:
                del self._rings[key]

    def get(self, project: str, name: str) -> list[Point]:
        with self._lock:
            return list(self._rings.get((project, name), ()))

    def to_dict(self, project: str, name: str) -> dict[str, Any]:
        """The points, oldest first, each with the CPU used since the one before (in CPUs)."""
        points = self.get(project, name)
        out: list[dict[str, Any]] = []
        for i, p in enumerate(points):
            row: dict[str, Any] = dict(p.__dict__)
            prev = points[i - 1] if i else None
            row["cpu_usage"] = (
                None if prev is None or p.cpu_seconds is None or prev.cpu_seconds is None
                or p.time <= prev.time
                else round(max(0.0, p.cpu_seconds - prev.cpu_seconds) / (p.time - prev.time), 4))
            out.append(row)
        return {"interval": self.interval, "points": out}
