"""A state dir that fills up (issue 23, "Full disks"): an image build, a container's and a
VM's checkpoint each fail with one line naming where and how much is free, leave nothing
half-made (no image, no staging dir, no checkpoint file or CRIU dir), the instance runs
on, and the daemon serves on. (A full storage pool at a launch or a snapshot:
test_concurrency.py::test_a_launch_into_a_full_pool.)

The daemon's ``images`` and ``instances`` dirs are small tmpfs mounts of the test's own,
filled to a few KiB with ``fallocate``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import checkpoint_skip_reason
from tests.system.conftest import Daemon, running_daemon, wait_count

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.slow]

SLEEP = ["sleep", "3600"]
COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; sleep 1; done'
FILLER = ".filler"


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


@contextmanager
def filled(path: Path, keep: int = 32 << 10) -> Iterator[None]:
    """``path``'s filesystem full but for ``keep`` bytes while inside."""
    st = os.statvfs(path)
    size = st.f_bavail * st.f_frsize - keep
    subprocess.run(["fallocate", "-l", str(size), str(path / FILLER)], check=True, timeout=30)
    try:
        yield
    finally:
        (path / FILLER).unlink()


def one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> str:
    assert r.returncode == 1, r
    line = r.stderr.strip()
    print(line)
    assert "\n" not in line and "Traceback" not in line, line
    for w in words:
        assert w in line, (w, line)
    return line


def leftovers(instance_dir: Path) -> list[str]:
    return sorted(p.name for p in instance_dir.iterdir()
                  if "checkpoint" in p.name or p.name == "criu" or p.suffix == ".part")


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[Daemon, Path, Path]]:
    state = tmp_path / "state"
    with tmpfs(state / "images", "48M") as images, \
            tmpfs(state / "instances", "96M") as instances, \
            running_daemon(tmp_path) as d:
        yield d, images, instances


def test_image_build_and_checkpoints_into_a_full_state_dir(
        small: tuple[Daemon, Path, Path]) -> None:
    d, images, instances = small

    # an image build: refused with one line, no image, nothing staged
    with filled(images):
        r = d.cli("image", "build", "busybox", check=False, timeout=300)
        one_line_error(r, "the image store is full", "free at", str(images),
                       "cannot build image busybox")
        assert json.loads(d.cli("image", "list", "--format", "json").stdout) == []
        assert {p.name for p in images.iterdir()} <= {FILLER, ".staging"}
        assert not list((images / ".staging").glob("*"))
    d.cli("image", "build", "busybox", timeout=300)   # with room again, it works

    # a container's checkpoint (CRIU): refused while it still runs, nothing written
    if checkpoint_skip_reason() is None:
        d.cli("launch", "busybox", "c", "--network", "none", "--", *SLEEP)
        with filled(instances):
            r = d.cli("checkpoint", "c", check=False, timeout=180)
            one_line_error(r, "too little space", "free at", "default_c")
            assert d.cli("exec", "c", "--", "echo", "alive").stdout == "alive\n"
            assert leftovers(instances / "default_c") == []
        d.cli("checkpoint", "c", timeout=180)   # with room again, it works
        d.cli("restore", "c", timeout=180)
        assert d.cli("exec", "c", "--", "echo", "back").stdout == "back\n"
        d.cli("delete", "c", "--force")

    # a VM's checkpoint (QEMU writes its state): fails, the guest runs on, no file
    d.cli("launch", "busybox", "vm", "--type", "vm", "--machine", "pc", "--memory",
          "128MiB", "--network", "none", "--", "sh", "-c", COUNTER, timeout=300)
    before = wait_count(d, "vm", 1)
    with filled(instances):
        r = d.cli("checkpoint", "vm", check=False, timeout=300)
        one_line_error(r, "the state dir is full", "free at", "cannot checkpoint 'vm'")
        info = json.loads(d.cli("info", "vm", "--format", "json").stdout)
        assert info["state"] == "running", info
        assert leftovers(instances / "default_vm") == []
    # the guest goes on counting (not exec: after a failed save here the guest agent does
    # not answer any more: see docs/faults.md)
    wait_count(d, "vm", before + 2)
    d.cli("delete", "vm", "--force")
    assert d.cli("list", "--format", "json").stdout.strip() == "[]"


def test_a_launch_beyond_the_memory_left_is_refused(daemon: Daemon) -> None:
    """A memory limit below the host's total but above what it has available now, a root
    disk bigger than its pool has free: a launch (container or VM) and a start are refused
    before anything is made."""
    d = daemon
    d.cli("image", "build", "busybox", timeout=300)
    with open("/proc/meminfo") as f:
        total_kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    memory = f"{total_kib // 1024 - 1}MiB"   # accepted as a limit, never available
    for kind in ("container", "vm"):
        r = d.cli("launch", "busybox", "big", "--type", kind, "--memory", memory,
                  "--network", "none", "--", *SLEEP, check=False, timeout=120)
        one_line_error(r, "memory", "exceeds what this host has", "available now of")
        r = d.cli("launch", "busybox", "big", "--type", kind, "--disk", "64TiB",
                  "--network", "none", "--", *SLEEP, check=False, timeout=120)
        one_line_error(r, "--disk 64.0TiB is more than pool 'default' has free")
        assert d.cli("list", "--format", "json").stdout.strip() == "[]"
        assert not list((d.state_dir / "instances").iterdir())
    # created (nothing runs yet), then started: the start is refused the same way
    d.cli("create", "busybox", "big", "--memory", memory, "--network", "none", "--", *SLEEP)
    r = d.cli("start", "big", check=False)
    one_line_error(r, "memory", "available now of")
    info = json.loads(d.cli("info", "big", "--format", "json").stdout)
    assert info["state"] == "stopped", info
    d.cli("delete", "big")
