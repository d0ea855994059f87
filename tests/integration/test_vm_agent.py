"""Exec into a real TCG guest through our agent over virtio-serial (drivers/vm/agent.py).

One VM (pc, 128 MiB, --io emulated so the agent is the only virtio device) is booted
for the whole module and deleted by the fixture, even on failure.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cumulo.api.exec_ws import run_collect
from cumulo.domain.limits import Limits
from cumulo.drivers.base import ExecRequest, InstanceSpec, RunStatus
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB
from cumulo.errors import InvalidStateError
from tests.integration.test_vm_driver import HOST

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


class Guest:
    def __init__(self, driver: VmDriver, spec: InstanceSpec) -> None:
        self.driver, self.spec = driver, spec

    def run(self, *argv: str, stdin: bytes = b"", tty: bool = False,
            env: dict[str, str] | None = None, cwd: str = "/") -> tuple[int, str, str]:
        session = self.driver.exec(self.spec.host_id, ExecRequest(
            list(argv), env=env or {}, cwd=cwd, tty=tty))
        code, out, err = run_collect(session, stdin, timeout=60)
        return code, out.decode(), err.decode()


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    top = Path(str(tmp_path_factory.mktemp("vma")))
    ctx = DriverContext(state_dir=top / "state", runtime_dir=top / "run",
                        cgroup_parent=f"cumulo-test-{uuid.uuid4().hex[:8]}", host=HOST)
    driver = VmDriver(ctx)
    host_id = f"vm-{uuid.uuid4().hex[:6]}"
    spec = InstanceSpec(host_id=host_id, hostname="agentvm", instance_dir=top / "i" / host_id,
                        rootfs=top, command=[], limits=Limits(memory=128 * MIB),
                        options={"accel": "auto", "machine": "pc", "io": "emulated"})
    try:
        driver.create(spec)
        driver.start(spec)
        yield Guest(driver, spec)
    finally:
        for hid in driver.list_host_ids():
            driver.delete(hid, top / "i" / hid)
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if str(top) in " ".join(p.info["cmdline"] or [])], "QEMU left running"
        shutil.rmtree(top)


def test_exec_echo_waits_for_the_boot_and_returns_stdout(guest: Guest) -> None:
    started = time.monotonic()
    code, out, err = guest.run("echo", "hello from", "$(hostname)")
    print(f"first exec answered {time.monotonic() - started:.2f}s after start (TCG boot)")
    assert (code, out, err) == (0, "hello from $(hostname)\n", "")
    started = time.monotonic()
    assert guest.run("hostname") == (0, "agentvm\n", "")
    print(f"exec round trip on a booted guest: {time.monotonic() - started:.2f}s (TCG)")


def test_exec_pipeline_reads_the_guest_cpu(guest: Guest) -> None:
    code, out, _ = guest.run("sh", "-c", "cat /proc/cpuinfo | head -n 5")
    assert code == 0 and len(out.splitlines()) == 5 and out.startswith("processor")
    # the guest's own CPU is QEMU's, not the host's
    assert "QEMU" in guest.run("cat", "/proc/cpuinfo")[1]


def test_exit_status_stderr_env_cwd_and_stdin(guest: Guest) -> None:
    assert guest.run("sh", "-c", "echo out; echo err >&2; exit 3") == (3, "out\n", "err\n")
    assert guest.run("false")[0] == 1
    code, _, err = guest.run("no-such-program")
    assert code == 127 and "not found" in err
    assert guest.run("sh", "-c", 'echo "$A $(pwd)"', env={"A": "x y"}, cwd="/proc") == \
        (0, "x y /proc\n", "")
    data = bytes(range(256)) * 40
    code, out, _ = guest.run("sh", "-c", "wc -c; ls /dev/vport*", stdin=data)
    assert code == 0 and out.split()[0] == str(len(data))
    # a tty request has no terminal in the guest: stderr joins stdout
    assert guest.run("sh", "-c", "echo a; echo b >&2", tty=True) == (0, "a\nb\n", "")


def test_large_output_and_two_execs_at_once(guest: Guest) -> None:
    code, out, _ = guest.run("sh", "-c", "seq 1 30000")
    assert code == 0 and out.splitlines()[-1] == "30000" and len(out.splitlines()) == 30000
    slow = guest.driver.exec(guest.spec.host_id, ExecRequest(["sh", "-c", "sleep 2; echo slow"]))
    try:
        assert guest.run("echo", "fast") == (0, "fast\n", "")   # the second port
        assert slow.wait(0) is None
    finally:
        assert run_collect(slow, b"", 60)[:2] == (0, b"slow\n")


def test_killing_a_session_kills_the_command_in_the_guest(guest: Guest) -> None:
    session = guest.driver.exec(guest.spec.host_id,
                                ExecRequest(["sh", "-c", "echo $$ > /tmp/p; sleep 600"]))
    session.close_stdin()
    deadline = time.monotonic() + 30
    while guest.run("cat", "/tmp/p")[0] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    pid = guest.run("cat", "/tmp/p")[1].strip()
    session.kill()
    assert session.wait(1) == 137
    deadline = time.monotonic() + 10
    while guest.run("kill", "-0", pid)[0] == 0:
        assert time.monotonic() < deadline, "the command outlived its session"
        time.sleep(0.2)


def test_exec_into_a_stopped_vm_is_a_clear_error(guest: Guest) -> None:
    # last: it stops the shared guest
    guest.driver.stop(guest.spec.host_id, timeout=30, force=False)
    assert guest.driver.state(guest.spec.host_id).status == RunStatus.STOPPED
    with pytest.raises(InvalidStateError, match="stopped"):
        guest.driver.exec(guest.spec.host_id, ExecRequest(["true"]))
