"""Fixtures of the instance-driver contract suite: one driver per kind, a busybox rootfs."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.drivers.base import InstanceDriver
from cumulo.drivers.registry import DriverContext, create_driver
from cumulo.host import cgroups
from cumulo.host.info import HostInfo

APPLETS = (
    "sh", "cat", "echo", "sleep", "ps", "id", "hostname", "head", "dd", "yes", "true",
    "ls", "mount", "seq", "tr", "wc", "grep", "stty",
)


def build_busybox_rootfs(top: Path) -> Path:
    """A minimal root filesystem: static busybox plus applet symlinks."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    root = top / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def host_info() -> HostInfo:
    """What the host probe would report, enough for the drivers under test."""
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return HostInfo(
        cgroup_version=cgroups.version(), cpus=os.cpu_count() or 1, memory_bytes=mem,
        userns=True, oci_runtimes={"runc": "1.1.5"}, oci_runtime_default="runc",
        conmon="2.1.6",
    )


def container_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "container driver needs root"
    for tool in ("runc", "conmon"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"container driver needs {tool}"
    return None


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("image")
    os.chmod(top, 0o755)
    return build_busybox_rootfs(top)


@pytest.fixture(params=["fake", "container"])
def driver_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    if kind == "container" and (reason := container_skip_reason()):
        pytest.skip(reason)
    return kind


@pytest.fixture
def driver(driver_kind: str, tmp_path: Path) -> Iterator[InstanceDriver]:
    """A fresh driver with its own state dir, runtime dir and cgroup parent."""
    os.chmod(tmp_path, 0o755)
    parent = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    ctx = DriverContext(
        state_dir=tmp_path / "state", runtime_dir=tmp_path / "run",
        cgroup_parent=parent, host=host_info(),
    )
    drv = create_driver(driver_kind, ctx)
    yield drv
    for host_id in drv.list_host_ids():
        try:
            drv.delete(host_id, tmp_path / "instances" / host_id)
        except Exception as err:  # report, but keep cleaning the others
            print(f"cleanup of {host_id} failed: {err}")
    cgroups.remove(f"/{parent}/__none__", parent)
