"""Fixtures of the instance-driver contract suite: one driver per kind, a busybox rootfs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.drivers.base import InstanceDriver
from cumulo.drivers.registry import DriverContext, create_driver
from cumulo.host import cgroups
from tests.helpers import build_busybox_rootfs, container_skip_reason, host_info


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
