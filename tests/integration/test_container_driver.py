"""The container driver on the real kernel: limits enforced, isolation, cleanup, survival.

Needs root, runc and conmon. Each test has its own temp dir and cgroup parent
(``cumulo-test-<random>``), removed by a finaliser even when the test fails.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cumulo.domain.limits import Limits
from cumulo.drivers.base import ExecRequest, InstanceSpec, RunStatus
from cumulo.drivers.container import driver as driver_module
from cumulo.drivers.container.driver import ContainerDriver
from cumulo.drivers.container.oci_spec import IDMAP_BASE
from cumulo.drivers.registry import DriverContext
from cumulo.errors import DriverError, UnsupportedError
from cumulo.host import cgroups, keys, mounts
from tests.helpers import build_busybox_rootfs, container_skip_reason, host_info

pytestmark = [pytest.mark.root, pytest.mark.runtime]

IDLE = ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]


if (_reason := container_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))


@dataclass
class Env:
    driver: ContainerDriver
    ctx: DriverContext
    top: Path
    rootfs: Path

    def spec(self, command: list[str] | None = None, **kw: object) -> InstanceSpec:
        host_id = f"it-{uuid.uuid4().hex[:8]}"
        return InstanceSpec(host_id=host_id, hostname=f"box-{host_id[3:]}",
                            instance_dir=self.top / "instances" / host_id, rootfs=self.rootfs,
                            command=command or IDLE, **kw)  # type: ignore[arg-type]

    def run(self, command: list[str] | None = None, **kw: object) -> InstanceSpec:
        spec = self.spec(command, **kw)
        self.driver.create(spec)
        self.driver.start(spec)
        return spec

    def exec(self, host_id: str, command: list[str], timeout: float = 30) -> tuple[int, str, str]:
        session = self.driver.exec(host_id, ExecRequest(command=command))
        try:
            code = session.wait(timeout)
            out = os.read(session.stdout_fd, 1 << 20).decode()
            assert session.stderr_fd is not None
            err = os.read(session.stderr_fd, 1 << 20).decode()
        finally:
            session.kill()
        assert code is not None, f"{command} still running after {timeout}s"
        return code, out, err


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_rootfs(tmp_path_factory.mktemp("image"))


def make_ctx(top: Path, parent: str) -> DriverContext:
    return DriverContext(state_dir=top / "state", runtime_dir=top / "run", cgroup_parent=parent,
                         host=host_info())


@pytest.fixture
def env(tmp_path: Path, image: Path) -> Iterator[Env]:
    parent = f"cumulo-test-{uuid.uuid4().hex[:8]}"
    ctx = make_ctx(tmp_path, parent)
    driver = ContainerDriver(ctx)
    yield Env(driver, ctx, tmp_path, image)
    for host_id in ContainerDriver(ctx).list_host_ids():
        driver.delete(host_id, tmp_path / "instances" / host_id)
    cgroups.remove(f"/{parent}/-", parent)


def cgroup_file(ctx: DriverContext, host_id: str, controller: str, name: str) -> Path:
    d = cgroups.controller_dir(controller, f"/{ctx.cgroup_parent}/{host_id}")
    assert d is not None
    return d / name


def test_memory_limit_oom_kills(env: Env) -> None:
    spec = env.run(limits=Limits(memory=32 << 20))
    code, _out, _err = env.exec(spec.host_id, ["dd", "if=/dev/zero", "of=/dev/null",
                                               "bs=64M", "count=1"])
    assert code == 137
    if cgroups.version() == 2:
        events = cgroup_file(env.ctx, spec.host_id, "memory", "memory.events").read_text()
        assert "oom_kill 0" not in events
    else:
        control = cgroup_file(env.ctx, spec.host_id, "memory", "memory.oom_control").read_text()
        assert "oom_kill 0" not in control
    assert env.driver.state(spec.host_id).status == RunStatus.RUNNING  # only the hog died


def test_cpu_quota_holds_half_a_cpu(env: Env) -> None:
    spec = env.run(["sh", "-c", "while :; do :; done"], limits=Limits(cpu=0.5))
    time.sleep(0.5)
    first, t0 = env.driver.usage(spec.host_id).cpu_time_ns, time.monotonic()
    time.sleep(3.0)
    last, t1 = env.driver.usage(spec.host_id).cpu_time_ns, time.monotonic()
    assert first is not None and last is not None
    share = (last - first) / 1e9 / (t1 - t0)
    print(f"cpu share with cpu=0.5: {share:.3f}")
    # the cap holds; below it the share is what a busy host leaves (other tests run beside)
    assert 0.05 < share <= 0.55


def test_pids_limit_stops_fork_bomb(env: Env) -> None:
    spec = env.run(limits=Limits(pids=20))
    # background children must not hold the exec's pipes, or the runtime waits for them
    bomb = "for i in $(seq 100); do sleep 30 </dev/null >/dev/null 2>&1 & done; echo done"
    code, _out, err = env.exec(spec.host_id, ["sh", "-c", bomb])
    pids = env.driver.usage(spec.host_id).pids
    assert pids is not None and pids <= 20
    assert code != 0 or "fork" in err
    env.driver.stop(spec.host_id, timeout=0, force=True)


def test_isolation_unprivileged(env: Env) -> None:
    spec = env.run()
    code, out, _ = env.exec(spec.host_id, ["ps", "-o", "pid,comm"])
    assert code == 0
    comms = [line.split()[1] for line in out.strip().splitlines()[1:]]
    assert set(comms) <= {"sh", "sleep", "ps"}, out
    assert env.exec(spec.host_id, ["hostname"])[1].strip() == spec.hostname
    pid = env.driver.state(spec.host_id).pid
    assert host_uid(pid) == IDMAP_BASE
    code, _, err = env.exec(spec.host_id, ["mount", "-t", "tmpfs", "none", "/tmp"])
    assert code != 0  # denied by seccomp / the user namespace


def test_isolation_privileged(env: Env) -> None:
    spec = env.run(privileged=True)
    assert host_uid(env.driver.state(spec.host_id).pid) == 0
    assert env.exec(spec.host_id, ["id", "-u"])[1].strip() == "0"


def host_uid(pid: int | None) -> int:
    assert pid is not None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_delete_leaves_nothing(env: Env) -> None:
    spec = env.run()
    assert env.exec(spec.host_id, ["true"])[0] == 0
    env.driver.delete(spec.host_id, spec.instance_dir)
    for mount, _ in cgroups.hierarchies():
        assert not (mount / env.ctx.cgroup_parent / spec.host_id).exists()
        assert not (mount / env.ctx.cgroup_parent).exists()
    with open("/proc/self/mountinfo") as f:
        assert str(spec.instance_dir) not in f.read()
    for proc in psutil.process_iter(["cmdline"]):
        assert spec.host_id not in " ".join(proc.info["cmdline"] or [])
    assert not spec.instance_dir.exists()
    assert spec.host_id not in env.driver.list_host_ids()


def test_launch_runs_at_once_and_restarts_like_a_started_one(env: Env) -> None:
    """``launch`` (create + start without start's second look) gives a running
    container; stopped, it starts again the usual way on the same root."""
    spec = env.spec()
    run = env.driver.launch(spec)
    assert run.status == RunStatus.RUNNING and run.pid == env.driver.state(spec.host_id).pid
    assert env.exec(spec.host_id, ["sh", "-c", "echo kept > /root/mark"])[0] == 0
    env.driver.stop(spec.host_id, timeout=0.5, force=True)
    assert env.driver.start(spec).status == RunStatus.RUNNING
    assert env.exec(spec.host_id, ["cat", "/root/mark"])[1] == "kept\n"


def test_launch_of_a_missing_program_fails_and_delete_leaves_nothing(env: Env) -> None:
    spec = env.spec(["/no/such/program"])
    with pytest.raises(DriverError, match="no/such/program"):
        env.driver.launch(spec)
    assert env.driver.state(spec.host_id).status == RunStatus.STOPPED
    env.driver.delete(spec.host_id, spec.instance_dir)   # what the service does then
    with open("/proc/self/mountinfo") as f:
        assert str(spec.instance_dir) not in f.read()
    assert not spec.instance_dir.exists()


def test_a_launch_failing_while_its_conmon_waits_kills_that_conmon(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch starts conmon before it mounts the root (conmon waits on its start pipe
    meanwhile): one that fails in between kills that conmon, reaps it, and leaves nothing."""
    spec = env.spec()
    waiting: list[tuple[psutil.Process, str]] = []

    def failing_mount(_spec: InstanceSpec) -> None:
        waiting.extend((c, c.name()) for c in psutil.Process().children()
                       if spec.host_id in " ".join(c.cmdline()))
        raise OSError(errno.EIO, "the mount failed")

    monkeypatch.setattr(driver_module.rootfs, "mount_root", failing_mount)
    with pytest.raises(DriverError, match="the mount failed"):
        env.driver.launch(spec)
    assert [name for _p, name in waiting] == ["conmon"]   # it was started, and waited
    assert not waiting[0][0].is_running()   # killed and reaped: no zombie either
    for proc in psutil.process_iter(["cmdline"]):
        assert spec.host_id not in " ".join(proc.info["cmdline"] or [])
    assert not spec.instance_dir.exists()
    assert spec.host_id not in env.driver.list_host_ids()


def test_mount_errors_name_the_target_and_the_reason(tmp_path: Path) -> None:
    for d in ("upper", "work", "target"):
        (tmp_path / d).mkdir()
    with pytest.raises(DriverError) as err:
        mounts.overlay(tmp_path / "no-lower", tmp_path / "upper", tmp_path / "work",
                       tmp_path / "target")
    assert str(err.value) == (f"cannot mount overlay on {tmp_path / 'target'}:"
                              " No such file or directory")
    assert not mounts.is_mounted(tmp_path / "target")
    (tmp_path / "lower").mkdir()
    mounts.overlay(tmp_path / "lower", tmp_path / "upper", tmp_path / "work",
                   tmp_path / "target")
    try:
        assert mounts.is_mounted(tmp_path / "target")
        (tmp_path / "target" / "f").write_text("x")
        assert (tmp_path / "upper" / "f").read_text() == "x"
        with open(tmp_path / "target" / "f"):   # busy: unmounted lazily
            mounts.umount(tmp_path / "target")
        assert not mounts.is_mounted(tmp_path / "target")
    finally:
        mounts.umount(tmp_path / "target")


def test_survives_a_new_driver_object(env: Env) -> None:
    spec = env.run()
    pid = env.driver.state(spec.host_id).pid
    del env.driver
    fresh = ContainerDriver(env.ctx)
    env.driver = fresh
    assert spec.host_id in fresh.list_host_ids()
    state = fresh.state(spec.host_id)
    assert state.status == RunStatus.RUNNING and state.pid == pid
    assert env.exec(spec.host_id, ["echo", "still here"])[1] == "still here\n"
    stopped = fresh.stop(spec.host_id, timeout=0.5, force=False)
    assert stopped.status == RunStatus.STOPPED and stopped.exit_code == 137


def test_update_memory_limit_of_running_instance(env: Env) -> None:
    spec = env.run(limits=Limits(memory=64 << 20))
    env.driver.update_limits(spec.host_id, Limits(memory=48 << 20))
    if cgroups.version() == 2:
        value = cgroup_file(env.ctx, spec.host_id, "memory", "memory.max").read_text()
    else:
        value = cgroup_file(env.ctx, spec.host_id, "memory", "memory.limit_in_bytes").read_text()
    assert int(value) == 48 << 20
    env.driver.stop(spec.host_id, timeout=0, force=True)
    env.driver.start(spec)  # the next start keeps the updated limit
    name = "memory.max" if cgroups.version() == 2 else "memory.limit_in_bytes"
    value = cgroup_file(env.ctx, spec.host_id, "memory", name)
    assert int(value.read_text()) == 48 << 20
    env.driver.update_limits(spec.host_id, Limits(pids=50))  # memory left out: unlimited again
    text = value.read_text().strip()
    assert text == "max" or int(text) > 1 << 40
    pids = cgroup_file(env.ctx, spec.host_id, "pids", "pids.max").read_text().strip()
    assert pids == "50"


def test_io_weight_refused_when_host_cannot_enforce(env: Env) -> None:
    if env.ctx.host.cgroup_io_weight:
        pytest.skip("this host can enforce io_weight")
    spec = env.spec(limits=Limits(io_weight=500))
    with pytest.raises(UnsupportedError, match="io_weight"):
        env.driver.create(spec)
    assert not spec.instance_dir.exists()


# fills the key quota of the uid given as argv[1] (in a session keyring of its own) and
# holds it until stdin closes
KEY_FILLER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid = int(sys.argv[1])
os.setgid(uid)
os.setuid(uid)
assert libc.syscall(250, 1, None) >= 0       # keyctl(JOIN_SESSION_KEYRING, NULL)
n = 0
while libc.syscall(248, b"user", b"k%d" % n, b"x", 1, -3) >= 0:   # add_key to @s
    n += 1
print(os.strerror(ctypes.get_errno()), flush=True)
sys.stdin.read()
"""


def test_key_quota_full_is_one_clear_line(env: Env) -> None:
    """A container whose root's key quota is full fails with what to raise, not runc's
    words; once keys are free it starts. The root is mapped to a uid of this test alone,
    so the quota of the uid every other unprivileged container shares is left alone."""
    uid = 2_000_000_000 + uuid.uuid4().int % 100_000_000
    spec = env.spec()
    env.driver.create(spec)
    config = spec.instance_dir / "config.json"
    data = json.loads(config.read_text())
    for key in ("uidMappings", "gidMappings"):
        data["linux"][key] = [{"containerID": 0, "hostID": uid, "size": 65536}]
    config.write_text(json.dumps(data))
    with subprocess.Popen([sys.executable, "-c", KEY_FILLER, str(uid)], text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as filler:
        assert filler.stdout is not None and filler.stdin is not None
        try:
            assert filler.stdout.readline().strip() == "Disk quota exceeded"
            with pytest.raises(DriverError) as err:
                env.driver.start(spec)
        finally:
            filler.stdin.close()
            filler.wait(30)
    msg = str(err.value)
    assert "\n" not in msg and f"key quota of uid {uid}" in msg, msg
    assert re.search(r"sysctl -w kernel\.keys\.maxkeys=\d+ kernel\.keys\.maxbytes=\d+", msg), msg
    assert env.driver.state(spec.host_id).status == RunStatus.STOPPED
    deadline = time.monotonic() + 30   # the kernel frees the filler's keys soon after
    while (used := keys.usage(uid)) is not None and used.keys >= used.max_keys:
        assert time.monotonic() < deadline, used
        time.sleep(0.1)
    env.driver.start(spec)
    assert env.driver.state(spec.host_id).status == RunStatus.RUNNING
