"""Shared test set-up: markers that skip with a stated reason when the host lacks something."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    have_runtime = bool(shutil.which("runc") or shutil.which("crun")) and bool(
        shutil.which("conmon"))
    qemu_reason = qemu_skip_reason()
    pg_reason = pg.skip_reason()
    for item in items:
        if "qemu" in item.keywords and qemu_reason:
            item.add_marker(pytest.mark.skip(reason=qemu_reason))
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root (namespaces, cgroups)"))
        if "runtime" in item.keywords and not have_runtime:
            item.add_marker(pytest.mark.skip(reason="needs runc or crun, and conmon"))
        if "postgres" in item.keywords and pg_reason:
            item.add_marker(pytest.mark.skip(reason=pg_reason))


def qemu_skip_reason() -> str | None:
    """Why real QEMU guests cannot boot here, or None."""
    if shutil.which("qemu-system-x86_64") is None:
        return "needs qemu-system-x86_64 (scripts/install.sh installs qemu-system-x86)"
    if not any(Path("/var/cache/cumulo/kernel").glob("*/vmlinuz")):
        return "needs the guest kernel in /var/cache/cumulo/kernel (run scripts/install.sh)"
    if shutil.which("busybox") is None:
        return "needs busybox (busybox-static) for the guest initramfs"
    return None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.PgServer]:
    """A throwaway PostgreSQL server for this pytest process (each xdist worker has one)."""
    if reason := pg.skip_reason():
        pytest.skip(reason)
    server = pg.PgServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: pg.PgServer) -> Iterator[str]:
    """The URL of a new empty database on the throwaway server, dropped afterwards."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store database on each engine: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def _host_network_objects() -> set[str]:
    """Our links and nftables tables in the host's own network namespace."""
    found = {f"link {p.name}" for p in Path("/sys/class/net").iterdir()
             if p.name.startswith("cu-")}
    if shutil.which("nft") and os.geteuid() == 0:
        import subprocess

        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                             timeout=30).stdout
        found |= {f"table {line.split()[-1]}" for line in out.splitlines()
                  if line.split()[-1:] and line.split()[-1].startswith("cumulo_")}
    return found


@pytest.fixture(scope="session", autouse=True)
def host_network_untouched() -> object:
    """No test may leave (or make) bridges, veths or tables in the host's namespace."""
    before = _host_network_objects()
    yield
    left = _host_network_objects() - before
    assert not left, f"tests left these in the host's network namespace: {sorted(left)}"
