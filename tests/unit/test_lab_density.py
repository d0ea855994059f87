"""Measured density: known PSS samples in, exact instances per GiB and costs out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from cumulo.client import Client
from cumulo.errors import DriverError
from cumulo.lab import density, runner
from cumulo.lab.density import GIB, Limits

MIB = 1 << 20


def test_instances_per_gib_from_a_measured_total() -> None:
    assert density.per_gib(4, 512 * MIB) == 8.0    # 4 instances in half a GiB
    assert density.per_gib(1, 2 * GIB) == 0.5
    assert density.per_gib(3, 3 * MIB) == 1024.0
    with pytest.raises(ValueError):
        density.per_gib(0, 10)
    with pytest.raises(ValueError):
        density.per_gib(2, 0)


def test_marginal_cost_is_the_slope_not_the_mean() -> None:
    # a first instance pays 10 MiB of shared pages once, each one then 2 MiB
    points = [(n, 10 * MIB + 2 * MIB * n) for n in range(1, 6)]
    assert density.marginal(points) == pytest.approx(2 * MIB)
    assert density.per_gib(5, points[-1][1]) == pytest.approx(5 * 1024 / 20)
    # noisy samples: least squares over (1, 3), (2, 5), (3, 10) -> slope 3.5
    assert density.marginal([(1, 3), (2, 5), (3, 10)]) == pytest.approx(3.5)
    assert density.marginal([(2, 300)]) == 150.0   # one point: its mean
    with pytest.raises(ValueError):
        density.marginal([])


def test_launching_stops_at_the_first_bound() -> None:
    lim = Limits(max_count=5, budget_bytes=100 * MIB, seconds=60, host_floor_bytes=GIB)
    plenty = 8 * GIB
    assert density.stop_reason(0, 0, 0, plenty, lim) is None
    assert density.stop_reason(3, 60 * MIB, 10, plenty, lim) is None     # next: 80 MiB
    assert density.stop_reason(5, 50 * MIB, 10, plenty, lim) == "count 5 reached"
    assert "budget of 0.10 GiB" in str(density.stop_reason(3, 90 * MIB, 10, plenty, lim))
    assert density.stop_reason(2, 10 * MIB, 61, plenty, lim) == "time budget 60s used"
    assert "available below 1024 MiB" in str(density.stop_reason(2, 10 * MIB, 1, GIB - 1, lim))


def test_limits_are_small_with_quick_and_bounded_by_the_host() -> None:
    q = density.limits(vm=True, quick=True, available=16 * GIB)
    assert (q.max_count, q.budget_bytes) == (2, GIB)
    c = density.limits(vm=False, quick=False, available=2 * GIB)
    assert (c.max_count, c.budget_bytes) == (50, GIB)   # half of what the host has
    assert density.limits(vm=False, quick=True, available=GIB).budget_bytes == GIB // 4


def test_a_host_already_short_of_memory_launches_nothing_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Below the host floor before the first launch: a clear error (noted by the run as
    that platform's density failing), not a ValueError that would end the whole run."""
    monkeypatch.setattr(runner.psutil, "virtual_memory",
                        lambda: SimpleNamespace(available=100 * MIB))
    plan = runner.make_plan("container", "density", 1, True, tmp_path / "r.json")
    lab = runner.Lab(cast(Client, None), plan, lambda _msg: None)   # never asked: no launch
    with pytest.raises(DriverError, match="no instance launched: host memory available "
                                          "below 512 MiB"):
        lab.measure_density("container")
    assert lab.launched == [] and lab.results.series == []
