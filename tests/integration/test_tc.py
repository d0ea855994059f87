"""Bandwidth limits on the real kernel: a tbf cap measured with iperf3 between two netns.

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


def throughput(ns: str) -> float:
    """Bits per second received, from a 3 s TCP stream (first second left out)."""
    out = sh("ip", "netns", "exec", ns, "timeout", "20", "iperf3", "-c", "10.99.0.2",
             "-p", "5201", "-t", "3", "-O", "1", "-J")
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def test_egress_cap_lands_within_ten_percent(pair: tuple[str, str]) -> None:
    a, _ = pair
    netns = Path(f"/run/netns/{a}")
    tc.limit_egress("cu-x", tc.parse_rate(RATE), netns=netns)
    capped = throughput(a)
    assert abs(capped - 20e6) / 20e6 < 0.10, f"{capped / 1e6:.1f} Mbit/s"
    tc.clear("cu-x", netns=netns)
    assert throughput(a) > 5 * capped  # the cap, not the veth, made it slow
