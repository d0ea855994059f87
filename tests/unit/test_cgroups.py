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


def test_block_io_bytes_summed_over_devices(tmp_path: Path) -> None:
    (tmp_path / "io.stat").write_text("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n"
                                      "8:16 rbytes=1 wbytes=2 rios=1 wios=1\n")
    assert cgroups._io_v2(tmp_path / "io.stat") == (4097, 8194)
    (tmp_path / "blkio.throttle.io_service_bytes_recursive").write_text(
        "8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\n8:0 Total 300\n"
        "8:16 Read 1\n8:16 Write 2\nTotal 303\n")
    assert cgroups._io_v1(tmp_path) == (101, 202)
    assert cgroups._io_v1(tmp_path / "gone") == (None, None)
