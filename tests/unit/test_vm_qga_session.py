"""The guest agent's host side without a guest: QEMU flags, the guest script, bad input,
and QgaSession against fake agents (ours streams, qemu-guest-agent does not)."""

from __future__ import annotations

import base64
import json
import os
import shlex
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cumulo.drivers.base import ExecRequest
from cumulo.drivers.vm import qga
from cumulo.drivers.vm.exec_session import guest_script
from cumulo.drivers.vm.initramfs import INIT
from cumulo.drivers.vm.qemu_cmd import Io, Machine, build_argv
from cumulo.errors import DriverError, InvalidInputError
from tests.unit.test_vm_cmd import opt, spec


def test_the_agent_port_is_virtio_serial_on_every_io_family() -> None:
    for machine, io, bus in ((Machine.PC, Io.EMULATED, "pci"), (Machine.MICROVM,
                                                                 Io.PARAVIRT, "device")):
        argv = build_argv(spec(machine, io, qga=True))
        assert f"virtio-serial-{bus},id=agent" in opt(argv, "-device")
        assert opt(argv, "-chardev") == ["socket,id=qga0,path=/t/qga.sock,server=on,wait=off"]
        assert "virtserialport,bus=agent.0,chardev=qga0,name=org.qemu.guest_agent.0" in \
            opt(argv, "-device")
    assert not opt(build_argv(spec(Machine.PC, Io.PARAVIRT)), "-chardev")
    # /init starts our agent on that port
    assert "org.qemu.guest_agent.0) setsid setsid sh $B/cumulo-agent" in INIT


def test_a_vm_made_with_the_old_agent_keeps_its_ports() -> None:
    """Its machine must stay the same (a checkpoint of it is loaded into the same devices)."""
    argv = build_argv(spec(Machine.PC, Io.EMULATED, agent_ports=2))
    assert opt(argv, "-chardev") == [
        f"socket,id=agent{i},path=/t/agent{i}.sock,server=on,wait=off" for i in (0, 1)]
    assert "virtserialport,bus=agent.0,chardev=agent1,name=org.cumulo.agent.1" in \
        opt(argv, "-device")


def test_guest_script_quotes_cwd_env_and_argv() -> None:
    script = guest_script(ExecRequest(["echo", "a b", "$(x)"], env={"K": "v w"},
                                      cwd="/my dir"))
    lines = script.splitlines()
    assert lines[0] == "cd '/my dir' || exit 126"
    assert lines[1] == "export K='v w'"
    assert shlex.split(lines[2]) == ["exec", "echo", "a b", "$(x)"]
    with pytest.raises(InvalidInputError, match="environment variable"):
        guest_script(ExecRequest(["true"], env={"A;rm": "x"}))


def test_a_vm_without_the_agent_socket(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="no QEMU guest agent channel"):
        qga.QgaSession(tmp_path, "vm1", ExecRequest(["true"]))


class FakeAgent:
    """A QGA server on ``qga.sock``: guest-exec of anything 'says' OUT then ends with 3.

    ``stream``: like our busybox agent (each status while it runs brings a new chunk in
    cumulo-out, the final out-data is all of it); else like qemu-guest-agent.
    """

    OUT = [b"one\n", b"two\n", b"three\n"]

    def __init__(self, run_dir: Path, stream: bool) -> None:
        self.stream, self.statuses = stream, 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(qga.socket_path(run_dir)))
        self.srv.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                for raw in lines:
                    reply = self._answer(json.loads(raw.strip(b"\xff")))
                    conn.sendall(json.dumps({"return": reply}).encode() + b"\n")

    def _answer(self, req: dict[str, Any]) -> Any:
        cmd, args = req["execute"], req.get("arguments", {})
        if cmd == "guest-sync":
            return args["id"]
        if cmd == "guest-exec":
            return {"pid": 77}
        self.statuses += 1
        n = self.statuses
        if n <= len(self.OUT):
            return {"exited": False, **({"cumulo-out": _b64(self.OUT[n - 1])}
                                        if self.stream else {})}
        return {"exited": True, "exitcode": 3, "out-data": _b64(b"".join(self.OUT)),
                "err-data": _b64(b"oops\n")}

    def close(self) -> None:
        self.srv.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(params=[True, False], ids=["streaming", "at-exit"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeAgent]:
    agent = FakeAgent(tmp_path, request.param)
    yield agent
    agent.close()


def read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 4096):
        out += chunk
    return out


def test_output_once_whether_streamed_or_given_at_the_end(fake: FakeAgent,
                                                          tmp_path: Path) -> None:
    session = qga.QgaSession(tmp_path, "vm1", ExecRequest(["x"]))
    session.close_stdin()
    assert session.stderr_fd is not None
    assert read_all(session.stdout_fd) == b"one\ntwo\nthree\n"
    assert read_all(session.stderr_fd) == b"oops\n"
    assert session.wait(10) == 3
    session.kill()
