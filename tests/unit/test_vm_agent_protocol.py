"""The exec agent's host side without a guest: QEMU flags, the guest script, bad input."""

from __future__ import annotations

import base64
import os
import shlex
import socket
import threading
import time
from pathlib import Path

import pytest

from cumulo.drivers.base import ExecRequest
from cumulo.drivers.vm import agent
from cumulo.drivers.vm.initramfs import INIT
from cumulo.drivers.vm.qemu_cmd import Io, Machine, build_argv
from cumulo.errors import DriverError, InvalidInputError
from tests.unit.test_vm_cmd import opt, spec


def test_agent_ports_are_virtio_serial_on_every_io_family() -> None:
    for machine, io, bus in ((Machine.PC, Io.EMULATED, "pci"), (Machine.MICROVM,
                                                                 Io.PARAVIRT, "device")):
        argv = build_argv(spec(machine, io, agent_ports=2))
        assert f"virtio-serial-{bus},id=agent" in opt(argv, "-device")
        assert opt(argv, "-chardev") == [
            f"socket,id=agent{i},path=/t/agent{i}.sock,server=on,wait=off" for i in (0, 1)]
        assert "virtserialport,bus=agent.0,chardev=agent1,name=org.cumulo.agent.1" in \
            opt(argv, "-device")
    assert not opt(build_argv(spec(Machine.PC, Io.PARAVIRT)), "-chardev")
    assert "cumulo-agent" in INIT and "org.cumulo.agent." in INIT


def test_guest_script_quotes_cwd_env_and_argv() -> None:
    script = agent.guest_script(ExecRequest(["echo", "a b", "$(x)"], env={"K": "v w"},
                                            cwd="/my dir"))
    lines = script.splitlines()
    assert lines[0] == "cd '/my dir' || exit 126"
    assert lines[1] == "export K='v w'"
    assert shlex.split(lines[2]) == ["exec", "echo", "a b", "$(x)"]


def test_bad_env_names_and_a_vm_without_agent_sockets(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="environment variable"):
        agent.AgentSession(tmp_path, "vm1", ExecRequest(["true"], env={"A;rm": "x"}))
    with pytest.raises(DriverError, match="no guest agent channel"):
        agent.AgentSession(tmp_path, "vm1", ExecRequest(["true"]), ready_timeout=0.1)


def test_an_agent_that_never_answers_times_out(tmp_path: Path) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(agent.port_socket(tmp_path, 0)))
    srv.listen(1)      # like QEMU before the guest opened the port: accepted, never answered
    try:
        with pytest.raises(DriverError, match="did not answer within"):
            agent.AgentSession(tmp_path, "vm1", ExecRequest(["true"]), ready_timeout=0.3)
    finally:
        srv.close()


def fake_agent(srv: socket.socket, skip: int) -> None:
    """A guest agent whose first ``skip`` lines are eaten, as by the previous session's
    watcher that has not yet seen its host hang up; then PONG, and a RUN that says hi."""
    conn, _ = srv.accept()
    with conn, conn.makefile("rb") as lines:
        for raw in lines:
            sid, verb = raw.decode().split()[:2]
            if skip:
                skip -= 1
            elif verb == "PING":
                conn.sendall(f"{sid} PONG\n".encode())
            elif verb == "RUN":
                hi = base64.b64encode(b"hi\n").decode()
                conn.sendall(f"{sid} START\n{sid} OUT {hi}\nother EXIT 9\n{sid} EXIT 0\n"
                             .encode())
                return


def test_a_ping_eaten_by_the_last_sessions_watcher_is_asked_again(tmp_path: Path) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(agent.port_socket(tmp_path, 0)))
    srv.listen(1)
    guest = threading.Thread(target=fake_agent, args=(srv, 1), daemon=True)
    guest.start()
    try:
        started = time.monotonic()
        session = agent.AgentSession(tmp_path, "vm1", ExecRequest(["echo", "hi"]),
                                     ready_timeout=10)
        session.close_stdin()
        assert session.wait(10) == 0
        assert os.read(session.stdout_fd, 100) == b"hi\n"
        assert time.monotonic() - started < 10
        session.kill()
    finally:
        srv.close()
        guest.join(5)
