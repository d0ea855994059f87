"""Bandwidth limits on the real kernel: an htb cap measured with iperf3 between two netns.

Both namespaces and the veth between them are made for the test and deleted
by the finaliser; traffic only flows between them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.net import tc

pytestmark = [pytest.mark.root]
if shutil.which("iperf3") is None:
    pytestmark.append(pytest.mark.skip(reason="needs iperf3 (scripts/install.sh installs it)"))

RATE = "20Mbit"


def sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          timeout=30).stdout


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:6]
    a, b = f"cu-t-a{tag}", f"cu-t-b{tag}"
    server: subprocess.Popen[bytes] | None = None
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "cu-x", "type", "veth", "peer", "name", "cu-y",
           "netns", b)
        for ns, dev, addr in ((a, "cu-x", "10.99.0.1/24"), (b, "cu-y", "10.99.0.2/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        server = subprocess.Popen(["ip", "netns", "exec", b, "iperf3", "-s", "-B",
                                   "10.99.0.2", "-p", "5201"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        yield a, b
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    assert a not in sh("ip", "netns", "list") and b not in sh("ip", "netns", "list")


def wire_bytes(ns: str, dev: str) -> tuple[float, int]:
    """(time, bytes) the qdiscs of ``dev`` have sent: whole frames, what a tc rate counts.

    Counted with the tc tool (not our code); the time is the middle of the read.
    """
    t0 = time.monotonic()
    out = json.loads(sh("ip", "netns", "exec", ns, "tc", "-s", "-j", "qdisc", "show",
                        "dev", dev))
    t1 = time.monotonic()
    root = [q for q in out if q.get("root")]
    return (t0 + t1) / 2, int(root[0]["bytes"]) if root else 0


def steady_rate(ns: str, dev: str, seconds: int = 6) -> tuple[float, float]:
    """(wire bit/s over seconds 1.5 to 5.5, TCP goodput bit/s) of an iperf3 stream.

    Slow start and the end of the stream are left out of the wire figure.
    """
    client = subprocess.Popen(["ip", "netns", "exec", ns, "timeout", "30", "iperf3", "-c",
                               "10.99.0.2", "-p", "5201", "-t", str(seconds), "-J"],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        t0, b0 = wire_bytes(ns, dev)
        time.sleep(seconds - 2.5)
        t1, b1 = wire_bytes(ns, dev)
        out, _ = client.communicate(timeout=30)
    finally:
        client.kill()
        client.wait(10)
    goodput = float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
    return (b1 - b0) * 8 / (t1 - t0), goodput


def test_egress_cap_lands_within_ten_percent(pair: tuple[str, str]) -> None:
    a, _ = pair
    netns = Path(f"/run/netns/{a}")
    tc.limit_egress("cu-x", tc.parse_rate(RATE), netns=netns)
    wire, goodput = steady_rate(a, "cu-x")
    assert abs(wire - 20e6) / 20e6 < 0.10, f"{wire / 1e6:.2f} Mbit/s on the wire"
    # TCP payload is ~4% below the wire rate (headers); it must still land within 10%
    assert 18e6 <= goodput < 20e6, f"{goodput / 1e6:.2f} Mbit/s of TCP payload"
    tc.clear("cu-x", netns=netns)
    _, free = steady_rate(a, "cu-x", seconds=3)
    assert free > 5 * goodput  # the cap, not the veth, made it slow
