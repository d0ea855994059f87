"""Measured density: how many idle instances of a platform fit in a GiB of host memory.

The lab launches idle instances of one platform one after another until a bound is hit
(a count, a budget of the host memory they use, a time budget, or the host's available
memory running low), and after each launch measures from the host side, with psutil, the
PSS of every process of every one of them (footprint.measure). PSS splits shared pages
between their users, so the sum over the instances is the memory they really use
together: the image's pages a hundred containers share are counted once, not a hundred
times. From those measurements (pure functions below):

- ``per_gib``: instances per GiB at the end, ``count * GiB / total PSS``;
- ``marginal``: what one more instance costs, the least-squares slope of total PSS against
  the count (fixed costs, such as a first instance paging in shared libraries, fall out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GIB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """When to stop launching: whichever comes first."""
    max_count: int
    budget_bytes: int          # total PSS of the instances launched
    seconds: float             # launching and measuring, per platform
    host_floor_bytes: int = 512 << 20   # keep at least this much host memory available


def limits(vm: bool, quick: bool, available: int) -> Limits:
    """Small with --quick (a CI-sized look), larger otherwise; never more than a quarter
    (quick) or half of the host memory available when the run starts."""
    share = available // (4 if quick else 2)
    if quick:
        return Limits(2 if vm else 5, min(1 * GIB, share), 120 if vm else 30)
    return Limits(6 if vm else 50, min(4 * GIB, share), 600 if vm else 120)


def stop_reason(count: int, total_pss: int, elapsed: float, available: int,
                lim: Limits) -> str | None:
    """Why not to launch another instance now (None: go on). The next one is assumed to
    cost what the ones so far cost on average."""
    if count >= lim.max_count:
        return f"count {lim.max_count} reached"
    if count and total_pss + total_pss // count > lim.budget_bytes:
        return f"the next instance would pass the budget of {lim.budget_bytes / GIB:.2f} GiB"
    if elapsed >= lim.seconds:
        return f"time budget {lim.seconds:.0f}s used"
    if available < lim.host_floor_bytes:
        return f"host memory available below {lim.host_floor_bytes >> 20} MiB"
    return None


def per_gib(count: int, total_pss: int) -> float:
    """Idle instances per GiB of host memory, from a measured total."""
    if count < 1 or total_pss <= 0:
        raise ValueError("need at least one instance and a positive total PSS")
    return count * GIB / total_pss


def marginal(points: Sequence[tuple[int, int]]) -> float:
    """Bytes one more instance adds: least-squares slope of total PSS over the count,
    from (count, total PSS) points; with one point it is that point's mean."""
    if not points:
        raise ValueError("no measurements")
    if len({c for c, _ in points}) < 2:
        c, t = points[-1]
        return t / c
    n = len(points)
    mx = sum(c for c, _ in points) / n
    my = sum(t for _, t in points) / n
    sxx = sum((c - mx) ** 2 for c, _ in points)
    sxy = sum((c - mx) * (t - my) for c, t in points)
    return sxy / sxx
