"""A restored container's netns drops what comes in over its NICs from before they are
wired until the restore is done: CRIU puts the TCP sockets back after the wiring, and a
peer's segment arriving in between would be answered with a reset (the connection lost:
the overlay live-migration test saw it). Here the "restored PID 1" is a sleep in a netns
of the test's own, the wiring a veth to a peer netns, and the probe a TCP connect to a
port nothing listens on: refused at once when open, unanswered while locked."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.drivers.container import restore_hook

pytestmark = [pytest.mark.root]

PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(1.5)
try:
    s.connect((sys.argv[1], 9))
    print("open")
except ConnectionRefusedError:
    print("refused")
except (TimeoutError, socket.timeout):
    print("unanswered")
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, timeout=30)


def probe(netns: str, address: str = "10.9.7.2") -> str:
    return subprocess.run(["nsenter", f"--net={netns}", "python3", "-c", PROBE, address],
                          capture_output=True, text=True, check=True, timeout=30
                          ).stdout.strip()


@pytest.fixture
def pair() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    tag = uuid.uuid4().hex[:8]
    peer, box = f"cu-t-p{tag}", f"cu-t-b{tag}"
    for ns in (peer, box):
        sh("ip", "netns", "add", ns)
    pid1 = subprocess.Popen(["nsenter", f"--net=/run/netns/{box}", "sleep", "120"])
    try:
        yield peer, pid1
    finally:
        pid1.kill()
        pid1.wait(timeout=30)
        for ns in (peer, box):
            subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)


def test_the_restored_netns_takes_no_input_until_the_restore_is_done(
        tmp_path: Path, pair: tuple[str, subprocess.Popen[bytes]]) -> None:
    peer, pid1 = pair
    seen: list[str] = []

    def wire(pid: int) -> None:   # as the service does: a NIC in the restored netns, up
        ns = f"/proc/{pid}/ns/net"
        sh("ip", "-n", peer, "link", "add", "cu-t-lock", "type", "veth", "peer", "name",
           "eth0", "netns", ns)
        sh("ip", "-n", peer, "addr", "add", "10.9.7.1/24", "dev", "cu-t-lock")
        sh("ip", "-n", peer, "link", "set", "cu-t-lock", "up")
        sh("nsenter", f"--net={ns}", "ip", "addr", "add", "10.9.7.2/24", "dev", "eth0")
        sh("nsenter", f"--net={ns}", "ip", "link", "set", "eth0", "up")
        sh("nsenter", f"--net={ns}", "ip", "link", "set", "lo", "up")
        seen.append(probe(f"/run/netns/{peer}"))

    hook = restore_hook.hook(tmp_path)
    with restore_hook.Plugger(tmp_path, wire) as plug:
        done = subprocess.run([hook["path"], *hook["args"][1:]], timeout=60,
                              input=json.dumps({"pid": pid1.pid}), text=True)
    assert done.returncode == 0 and plug.wired, plug.error
    assert seen == ["unanswered"]          # a reset here would end a restored connection
    # lo stays open: the container's own loopback traffic is not held
    assert probe(f"/proc/{pid1.pid}/ns/net", "127.0.0.1") == "refused"
    plug.unlock()
    assert probe(f"/run/netns/{peer}") == "refused"
    plug.unlock()                          # twice is harmless
