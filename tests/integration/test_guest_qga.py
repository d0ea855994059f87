"""Our busybox guest agent (drivers/vm/guest_qga.py) run on the host with the host's
busybox, a pty standing for its virtio-serial port: the guest agent contract in a second
instead of a boot, and what a client may send that ours does not."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import socket
import subprocess
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.drivers.vm import qga
from cumulo.drivers.vm.guest_qga import GUEST_SCRIPT
from tests.qga_contract import check_agent

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/busybox"),
                                reason="needs busybox (scripts/install.sh installs it)")


def bridge(srv: socket.socket, master: int, stop: threading.Event) -> None:
    """QEMU's part: one client at a time on the socket, its bytes to the port and back;
    what the agent writes while nobody is connected is dropped."""
    conn: socket.socket | None = None
    while not stop.is_set():
        ready = select.select([srv, master] + ([conn] if conn else []), [], [], 0.1)[0]
        if srv in ready:
            if conn:
                conn.close()
            conn = srv.accept()[0]
        if master in ready:
            data = os.read(master, 65536)
            if conn:
                with contextlib.suppress(OSError):
                    conn.sendall(data)
        if conn and conn in ready:
            data = conn.recv(65536)
            if data:
                os.write(master, data)
            else:
                conn.close()
                conn = None
    if conn:
        conn.close()


@pytest.fixture
def agent_dir(tmp_path: Path) -> Iterator[Path]:
    master, slave = os.openpty()
    tty.setraw(slave)                   # bytes as they are, like a virtio-serial port
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(qga.socket_path(tmp_path)))
    srv.listen(4)
    stop = threading.Event()
    thread = threading.Thread(target=bridge, args=(srv, master, stop), daemon=True)
    thread.start()
    script = tmp_path / "cumulo-agent"
    script.write_text(GUEST_SCRIPT)
    proc = subprocess.Popen(["busybox", "sh", str(script), os.ttyname(slave),
                             str(tmp_path / "agent")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield tmp_path
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)
        stop.set()
        thread.join(5)
        srv.close()
        os.close(master)
        os.close(slave)


def test_the_agent_contract(agent_dir: Path) -> None:
    check_agent(agent_dir, "host-agent", str(agent_dir / "contract-file"))


def test_bad_json_is_an_error_and_the_agent_goes_on(agent_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, \
            contextlib.closing(sock.makefile("rb")) as lines:
        sock.settimeout(20)
        sock.connect(str(qga.socket_path(agent_dir)))
        sock.sendall(b'{"execute": "guest-ping", "arguments": {"x": [1, 2]}}\n'
                     b'{"execute": "guest-sync", "arguments": {"id": 5}}\n')
        assert json.loads(lines.readline())["error"]["desc"] == "Invalid or unsupported JSON"
        assert json.loads(lines.readline()) == {"return": 5}
        sock.sendall(b"\xff\xff junk {\"execute\": \"guest-ping\"}\n")
        assert json.loads(lines.readline()) == {"return": {}}
        # a member no command here takes is refused: it would have been a sh variable of
        # the agent's (its count of commands, its dir), not only an argument
        for member in (b'"n": 1', b'"d": "/"', b'"x": "y"'):
            sock.sendall(b'{"execute": "guest-exec", "arguments": {"path": "/bin/true", '
                         + member + b'}}\n')
            reply = json.loads(lines.readline())
            assert reply["error"]["desc"] == "Invalid or unsupported JSON", (member, reply)
        sock.sendall(b'{"execute": "guest-sync", "arguments": {"id": 6}}\n')
        assert json.loads(lines.readline()) == {"return": 6}


def test_a_status_of_an_older_command_does_not_hand_its_number_to_the_next(
        agent_dir: Path) -> None:
    """Each guest-exec keeps its own files: a status asked about an earlier command that
    still runs, then a new guest-exec, leave a later command that still runs alone (the
    counter of commands once went back to the asked one's, so the new command shared the
    next one's files: its exit code went to that one's status, and its own said killed)."""
    def status(agent: qga.Qga, pid: int) -> dict[str, object]:
        return agent.call("guest-exec-status", pid=pid)  # type: ignore[no-any-return]

    long_ones: list[int] = []
    try:
        with qga.connect(agent_dir, "host-agent") as agent:
            for _ in range(2):
                long_ones.append(int(agent.call("guest-exec", path="/bin/sh", arg=[
                    "-c", "exec sleep 600"], **{"capture-output": True})["pid"]))
            first, second = long_ones
            assert status(agent, first)["exited"] is False
            pid = int(agent.call("guest-exec", path="/bin/sh", arg=["-c", "echo c; exit 3"],
                                 **{"capture-output": True})["pid"])
            deadline = time.monotonic() + 20
            while Path(f"/proc/{pid}").exists():   # it ended; its status not asked yet
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert status(agent, second)["exited"] is False     # (it said: exit code 3)
            got = status(agent, pid)                            # (it said: killed)
            assert (got["exited"], got.get("exitcode"),
                    base64.b64decode(str(got["out-data"]))) == (True, 3, b"c\n"), got
    finally:
        for pid in long_ones:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, 9)
