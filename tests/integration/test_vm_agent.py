"""Exec into a real TCG busybox guest through its guest agent over virtio-serial: the QEMU
guest agent protocol (drivers/vm/guest_qga.py in the guest, drivers/vm/qga.py here).

One VM (pc, 128 MiB, --io emulated so the agent is the only virtio device) is booted
for the whole module and deleted by the fixture, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
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
from cumulo.drivers.vm import qga
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB, run_dir
from cumulo.errors import InvalidStateError
from tests.integration.test_vm_driver import HOST
from tests.qga_contract import check_agent

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


class Guest:
    def __init__(self, driver: VmDriver, spec: InstanceSpec) -> None:
        self.driver, self.spec = driver, spec
        self.run_dir = run_dir(driver.ctx.runtime_dir / "vm", spec.host_id)

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
    # a tty request runs on a terminal in the guest, a virtio console: stderr joins
    # stdout, and its line discipline ends lines with CRLF
    assert guest.run("sh", "-c", "echo a; echo b >&2; tty", tty=True) \
        == (0, "a\r\nb\r\n/dev/hvc0\r\n", "")


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


def test_the_agent_port_speaks_qemus_guest_agent_protocol(guest: Guest) -> None:
    """A raw exchange, as any QGA client would have it (the old line agent had no such port)."""
    guest.run("true")     # booted
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, \
            contextlib.closing(sock.makefile("rb")) as lines:
        sock.settimeout(30)
        sock.connect(str(qga.socket_path(guest.run_dir)))
        sock.sendall(b'\xff{"execute": "guest-sync-delimited", "arguments": {"id": 4242}}\n')
        assert lines.readline() == b'\xff{"return": 4242}\n'
        sock.sendall(b'{"execute": "guest-ping"}\n{"execute": "guest-info"}\n')
        assert json.loads(lines.readline()) == {"return": {}}
        info = json.loads(lines.readline())["return"]
        assert info["version"].startswith("cumulo-busybox")
        sock.sendall(b'{"execute": "guest-exec", "arguments": {"path": "echo",'
                     b' "arg": ["h\\u00e9"], "capture-output": true}}\n')
        pid = json.loads(lines.readline())["return"]["pid"]
        deadline = time.monotonic() + 30
        while True:
            sock.sendall(json.dumps({"execute": "guest-exec-status",
                                     "arguments": {"pid": pid}}).encode() + b"\n")
            status = json.loads(lines.readline())["return"]
            if status["exited"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status["exitcode"] == 0 and status["out-data"] == "aMOpCg=="   # "hé\n"
        sock.sendall(b'{"execute": "guest-nope"}\n')
        assert json.loads(lines.readline())["error"]["class"] == "CommandNotFound"


def test_the_same_agent_contract_as_debians_qemu_guest_agent(guest: Guest) -> None:
    check_agent(guest.run_dir, guest.spec.host_id)


def test_output_reaches_the_caller_while_the_command_runs(guest: Guest) -> None:
    session = guest.driver.exec(guest.spec.host_id,
                                ExecRequest(["sh", "-c", "echo first; sleep 600"]))
    try:
        session.close_stdin()
        got = b""
        deadline = time.monotonic() + 30
        while b"first\n" not in got:
            assert time.monotonic() < deadline, f"no output while it runs: {got!r}"
            if select.select([session.stdout_fd], [], [], 0.2)[0]:
                got += os.read(session.stdout_fd, 100)
        assert session.wait(0) is None      # still running: sleep 600
    finally:
        session.kill()
    assert session.wait(10) == 137


def test_files_in_and_out_through_the_agent(guest: Guest) -> None:
    data = os.urandom(70000)
    assert guest.driver.write_file(guest.spec.host_id, "/root/blob", data, 0o600)
    assert guest.run("stat", "-c", "%a %s", "/root/blob") == (0, "600 70000\n", "")
    assert guest.driver.read_file(guest.spec.host_id, "/root/blob", 1 << 20) == data


def test_exec_into_a_stopped_vm_is_a_clear_error(guest: Guest) -> None:
    # last: it stops the shared guest
    guest.driver.stop(guest.spec.host_id, timeout=30, force=False)
    assert guest.driver.state(guest.spec.host_id).status == RunStatus.STOPPED
    with pytest.raises(InvalidStateError, match="stopped"):
        guest.driver.exec(guest.spec.host_id, ExecRequest(["true"]))
