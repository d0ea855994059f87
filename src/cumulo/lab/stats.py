"""Pure statistics over raw samples: median, spread, ratio to native.

Nothing here knows about platforms or files: lists of floats in, numbers out,
so the unit tests can feed known samples and check every figure exactly.

Spread is the interquartile range (Python's ``statistics.quantiles``, inclusive
method: with 1 or 2 samples the quartiles fall back to min/max) plus min and max.
A ratio to native is ``median(platform) / median(native)``; its spread is the
range from the pessimistic to the optimistic pairing of quartiles,
``q1(p) / q3(n)`` to ``q3(p) / q1(n)``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_spread(self) -> float:
        """IQR as a fraction of the median (0 when the median is 0)."""
        return self.iqr / self.median if self.median else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "iqr": self.iqr}


@dataclass(frozen=True)
class Ratio:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(samples: Sequence[float]) -> Summary:
    """Median, quartiles, min and max of at least one sample."""
    if not samples:
        raise ValueError("no samples")
    xs = sorted(float(x) for x in samples)
    if len(xs) < 3:  # quantiles needs 2 points; with 2, inclusive quartiles are not min/max
        q1, q3 = xs[0], xs[-1]
    else:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return Summary(n=len(xs), median=statistics.median(xs), q1=q1, q3=q3, min=xs[0], max=xs[-1])


def ratio(platform: Sequence[float], native: Sequence[float]) -> Ratio:
    """How a platform's samples compare to native ones (1.0: the same)."""
    p, n = summarize(platform), summarize(native)
    if n.median == 0 or n.q1 == 0 or n.q3 == 0:
        raise ValueError("native samples are zero: no ratio")
    if p.min < 0 or n.min < 0:   # no measured rate, time or size is negative
        raise ValueError("negative samples are no measurement: no ratio")
    return Ratio(value=p.median / n.median, low=p.q1 / n.q3, high=p.q3 / n.q1)


def overhead(r: Ratio, higher_is_better: bool) -> float:
    """The cost against native as a positive fraction (0.05: 5 % worse); negative: better."""
    return 1.0 - r.value if higher_is_better else r.value - 1.0
