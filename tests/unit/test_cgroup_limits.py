"""Per-VM cgroup limits: the v1 and v2 file names and values, the v2 delegation, the join."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cumulo.errors import UnsupportedError
from cumulo.host import cgroup_limits
from cumulo.host.cgroup_limits import CgroupLimits

MIB = 1024 * 1024


def test_v2_files_are_memory_max_cpu_max_and_pids_max() -> None:
    files = cgroup_limits.limit_files(2, CgroupLimits(memory_max=384 * MIB, cpu_max=1.5,
                                                      pids_max=256))
    assert files == {"memory": {"memory.max": str(384 * MIB)},
                     "cpu": {"cpu.max": "150000 100000"},
                     "pids": {"pids.max": "256"}}


def test_v1_files_are_limit_in_bytes_cfs_quota_and_pids_max() -> None:
    files = cgroup_limits.limit_files(1, CgroupLimits(memory_max=64 * MIB, cpu_max=0.5,
                                                      pids_max=8))
    assert files == {"memory": {"memory.limit_in_bytes": str(64 * MIB)},
                     "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000"},
                     "pids": {"pids.max": "8"}}


def test_no_limits_write_no_files() -> None:
    assert cgroup_limits.limit_files(2, CgroupLimits()) == {}
    assert cgroup_limits.limit_files(1, CgroupLimits()) == {}


def fake_v2_root(tmp: Path, controllers: str = "cpuset cpu io memory hugetlb pids") -> Path:
    (tmp / "cgroup.controllers").write_text(controllers + "\n")
    (tmp / "cgroup.subtree_control").write_text("")
    return tmp


def test_v2_create_delegates_controllers_at_each_level_and_writes_limits(tmp_path: Path) -> None:
    root = fake_v2_root(tmp_path)
    (root / "cumulo").mkdir()   # the kernel would create these files with the dir
    (root / "cumulo" / "cgroup.subtree_control").write_text("")
    procs = cgroup_limits.create("/cumulo/default_vm1", CgroupLimits(
        memory_max=300 * MIB, cpu_max=2, pids_max=64), version=2, root=root)
    vm = root / "cumulo" / "default_vm1"
    assert procs == [vm / "cgroup.procs"]
    assert (root / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (root / "cumulo" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (vm / "memory.max").read_text() == str(300 * MIB)
    assert (vm / "cpu.max").read_text() == "200000 100000"
    assert (vm / "pids.max").read_text() == "64"


def test_v2_without_the_memory_controller_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    root = fake_v2_root(tmp_path, "cpu pids")
    with pytest.raises(UnsupportedError, match="memory not available"):
        cgroup_limits.create("/cumulo/x", CgroupLimits(memory_max=64 * MIB), version=2,
                             root=root)
    assert not (root / "cumulo").exists()


def test_the_spawn_prefix_writes_the_pid_of_the_program_it_then_runs(tmp_path: Path) -> None:
    procs = [tmp_path / "a" / "cgroup.procs", tmp_path / "b" / "cgroup.procs"]
    for p in procs:
        p.parent.mkdir()
    argv = [*cgroup_limits.spawn_prefix(procs), "sh", "-c", "echo $$", "--", "x y"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout
    assert [p.read_text().strip() for p in procs] == [out.strip()] * 2


def test_the_spawn_prefix_fails_without_running_the_program_if_it_cannot_join(
        tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = [*cgroup_limits.spawn_prefix([tmp_path / "missing" / "cgroup.procs"]),
            "touch", str(marker)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert res.returncode == 125 and not marker.exists()
