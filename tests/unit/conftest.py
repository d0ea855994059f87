"""Unit fixtures: services on a temp dir with the fake driver and an in-process API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cumulo.api.app import create_app
from cumulo.domain.models import Image
from cumulo.host.info import HostInfo
from cumulo.services.host import Services, build_services

HOST = HostInfo(kernel="test", arch="x86_64", cpus=2, memory_bytes=4 * 1024**3,
                cgroup_version=2, cgroup_controllers=["cpu", "memory", "pids"],
                cgroup_io_weight=False, userns=True)
LOOP = ["/bin/sh", "-c", "echo started; trap 'exit 0' TERM; while :; do sleep 0.1; done"]


def add_test_image(svc: Services, alias: str = "testimg") -> Image:
    """An image whose rootfs is an empty dir: the fake driver runs host commands."""
    fp = "a" * 64
    (svc.images.files.root / fp / "rootfs").mkdir(parents=True, exist_ok=True)
    return svc.store.put_image(Image(fingerprint=fp, os="test", release="1",
                                     architecture="x86_64", command=LOOP, aliases=[alias]))


@contextmanager
def fake_services(top: Path, db_url: str | None = None) -> Iterator[Services]:
    """Services on ``top`` with the fake driver and network and a test image; every
    instance's driver state removed afterwards."""
    services = build_services(top / "state", top / "run", HOST,
                              driver_kinds={"container": "fake"}, net_kind="fake", db_url=db_url)
    add_test_image(services)
    try:
        yield services
    finally:
        for inst in services.store.list_instances():
            services.instances.drivers[inst.type].delete(
                inst.host_id, services.instances.instances_dir / inst.host_id)
        services.close()


@pytest.fixture
def svc(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Services]:
    """Services on SQLite; ``CUMULO_TEST_STORE=postgresql`` puts every one of them on a new
    database of the suite's PostgreSQL server instead (the whole unit suite on PostgreSQL)."""
    url = (request.getfixturevalue("pg_url")
           if os.environ.get("CUMULO_TEST_STORE") == "postgresql" else None)
    with fake_services(tmp_path, url) as services:
        yield services


@pytest.fixture
def api(svc: Services) -> Iterator[TestClient]:
    with TestClient(create_app(svc)) as client:
        yield client


def wait_op(api: TestClient, resp: object) -> dict[str, object]:
    """Follow a 202 operation to its end."""
    op = resp.json()  # type: ignore[attr-defined]
    assert resp.status_code == 202, op  # type: ignore[attr-defined]
    for _ in range(100):
        op = api.get(f"/1.0/operations/{op['id']}",
                     params={"wait": 5, "project": op.get("project", "default")}).json()
        if op["status"] in ("success", "failure"):
            return op  # type: ignore[no-any-return]
    raise AssertionError(f"operation never ended: {op}")


def launch(api: TestClient, name: str, **body: object) -> dict[str, object]:
    op = wait_op(api, api.post("/1.0/instances", json={"name": name, "image": "testimg",
                                                       "start": True, **body}))
    assert op["status"] == "success", op
    return op
