"""Container checkpoint/restore with CRIU 4.x through runc and conmon, on the real kernel.

A counter runs as PID 1 (a shell loop writing to /tmp/count and its console). After a
checkpoint it is stopped; after the restore the same loop goes on from where it was
(not from 1), conmon supervises it again (stop works, the exit code is recorded), and
nothing is left behind. Skipped when the host has no CRIU that passes ``criu check``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.drivers.base import ExecRequest, InstanceSpec, RunStatus
from cumulo.drivers.container import monitor
from cumulo.drivers.container.driver import ContainerDriver
from cumulo.drivers.registry import DriverContext
from cumulo.errors import InvalidStateError, UnsupportedError
from cumulo.host import cgroups, procs
from tests.helpers import (
    build_busybox_rootfs,
    checkpoint_skip_reason,
    container_skip_reason,
    host_info,
)

pytestmark = [pytest.mark.root, pytest.mark.runtime, pytest.mark.criu]

# the count is renamed into place: a reader (or a checkpoint) never sees it half-written
COUNTER = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new;"
           " mv /tmp/count.new /tmp/count; echo n=$i;"
           " sleep 0.1; done"]

if (_reason := container_skip_reason() or checkpoint_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_rootfs(tmp_path_factory.mktemp("image"))


@pytest.fixture
def env(tmp_path: Path, image: Path) -> Iterator[tuple[ContainerDriver, Path, str]]:
    parent = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    ctx = DriverContext(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run",
                        cgroup_parent=parent, host=host_info())
    driver = ContainerDriver(ctx)
    yield driver, image, parent
    for host_id in driver.list_host_ids():
        driver.delete(host_id, tmp_path / "instances" / host_id)
    cgroups.remove(f"/{parent}/-", parent)


def _count(driver: ContainerDriver, host_id: str) -> int:
    session = driver.exec(host_id, ExecRequest(command=["cat", "/tmp/count"]))
    try:
        assert session.wait(10) == 0
        return int(os.read(session.stdout_fd, 100).decode().strip())
    finally:
        session.kill()


def _wait_count(driver: ContainerDriver, host_id: str, above: int) -> int:
    deadline = time.monotonic() + 10
    while (n := _count(driver, host_id)) <= above:
        assert time.monotonic() < deadline, f"counter stuck at {n}"
        time.sleep(0.1)
    return n


@pytest.mark.parametrize("privileged", [False, True], ids=["userns", "privileged"])
def test_counter_continues_after_restore(env: tuple[ContainerDriver, Path, str],
                                         tmp_path: Path, privileged: bool) -> None:
    driver, image, _ = env
    host_id = f"cr-{uuid.uuid4().hex[:8]}"
    spec = InstanceSpec(host_id=host_id, hostname="counter",
                        instance_dir=tmp_path / "instances" / host_id, rootfs=image,
                        command=COUNTER, privileged=privileged)
    driver.create(spec)
    pid_before = driver.start(spec).pid
    before = _wait_count(driver, host_id, 5)
    archive = tmp_path / "state.tar"
    stats = driver.checkpoint(host_id, archive)
    assert stats["transferred"] == archive.stat().st_size > 0
    assert driver.state(host_id).status == RunStatus.STOPPED
    assert pid_before is not None and not procs.alive(pid_before)
    frozen = int((spec.instance_dir / "upper" / "tmp" / "count").read_text())
    assert frozen >= before
    time.sleep(0.5)   # stopped: the count does not move
    assert int((spec.instance_dir / "upper" / "tmp" / "count").read_text()) == frozen

    run = driver.restore(spec, archive)
    assert run.status == RunStatus.RUNNING and run.pid is not None
    after = _wait_count(driver, host_id, frozen)
    assert frozen < after < frozen + 50       # went on, not from 1
    log, _ = driver.read_console(host_id, 0)
    assert f"n={frozen + 1}\n".encode() in log  # conmon relays the restored PID 1's output
    assert not (spec.instance_dir / "criu").exists()

    paths = driver._paths(host_id, spec.instance_dir)
    conmon = monitor.conmon_pid(paths)
    assert conmon is not None
    assert driver.stop(host_id, 0, force=True).exit_code == 137   # conmon saw the exit
    deadline = time.monotonic() + 5
    while monitor.conmon_pid(paths) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert monitor.conmon_pid(paths) is None


def test_checkpoint_of_a_stopped_container_is_refused(
        env: tuple[ContainerDriver, Path, str], tmp_path: Path) -> None:
    driver, image, _ = env
    host_id = f"cr-{uuid.uuid4().hex[:8]}"
    spec = InstanceSpec(host_id=host_id, hostname="idle",
                        instance_dir=tmp_path / "instances" / host_id, rootfs=image,
                        command=COUNTER)
    driver.create(spec)
    with pytest.raises(InvalidStateError):
        driver.checkpoint(host_id, tmp_path / "never.tar")
    assert not (tmp_path / "never.tar").exists()


def _running_counter(driver: ContainerDriver, image: Path, tmp_path: Path,
                     hostname: str) -> InstanceSpec:
    host_id = f"cr-{uuid.uuid4().hex[:8]}"
    spec = InstanceSpec(host_id=host_id, hostname=hostname,
                        instance_dir=tmp_path / "instances" / host_id, rootfs=image,
                        command=COUNTER)
    driver.create(spec)
    driver.start(spec)
    return spec


def _path_without_iptables(bin_dir: Path) -> str:
    """A PATH with every program of this one except iptables* (as on a fresh Debian 12)."""
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = bin_dir / name
            if not name.startswith(("iptables", "ip6tables")) and not link.exists():
                link.symlink_to(os.path.join(d, name))
    return str(bin_dir)


def test_checkpoint_and_restore_need_no_iptables(
        env: tuple[ContainerDriver, Path, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CRIU locks the container's own netns with nftables (named in config.json): runc and
    CRIU find no iptables-restore on PATH, and the counter still goes on after a restore."""
    driver, image, _ = env
    if host_info().criu_network_lock != "nftables":
        pytest.skip("this CRIU cannot lock the network with nftables (install.sh's can)")
    monkeypatch.setenv("PATH", _path_without_iptables(tmp_path / "bin"))
    assert shutil.which("iptables-restore") is None and shutil.which("runc") is not None
    spec = _running_counter(driver, image, tmp_path, "nolock")
    host_id = spec.host_id
    before = _wait_count(driver, host_id, 2)
    driver.checkpoint(host_id, tmp_path / "state.tar")
    conf = json.loads((spec.instance_dir / "config.json").read_text())["annotations"]
    assert Path(conf["org.criu.config"]).read_text().endswith("network-lock nftables\n")
    driver.restore(spec, tmp_path / "state.tar")
    assert _wait_count(driver, host_id, before) > before
    driver.stop(host_id, 0, force=True)


def test_a_container_started_without_the_options_is_refused_at_once(
        env: tuple[ContainerDriver, Path, str], tmp_path: Path) -> None:
    """One started by an older cumulod (runc holds no CRIU options file for it) would fail
    half-way through the dump on a host without iptables: refused before, still running."""
    driver, image, _ = env
    spec = _running_counter(driver, image, tmp_path, "old")
    host_id = spec.host_id
    driver._criu_conf = tmp_path / "elsewhere.conf"   # not what runc was given at the start
    with pytest.raises(UnsupportedError, match="restart it once, then checkpoint it"):
        driver.checkpoint(host_id, tmp_path / "never.tar")
    assert driver.state(host_id).status == RunStatus.RUNNING
    assert not (tmp_path / "never.tar").exists()
    driver.stop(host_id, 0, force=True)
    driver.start(spec)   # a restart names the options file: now it checkpoints
    driver.checkpoint(host_id, tmp_path / "state.tar")
    assert driver.state(host_id).status == RunStatus.STOPPED
