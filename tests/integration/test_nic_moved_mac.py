"""A NIC wired on a bridge that has its MAC learned on another port (a live migration
over an overlay: the destination's bridge saw the instance's frames come in over the
tunnel) makes the bridge forget that entry, so frames for it that arrive on that port
reach the new NIC instead of being dropped until the instance sends something.

The wiring runs in a namespace of the test's own ("the member"), by a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.root]

MAC = "52:54:00:aa:bb:cc"
WIRE = """
import sys
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from cumulo.net import nic
from cumulo.net.base import NicPlan
nic.attach(Path(sys.argv[1]), [NicPlan("cu-vmoved", "eth0", "cu-bmoved", sys.argv[2],
           IPv4Interface("10.9.9.5/24"), IPv4Address("10.9.9.1"))])
"""


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    names = [f"cu-t-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        # no IPv6: its link-up frames (DAD, MLD) would have the bridge relearn the MAC
        # on the new port anyway, as a container that sends first does
        subprocess.run(["nsenter", f"--net=/run/netns/{name}", "sysctl", "-q", "-w",
                        "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True, timeout=30)
    try:
        yield names[0], names[1]
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


def ports_of(member: str, mac: str) -> list[str]:
    """The ports ``mac`` is learned on in the member's bridge."""
    got = subprocess.run(["bridge", "-n", member, "-j", "fdb", "show", "br", "cu-bmoved"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return sorted(e["ifname"] for e in json.loads(got or "[]")
                  if e.get("mac") == mac and "ifname" in e)


SEND = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("cu-xpeer", 0))
frame = bytes.fromhex("ffffffffffff" + sys.argv[1].replace(":", "")) + b"\\x88\\xb5"
s.send(frame + bytes(46))
"""


def learn(member: str, mac: str) -> None:
    """One broadcast frame from ``mac`` comes in on the bridge's port cu-xmoved (sent
    from its peer), so the bridge learns ``mac`` there."""
    subprocess.run(["nsenter", f"--net=/run/netns/{member}", sys.executable, "-c", SEND, mac],
                   check=True, timeout=30)
    assert ports_of(member, mac) == ["cu-xmoved"]


def test_a_mac_learned_on_the_tunnel_port_is_forgotten(namespaces: tuple[str, str]
                                                       ) -> None:
    member, inst = namespaces

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", member, *args], check=True, timeout=30)
    ip("link", "add", "cu-bmoved", "type", "bridge")
    ip("link", "add", "cu-xmoved", "type", "veth", "peer", "name", "cu-xpeer")  # the tunnel
    ip("link", "set", "cu-xmoved", "master", "cu-bmoved", "up")
    ip("link", "set", "cu-xpeer", "up")
    ip("link", "set", "cu-bmoved", "up")
    # the bridge learns MAC on the tunnel port: frames from it come in there (an ARP)
    learn(member, MAC)
    subprocess.run(["nsenter", f"--net=/run/netns/{member}", sys.executable, "-c", WIRE,
                    f"/run/netns/{inst}", MAC], check=True, timeout=60)
    assert "cu-xmoved" not in ports_of(member, MAC)   # the old code left it there
    learn(member, "52:54:00:00:00:01")
    assert "cu-xmoved" not in ports_of(member, MAC)


LISTEN = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("cu-xpeer", 0))
s.settimeout(1.0)
print("ready", flush=True)
end = time.monotonic() + 20
while time.monotonic() < end:
    try:
        data = s.recv(2048)
    except TimeoutError:
        continue
    print(data[:42].hex(), flush=True)
    if data[6:12] == bytes.fromhex(sys.argv[1].replace(":", "")):
        break
"""


def test_a_wired_nic_announces_itself_over_the_segment(namespaces: tuple[str, str]
                                                       ) -> None:
    """After wiring, the container's NIC sends gratuitous ARP (an ARP request for its own
    address from its own MAC, to everyone): the bridge learns it on the new port and the
    tunnel carries it to the other members, whose bridges learn it there."""
    member, inst = namespaces

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", member, *args], check=True, timeout=30)
    ip("link", "add", "cu-bmoved", "type", "bridge")
    ip("link", "add", "cu-xmoved", "type", "veth", "peer", "name", "cu-xpeer")
    ip("link", "set", "cu-xmoved", "master", "cu-bmoved", "up")
    ip("link", "set", "cu-xpeer", "up")
    ip("link", "set", "cu-bmoved", "up")
    listener = subprocess.Popen(["nsenter", f"--net=/run/netns/{member}", sys.executable,
                                 "-c", LISTEN, MAC], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
        wire = WIRE + ("import threading\nfor t in threading.enumerate():\n"
                       "    if t.name.startswith('announce-'): t.join(10)\n")
        subprocess.run(["nsenter", f"--net=/run/netns/{member}", sys.executable, "-c", wire,
                        f"/run/netns/{inst}", MAC], check=True, timeout=60)
        out, _ = listener.communicate(timeout=30)
    finally:
        listener.kill()
    hw = MAC.replace(":", "")
    ip4 = "0a090905"   # 10.9.9.5
    # broadcast, from MAC, ARP request, sender MAC/IP = target IP = the NIC's own
    want = f"ffffffffffff{hw}08060001080006040001{hw}{ip4}000000000000{ip4}"
    assert want in out.split(), out
    assert ports_of(member, MAC) == ["cu-vmoved"]
