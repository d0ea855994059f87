"""Instances on two cluster members over an overlay, against the same pair on one
member's bridge and against two namespaces joined by a VXLAN made by hand.

A three-member cluster like the system tests' (tests/system/clusterlib.py: each member
a cumulod in its own namespace, veths to an "underlay" bridge, a throwaway PostgreSQL)
gets one overlay network; ``srv`` runs on m1, ``far`` on m2 and ``near`` on m1. The
hand-made pair is two namespaces on an underlay bridge of their own, each with
``ip link add ... type vxlan id 99 remote <other> dstport 4789`` and an address on it.
iperf3 (one TCP stream) and qperf (TCP and UDP request/response) run in the instances'
namespaces (nsenter), interleaved, so the ratios compare like with like. Traffic stays
inside the namespaces the benchmark made. The cluster comes from the tests' own harness
(``tests.system.clusterlib``, ``tests.pg``), imported at run time: run it from a
checkout, as below.

Then (``--moves N``, when CRIU works here) a container with a TCP echo server moves
live between m1 and m2, N times, while a client on m3 keeps one connection busy with
small requests (one every 10 ms); side by side per move: the downtime `cumulo migrate`
reports (container frozen to running again) and the longest gap between two answers
the client saw (what the move costs the connection, network path included).

    .venv/bin/python -m bench.overlay [--repeat 3] [--seconds 3] [--moves 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.network import iperf, qperf, sh

PAIRS = ("overlay, two members", "one member's bridge", "VXLAN by hand")


def hand_vxlan(tag: str) -> tuple[list[str], str]:
    """Two namespaces joined by VXLAN over veths on a bridge; (namespaces, server IP)."""
    hub, names = f"cu-bench-vh{tag}", [f"cu-bench-v1{tag}", f"cu-bench-v2{tag}"]
    from tests.system.clusterlib import make_underlay  # (run from a checkout)

    make_underlay(hub, names, "10.75.0")
    for i, ns in enumerate(names, start=1):
        sh("ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "99", "local",
           f"10.75.0.{i}", "remote", f"10.75.0.{3 - i}", "dstport", "4789")
        sh("ip", "-n", ns, "addr", "add", f"10.74.0.{i}/24", "dev", "vx0")
        sh("ip", "-n", ns, "link", "set", "vx0", "up")
    return [hub, *names], "10.74.0.1"


# one connection, a request every 10 ms until stdin closes; prints the longest gap between
# two answers (ms) and how many answers came back
PINGER = """
import select, socket, sys, time
c = socket.create_connection((sys.argv[1], 7000), timeout=60)
last, gap, n = time.monotonic(), 0.0, 0
while not select.select([sys.stdin], [], [], 0.01)[0]:
    c.sendall(b"x\\n")
    if c.recv(64):
        now = time.monotonic()
        gap, last, n = max(gap, now - last), now, n + 1
print(round(gap * 1000), n)
"""


def moves(m1: Any, count: int) -> list[tuple[int, int]]:
    """``count`` live moves of an echo server between m1 and m2, each under a new
    connection from a client on m3; (reported downtime ms, longest gap the client saw
    ms) each."""
    m1.cli("launch", "busybox", "echo", "--target", "m1", "--network", "bench", "--",
           "nc", "-ll", "-p", "7000", "-e", "cat")
    m1.cli("launch", "busybox", "client", "--target", "m3", "--network", "bench", "--",
           "sleep", "100000")
    found: list[tuple[int, int]] = []
    try:
        ip = json.loads(m1.cli("info", "echo", "--format", "json").stdout)["nics"][0]["ip"]
        pid = json.loads(m1.cli("info", "client", "--format", "json").stdout)["pid"]
        for i in range(count):
            client = subprocess.Popen(
                ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", PINGER, ip],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                time.sleep(1)   # the connection is up and answering
                text = m1.cli("migrate", "echo", "--to", ("m2", "m1")[i % 2],
                              timeout=300).stderr
                time.sleep(1)
                gap, answers = client.communicate("stop\n", timeout=120)[0].split()
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()
            m = re.search(r"downtime (\d+) ms", text)
            found.append((int(m.group(1)) if m else -1, int(gap) if int(answers) else -1))
    finally:
        for name in ("echo", "client"):
            m1.cli("delete", name, "--force", check=False)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--moves", type=int, default=3, help="live moves of a container (0: none)")
    args = ap.parse_args()
    from tests import pg
    from tests.helpers import checkpoint_skip_reason
    from tests.system.clusterlib import three_members

    tput: dict[str, list[float]] = {p: [] for p in PAIRS}
    rr: dict[str, list[dict[str, float]]] = {p: [] for p in PAIRS}
    made: list[str] = []
    moved: list[tuple[int, int]] = []
    if args.moves and (why := checkpoint_skip_reason()) is not None:
        print(f"no container moves: {why}", file=sys.stderr)
        args.moves = 0
    server = pg.PgServer().start()
    try:
        with three_members(Path(tempfile.mkdtemp(prefix="cu-bench-ov")), server, "10.73.0",
                           offline_after="60") as (daemons, _, _nss):
            m1 = daemons[0]
            m1.cli("network", "create", "bench", "--type", "overlay", "--subnet",
                   "10.72.0.0/24")
            for name, where in (("srv", "m1"), ("far", "m2"), ("near", "m1")):
                m1.cli("launch", "busybox", name, "--target", where, "--network", "bench",
                       "--", "sleep", "100000")
            info = {n: json.loads(m1.cli("info", n, "--format", "json").stdout)
                    for n in ("srv", "far", "near")}
            ns = {n: f"/proc/{i['pid']}/ns/net" for n, i in info.items()}
            ip = info["srv"]["nics"][0]["ip"]
            made, raw_ip = hand_vxlan(uuid.uuid4().hex[:6])
            pairs = {PAIRS[0]: (ns["srv"], ns["far"], ip),
                     PAIRS[1]: (ns["srv"], ns["near"], ip),
                     PAIRS[2]: (f"/run/netns/{made[1]}", f"/run/netns/{made[2]}", raw_ip)}
            for _ in range(args.repeat):   # interleaved: drift hits every pair alike
                for name, pair in pairs.items():
                    tput[name].append(iperf(*pair, args.seconds))
                    rr[name].append(qperf(*pair, args.seconds))
            for name in ("srv", "far", "near"):
                m1.cli("delete", name, "--force")
            if args.moves:
                moved = moves(m1, args.moves)
            m1.cli("network", "delete", "bench")
    finally:
        for n in made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)
        server.stop()
    base = statistics.median(tput[PAIRS[2]])
    print(f"TCP, one stream, {args.seconds}s x {args.repeat} (median Gbit/s, ratio to"
          " VXLAN by hand):")
    for name in PAIRS:
        med = statistics.median(tput[name])
        print(f"  {name:22s}: {med:6.2f}  {med / base:5.2f}x  {[round(x, 2) for x in tput[name]]}")
    for test in ("tcp_lat", "udp_lat"):
        meds = {n: statistics.median(r.get(test, 0.0) for r in rr[n]) for n in PAIRS}
        print(f"{test} request/response (median per second, ratio to VXLAN by hand):")
        for name in PAIRS:
            print(f"  {name:22s}: {meds[name]:8.0f}  {meds[name] / meds[PAIRS[2]]:5.2f}x")

    if moved:
        print("live moves of a container m1<->m2 with an open connection from m3 (ms):")
        for i, (down, gap) in enumerate(moved, start=1):
            ratio = f"{gap / down:5.2f}x" if down > 0 and gap >= 0 else "  n/a"
            print(f"  move {i}: downtime reported {down:5d}, longest gap the client saw"
                  f" {gap:5d}  {ratio}")
        ok = [(d, g) for d, g in moved if d > 0 and g >= 0]
        if ok:
            print(f"  median: downtime {statistics.median(d for d, _ in ok):.0f}, gap"
                  f" {statistics.median(g for _, g in ok):.0f},"
                  f" gap/downtime {statistics.median(g / d for d, g in ok):.2f}x")


if __name__ == "__main__":
    main()
