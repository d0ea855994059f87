"""Our busybox guest agent (drivers/vm/guest_qga.py) run on the host with the host's
busybox, a pty standing for its virtio-serial port: the guest agent contract in a second
instead of a boot, and what a client may send that ours does not."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import threading
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
