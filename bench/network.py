"""Container-to-container TCP throughput over our bridge against the same topology by hand.

Everything runs inside a network namespace made for the benchmark
(``cu-bench-<hex>``): the daemon (its bridge, veth pairs and nftables table)
and the hand-wired pair (two ``ip netns`` namespaces, veth pairs, a bridge). The
same host ``iperf3`` runs in the containers' network namespaces (nsenter) and
in the hand-made ones, interleaved, so the ratio is what our wiring costs.

    .venv/bin/python -m bench.network [--repeat 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.daemon import bench_daemon


def sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          timeout=60).stdout


def iperf(server_ns: str, client_ns: str, ip: str, seconds: int) -> float:
    """Gbit/s received from one TCP stream; ``*_ns`` are netns paths."""
    server = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-B", ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = sh("nsenter", f"--net={client_ns}", "timeout", str(seconds + 20), "iperf3",
                 "-c", ip, "-t", str(seconds), "-O", "1", "-J")
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        server.kill()
        server.wait(10)


def hand_wired(bench: str, tag: str) -> tuple[list[str], str]:
    """Two namespaces on a bridge inside ``bench``, like our wiring; (netns names, server IP)."""
    names = [f"cu-bench-r1{tag}", f"cu-bench-r2{tag}"]
    br = f"cu-rb{tag}"
    sh("ip", "-n", bench, "link", "add", br, "type", "bridge")
    sh("ip", "-n", bench, "link", "set", br, "up")
    for i, ns in enumerate(names, start=1):
        sh("ip", "netns", "add", ns)
        host = f"cu-r{i}{tag}"
        sh("ip", "-n", bench, "link", "add", host, "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", bench, "link", "set", host, "master", br, "up")
        sh("ip", "-n", ns, "addr", "add", f"10.99.1.{i + 1}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    return names, "10.99.1.2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    args = ap.parse_args()
    tag = uuid.uuid4().hex[:6]
    bench = f"cu-bench-{tag}"
    raw_ns: list[str] = []
    ours: list[float] = []
    raw: list[float] = []
    sh("ip", "netns", "add", bench)
    try:
        with bench_daemon(["nsenter", f"--net=/run/netns/{bench}"]) as (c, _state, _parent):
            c.build_image("busybox")
            c.create_network("bench", "10.99.0.0/24")
            for name in ("srv", "cli"):
                c.create(name, "busybox", start=True, networks=[{"network": "bench"}])
            srv, cli = c.instance("srv"), c.instance("cli")
            srv_ns, cli_ns = f"/proc/{srv['pid']}/ns/net", f"/proc/{cli['pid']}/ns/net"
            raw_ns, raw_ip = hand_wired(bench, tag)
            for _ in range(args.repeat):  # interleaved, so drift hits both sides alike
                ours.append(iperf(srv_ns, cli_ns, srv["nics"][0]["ip"], args.seconds))
                raw.append(iperf(f"/run/netns/{raw_ns[0]}", f"/run/netns/{raw_ns[1]}", raw_ip,
                                 args.seconds))
    finally:
        for ns in [*raw_ns, bench]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    med_ours, med_raw = statistics.median(ours), statistics.median(raw)
    print(f"TCP, one stream, {args.seconds}s x {args.repeat} (median Gbit/s):")
    print(f"  by hand (ip netns, veth, bridge) : {med_raw:.2f}  {[round(x, 2) for x in raw]}")
    print(f"  cumulo network                    : {med_ours:.2f}  {[round(x, 2) for x in ours]}"
          f"  ratio {med_ours / med_raw:.2f}x")
    out = Path("bench/results/network.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"gbit_s": {"raw": raw, "cumulo": ours}}, indent=1))
    print(f"raw samples in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
