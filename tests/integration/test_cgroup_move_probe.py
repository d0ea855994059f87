"""The container benchmark's probe of what a cgroup move costs after idle CPUs: it
measures on the real kernel and leaves no cgroup behind."""

from __future__ import annotations

import os
import uuid

import pytest
from bench import cgroup_attach

from cumulo.host import cgroups

pytestmark = [pytest.mark.root]


def test_the_probe_measures_a_move_and_leaves_nothing() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates cgroups")
    parent = f"cumulo-probetest-{uuid.uuid4().hex[:6]}"
    try:
        took = cgroup_attach.attach_after_idle(parent, rounds=3, idle=0.01)
        assert took is not None and 0 < took < 1.0
        assert "cgroup move after" in cgroup_attach.describe(took)
        assert not [m for m, _ in cgroups.hierarchies()
                    if (m / parent / "attach-probe").exists()]
    finally:
        assert not cgroups.remove(f"/{parent}", wait=5.0)
