"""cgroup membership, read from /proc the way the container driver uses it for state."""

from __future__ import annotations

import os
from pathlib import Path

from cumulo.host import cgroups


def own_cgroup() -> str:
    """This process's cgroup path in its first hierarchy."""
    return Path("/proc/self/cgroup").read_text().splitlines()[0].split(":", 2)[2]


def test_a_process_is_held_by_its_own_cgroup_and_its_ancestors() -> None:
    mine = own_cgroup()
    assert cgroups.holds(os.getpid(), mine)
    assert cgroups.holds(os.getpid(), "/")
    assert not cgroups.holds(os.getpid(), mine.rstrip("/") + "/cumulo-no-such-child")


def test_a_prefix_of_a_name_is_not_an_ancestor() -> None:
    mine = own_cgroup().rstrip("/")
    if mine:
        assert not cgroups.holds(os.getpid(), mine[:-1])


def test_a_dead_pid_is_held_by_nothing() -> None:
    assert not cgroups.holds(2**22 + 1, "/")   # above the kernel's pid_max limit
