"""What moving a process into a cgroup costs on this host after the CPUs were idle.

Every ``runc run``, ``runc create`` and ``runc exec`` moves its process into the
container's cgroup (``cgroup.procs``, once per v1 hierarchy). Unless the cgroup
hierarchy was mounted with ``favordynmods``, such a move after a quiet spell waits for
an RCU grace period: ~10 ms on this 2-CPU guest (HZ=250). A raw ``runc exec`` that
follows ``runc run -d`` at once mostly escapes it, an exec one API request later pays it
(docs/launch-path.md, tenth round). So this figure moves launch ratios by ~0.2x, and the
container benchmark prints it beside them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from cumulo.host import cgroups

IDLE = 0.05      # seconds of quiet before each move
ROUNDS = 9


def _hierarchy() -> Path | None:
    """A hierarchy to probe: v1's pids (any v1 one shares the lock), else the v2 root."""
    found = cgroups.hierarchies()
    for mount, kinds in found:
        if "pids" in kinds:
            return mount
    return next((mount for mount, kinds in found if kinds == {"v2"}), None)


def attach_after_idle(parent: str, rounds: int = ROUNDS, idle: float = IDLE) -> float | None:
    """Median seconds to move a sleeping child into a new cgroup under ``parent`` (which
    exists), each move after ``idle`` seconds of quiet; None without a hierarchy."""
    mount = _hierarchy()
    if mount is None:
        return None
    probe = mount / parent / "attach-probe"
    probe.mkdir(parents=True)
    took: list[float] = []
    try:
        for _ in range(rounds):
            child = subprocess.Popen(["sleep", "30"])
            try:
                time.sleep(idle)
                t0 = time.perf_counter()
                (probe / "cgroup.procs").write_text(str(child.pid))
                took.append(time.perf_counter() - t0)
            finally:
                child.kill()
                child.wait()
    finally:
        if left := cgroups.remove(f"/{parent}/attach-probe", wait=5.0):
            print(f"cgroups left behind: {', '.join(left)}", file=sys.stderr)
    return statistics.median(took)


def describe(seconds: float | None) -> str:
    """One line for a report."""
    if seconds is None:
        return "cgroup move after idle: not measured (no cgroup hierarchy found)"
    what = ("an RCU grace period each time the CPUs were idle: favordynmods off"
            if seconds > 0.003 else "no grace period: favordynmods is, or was since boot, on")
    return f"cgroup move after {IDLE * 1000:.0f} ms idle: {seconds * 1000:.1f} ms ({what})"
