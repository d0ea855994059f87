"""Removing a cgroup whose last process is still on its way out: ``wait`` retries,
bounded, and a cgroup that stays busy is reported, never silently left."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.host import cgroup_limits, cgroups

pytestmark = [pytest.mark.root]

PARENT = "cumulo-rmtest"


def dirs(path: str) -> list[Path]:
    return [m / path.strip("/") for m, _c in cgroups.hierarchies()
            if (m / path.strip("/")).is_dir()]


@pytest.fixture
def path() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates cgroups")
    p = f"/{PARENT}/{uuid.uuid4().hex[:8]}"
    yield p
    assert not cgroups.remove(p, PARENT, wait=10.0)
    assert not dirs(PARENT)


def spawn(path: str, seconds: float) -> subprocess.Popen[bytes]:
    """A sleep in the cgroup at ``path`` in every hierarchy; returns once it runs.

    The prefix's shell joins the hierarchies one by one, then execs the sleep: seen in
    one of them only, it may still be on its way into the others, whose dirs ``remove``
    then takes, and the shell fails to join those and exits, emptying the rest.
    """
    procs = cgroup_limits.create(path, cgroup_limits.CgroupLimits(pids_max=10))
    proc = subprocess.Popen([*cgroup_limits.spawn_prefix(procs), "sleep", str(seconds)])
    deadline = time.monotonic() + 5
    while not running_sleep(proc.pid):
        assert proc.poll() is None, f"the sleep could not join its cgroup ({proc.returncode})"
        assert time.monotonic() < deadline, "the sleep never started in its cgroup"
        time.sleep(0.02)
    assert len(in_cgroup(proc.pid, path)) == len(procs)
    return proc


def running_sleep(pid: int) -> bool:
    """The prefix's shell has joined every hierarchy and become the sleep."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    except OSError:
        return False


def in_cgroup(pid: int, path: str) -> list[str]:
    """The lines of /proc/PID/cgroup that put it in ``path``."""
    top = "/" + path.strip("/")
    return [line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
            if line.split(":", 2)[-1] == top]


def test_a_busy_cgroup_is_reported_without_wait(path: str) -> None:
    proc = spawn(path, 30)
    try:
        left = cgroups.remove(path)
        assert left and all(path.strip("/") in d for d in left)
        assert dirs(path)
    finally:
        proc.kill()
        proc.wait()


def test_wait_removes_it_once_its_last_process_has_left(path: str) -> None:
    proc = spawn(path, 0.5)
    start = time.monotonic()
    assert not cgroups.remove(path, wait=10.0)
    assert proc.poll() is not None or proc.wait(5) == 0
    assert time.monotonic() - start < 10.0
    assert not dirs(path)


def test_wait_is_bounded_and_still_reports_what_is_left(path: str) -> None:
    proc = spawn(path, 30)
    try:
        start = time.monotonic()
        assert cgroups.remove(path, wait=0.3)
        assert 0.3 <= time.monotonic() - start < 5
        assert proc.poll() is None and in_cgroup(proc.pid, path)   # left as it was
    finally:
        proc.kill()
        proc.wait()
