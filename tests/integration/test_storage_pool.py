"""The ``dir`` storage pool under real containers: clones share the template, --copy and
--disk, snapshots, volumes; nothing leaks (mounts, loop devices, files).

Needs root, runc and conmon. Each test has its own temp dir, pool and cgroup parent.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cumulo.drivers.base import ExecRequest, InstanceSpec
from cumulo.drivers.container.driver import ContainerDriver
from cumulo.drivers.container.rootfs import ensure_shifted
from cumulo.drivers.registry import DriverContext
from cumulo.host import cgroups
from cumulo.storage.base import RootSpec
from cumulo.storage.dir import DirPool
from cumulo.storage.tools import disk_usage
from tests.helpers import build_busybox_rootfs, container_skip_reason, host_info

pytestmark = [pytest.mark.root, pytest.mark.runtime]

IDLE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
MIB = 1 << 20

if (_reason := container_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))


def loop_backing_files() -> set[str]:
    """Backing files of every loop device in use on the host."""
    found = set()
    for f in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            found.add(f.read_text().strip())
        except OSError:
            continue
    return found


def mounts_under(top: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(top))]


@dataclass
class Env:
    driver: ContainerDriver
    top: Path
    image: Path
    pool: DirPool

    def spec(self, copy: bool = False, size: int | None = None,
             volumes: tuple[tuple[Path, str], ...] = ()) -> InstanceSpec:
        host_id = f"st-{uuid.uuid4().hex[:8]}"
        return InstanceSpec(
            host_id=host_id, hostname=host_id, instance_dir=self.top / "instances" / host_id,
            rootfs=self.image, command=IDLE, volumes=volumes,
            root=RootSpec(pool="default", path=self.pool.path, copy=copy, size=size))

    def run(self, **kw: object) -> InstanceSpec:
        spec = self.spec(**kw)  # type: ignore[arg-type]
        self.driver.create(spec)
        self.driver.start(spec)
        return spec

    def sh(self, host_id: str, script: str) -> tuple[int, str]:
        session = self.driver.exec(host_id, ExecRequest(command=["sh", "-c", script]))
        try:
            code = session.wait(30)
            out = os.read(session.stdout_fd, 1 << 20).decode()
            assert session.stderr_fd is not None
            out += os.read(session.stderr_fd, 1 << 20).decode()
        finally:
            session.kill()
        assert code is not None
        return code, out


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template with some weight: busybox plus 24 MiB of data, like a small distro."""
    root = build_busybox_rootfs(tmp_path_factory.mktemp("image"))
    (root / "usr").mkdir()
    (root / "usr" / "blob").write_bytes(os.urandom(24 * MIB))
    (root / "etc" / "motd").write_text("template\n")
    return root


@pytest.fixture
def env(tmp_path: Path, image: Path) -> Iterator[Env]:
    parent = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    ctx = DriverContext(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run",
                        cgroup_parent=parent, host=host_info())
    pool = DirPool("default", tmp_path / "pool")
    pool.ensure()
    driver = ContainerDriver(ctx)
    yield Env(driver, tmp_path, image, pool)
    for host_id in ContainerDriver(ctx).list_host_ids():
        driver.delete(host_id, tmp_path / "instances" / host_id)
    cgroups.remove(f"/{parent}/-", parent)
    assert mounts_under(tmp_path) == []
    assert not any(f.startswith(str(tmp_path)) for f in loop_backing_files())


def test_twenty_clones_share_the_template(env: Env) -> None:
    template = ensure_shifted(env.image)   # the lower dir every unprivileged clone shares
    template_size = disk_usage(template)
    before = disk_usage(env.pool.path) + disk_usage(env.top / "instances")
    specs = [env.run() for _ in range(20)]
    added = disk_usage(env.pool.path) + disk_usage(env.top / "instances") - before
    print(f"template {template_size} B, 20 clones added {added} B "
          f"({100 * added / template_size:.2f}%)")
    assert added < 0.05 * template_size
    # writes in one clone are invisible in the others and in the template
    assert env.sh(specs[0].host_id, "echo mine > /etc/motd; echo new > /root/f") == (0, "")
    assert env.sh(specs[0].host_id, "cat /etc/motd /root/f")[1] == "mine\nnew\n"
    for other in specs[1:4]:
        assert env.sh(other.host_id, "cat /etc/motd; ls /root")[1] == "template\n"
    assert (env.image / "etc" / "motd").read_text() == "template\n"
    assert (template / "etc" / "motd").read_text() == "template\n"


def test_copy_is_a_full_independent_copy(env: Env) -> None:
    before = disk_usage(env.pool.path)
    spec = env.run(copy=True)
    assert disk_usage(env.pool.path) - before > 20 * MIB   # its own blocks, not shared
    assert env.sh(spec.host_id, "echo mine > /etc/motd; cat /etc/motd")[1] == "mine\n"
    assert (env.image / "etc" / "motd").read_text() == "template\n"


def test_disk_size_is_enforced_and_cleaned_up(env: Env) -> None:
    spec = env.run(size=16 * MIB)
    code, out = env.sh(spec.host_id, "dd if=/dev/zero of=/root/big bs=1M count=32")
    assert code != 0 and "No space left" in out
    img = env.pool.roots / spec.host_id / "disk.ext4"
    assert str(img) in loop_backing_files()
    assert os.stat(img).st_blocks * 512 < 20 * MIB   # sparse: only what was written
    env.driver.delete(spec.host_id, spec.instance_dir)
    assert str(img) not in loop_backing_files()
    assert not (env.pool.roots / spec.host_id).exists()


@pytest.mark.parametrize("copy,size", [(False, None), (True, None), (False, 32 * MIB)])
def test_snapshot_change_restore(env: Env, copy: bool, size: int | None) -> None:
    spec = env.run(copy=copy, size=size)
    assert env.sh(spec.host_id, "echo one > /root/a; rm /etc/motd")[0] == 0
    env.pool.snapshot_create("root", spec.host_id, "s1")
    assert env.sh(spec.host_id, "echo two > /root/a; echo x > /root/b; echo back > /etc/motd"
                  )[0] == 0
    env.driver.stop(spec.host_id, 5, force=False)
    env.pool.snapshot_restore("root", spec.host_id, "s1")
    env.driver.start(spec)
    assert env.sh(spec.host_id, "cat /root/a; ls /root; ls /etc/motd")[1] == (
        "one\na\nls: /etc/motd: No such file or directory\n")
    assert env.pool.snapshot_list("root", spec.host_id) == ["s1"]
    env.pool.snapshot_delete("root", spec.host_id, "s1")
    assert env.pool.snapshot_list("root", spec.host_id) == []


def test_volume_written_in_one_seen_in_another(env: Env) -> None:
    env.pool.create_volume("default_data", 32 * MIB, owner=1000000)
    mnt = env.pool.mount_volume("default_data")
    a = env.run(volumes=((mnt, "/data"),))
    assert env.sh(a.host_id, "echo hello > /data/greeting")[0] == 0
    env.driver.delete(a.host_id, a.instance_dir)
    env.pool.unmount_volume("default_data")
    mnt = env.pool.mount_volume("default_data")
    b = env.run(volumes=((mnt, "/srv"),))
    assert env.sh(b.host_id, "cat /srv/greeting")[1] == "hello\n"
    env.driver.delete(b.host_id, b.instance_dir)
    env.pool.delete_volume("default_data")
